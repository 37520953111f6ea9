"""Speed figures, printed as JSON: decode rates with and without steering, load times.

Ratios are measured in one run, alternating the variants, because shared machines are noisy.
Run with ``fints-agent bench`` (all sections) or ``fints-agent bench --only steering``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fints_agent.decoding import decode
from fints_agent.models import LoadedModel, load_model
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "SECTIONS",
    "bench_constrained",
    "bench_load",
    "bench_memory",
    "bench_personalization",
    "bench_steering",
    "run_bench",
    "timed_rate",
]

SECTIONS = ("load", "steering", "constrained", "personalization", "memory")

BENCH_PROMPT = [
    {"role": "user", "content": "Plan a weekend trip to Oslo: list what to pack and why."}
]


def timed_rate(run: Callable[[], int]) -> float:
    """Tokens per second of one call of ``run`` (which returns the tokens it generated)."""
    start = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - start)


def _alternate(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for run in variants.values():  # warm-up
        run()
    for _ in range(repeats):
        for k, run in variants.items():
            rates[k].append(timed_rate(run))
    return {k: statistics.median(v) for k, v in rates.items()}


def _greedy(lm: LoadedModel, prompt: str, n: int, **kwargs: Any) -> Callable[[], int]:
    def run() -> int:
        steps = 0
        for _ in decode(lm, [prompt], max_new_tokens=n, stop_at_eos=False, **kwargs):
            steps += 1
        return steps

    return run


def bench_steering(lm: LoadedModel, *, tokens: int = 48, repeats: int = 5) -> dict[str, Any]:
    """Greedy decode tokens/s unsteered vs steered on all layers and both sites."""
    prompt = str(
        lm.tokenizer.apply_chat_template(BENCH_PROMPT, tokenize=False, add_generation_prompt=True)
    )
    torch.manual_seed(0)
    layers = tuple(range(lm.num_layers))
    vector = SteeringVector(
        0.01 * torch.randn(len(layers), 2, lm.d_model), layers, ("attn", "mlp"), lm.fingerprint
    )
    rates = _alternate(
        {
            "unsteered": _greedy(lm, prompt, tokens),
            "steered": _greedy(lm, prompt, tokens, vectors=vector, coefficients=1.0),
        },
        repeats,
    )
    return {
        "decode_tokens_per_s_unsteered": round(rates["unsteered"], 2),
        "decode_tokens_per_s_steered": round(rates["steered"], 2),
        "steered_over_unsteered": round(rates["steered"] / rates["unsteered"], 3),
        "steered_layers": len(layers),
        "steered_sites": ["attn", "mlp"],
        "tokens_per_run": tokens,
        "repeats": repeats,
    }


_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "units", "days"],
        },
    },
}
_RIDE = {
    "type": "function",
    "function": {
        "name": "book_ride",
        "description": "Book a taxi ride.",
        "parameters": {
            "type": "object",
            "properties": {"pickup": {"type": "string"}, "dropoff": {"type": "string"}},
            "required": ["pickup", "dropoff"],
        },
    },
}


def bench_constrained(lm: LoadedModel, *, repeats: int = 5) -> dict[str, Any]:
    """Decode tokens/s of a tool call: grammar-constrained (with jump-forward) vs free."""
    from fints_agent.calls import CallGrammar, ConstrainedDecoder, get_compiler, to_tool_specs
    from fints_agent.decoding import DecodeStats, stop_token_ids
    from fints_agent.prompting import PromptRenderer

    specs = to_tool_specs([_WEATHER, _RIDE])
    renderer = PromptRenderer(lm.tokenizer)
    prompt = renderer.render_prompt(
        [{"role": "user", "content": "Weather in Oslo for the next 3 days, in celsius?"}],
        [_WEATHER, _RIDE],
    )
    compiler = get_compiler(
        lm.tokenizer, int(lm.model.config.vocab_size), stop_token_ids=sorted(stop_token_ids(lm))
    )
    grammar = CallGrammar.build(compiler, specs, "required", parallel=False)
    assert grammar is not None
    counts: dict[str, int] = {}

    def constrained(jump: bool) -> Callable[[], int]:
        def run() -> int:
            stats = DecodeStats()
            decoder = ConstrainedDecoder(grammar, 1)
            steps = decode(
                lm, [prompt], max_new_tokens=64, constraint=decoder, jump_forward=jump, stats=stats
            )
            for _ in steps:
                pass
            counts["call_tokens"] = stats.generated_tokens[0]
            return stats.generated_tokens[0]

        return run

    rates = _alternate(
        {
            "free": _greedy(lm, prompt, 40),
            "constrained": constrained(False),
            "constrained_jump": constrained(True),
        },
        repeats,
    )
    return {
        "decode_tokens_per_s_free": round(rates["free"], 2),
        "decode_tokens_per_s_constrained": round(rates["constrained"], 2),
        "decode_tokens_per_s_constrained_jump_forward": round(rates["constrained_jump"], 2),
        "constrained_over_free": round(rates["constrained"] / rates["free"], 3),
        "constrained_jump_forward_over_free": round(rates["constrained_jump"] / rates["free"], 3),
        "call_tokens": counts.get("call_tokens"),
        "repeats": repeats,
    }


def bench_personalization(lm: LoadedModel, *, turns: int = 6) -> dict[str, Any]:
    """Per-turn overhead of personalization (retrieve + aggregate + hooks) in a whole turn."""
    from fints_agent.calls import to_tool_specs
    from fints_agent.config import SteeringConfig
    from fints_agent.engine import TurnEngine, TurnRequest
    from fints_agent.memory import Memory, TrajectoryStore

    with tempfile.TemporaryDirectory() as store:
        memory = Memory(lm, TrajectoryStore(store))
        cities = ["Oslo", "Paris", "Rome", "Berlin", "Madrid", "Lisbon"]
        memory.record_many(
            [
                {
                    "user_id": "u",
                    "messages": [{"role": "user", "content": f"Weather in {c} for 2 days?"}],
                    "tools": [_WEATHER, _RIDE],
                    "chosen": {
                        "name": "get_weather",
                        "arguments": {"city": c, "units": "fahrenheit", "days": 2},
                    },
                }
                for c in cities
            ],
            progress=False,
        )
        engine = TurnEngine(lm, memory, SteeringConfig(min_similarity=0.0))
        specs = to_tool_specs([_WEATHER, _RIDE])
        steered: list[tuple[float, int]] = []
        plain: list[tuple[float, int]] = []
        retrieval: list[float] = []
        for i in range(turns):  # alternate the variants, so load changes hit both alike
            text = f"Weather in {cities[i % 6]}ville for 3 days?"
            for mode, out in (("steer", steered), ("none", plain)):
                req = TurnRequest(
                    [{"role": "user", "content": text}],
                    specs,
                    tool_choice="any",
                    user_id="u",
                    personalization=mode,  # type: ignore[arg-type]
                )
                t0 = time.perf_counter()
                if mode == "steer":
                    engine.retrieve(req)
                    retrieval.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                result = engine.complete(req)  # retrieves again, as a real turn does
                out.append((time.perf_counter() - t0, result.completion_tokens))
    turn = statistics.median(t for t, _ in steered)
    base = statistics.median(t for t, _ in plain)
    per_token = statistics.median(t / max(1, n) for t, n in steered)
    per_token_base = statistics.median(t / max(1, n) for t, n in plain)
    return {
        "turn_seconds_personalized_p50": round(turn, 3),
        "turn_seconds_unpersonalized_p50": round(base, 3),
        "tokens_personalized_p50": statistics.median(n for _, n in steered),
        "tokens_unpersonalized_p50": statistics.median(n for _, n in plain),
        "retrieve_aggregate_ms_p50": round(1000 * statistics.median(retrieval), 1),
        "retrieve_aggregate_share_of_turn": round(statistics.median(retrieval) / turn, 3),
        # Per generated token, so that calls of different lengths compare fairly.
        "personalization_share_of_turn": round(max(0.0, per_token - per_token_base) / per_token, 3),
        "turns": turns,
    }


def bench_memory() -> dict[str, Any]:
    """The memory benchmark (``tools/bench_memory.py``) when run from a source checkout."""
    script = Path(__file__).resolve().parent.parent / "tools" / "bench_memory.py"
    if not script.is_file():
        return {"skipped": "tools/bench_memory.py not found (run from a source checkout)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        subprocess.run(
            [sys.executable, str(script), "--only", "latency,ingestion", "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data: dict[str, Any] = json.loads(out.read_text())
    return data


_LOAD_SNIPPET = (
    "import time,json;t=time.perf_counter();from fints_agent.models import load_model;"
    "lm=load_model();print(json.dumps({'seconds':lm.load_seconds,'source':lm.source}))"
)


def bench_load() -> dict[str, Any]:
    """Cold (GGUF de-quantization) and cached load times, each in a fresh process."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "FINTS_AGENT_CACHE": cache, "TQDM_DISABLE": "1"}
        for label in ("cold", "cached"):
            proc = subprocess.run(
                [sys.executable, "-c", _LOAD_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            out[f"load_seconds_{label}"] = round(result["seconds"], 2)
            out[f"load_source_{label}"] = result["source"]
    return out


def run_bench(sections: list[str]) -> dict[str, Any]:
    """All requested sections, as one JSON-able dict."""
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    if "load" in sections:
        result["load"] = bench_load()
    lm = load_model()
    result["model"] = {"name": lm.name, "fingerprint": lm.fingerprint}
    if "steering" in sections:
        result["steering"] = bench_steering(lm)
    if "constrained" in sections:
        result["constrained"] = bench_constrained(lm)
    if "personalization" in sections:
        result["personalization"] = bench_personalization(lm)
    if "memory" in sections:
        result["memory"] = bench_memory()
    return result
