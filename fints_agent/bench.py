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
from typing import Any

import torch

from fints_agent.decoding import decode
from fints_agent.models import LoadedModel, load_model
from fints_agent.steering.vector import SteeringVector

__all__ = ["SECTIONS", "bench_load", "bench_steering", "run_bench", "timed_rate"]

SECTIONS = ("load", "steering")

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
    if "steering" in sections:
        lm = load_model()
        result["model"] = {"name": lm.name, "fingerprint": lm.fingerprint}
        result["steering"] = bench_steering(lm)
    return result
