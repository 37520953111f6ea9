"""Decode speed: tokens/s with and without steering, beside ``transformers.generate()``, and
under a grammar with and without jump-forward.

Ratios are measured in one run, alternating the variants, because shared machines are noisy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from fints_agent.bench.data import BENCH_PROMPT, RIDE_TOOL, WEATHER_TOOL
from fints_agent.decoding import decode
from fints_agent.models import LoadedModel
from fints_agent.steering.vector import SteeringVector

__all__ = ["alternate", "bench_constrained", "bench_peer", "bench_steering", "timed_rate"]


def timed_rate(run: Callable[[], int]) -> float:
    """Tokens per second of one call of ``run`` (which returns the tokens it generated)."""
    start = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - start)


def alternate(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
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
    rates = alternate(
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


def bench_peer(lm: LoadedModel, *, tokens: int = 48, repeats: int = 5) -> dict[str, Any]:
    """Greedy decode tokens/s of this project's loop against plain ``transformers``
    ``generate()`` on the same model and prompt (what ``ChatHuggingFace`` runs)."""
    prompt = str(
        lm.tokenizer.apply_chat_template(BENCH_PROMPT, tokenize=False, add_generation_prompt=True)
    )
    ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)

    def generate() -> int:
        with torch.inference_mode():
            out = lm.model.generate(  # type: ignore[operator]
                **ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        return int(out.shape[1] - ids["input_ids"].shape[1])

    rates = alternate({"fints": _greedy(lm, prompt, tokens), "generate": generate}, repeats)
    return {
        "decode_tokens_per_s_fints": round(rates["fints"], 2),
        "decode_tokens_per_s_transformers_generate": round(rates["generate"], 2),
        "fints_over_generate": round(rates["fints"] / rates["generate"], 3),
        "tokens_per_run": tokens,
        "repeats": repeats,
    }


def bench_constrained(lm: LoadedModel, *, repeats: int = 5) -> dict[str, Any]:
    """Decode tokens/s of a tool call: grammar-constrained (with jump-forward) vs free."""
    from fints_agent.calls import CallGrammar, ConstrainedDecoder, get_compiler, to_tool_specs
    from fints_agent.decoding import DecodeStats, stop_token_ids
    from fints_agent.prompting import PromptRenderer

    specs = to_tool_specs([WEATHER_TOOL, RIDE_TOOL])
    renderer = PromptRenderer(lm.tokenizer)
    prompt = renderer.render_prompt(
        [{"role": "user", "content": "Weather in Oslo for the next 3 days, in celsius?"}],
        [WEATHER_TOOL, RIDE_TOOL],
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

    rates = alternate(
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
