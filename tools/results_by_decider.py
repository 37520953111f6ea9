"""Accuracy of saved benchmark rows, split by what decides the tool: the preference or the request.

Reads the per-turn rows that ``tools/make_results.py`` writes (``docs/results/personal_*.jsonl``)
and the dataset they were made from, and prints a Markdown table: per method, function / call
accuracy on the test turns whose tool the user's preference decides (a rejected call names another
tool) and on those the request decides (see :func:`fints_agent.eval.personal.decided_by`). New
runs print the same split as ``by_decider`` in their summary.

Usage:
    .venv/bin/python tools/results_by_decider.py
    .venv/bin/python tools/results_by_decider.py --rows docs/results --data FILE
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from fints_agent.eval.dataset import load_records
from fints_agent.eval.personal import decided_by

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
        label = method.replace("_", "-").replace("rag-steer", "rag+steer")
        print(f"| {label} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
