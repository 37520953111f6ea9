"""Runs every evaluation and writes ``docs/results.md`` with plots (one command).

What it runs, on the embedded default model unless ``--model`` says otherwise, for each
personalized dataset (``--data``, default both generated ones: ``personal_webapi.jsonl`` and
``personal_lifestyle.jsonl``, seven domains each, no domain in common):

1. The personalized benchmark: every method of :data:`fints_agent.eval.personal.METHODS` on the
   same test turns, from one memory holding every user's history (recorded once, kept in the
   user cache and shared by the methods; offline protocol).
2. What corrections add: ``rag+steer`` on the same turns and memory with the supersession
   marks ignored (what a memory recorded with ``Memory(supersede_corrected=False)`` retrieves).
3. One correction is enough: the corrections protocol (``eval personal --corrections``) on the
   users whose preference changed, every method with a memory: every turn after the change
   answered, then corrected.
4. BFCL, unsteered (``simple_python``, ``multiple``, ``parallel``, ``irrelevance``,
   ``live_simple``, the first ``--bfcl-limit`` cases of each), and BFCL "no harm"
   (``simple_python`` steered with one user's mean vector). ``--bfcl-from`` carries these
   figures over from an earlier ``results.json`` instead (the report says so).

Outputs (``--out-dir``, default ``docs``): ``results.md``, ``results.json``, per dataset
``accuracy_by_history_<data>.png``, ``changed_preference_<data>.png`` and
``corrections_<data>.png``, and every run's summary and per-turn rows under
``results/<data>/``. With ``--reuse``, a run whose summary is already there is read instead of
run again (only for outputs of the same checkout).

Usage::

    python tools/make_results.py --copy-strings           # everything (2-3 hours on 2 cores)
    python tools/make_results.py --limit 60 --bfcl-limit 10   # a quick pass
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASETS = (
    ROOT / "examples" / "data" / "personal_webapi.jsonl",
    ROOT / "examples" / "data" / "personal_lifestyle.jsonl",
)
BFCL_CATEGORIES = ("simple_python", "multiple", "parallel", "irrelevance", "live_simple")
ABLATED = ("steer", "rag+steer")
"""Methods also run with the trajectories that corrections superseded mixed as before."""


def ablation_label(method: str) -> str:
    """The label of a method's run with superseded trajectories mixed."""
    return f"{method}, no superseding"


LM_METHODS = ("zero-shot", "rag", "steer", "rag+steer")
CORRECTION_TARGETS = {"rag+steer": {"1": 0.8, "2": 0.9}, "steer": {"1": 0.7}}


def _log(text: str) -> None:
    print(f"[make_results {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def _methods() -> tuple[str, ...]:
    from fints_agent.eval.personal import METHODS

    return METHODS


# --------------------------------------------------------------------------------------------
# Runs, kept as files
# --------------------------------------------------------------------------------------------


class Runs:
    """Runs of one dataset: summaries and per-turn rows, kept under ``folder``."""

    def __init__(self, folder: Path, reuse: bool) -> None:
        self.folder = folder
        self.reuse = reuse
        folder.mkdir(parents=True, exist_ok=True)

    def get(
        self, kind: str, label: str, run: Callable[[], Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The summary and rows of a run: read when kept (with ``reuse``), else run and kept."""
        base = self.folder / f"{kind}_{_slug(label)}"
        summary_path, rows_path = base.with_suffix(".json"), base.with_suffix(".jsonl")
        if self.reuse and summary_path.exists() and rows_path.exists():
            _log(f"reusing {summary_path}")
            summary = json.loads(summary_path.read_text())
            rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line]
        else:
            _log(f"{self.folder.name}: {kind} {label}")
            result = run()
            summary, rows = result.summary, result.rows()
            result.write_rows(rows_path)
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        summary["label"] = label
        return summary, rows


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    if not n:
        return {"n": 0, "function_acc": None, "call_acc": None}
    return {
        "n": n,
        "function_acc": round(sum(bool(r["function"]) for r in rows) / n, 4),
        "call_acc": round(sum(bool(r["call"]) for r in rows) / n, 4),
    }


def _sparse(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Turns of users with 1-2 history records in the turn's domain."""
    return _rates([r for r in rows if 1 <= int(r.get("n_history_domain", 0)) <= 2])


def _constant(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Turns of users whose preference did not change."""
    return _rates([r for r in rows if r.get("user_kind") != "changed"])


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _personal_table(summaries: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| method | n | function_acc | arg_acc | call_acc | valid_rate | prompt tokens "
        "| p50 latency (s/turn) | p95 latency (s/turn) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        p50 = s["p50_latency_ms"] / 1000 if s.get("p50_latency_ms") is not None else None
        p95 = s["p95_latency_ms"] / 1000 if s.get("p95_latency_ms") is not None else None
        lines.append(
            f"| {s['label']} | {s['n']} | {_fmt(s['function_acc'])} | {_fmt(s['arg_acc'])} "
            f"| {_fmt(s['call_acc'])} | {_fmt(s['valid_rate'])} "
            f"| {_fmt(s.get('mean_prompt_tokens'), 0)} | {_fmt(p50, 2)} | {_fmt(p95, 2)} |"
        )
    return lines


def _groups_table(groups: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Function / call accuracy per group; ``groups`` maps a method to its groups."""
    names = sorted({k for g in groups.values() for k in g})
    lines = [
        "| method | " + " | ".join(f"{k} function / call" for k in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, g in groups.items():
        cells = []
        for k in names:
            part = g.get(k)
            cells.append(
                f"{_fmt(part['function_acc'])} / {_fmt(part['call_acc'])} (n={part['n']})"
                if part and part.get("n")
                else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _changed_table(rates: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| method | turns where the change matters | new preference followed "
        "| old preference followed | neither |",
        "|---|---|---|---|---|",
    ]
    for label, r in rates.items():
        lines.append(
            f"| {label} | {r['n']} | {_fmt(r['new'])} | {_fmt(r['old'])} | {_fmt(r['neither'])} |"
        )
    return lines


def _corrections_table(curves: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    keys = sorted({k for c in curves.values() for k in c}, key=lambda k: int(k.rstrip("+")))
    lines = [
        "| method | " + " | ".join(f"after {k}" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for label, curve in curves.items():
        cells = [
            f"{_fmt(curve[k]['follows_new'])} (n={curve[k]['n']})" if k in curve else "-"
            for k in keys
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _bfcl_table(reports: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| category | n | accuracy | valid_rate | prompt tokens | mean latency (s/case) |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        latency = r["mean_latency_ms"] / 1000 if r.get("mean_latency_ms") is not None else None
        lines.append(
            f"| {r['category']} | {r['n']} | {_fmt(r['accuracy'])} | {_fmt(r['valid_rate'])} "
            f"| {_fmt(r.get('mean_prompt_tokens'), 0)} | {_fmt(latency, 2)} |"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def targets(data: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The personalization targets of one dataset: ``(target, measured, reached)`` rows."""
    by = data["summaries"]
    changed = data["changed"]
    curves = data["curves"]
    rows: list[tuple[str, str, bool | None]] = []

    def value(label: str, *path: str) -> float | None:
        node: Any = by.get(label)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return None if node is None else float(node)

    def compare(what: str, a: str, b: str, need: float, *path: str) -> None:
        x, y = value(a, *path), value(b, *path)
        if x is None or y is None:
            rows.append((what, "not run", None))
            return
        measured = f"{a} {x:.3f} vs {b} {y:.3f} ({100 * (x - y):+.1f} points)"
        rows.append((what, measured, x - y >= need - 1e-9))

    for label, need in (("rag+steer", 0.8), ("steer", 0.6)):
        rate = changed.get(label)
        rows.append(
            (
                f"changed users: {label} follows the new preference in >= {need:.2f} of turns",
                f"{_fmt(rate['new'])} of {rate['n']} turns" if rate else "not run",
                (rate["new"] or 0.0) >= need if rate else None,
            )
        )
    for method in ABLATED:
        before = data["constant"].get(ablation_label(method))
        after = data["constant"].get(method)
        if not (before and after):
            continue
        drop = (before["call_acc"] or 0.0) - (after["call_acc"] or 0.0)
        rows.append(
            (
                f"constant users: {method} call accuracy drops by <= 1 point with superseding",
                f"{after['call_acc']:.3f} vs {before['call_acc']:.3f} without "
                f"({-100 * drop:+.1f} points, n={after['n']})",
                drop <= 0.01 + 1e-9,
            )
        )
    for label, wanted in CORRECTION_TARGETS.items():
        curve = curves.get(label, {})
        for key, need in wanted.items():
            got = curve.get(key)
            rows.append(
                (
                    f"corrections: {label} follows the new preference in >= {need:.2f} of turns "
                    f"after {key} correction{'s' if key != '1' else ''}",
                    f"{got['follows_new']:.3f} (n={got['n']})" if got else "not run",
                    got["follows_new"] >= need if got else None,
                )
            )
    compare("rag+steer call accuracy >= rag + 8 points", "rag+steer", "rag", 0.08, "call_acc")
    compare(
        "preference-decided turns: rag+steer call accuracy >= rag + 10 points",
        "rag+steer",
        "rag",
        0.10,
        "by_decider",
        "preference",
        "call_acc",
    )
    best = max(
        (m for m in LM_METHODS if m in by), key=lambda m: by[m]["call_acc"] or 0.0, default=None
    )
    if best is not None and "knn" in by:
        compare(
            f"the best model method ({best}) beats knn by >= 5 call points",
            best,
            "knn",
            0.05,
            "call_acc",
        )
    compare(
        "request-decided turns: steer function accuracy >= zero-shot's",
        "steer",
        "zero-shot",
        0.0,
        "by_decider",
        "request",
        "function_acc",
    )
    compare(
        "request-decided turns: rag+steer function accuracy >= rag's",
        "rag+steer",
        "rag",
        0.0,
        "by_decider",
        "request",
        "function_acc",
    )
    sparse = data["sparse"]
    if "rag+steer" in sparse and "rag" in sparse:
        x, y = sparse["rag+steer"]["call_acc"], sparse["rag"]["call_acc"]
        if x is not None and y is not None:
            rows.append(
                (
                    "sparse (1-2 history records in the domain): rag+steer call >= rag + 5 points",
                    f"rag+steer {x:.3f} vs rag {y:.3f} ({100 * (x - y):+.1f} points, "
                    f"n={sparse['rag']['n']})",
                    x - y >= 0.05 - 1e-9,
                )
            )
    return rows


def _targets_table(rows: list[tuple[str, str, bool | None]]) -> list[str]:
    lines = ["| target | measured | reached |", "|---|---|---|"]
    for what, measured, ok in rows:
        mark = "-" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {what} | {measured} | {mark} |")
    return lines


# --------------------------------------------------------------------------------------------
# One dataset
# --------------------------------------------------------------------------------------------


def run_dataset(
    args: argparse.Namespace, lm: Any, config: Any, path: Path, methods: list[str]
) -> dict[str, Any]:
    """Every personalized run of one dataset, its plots, and what the report needs."""
    from fints_agent.eval.dataset import group_by_user, load_records
    from fints_agent.eval.personal import (
        history_memory,
        run_corrections,
        run_personal,
        select_test_records,
    )
    from fints_agent.eval.plots import (
        changed_preference_rates,
        plot_accuracy_by_history,
        plot_changed_preference,
        plot_corrections,
    )

    records = load_records(path)
    stem = path.stem
    runs = Runs(args.out_dir / "results" / stem, args.reuse)
    common = {
        "config": config,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "copy_strings": args.copy_strings,
        "cache": True,
        "progress": not args.quiet,
    }
    summaries: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        summaries[method], rows[method] = runs.get(
            "personal", method, functools.partial(run_personal, lm, records, method, **common)
        )

    def ablation(method: str) -> Any:
        # The same kept store with supersession marks ignored: what a memory recorded with
        # supersede_corrected=False retrieves (the vectors do not depend on the marks).
        picked = select_test_records(group_by_user(records), args.limit)
        answered = [r for r in records if r.user_id in picked]
        options = {"vectors": config.vector_kind}
        with history_memory(
            lm, answered, cache=True, options=options, progress=not args.quiet
        ) as kept:
            memory = kept.memory
            memory.retrieve = functools.partial(  # type: ignore[method-assign]
                memory.retrieve, include_superseded=True
            )
            return run_personal(
                lm,
                records,
                method,
                config=config,
                limit=args.limit,
                batch_size=args.batch_size,
                copy_strings=args.copy_strings,
                memory=memory,
                progress=not args.quiet,
            )

    for method in [m for m in ABLATED if m in methods]:
        label = ablation_label(method)
        summaries[label], rows[label] = runs.get(
            "personal", label, functools.partial(ablation, method)
        )
    curves: dict[str, dict[str, Any]] = {}
    corrections: dict[str, dict[str, Any]] = {}
    for method in [m for m in methods if m != "zero-shot"]:  # no memory: nothing to correct
        summary, _ = runs.get(
            "corrections",
            method,
            functools.partial(run_corrections, lm, records, method, **{**common, "limit": None}),
        )
        corrections[method] = summary
        curves[method] = summary["by_corrections"]

    changed = {
        label: changed_preference_rates([r for r in rows[label] if r.get("user_kind") == "changed"])
        for label in rows
    }
    n_test = summaries[methods[0]]["n"]
    users = summaries[methods[0]]["users"]
    about = f"{path.name}, test split ({n_test} turns of {users} users)"
    images = [
        plot_accuracy_by_history(
            {m: rows[m] for m in methods},
            args.out_dir / f"accuracy_by_history_{stem}.png",
            title="Call accuracy by history records of the user in the turn's domain",
            model=lm.name,
            split=about,
        ).name,
        plot_changed_preference(
            {label: [r for r in rows[label] if r.get("user_kind") == "changed"] for label in rows},
            args.out_dir / f"changed_preference_{stem}.png",
            model=lm.name,
            split=f"{path.name}, test split, users whose preference changed",
        ).name,
        plot_corrections(
            curves,
            args.out_dir / f"corrections_{stem}.png",
            model=lm.name,
            split=f"{path.name}, users whose preference changed, every turn after the change",
            targets=CORRECTION_TARGETS["rag+steer"],
        ).name,
    ]
    return {
        "data": path.name,
        "summaries": summaries,
        "corrections": corrections,
        "curves": curves,
        "changed": changed,
        "sparse": {label: _sparse(r) for label, r in rows.items()},
        "constant": {label: _constant(r) for label, r in rows.items()},
        "images": images,
        "history_trajectories": sum(1 for r in records if r.split == "history"),
    }


def _dataset_section(data: dict[str, Any]) -> list[str]:
    main = [s for label, s in data["summaries"].items() if label in _methods()]
    every = list(data["summaries"].values())
    deciders = {s["label"]: s.get("by_decider", {}) for s in main}
    kinds = {s["label"]: s.get("by_user_kind", {}) for s in every}
    first: dict[str, Any] = next(iter(data["corrections"].values()), {})
    turns = first.get("n", 0)
    images = data["images"]
    return [
        f"## `{data['data']}`",
        "",
        *_personal_table(every),
        "",
        "`METHOD, no superseding`: the same turns and memory, with the trajectories that "
        "corrections superseded mixed as before (what superseding adds).",
        "",
        "By user kind (function / call accuracy):",
        "",
        *_groups_table(kinds),
        "",
        "By what decides the tool (`preference`: a rejected call names another tool, so the "
        "user's preference decides; `request`: the request does), function / call accuracy:",
        "",
        *_groups_table(deciders),
        "",
        "Sparse: turns whose user has 1-2 history records in the turn's domain:",
        "",
        *_groups_table({label: {"sparse": s} for label, s in data["sparse"].items()}),
        "",
        "### Targets",
        "",
        *_targets_table(targets(data)),
        "",
        "### Users whose preference changed",
        "",
        "Test turns of `changed` users where the old and the new preference give different "
        "calls; a prediction follows a preference when its tool and the enum and boolean "
        "arguments that differ between the two calls match that preference's call (free strings "
        "copied from the request are argument accuracy, not a preference).",
        "",
        *_changed_table(data["changed"]),
        "",
        "### One correction is enough",
        "",
        "The corrections protocol (`fints-agent eval personal --corrections`): the memory holds "
        "each changed user's history from before the change; every turn after it "
        f"({turns} turns, history and test) is answered, then recorded as the user's feedback, "
        "with the model's call rejected when it was wrong. Share of the turns where the change "
        "matters that follow the new preference, by the corrections the user gave in the "
        "domain before the turn (zero-shot has no memory to correct: its share is in the table "
        "above):",
        "",
        *_corrections_table(data["curves"]),
        "",
        f"![accuracy by history]({images[0]})",
        "",
        f"![changed preference]({images[1]})",
        "",
        f"![corrections]({images[2]})",
        "",
    ]


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Runs the evaluations and writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        default=None,
        help="personalized dataset (repeat for several; default: both generated datasets)",
    )
    parser.add_argument("--model", default=None, help="model (default: embedded SmolLM2-135M)")
    parser.add_argument("--limit", type=int, default=None, help="personal test turns (all)")
    parser.add_argument("--bfcl-limit", type=int, default=50, help="cases per BFCL category")
    parser.add_argument(
        "--bfcl-from",
        type=Path,
        default=None,
        help="carry the BFCL figures over from this earlier results.json instead of running",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="turns per padded batch")
    parser.add_argument("--methods", default=",".join(_methods()), help="comma-separated")
    parser.add_argument("--no-harm-user", default="u05", help="user whose vector steers BFCL")
    parser.add_argument("--skip-bfcl", action="store_true", help="personalized benchmark only")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="where to write")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (auto)")
    parser.add_argument(
        "--copy-strings",
        action="store_true",
        help="personalized benchmark: free string arguments only as spans of the request",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read runs already kept under OUT_DIR/results/ instead of running them again",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from fints_agent.config import Preset
    from fints_agent.eval.commands import set_threads
    from fints_agent.eval.personal import machine_info
    from fints_agent.models import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in _methods()]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(_methods())}")
    datasets = args.data or list(DATASETS)
    began = time.perf_counter()
    threads = set_threads(args.threads)
    lm = load_model(args.model)
    config = Preset.for_model(lm.fingerprint)
    tuned = Preset.source_for(lm.fingerprint) != "default"
    _log(f"model {lm.name} ({lm.fingerprint}), {threads} threads, tuned config: {tuned}")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    per_data = [run_dataset(args, lm, config, Path(p), methods) for p in datasets]

    bfcl_reports: list[dict[str, Any]] = []
    no_harm: dict[str, Any] | None = None
    bfcl_note = ""
    if args.bfcl_from is not None:
        earlier = json.loads(args.bfcl_from.read_text())
        if earlier.get("fingerprint") != lm.fingerprint:
            parser.error(f"{args.bfcl_from} is of another model")
        bfcl_reports, no_harm = earlier.get("bfcl", []), earlier.get("bfcl_no_harm")
        bfcl_note = " (carried over from an earlier run of the same model)"
    elif not args.skip_bfcl:
        from fints_agent.eval.dataset import load_records
        from fints_agent.eval.run_bfcl import run_bfcl, run_bfcl_no_harm

        for category in BFCL_CATEGORIES:
            _log(f"BFCL {category}")
            report = run_bfcl(
                lm, category, limit=args.bfcl_limit, batch_size=args.batch_size, config=config
            )
            report.pop("machine", None)
            bfcl_reports.append(report)
        _log(f"BFCL no harm, steered with {args.no_harm_user}'s mean vector")
        no_harm = run_bfcl_no_harm(
            lm,
            "simple_python",
            load_records(datasets[0]),
            args.no_harm_user,
            limit=args.bfcl_limit,
            batch_size=args.batch_size,
            config=config,
        )
        no_harm.pop("machine", None)

    total_s = time.perf_counter() - began
    # The machine the personalized runs reported (kept runs: theirs, not this process's).
    first: dict[str, Any] = next(iter(per_data[0]["summaries"].values()), {}) if per_data else {}
    machine = first.get("machine") or machine_info()
    report_md = _render(
        args, lm, config, tuned, machine, per_data, bfcl_reports, no_harm, bfcl_note
    )
    (args.out_dir / "results.md").write_text(report_md, encoding="utf-8")
    everything = {
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "machine": machine,
        "config": config.model_dump(),
        "tuned": tuned,
        "personal": [
            {
                **{k: v for k, v in d.items() if k != "images"},
                "targets": [{"target": t, "measured": m, "reached": ok} for t, m, ok in targets(d)],
            }
            for d in per_data
        ],
        "bfcl": bfcl_reports,
        "bfcl_no_harm": no_harm,
        "seconds": round(total_s, 1),
    }
    (args.out_dir / "results.json").write_text(json.dumps(everything, indent=2) + "\n")
    _log(f"wrote {args.out_dir / 'results.md'} in {total_s / 60:.1f} min")
    return 0


def _render(
    args: argparse.Namespace,
    lm: Any,
    config: Any,
    tuned: bool,
    machine: dict[str, Any],
    per_data: list[dict[str, Any]],
    bfcl_reports: list[dict[str, Any]],
    no_harm: dict[str, Any] | None,
    bfcl_note: str,
) -> str:
    cpu = machine.get("cpu") or machine.get("processor")
    command = (
        "python tools/make_results.py"
        + (f" --limit {args.limit}" if args.limit else "")
        + f" --bfcl-limit {args.bfcl_limit} --batch-size {args.batch_size}"
        + (" --copy-strings" if args.copy_strings else "")
    )
    lines = [
        "# Results",
        "",
        f"Model: **{lm.name}** (fingerprint `{lm.fingerprint}`). Machine: {cpu}, "
        f"{machine.get('cpu_count')} cores, {machine.get('torch_threads')} torch threads, "
        f"torch {machine.get('torch')}, {machine.get('platform')}. Greedy, grammar-constrained "
        "decoding (every call is schema-valid by construction).",
        "",
        f"Produced by `{command}`. Latencies are per turn, measured as the wall time of a "
        f"padded batch of {args.batch_size} turns divided by its rows, on a shared machine: "
        "compare them with each other, not with other machines.",
        "",
        "Steering configuration"
        + (
            " (chosen with `fints-agent tune` on history turns only):"
            if tuned
            else " (defaults; not tuned):"
        ),
        "",
        "```json",
        json.dumps(config.model_dump(), indent=2),
        "```",
        "",
        "# Personalized tool calling",
        "",
        "Two generated datasets with different seeds and no domain in common "
        "(`tools/make_personal_dataset.py`; `--domain-set webapi` and `--domain-set lifestyle`). "
        "In each, every user's history is recorded into one memory, then every method answers "
        'the same test turns with `tool_choice="any"`. `knn` copies the call of the user\'s most '
        "similar past request whose tool is offered (no model). Accuracy: `function` = right "
        "tool, `arg` = every graded argument right, `call` = both."
        + (
            " Every model method writes free string arguments only as spans of the request "
            "(`--copy-strings`, grammar-enforced); BFCL below does not."
            if args.copy_strings
            else ""
        ),
        "",
    ]
    for data in per_data:
        lines += _dataset_section(data)
    if bfcl_reports:
        lines += [
            "# BFCL (unsteered)",
            "",
            f"The first {bfcl_reports[0]['n']} cases of each category, graded with the official "
            f'AST checker{bfcl_note}. `tool_choice="any"`, except irrelevance (`"auto"`, '
            "so that no call is possible); parallel categories allow several calls.",
            "",
            *_bfcl_table(bfcl_reports),
            "",
        ]
    if no_harm:
        lines += [
            "## No harm: BFCL steered with an unrelated user's vector",
            "",
            f"`simple_python`, the same {no_harm['n']} cases, unsteered vs steered with the mean "
            f"vector of user `{no_harm['steer_user']}`'s {no_harm['trajectories']} history "
            "trajectories.",
            "",
            "| run | accuracy | valid_rate |",
            "|---|---|---|",
            f"| unsteered | {_fmt(no_harm['unsteered']['accuracy'])} "
            f"| {_fmt(no_harm['unsteered']['valid_rate'])} |",
            f"| steered | {_fmt(no_harm['steered']['accuracy'])} "
            f"| {_fmt(no_harm['steered']['valid_rate'])} |",
            "",
            f"Difference: {100 * no_harm['accuracy_delta']:+.1f} points "
            f"(no harm = at most {100 * no_harm['tolerance']:.0f} points lower: "
            f"{'yes' if no_harm['no_harm'] else 'no'}).",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
