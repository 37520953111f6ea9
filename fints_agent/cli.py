"""The ``fints-agent`` command line: demo, bench, eval, tune and memory management.

Examples:
    fints-agent setup                # the default model and the retrieval embedder
    fints-agent setup --eval         # ... and the BFCL data
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``fints-agent``.

    Building it imports no torch, transformers, chromadb or LangChain: every command imports
    what it needs when it runs.

    Args:
        command: Build only this sub-command's parser in full, the others with their name and
            help only where building them would import heavy modules (what :func:`main` does,
            so that ``--help`` stays fast). None: every sub-command in full.
    """
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

    from fints_agent.install import add_setup_command

    add_setup_command(sub)
    if command in (None, "memory"):
        from fints_agent.memory.cli import add_memory_commands

        add_memory_commands(sub)
    else:
        # Only the memory commands' name and help are needed unless the command line asks
        # for them.
        sub.add_parser("memory", help=MEMORY_HELP)
    from fints_agent.eval.cli import add_eval_commands

    add_eval_commands(sub)
    return parser


MEMORY_HELP = "inspect and manage the trajectory memory"
"""Help line of ``fints-agent memory`` (the same as :mod:`fints_agent.memory.cli` gives)."""


def _command_of(argv: Sequence[str]) -> str:
    """The sub-command named on a command line (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fints-agent``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command=_command_of(words))
    args = parser.parse_args(words)
    try:
        return int(args.func(args))
    except _user_errors() as exc:
        print(f"fints-agent: error: {exc}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors reported as one line (bad input, a missing package) rather than a traceback.

    The model's and the embedder's errors count only once their module is loaded, which it is
    whenever one of them was raised: looking them up does not import torch.
    """
    from fints_agent.install import MissingPackageError

    errors: list[type[Exception]] = [ValueError, FileNotFoundError, MissingPackageError]
    for module, name in (
        ("fints_agent.models", "ModelLoadError"),
        ("fints_agent.memory.embed", "EmbedderError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            errors.append(getattr(loaded, name))
    return tuple(errors)


if __name__ == "__main__":
    raise SystemExit(main())
