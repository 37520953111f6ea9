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
import json
import sys
from pathlib import Path
from typing import Any

from fints_agent.config import VECTOR_KINDS

__all__ = ["COMPARED", "add_eval_commands", "personal_table", "set_threads"]


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


def _print(result: Any, out: str | None = None) -> None:
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")


def _config(args: argparse.Namespace, fingerprint: str) -> Any:
    from fints_agent.config import Preset

    if getattr(args, "config", None):
        cfg = Preset.model_validate(json.loads(Path(args.config).read_text()))
    else:
        cfg = Preset.for_model(fingerprint)
    if getattr(args, "recency_half_life", None) is not None:
        cfg = cfg.replace(recency_half_life=args.recency_half_life)
    if getattr(args, "vectors", None) is not None:
        cfg = cfg.replace(vector_kind=args.vectors)
    return cfg


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op threads; ``None`` or 0: one thread on a busy machine, else as is.

    On a machine whose load average already reaches its core count, one thread per process is
    about twice as fast as several threads competing for the same cores (measured on 2 cores).

    Args:
        threads: Threads to use (``None``/0: automatic).

    Returns:
        The number of threads now in use.
    """
    import os

    import torch

    if threads:
        torch.set_num_threads(threads)
    else:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0] >= cores
        except OSError:  # pragma: no cover - platforms without load averages
            busy = False
        if busy:
            torch.set_num_threads(1)
    return int(torch.get_num_threads())


def _load_model(args: argparse.Namespace) -> Any:
    from fints_agent.models import load_model

    set_threads(args.threads)
    return load_model(args.model)


COMPARED: tuple[str, ...] = ("zero-shot", "rag")
"""The baselines ``eval personal --compare`` runs beside the chosen method."""


def _personal_methods(method: str, compare: bool) -> list[str]:
    """The methods one ``eval personal`` command runs, in the order they are reported."""
    from fints_agent.eval.personal import METHODS

    wanted = {method, *COMPARED} if compare else {method}
    return [m for m in METHODS if m in wanted]


def _cmd_personal(args: argparse.Namespace) -> int:
    from fints_agent.eval.dataset import load_records
    from fints_agent.eval.personal import run_personal

    records = load_records(args.data)  # data errors surface before the model loads
    lm = _load_model(args)
    config = _config(args, lm.fingerprint)
    summaries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    told = False
    for method in _personal_methods(args.method, args.compare):
        # Every method reads the same kept history store: the first run records it (or
        # reuses it), the others reuse it; --fresh applies to the first only.
        run = run_personal(
            lm,
            records,
            method,
            config=config,
            k=args.k,
            online=args.online,
            limit=args.limit,
            batch_size=args.batch_size,
            copy_strings=args.copy_strings,
            embedder=args.embedder,
            progress=not args.quiet,
            cache=True,
            fresh=args.fresh and not told,
        )
        if method != "zero-shot" and not told:
            told = True
            if not args.quiet:
                print(_recorded_line(run.summary), file=sys.stderr, flush=True)
        rows.extend(run.rows())
        summaries.append(run.summary)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        for summary in summaries:
            summary["rows_file"] = str(args.out)
    if args.json:
        _print(summaries if args.compare else summaries[0])
    else:
        print(personal_table(summaries, data=args.data.name))
    return 0


def _count(rate: float | None, n: int) -> str:
    if rate is None:
        return "-"
    return f"{rate:.3f} ({round(rate * n)}/{n})"


def personal_table(summaries: list[dict[str, Any]], data: str | None = None) -> str:
    """A short table of ``eval personal`` summaries, one row per method.

    Args:
        summaries: :func:`~fints_agent.eval.personal.run_personal` summaries.
        data: The dataset's name, for the heading.

    Returns:
        A heading (data, model, turns and users), the table (method, function and call
        accuracy with their counts, valid rate, turns, seconds spent answering) and a hint
        about ``--json``.

    Example:
        >>> print(personal_table([run.summary]))
        personal_small.jsonl · model tiny (0123456789abcdef) · 8 test turns of 2 users
        method     function acc   call acc       valid  turns  seconds
        steer      0.625 (5/8)    0.375 (3/8)    1.000      8      1.2
    """
    first = summaries[0]
    heading = [data] if data else []
    if first.get("model"):
        heading.append(f"model {first['model']} ({first.get('fingerprint')})")
    heading.append(f"{first.get('n', 0)} test turns of {first.get('users', 0)} users")
    header = ("method", "function acc", "call acc", "valid", "turns", "seconds")
    table = [header]
    for s in summaries:
        n = int(s.get("n") or 0)
        valid = s.get("valid_rate")
        table.append(
            (
                str(s.get("method")),
                _count(s.get("function_acc"), n),
                _count(s.get("call_acc"), n),
                "-" if valid is None else f"{valid:.3f}",
                str(n),
                f"{float(s.get('eval_seconds') or 0.0):.1f}",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [" · ".join(heading)]
    for row in table:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2])]
        cells += [cell.rjust(width) for cell, width in zip(row[3:], widths[3:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.append("(--json prints every figure: arg accuracy, latency, breakdowns, config)")
    return "\n".join(lines)


def _recorded_line(summary: dict[str, Any]) -> str:
    n, seconds, store = (
        summary.get("recorded_trajectories", 0),
        summary.get("ingest_seconds", 0.0),
        summary.get("history_store"),
    )
    if n:
        return f"eval personal: recorded {n} trajectories in {seconds:.1f}s into {store}"
    return f"eval personal: recorded 0 trajectories (reused {store})"


def _cmd_bfcl(args: argparse.Namespace) -> int:
    from fints_agent.eval.bfcl import load_bfcl
    from fints_agent.eval.run_bfcl import run_bfcl, run_bfcl_no_harm

    if (args.steer_from_user is None) != (args.data is None):
        print(
            "fints-agent eval bfcl: error: --steer-from-user and --data go together",
            file=sys.stderr,
        )
        return 2
    load_bfcl(args.category, 1)  # an unknown category fails before the model loads
    records = None
    if args.data is not None:
        from fints_agent.eval.dataset import load_records

        records = load_records(args.data)
        if not any(r.user_id == args.steer_from_user and r.split == "history" for r in records):
            raise ValueError(f"user {args.steer_from_user!r} has no history records in {args.data}")
    lm = _load_model(args)
    cfg = _config(args, lm.fingerprint)
    if records is not None:
        result = run_bfcl_no_harm(
            lm,
            args.category,
            records,
            args.steer_from_user,
            limit=args.limit,
            batch_size=args.batch_size,
            config=cfg,
            embedder=args.embedder,
            progress=not args.quiet,
        )
    else:
        result = run_bfcl(
            lm,
            args.category,
            limit=args.limit,
            batch_size=args.batch_size,
            config=cfg,
            progress=not args.quiet,
        )
    _print(result, args.out)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from fints_agent.eval.dataset import load_records
    from fints_agent.eval.tune import tune

    records = load_records(args.data)
    lm = _load_model(args)
    result = tune(
        lm,
        records,
        budget_minutes=args.budget,
        users=args.users,
        dev_per_user=args.dev_per_user,
        batch_size=args.batch_size,
        embedder=args.embedder,
        save=not args.no_save,
        progress=not args.quiet,
        store=args.store,
        cache=args.store is None,
        fresh=args.fresh,
        copy_strings=args.copy_strings,
        start=_config(args, lm.fingerprint) if args.vectors else None,
        steps=[x.strip() for x in args.steps.split(",") if x.strip()] if args.steps else None,
    )
    _print(result, args.out)
    return 0


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
    personal.add_argument(
        "--online", action="store_true", help="record each test turn's gold call after it"
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
    personal.add_argument("--config", type=_existing_file, default=None, help="preset JSON (fints_agent.config.Preset)")
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
    personal.set_defaults(func=_cmd_personal)

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
    bfcl.add_argument("--config", type=_existing_file, default=None, help="preset JSON (fints_agent.config.Preset)")
    bfcl.add_argument(
        "--embedder", default="minilm", choices=("minilm", "lm"), help="retrieval embedder"
    )
    bfcl.add_argument("--out", default=None, help="also write the JSON here")
    _common(bfcl)
    bfcl.set_defaults(func=_cmd_bfcl)

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
        "layers, sites, coefficient_refine, gate, decisions, k, temperature, min_similarity, "
        "recency_half_life)",
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
    tune.set_defaults(func=_cmd_tune)
