"""The ``fints-agent`` command line: demo, bench, eval, tune and memory management.

Examples:
    fints-agent demo
    fints-agent bench --only steering,load
    fints-agent eval personal --data examples/data/personal_webapi.jsonl --method rag+steer
    fints-agent eval bfcl --category simple_python --limit 50
    fints-agent memory stats --store ./memory
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from fints_agent.demo import run_demo

    run_demo(store=args.store, fresh=not args.keep)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from fints_agent.bench import SECTIONS, run_bench

    sections = list(SECTIONS) if args.only is None else [s.strip() for s in args.only.split(",")]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    result = run_bench(sections)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fints-agent``."""
    parser = argparse.ArgumentParser(
        prog="fints-agent",
        description="Per-user activation steering for tool-calling agents (Fints).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="two users, same requests, different tool calls")
    demo.add_argument("--store", default=None, help="memory directory (default: a temp dir)")
    demo.add_argument("--keep", action="store_true", help="keep the store's old contents")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="print every speed figure as JSON")
    bench.add_argument("--only", default=None, help="comma-separated sections")
    bench.add_argument("--out", default=None, help="also write the JSON to this file")
    bench.set_defaults(func=_cmd_bench)

    try:
        from fints_agent.memory.cli import add_memory_commands

        add_memory_commands(sub)
    except ImportError:  # pragma: no cover - the memory package is part of the project
        pass
    try:
        from fints_agent.eval.cli import add_eval_commands

        add_eval_commands(sub)
    except ImportError:  # pragma: no cover
        pass
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fints-agent``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"fints-agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
