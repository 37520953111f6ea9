"""Accuracy of saved benchmark rows, split by what decides the tool: the preference or the request.

Reads the per-turn rows that ``tools/make_results.py`` writes (``docs/results/personal_*.jsonl``)
and the dataset they were made from, and prints a Markdown table: per method, function / call
accuracy on the test turns whose tool the user's preference decides (a rejected call names another
tool) and on those the request decides (see :func:`fints_agent.eval.personal.decided_by`). New
runs print the same split as ``by_decider`` in their summary. A second table gives, on the turns
whose tool is right, the share of graded arguments that are right, by the kind of argument: an
enum value (a preference such as units), a free string (copied from the request) or another
value (a number, a list).

Usage:
    .venv/bin/python tools/results_by_decider.py
    .venv/bin/python tools/results_by_decider.py --rows docs/results --data FILE
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from fints_agent.eval.dataset import PersonalRecord, load_records
from fints_agent.eval.personal import decided_by
from fints_agent.eval.scoring import graded_arguments_right, normalize_call

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("zero_shot", "rag", "steer", "rag_steer", "knn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument(
        "--data", type=Path, default=ROOT / "examples" / "data" / "personal_webapi.jsonl"
    )
    args = parser.parse_args(argv)
    records = {(r.user_id, r.turn): r for r in load_records(args.data) if r.split == "test"}
    kinds: dict[str, dict[str, list[bool]]] = {}
    print("| method | preference decides: function / call | request decides: function / call |")
    print("|---|---|---|")
    for method in METHODS:
        path = args.rows / f"personal_{method}.jsonl"
        if not path.is_file():
            continue
        groups: dict[str, list[dict[str, object]]] = defaultdict(list)
        for line in path.read_text().splitlines():
            row = json.loads(line)
            record = records.get((row["user_id"], row["turn"]))
            if record is None:
                raise SystemExit(f"{path}: turn {row['user_id']}/{row['turn']} not in {args.data}")
            groups[decided_by(record)].append(row)
            if row["function"]:
                for kind, right in _graded(record, row):
                    kinds.setdefault(method, defaultdict(list))[kind].append(right)
        cells = []
        for decider in ("preference", "request"):
            rows = groups.get(decider, [])
            n = len(rows)
            if not n:
                cells.append("-")
                continue
            f = sum(bool(r["function"]) for r in rows) / n
            c = sum(bool(r["call"]) for r in rows) / n
            cells.append(f"{f:.3f} / {c:.3f} (n={n})")
        print(f"| {_label(method)} | {' | '.join(cells)} |")
    print()
    print("| method | enum values right | free strings right | other values right |")
    print("|---|---|---|---|")
    for method, by_kind in kinds.items():
        cells = []
        for kind in ("enum", "string", "other"):
            seen = by_kind.get(kind, [])
            cells.append(f"{sum(seen) / len(seen):.3f} (n={len(seen)})" if seen else "-")
        print(f"| {_label(method)} | {' | '.join(cells)} |")
    return 0


def _label(method: str) -> str:
    return method.replace("_", "-").replace("rag-steer", "rag+steer")


def _graded(record: PersonalRecord, row: dict[str, object]) -> list[tuple[str, bool]]:
    """(kind, right) for each graded argument of the gold call."""
    call = normalize_call(row.get("predicted")) or {"name": None, "arguments": {}}
    tool = record.tool(record.chosen.name)
    props = tool.function.parameters.get("properties", {}) if tool is not None else {}
    out = []
    for name, right in graded_arguments_right(call, record).items():
        schema = props.get(name, {})
        kind = "string" if schema.get("type") == "string" else "other"
        kind = "enum" if "enum" in schema else kind
        out.append((kind, right))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
