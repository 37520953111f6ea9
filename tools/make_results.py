"""Runs every evaluation and writes ``docs/results.md`` with plots (one command).

What it runs, on the embedded default model unless ``--model`` says otherwise:

1. The personalized benchmark (``examples/data/personal_webapi.jsonl``): every method of
   :data:`fints_agent.eval.personal.METHODS` on the same test turns, from one memory holding
   every user's history (recorded once, shared by the methods, offline protocol).
2. Recency on users whose preference changed: ``steer`` and ``rag+steer`` on those users' test
   turns with the recency weighting switched on (or off, when the tuned configuration has it).
3. BFCL, unsteered: ``simple_python``, ``multiple``, ``parallel``, ``irrelevance`` and
   ``live_simple``, the first ``--bfcl-limit`` cases of each (default 50).
4. BFCL "no harm": ``simple_python`` unsteered vs steered with the mean vector of one user of
   the personalized dataset (``--no-harm-user``).

Outputs (``--out-dir``, default ``docs``): ``results.md`` (tables, machine, model and the exact
settings), ``results.json`` (every summary), ``accuracy_by_history.png``,
``changed_preference.png``, and per-turn rows under ``results/``.

Usage::

    python tools/make_results.py                        # everything (about 1-2 hours on 2 cores)
    python tools/make_results.py --limit 60 --bfcl-limit 10   # a quick pass
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "examples" / "data" / "personal_webapi.jsonl"
BFCL_CATEGORIES = ("simple_python", "multiple", "parallel", "irrelevance", "live_simple")
DEFAULT_RECENCY = 8.0


def _log(text: str) -> None:
    print(f"[make_results {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


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
            f"| {_fmt(s['mean_prompt_tokens'], 0)} | {_fmt(p50, 2)} | {_fmt(p95, 2)} |"
        )
    return lines


def _breakdown_table(summaries: list[dict[str, Any]], field: str = "by_user_kind") -> list[str]:
    """Function / call accuracy per group of a summary breakdown (``by_user_kind``...)."""
    kinds = sorted({k for s in summaries for k in s.get(field, {})})
    header = "| method | " + " | ".join(f"{k} function / call" for k in kinds) + " |"
    lines = [header, "|---|" + "---|" * len(kinds)]
    for s in summaries:
        cells = []
        for k in kinds:
            part = s.get(field, {}).get(k)
            cells.append(
                f"{_fmt(part['function_acc'])} / {_fmt(part['call_acc'])} (n={part['n']})"
                if part
                else "-"
            )
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
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


def _targets(
    by_method: dict[str, dict[str, Any]],
    changed: dict[str, dict[str, Any]],
    bfcl: list[dict[str, Any]],
    recency_label: str,
) -> list[str]:
    def get(method: str, key: str) -> float | None:
        value = by_method.get(method, {}).get(key)
        return float(value) if value is not None else None

    rows: list[tuple[str, str, bool | None]] = []
    lm_methods = [m for m in ("zero-shot", "rag", "steer", "rag+steer") if m in by_method]
    valid = [get(m, "valid_rate") for m in lm_methods]
    rows.append(
        (
            "valid_rate 1.000 for every LM method",
            ", ".join(f"{m} {_fmt(v)}" for m, v in zip(lm_methods, valid, strict=True)),
            all(v == 1.0 for v in valid) if valid else None,
        )
    )

    def diff(a: str, b: str, key: str, need: float, what: str) -> None:
        x, y = get(a, key), get(b, key)
        if x is None or y is None:
            rows.append((what, "not run", None))
            return
        rows.append(
            (what, f"{a} {x:.3f} vs {b} {y:.3f} ({100 * (x - y):+.1f} points)", x - y >= need)
        )

    diff(
        "steer",
        "zero-shot",
        "function_acc",
        0.40,
        "steer beats zero-shot by >= 40 points function_acc",
    )
    diff("steer", "zero-shot", "call_acc", 0.20, "steer beats zero-shot by >= 20 points call_acc")
    diff("steer", "rag", "function_acc", 0.0, "steer's function_acc reaches rag's")
    diff("rag+steer", "rag", "call_acc", 0.05, "rag+steer beats rag by >= 5 points call_acc")
    rec = changed.get(recency_label)
    rows.append(
        (
            "changed users: steer with recency follows the new preference in >= 80% of turns",
            f"{_fmt(rec['new'])} of {rec['n']} turns" if rec else "not run",
            (rec["new"] or 0.0) >= 0.8 if rec else None,
        )
    )
    simple = next((r for r in bfcl if r["category"] == "simple_python"), None)
    rows.append(
        (
            "BFCL simple_python >= 50%",
            f"{_fmt(simple['accuracy'])} (n={simple['n']})" if simple else "not run",
            (simple["accuracy"] or 0.0) >= 0.5 if simple else None,
        )
    )
    lines = ["| target | measured | reached |", "|---|---|---|"]
    for what, measured, ok in rows:
        mark = "-" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {what} | {measured} | {mark} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Runs the evaluations and writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="personalized dataset")
    parser.add_argument("--model", default=None, help="model (default: embedded SmolLM2-135M)")
    parser.add_argument("--limit", type=int, default=None, help="personal test turns (all)")
    parser.add_argument("--bfcl-limit", type=int, default=50, help="cases per BFCL category")
    parser.add_argument("--batch-size", type=int, default=8, help="turns per padded batch")
    parser.add_argument("--methods", default=",".join(_methods()), help="comma-separated")
    parser.add_argument(
        "--recency-half-life",
        type=float,
        default=DEFAULT_RECENCY,
        help=f"half-life for the recency runs when the config has none ({DEFAULT_RECENCY})",
    )
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
        "--store",
        default=None,
        help="keep the recorded history in this directory and reuse it on the next run",
    )
    args = parser.parse_args(argv)

    from fints_agent.config import Preset
    from fints_agent.eval.commands import set_threads
    from fints_agent.eval.dataset import group_by_user, load_records
    from fints_agent.eval.personal import (
        history_memory,
        machine_info,
        run_personal,
        select_test_records,
    )
    from fints_agent.eval.plots import (
        changed_preference_rates,
        plot_accuracy_by_history,
        plot_changed_preference,
    )
    from fints_agent.models import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in _methods()]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(_methods())}")
    began = time.perf_counter()
    records = load_records(args.data)
    threads = set_threads(args.threads)
    lm = load_model(args.model)
    config = Preset.for_model(lm.fingerprint)
    tuned = Preset.source_for(lm.fingerprint) != "default"
    _log(f"model {lm.name} ({lm.fingerprint}), {threads} threads, tuned config: {tuned}")
    rows_dir = args.out_dir / "results"
    rows_dir.mkdir(parents=True, exist_ok=True)

    summaries: list[dict[str, Any]] = []
    rows_by_label: dict[str, list[dict[str, Any]]] = {}
    changed_rows: dict[str, list[dict[str, Any]]] = {}
    if config.retrieval.recency_half_life is None:
        recency_cfg = config.replace(recency_half_life=args.recency_half_life)
        suffix = " + recency"
        recency_label = "steer + recency"
    else:
        recency_cfg = config.replace(recency_half_life=None)
        suffix = ", no recency"
        recency_label = "steer"
    changed_users = sorted(
        {r.user_id for r in records if (r.meta or {}).get("user_kind") == "changed"}
    )
    picked = select_test_records(group_by_user(records), args.limit)
    users = set(picked)
    answered = [r for r in records if r.user_id in users]
    options = {"vectors": config.vector_kind}
    with history_memory(lm, answered, store=args.store, options=options) as (
        memory,
        ingest_s,
    ):
        n_hist = sum(1 for r in answered if r.split == "history")
        _log(f"history of {len(users)} users ({n_hist} turns) recorded in {ingest_s:.0f}s")
        for method in methods:
            _log(f"personal: {method}")
            run = run_personal(
                lm,
                records,
                method,
                config=config,
                limit=args.limit,
                batch_size=args.batch_size,
                copy_strings=args.copy_strings,
                memory=memory,
            )
            run.summary["label"] = method
            run.summary["ingest_seconds"] = round(ingest_s, 1)
            summaries.append(run.summary)
            rows = run.rows()
            rows_by_label[method] = rows
            run.write_rows(rows_dir / f"personal_{_slug(method)}.jsonl")
            _log(json.dumps({k: run.summary[k] for k in ("n", "function_acc", "call_acc")}))
        # Recency on the users whose preference changed (their test turns only).
        changed_records = [r for r in records if r.user_id in changed_users and r.user_id in users]
        for method in [m for m in ("steer", "rag+steer") if m in methods]:
            if not changed_records:
                break
            label = method + suffix
            _log(f"personal, changed users: {label}")
            run = run_personal(
                lm,
                changed_records,
                method,
                config=recency_cfg,
                batch_size=args.batch_size,
                copy_strings=args.copy_strings,
                memory=memory,
            )
            run.summary["label"] = label
            summaries.append(run.summary)
            changed_rows[label] = run.rows()
            run.write_rows(rows_dir / f"personal_changed_{_slug(label)}.jsonl")

    main_changed = {
        label: [r for r in rows if r["user_id"] in changed_users]
        for label, rows in rows_by_label.items()
    }
    order = ["knn", "zero-shot", "rag", "steer", "steer" + suffix, "rag+steer"]
    order.append("rag+steer" + suffix)
    merged = {**main_changed, **changed_rows}
    changed_plot = {k: merged[k] for k in order if k in merged}
    changed_rates = {k: changed_preference_rates(v) for k, v in changed_plot.items()}

    n_test = sum(len(v) for v in picked.values())
    history_plot = plot_accuracy_by_history(
        {m: rows_by_label[m] for m in methods if m in rows_by_label},
        args.out_dir / "accuracy_by_history.png",
        title="Call accuracy by history records of the user in the turn's domain",
        model=lm.name,
        split=f"{args.data.name}, test split ({n_test} turns of {len(users)} users)",
    )
    changed_png = plot_changed_preference(
        changed_plot,
        args.out_dir / "changed_preference.png",
        model=lm.name,
        split=f"{args.data.name}, test split, users whose preference changed",
    )

    bfcl_reports: list[dict[str, Any]] = []
    no_harm: dict[str, Any] | None = None
    if not args.skip_bfcl:
        from fints_agent.eval.run_bfcl import run_bfcl, run_bfcl_no_harm

        for category in BFCL_CATEGORIES:
            _log(f"BFCL {category}")
            report = run_bfcl(
                lm, category, limit=args.bfcl_limit, batch_size=args.batch_size, config=config
            )
            report.pop("machine", None)
            bfcl_reports.append(report)
            _log(json.dumps({k: report[k] for k in ("n", "accuracy", "valid_rate")}))
        _log(f"BFCL no harm, steered with {args.no_harm_user}'s mean vector")
        no_harm = run_bfcl_no_harm(
            lm,
            "simple_python",
            records,
            args.no_harm_user,
            limit=args.bfcl_limit,
            batch_size=args.batch_size,
            config=config,
        )
        no_harm.pop("machine", None)

    total_s = time.perf_counter() - began
    machine = machine_info()
    by_method = {s["label"]: s for s in summaries}
    report_md = _render(
        args,
        lm,
        config,
        tuned,
        machine,
        summaries,
        changed_rates,
        recency_label,
        bfcl_reports,
        no_harm,
        by_method,
        ingest_s,
        total_s,
        [history_plot.name, changed_png.name],
    )
    (args.out_dir / "results.md").write_text(report_md, encoding="utf-8")
    for s in summaries:
        s.pop("machine", None)
    everything = {
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "machine": machine,
        "config": config.model_dump(),
        "tuned": tuned,
        "personal": summaries,
        "changed_preference": changed_rates,
        "bfcl": bfcl_reports,
        "bfcl_no_harm": no_harm,
        "seconds": round(total_s, 1),
    }
    (args.out_dir / "results.json").write_text(json.dumps(everything, indent=2) + "\n")
    _log(f"wrote {args.out_dir / 'results.md'} in {total_s / 60:.1f} min")
    return 0


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def _methods() -> tuple[str, ...]:
    from fints_agent.eval.personal import METHODS

    return METHODS


def _render(
    args: argparse.Namespace,
    lm: Any,
    config: Any,
    tuned: bool,
    machine: dict[str, Any],
    summaries: list[dict[str, Any]],
    changed_rates: dict[str, dict[str, Any]],
    recency_label: str,
    bfcl_reports: list[dict[str, Any]],
    no_harm: dict[str, Any] | None,
    by_method: dict[str, dict[str, Any]],
    ingest_s: float,
    total_s: float,
    images: list[str],
) -> str:
    main_runs = [s for s in summaries if s["label"] in _methods()]
    extra_runs = [s for s in summaries if s["label"] not in _methods()]
    cpu = machine.get("cpu") or machine.get("processor")
    lines = [
        "# Results",
        "",
        f"Model: **{lm.name}** (fingerprint `{lm.fingerprint}`). Machine: {cpu}, "
        f"{machine.get('cpu_count')} cores, {machine.get('torch_threads')} torch threads, "
        f"torch {machine.get('torch')}, {machine.get('platform')}. Greedy, grammar-constrained "
        "decoding (every call is schema-valid by construction).",
        "",
        "Produced by `python tools/make_results.py"
        + (f" --limit {args.limit}" if args.limit else "")
        + f" --bfcl-limit {args.bfcl_limit} --batch-size {args.batch_size}"
        + (" --copy-strings" if args.copy_strings else "")
        + "`"
        + f" in {total_s / 60:.0f} minutes. Latencies are per turn, measured as the wall time "
        f"of a padded batch of {args.batch_size} turns divided by its rows, on a shared machine: "
        "compare them with each other, not with other machines.",
        "",
        "Steering configuration"
        + (
            " (tuned with `fints-agent tune` on the history split):"
            if tuned
            else " (defaults; not tuned):"
        ),
        "",
        "```json",
        json.dumps(config.model_dump(), indent=2),
        "```",
        "",
        "## Personalized tool calling",
        "",
        f"Dataset `{Path(args.data).name}`: each user's history recorded into one memory "
        f"({ingest_s / 60:.0f} minutes for all users), then every method answers the same test "
        'turns with `tool_choice="any"`. `knn` copies the call of the user\'s most similar past '
        "request whose tool is offered (no model). Accuracy: `function` = right tool, `arg` = "
        "every graded argument right, `call` = both."
        + (
            " Every model method writes free string arguments only as spans of the request "
            "(`--copy-strings`, grammar-enforced); BFCL below does not."
            if args.copy_strings
            else ""
        ),
        "",
        *_personal_table(main_runs),
        "",
        "By user kind (function / call accuracy):",
        "",
        *_breakdown_table(main_runs),
        "",
        "By what decides the tool (`preference`: a rejected call names another tool, so the "
        "user's preference decides; `request`: the request does), function / call accuracy:",
        "",
        *_breakdown_table(main_runs, "by_decider"),
        "",
        "### Targets",
        "",
        *_targets(by_method, changed_rates, bfcl_reports, recency_label),
        "",
        "### Users whose preference changed",
        "",
        "Test turns of `changed` users where the old and the new preference give different calls; "
        "a prediction follows a preference when its tool and the arguments that differ between "
        "the two calls match that preference's call.",
        "",
        *_changed_table(changed_rates),
        "",
    ]
    if extra_runs:
        lines += [
            "Runs on the changed users only:",
            "",
            *_personal_table(extra_runs),
            "",
        ]
    lines += [
        f"![accuracy by history]({images[0]})",
        "",
        f"![changed preference]({images[1]})",
        "",
    ]
    if bfcl_reports:
        lines += [
            "## BFCL (unsteered)",
            "",
            f"The first {args.bfcl_limit} cases of each category, graded with the official AST "
            'checker. `tool_choice="any"`, except irrelevance (`"auto"`, so that no call is '
            "possible); parallel categories allow several calls.",
            "",
            *_bfcl_table(bfcl_reports),
            "",
        ]
    if no_harm:
        lines += [
            "### No harm: BFCL steered with an unrelated user's vector",
            "",
            f"`simple_python`, the same {no_harm['n']} cases, unsteered vs steered with the mean "
            f"vector of user `{no_harm['steer_user']}`'s {no_harm['trajectories']} history "
            "trajectories (same configuration as above).",
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
