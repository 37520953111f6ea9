"""What ``fints-agent eval {personal,bfcl}`` and ``fints-agent tune`` do with parsed arguments.

Each command loads the records first (data errors surface before the model loads), then the
model (:func:`set_threads`) and its preset (``--config``, ``--vectors`` and
``--recency-half-life`` applied), runs, and prints JSON or, for ``eval personal``, a table
(:func:`personal_table`). The arguments are declared in :mod:`fints_agent.eval.cli`.

Example:
    >>> print(personal_table([run.summary], data="personal_small.jsonl"))
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "COMPARED",
    "cmd_bfcl",
    "cmd_personal",
    "cmd_tune",
    "personal_table",
    "set_threads",
]


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


def cmd_personal(args: argparse.Namespace) -> int:
    """Runs ``fints-agent eval personal`` with parsed arguments; returns the exit status."""
    from fints_agent.eval.dataset import load_records
    from fints_agent.eval.personal import corrections_records, run_corrections, run_personal

    records = load_records(args.data)  # data errors surface before the model loads
    corrections = bool(getattr(args, "corrections", False))
    if corrections:
        corrections_records(records)  # no changed user: say so before the model loads
    lm = _load_model(args)
    config = _config(args, lm.fingerprint)
    summaries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    told = False
    for method in _personal_methods(args.method, args.compare):
        # Every method reads the same kept history store: the first run records it (or
        # reuses it), the others reuse it; --fresh applies to the first only.
        how: dict[str, Any] = {} if corrections else {"online": args.online}
        run = (run_corrections if corrections else run_personal)(
            lm,
            records,
            method,
            config=config,
            k=args.k,
            **how,
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
        if corrections:
            print(corrections_table(summaries))
    return 0


def corrections_table(summaries: list[dict[str, Any]]) -> str:
    """Per method, the share of turns following the new preference after 0, 1, 2, 3+
    corrections (``eval personal --corrections``).

    Example:
        >>> print(corrections_table([run.summary]))
        follows the new preference after N corrections (turns where the change matters)
        method     0              1              2              3+
        rag+steer  0.250 (2/8)    0.875 (7/8)    1.000 (8/8)    1.000 (12/12)
    """
    keys = sorted(
        {k for s in summaries for k in s.get("by_corrections", {})},
        key=lambda k: int(k.rstrip("+")),
    )
    table = [("method", *keys)]
    for s in summaries:
        groups = s.get("by_corrections", {})
        table.append(
            (
                str(s.get("method")),
                *(
                    _count(groups[k]["follows_new"], groups[k]["n"]) if k in groups else "-"
                    for k in keys
                ),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["follows the new preference after N corrections (turns where the change matters)"]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


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


def cmd_bfcl(args: argparse.Namespace) -> int:
    """Runs ``fints-agent eval bfcl`` with parsed arguments; returns the exit status."""
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


def cmd_tune(args: argparse.Namespace) -> int:
    """Runs ``fints-agent tune`` with parsed arguments; returns the exit status."""
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
