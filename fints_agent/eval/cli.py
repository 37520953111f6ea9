"""``fints-agent eval {personal,bfcl}`` and ``fints-agent tune``.

Examples:
    fints-agent eval personal --data examples/data/personal_webapi.jsonl --method rag+steer
    fints-agent eval personal --data examples/data/personal_webapi.jsonl --method steer --compare
    fints-agent eval personal --data examples/data/personal_webapi.jsonl --method rag --json
    fints-agent eval personal --data examples/data/personal_webapi.jsonl --method steer --online
    fints-agent eval personal --data examples/data/personal_webapi.jsonl --method knn --fresh
    fints-agent eval bfcl --category simple_python --limit 50
    fints-agent eval bfcl --category simple_python --limit 50 --steer-from-user u05 \\
        --data examples/data/personal_webapi.jsonl
    fints-agent tune --data examples/data/personal_webapi.jsonl --budget 25
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fints_agent.config import VECTOR_KINDS
from fints_agent.eval.commands import cmd_bfcl, cmd_personal, cmd_tune

__all__ = ["add_eval_commands"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="model name or path (default: the embedded SmolLM2-135M)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=8, help="turns per padded batch (default 8)"
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads (default: 1 when the machine is already busy, else torch's default)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_eval_commands(subparsers: Any) -> None:
    """Registers ``eval {personal,bfcl}`` and ``tune`` on the ``fints-agent`` sub-parsers.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.
    """
    from fints_agent.eval.bfcl import AST_CATEGORIES
    from fints_agent.eval.personal import METHODS

    evaluate = subparsers.add_parser("eval", help="personalized benchmark and BFCL")
    which = evaluate.add_subparsers(dest="eval_command", required=True)

    personal = which.add_parser(
        "personal",
        help="the personalized tool-calling benchmark",
        description="Record the history of every user answered into a memory, answer their "
        "test turns with tool_choice='any', print a table of the scores (--json: every figure "
        "as JSON; --compare: zero-shot and rag beside the method). The recorded memory is "
        "kept in the user cache ($FINTS_AGENT_CACHE, else ~/.cache/fints_agent) and reused by "
        "later runs on the same history records, model, vector kind and embedder "
        "(recorded_trajectories is then 0); --fresh records it again.",
    )
    personal.add_argument("--data", type=_existing_file, required=True, help="JSON Lines dataset")
    personal.add_argument("--method", choices=METHODS, required=True, help="how history is used")
    personal.add_argument(
        "--k", type=_positive_int, default=None, help="trajectories per turn (default: config, 5)"
    )
    how = personal.add_mutually_exclusive_group()
    how.add_argument(
        "--online", action="store_true", help="record each test turn's gold call after it"
    )
    how.add_argument(
        "--corrections",
        action="store_true",
        help="users whose preference changed only: history before the change, then every "
        "turn after it answered and corrected (the model's call rejected when wrong); prints "
        "the share following the new preference after 0, 1, 2, 3+ corrections",
    )
    personal.add_argument(
        "--limit", type=_positive_int, default=None, help="test turns, spread over users"
    )
    personal.add_argument(
        "--out",
        default=None,
        help="write per-turn results (JSON Lines; with --compare, every method's rows)",
    )
    personal.add_argument(
        "--json", action="store_true", help="print the full summary as JSON instead of a table"
    )
    personal.add_argument(
        "--compare",
        action="store_true",
        help="also run zero-shot and rag on the same turns and memory, as rows of the table "
        "(with --json: a list of summaries)",
    )
    personal.add_argument(
        "--config",
        type=_existing_file,
        default=None,
        help="preset JSON (fints_agent.config.Preset)",
    )
    personal.add_argument(
        "--recency-half-life",
        type=_positive_float,
        default=None,
        help="halve a trajectory's weight every N newer turns of its user",
    )
    personal.add_argument(
        "--embedder", default="minilm", choices=("minilm", "lm"), help="retrieval embedder"
    )
    personal.add_argument(
        "--copy-strings",
        action="store_true",
        help="free string arguments only as spans of the request (every model method)",
    )
    personal.add_argument(
        "--vectors",
        choices=VECTOR_KINDS,
        default=None,
        help="how history vectors are computed (default: the steering configuration's)",
    )
    personal.add_argument(
        "--fresh",
        action="store_true",
        help="record the history again instead of reusing the copy kept in the user cache "
        "(the kept copy is replaced)",
    )
    _common(personal)
    personal.set_defaults(func=cmd_personal)

    bfcl = which.add_parser(
        "bfcl",
        help="BFCL single-turn categories with constrained decoding",
        description="Answer BFCL cases and grade them with the official AST checker. With "
        "--steer-from-user, compare unsteered and steered with that user's mean vector.",
    )
    bfcl.add_argument("--category", choices=AST_CATEGORIES, required=True)
    bfcl.add_argument("--limit", type=_positive_int, default=None, help="first N cases")
    bfcl.add_argument("--steer-from-user", default=None, help="user of --data whose memory steers")
    bfcl.add_argument("--data", type=_existing_file, default=None, help="personalized dataset")
    bfcl.add_argument(
        "--config",
        type=_existing_file,
        default=None,
        help="preset JSON (fints_agent.config.Preset)",
    )
    bfcl.add_argument(
        "--embedder", default="minilm", choices=("minilm", "lm"), help="retrieval embedder"
    )
    bfcl.add_argument("--out", default=None, help="also write the JSON here")
    _common(bfcl)
    bfcl.set_defaults(func=cmd_bfcl)

    tune = subparsers.add_parser(
        "tune",
        help="tune the steering configuration on history records",
        description="Coordinate search over layers, sites, coefficient, gate, steer_prompt, k "
        "and temperature on a dev split of the HISTORY records (test records are never read); "
        "saves the best as the model's preset. The recorded history is kept in "
        "the user cache (or --store) and reused by later runs on the same records, model and "
        "vector settings; --fresh records it again.",
    )
    tune.add_argument("--data", type=_existing_file, required=True, help="JSON Lines dataset")
    tune.add_argument(
        "--budget", type=_positive_float, default=25.0, help="minutes of search (default 25)"
    )
    tune.add_argument(
        "--users",
        type=_positive_int,
        default=12,
        help="tune on this many users, spread over user kinds (default 12)",
    )
    tune.add_argument(
        "--dev-per-user",
        type=_positive_int,
        default=3,
        help="latest history records per user held out as dev (default 3)",
    )
    tune.add_argument("--no-save", action="store_true", help="do not save the best config")
    tune.add_argument(
        "--store",
        default=None,
        help="keep the recorded history in this directory instead of the user cache, and "
        "reuse it on the next run",
    )
    tune.add_argument(
        "--fresh",
        action="store_true",
        help="record the history again instead of reusing a kept copy (the copy is replaced)",
    )
    tune.add_argument(
        "--steps",
        default=None,
        help="comma-separated search steps to run (default all: steer_prompt, coefficient, "
        "layers, sites, coefficient_refine, gate, decisions, value_coefficient, k, "
        "softmax_temperature, min_similarity, recency_half_life)",
    )
    tune.add_argument(
        "--embedder", default="minilm", choices=("minilm", "lm"), help="retrieval embedder"
    )
    tune.add_argument(
        "--copy-strings",
        action="store_true",
        help="answer dev turns with free strings as spans of the request (as eval personal)",
    )
    tune.add_argument(
        "--vectors",
        choices=VECTOR_KINDS,
        default=None,
        help="how history vectors are computed (default: the steering configuration's)",
    )
    tune.add_argument("--out", default=None, help="also write the JSON here")
    _common(tune)
    tune.set_defaults(func=cmd_tune)
