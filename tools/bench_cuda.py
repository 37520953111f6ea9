"""Speed of steered and grammar-constrained decoding on a CUDA device, as JSON.

Builds a model of the default model's architecture (its ``config.json`` and tokenizer, from a
folder such as the model cache ``~/.cache/fints_agent/smollm2-135m-instruct``) on the GPU and runs
the same measurements as ``fints-agent bench steering constrained``, in float32 and bfloat16.
With ``--random-weights`` the weights are random instead of loaded: decode speed depends on the
shapes, not on the weight values, so a machine that only receives the config and tokenizer still
measures the ratios (the constrained figures then decode calls of whatever length random weights
produce; their tokens/s stay comparable).

Example:
    python tools/bench_cuda.py --model-dir ~/.cache/fints_agent/smollm2-135m-instruct
    python tools/bench_cuda.py --model-dir DIR --random-weights --repeats 10
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(model_dir: Path, dtype: torch.dtype, random_weights: bool) -> Any:
    """The model on the GPU, wrapped for the benchmarks."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from fints_agent.models import wrap_model

    tok = AutoTokenizer.from_pretrained(model_dir)
    if random_weights:
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    return wrap_model(model.to("cuda"), tok, name=model_dir.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="config.json + tokenizer")
    parser.add_argument("--random-weights", action="store_true", help="do not load weights")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    parser.add_argument("--tokens", type=int, default=48, help="tokens per steering run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2

    from fints_agent.bench import bench_constrained, bench_steering

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model_dir": args.model_dir.name,
        "random_weights": args.random_weights,
        "runs": {},
    }
    for name in args.dtypes.split(","):
        start = time.perf_counter()
        lm = build(args.model_dir, DTYPES[name], args.random_weights)
        torch.cuda.synchronize()
        built = time.perf_counter() - start
        report["runs"][name] = {
            "build_s": round(built, 2),
            "steering": bench_steering(lm, tokens=args.tokens, repeats=args.repeats),
            "constrained": bench_constrained(lm, repeats=args.repeats),
            "max_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        }
        del lm
        torch.cuda.empty_cache()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
