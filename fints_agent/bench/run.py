"""Every benchmark section, run by ``fints-agent bench`` and printed as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from fints_agent.bench.decoding import bench_constrained, bench_peer, bench_steering
from fints_agent.bench.turns import (
    bench_batch,
    bench_personalization,
    bench_recording,
    bench_turns,
)
from fints_agent.models import load_model

__all__ = ["SECTIONS", "bench_load", "bench_memory", "run_bench"]


SECTIONS = (
    "load",
    "steering",
    "peer",
    "constrained",
    "recording",
    "turns",
    "batch",
    "personalization",
    "memory",
)


def bench_memory() -> dict[str, Any]:
    """The memory benchmark (``tools/bench_memory.py``) when run from a source checkout."""
    script = Path(__file__).resolve().parents[2] / "tools" / "bench_memory.py"
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
    if "peer" in sections:
        result["peer"] = bench_peer(lm)
    if "constrained" in sections:
        result["constrained"] = bench_constrained(lm)
    if "recording" in sections:
        result["recording"] = bench_recording(lm)
    if "turns" in sections:
        result["turns"] = bench_turns(lm)
    if "batch" in sections:
        result["batch"] = bench_batch(lm)
    if "personalization" in sections:
        result["personalization"] = bench_personalization(lm)
    if "memory" in sections:
        result["memory"] = bench_memory()
    return result
