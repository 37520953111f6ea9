"""Probe how steering moves each preference decision, teacher-forced; prints one JSON object.

Generation accuracy mixes many effects (the model's argument copying, early mistakes, token
budgets). This probe isolates the decision itself. Per user, the latest ``--dev-per-user`` HISTORY
records are held out (the test split is never read) and the earlier ones are recorded into a
memory. For every held-out record, the gold call is fed up to a decision: the first token of the
tool name (its rivals: the first name tokens of the other offered tools), and each position where
a rejected call of the same tool first differs (an argument value; its rivals: the rejected
calls' tokens there). At that position the margin ``log p(gold) - max log p(rival)`` is read,
unsteered and steered with the turn's retrieved vector at that position only, per coefficient
and layer band. Reported per decision kind (``name-preference``: the record's rejected calls
name another tool, so the user's preference decides; ``name-request``: the request decides;
``arg``): the mean margin and the share of decisions where the gold token beats every rival.

Usage:
    .venv/bin/python tools/probe_decisions.py --store runs/probe_store
    .venv/bin/python tools/probe_decisions.py --coefficients 1,4 --bands late --span
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fints_agent.calls import example_value, render_call, to_tool_specs
from fints_agent.config import SteeringConfig
from fints_agent.engine import TurnEngine, TurnRequest
from fints_agent.eval.dataset import load_records
from fints_agent.eval.personal import history_memory, machine_info
from fints_agent.eval.tune import layer_bands, tuning_split
from fints_agent.models import load_model
from fints_agent.steering import SteeringVector, steer

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "personal_webapi.jsonl"


@dataclass
class Decision:
    """One teacher-forced decision: the context ids, the gold next token and its rivals."""

    ids: list[int]
    gold: int
    rivals: list[int]
    vector: SteeringVector
    kind: str


def _first_difference(a: list[int], b: list[int]) -> int | None:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return None if n == min(len(a), len(b)) else n


def decisions(lm: Any, engine: TurnEngine, dev: list[Any]) -> list[Decision]:
    """The decisions of the held-out records that get a steering vector.

    Per record: the tool-name decision, whose rivals are the first name tokens of every other
    offered tool (kind ``name-preference`` when the record's rejected calls name another tool,
    else ``name-request``: the request decides), and one ``arg`` decision per position where a
    rejected call of the same tool first differs (its rivals: those rejected calls' tokens).
    """
    tok = lm.tokenizer
    found: list[Decision] = []
    for record in dev:
        req = TurnRequest(
            messages=[m.model_dump() for m in record.messages],
            tools=to_tool_specs(record.openai_tools()),
            tool_choice="any",
            user_id=record.user_id,
            personalization="steer",
        )
        prepared = engine.prepare(req)
        if prepared.vector is None:
            continue
        schemas = {s.name: s.parameters for s in req.tools}

        def ids(name: str, arguments: Any, schemas: dict[str, Any] = schemas) -> Any:
            text = render_call(name, arguments, schemas[name])
            return tok(text, add_special_tokens=False)["input_ids"]

        prompt = tok(prepared.prompt, add_special_tokens=False)["input_ids"]
        gold = ids(record.chosen.name, record.chosen.arguments)
        names: dict[int, set[int]] = {}
        for name, schema in schemas.items():
            if name != record.chosen.name:
                n = _first_difference(gold, ids(name, example_value(schema)))
                if n is not None:
                    names.setdefault(n, set()).add(ids(name, example_value(schema))[n])
        preference = any(r.name != record.chosen.name for r in record.rejected)
        kind = "name-preference" if preference else "name-request"
        for n, rivals in names.items():
            found.append(
                Decision(prompt + gold[:n], gold[n], sorted(rivals), prepared.vector, kind)
            )
        values: dict[int, set[int]] = {}
        for rejected in record.rejected:
            if rejected.name == record.chosen.name:
                other = ids(rejected.name, rejected.arguments)
                n = _first_difference(gold, other)
                if n is not None:
                    values.setdefault(n, set()).add(other[n])
        for n, rivals in values.items():
            found.append(
                Decision(prompt + gold[:n], gold[n], sorted(rivals), prepared.vector, "arg")
            )
    return found


KINDS = ("name-preference", "name-request", "arg")


@torch.no_grad()
def margins(
    lm: Any, items: list[Decision], coefficient: float, layers: list[int] | None
) -> dict[str, dict[str, float]]:
    """Per decision kind: mean margin of the gold token over its best rival, and how often the
    gold token beats every rival (coefficient 0: unsteered)."""
    rows: list[tuple[str, float]] = []
    for item in tqdm(items, desc=f"c={coefficient}", leave=False, file=sys.stderr):
        x = torch.tensor([item.ids], device=lm.device)
        if coefficient == 0:
            logits = lm.model(x).logits[0, -1]
        else:
            keep = [i for i in (layers or item.vector.layers) if i in item.vector.layers]
            vector = item.vector.select(keep, list(item.vector.sites))
            with steer(lm, vector, coefficients=coefficient, from_position=x.shape[1] - 1):
                logits = lm.model(x).logits[0, -1]
        logp = torch.log_softmax(logits.float(), -1)
        rows.append((item.kind, float(logp[item.gold] - logp[item.rivals].max())))
    out = {}
    for kind in KINDS:
        values = [m for k, m in rows if k == kind]
        if values:
            out[kind] = {
                "n": len(values),
                "mean_margin": round(sum(values) / len(values), 3),
                "gold_wins": round(sum(m > 0 for m in values) / len(values), 3),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--store", type=Path, default=None, help="keep/reuse the memory here")
    parser.add_argument("--dev-per-user", type=int, default=3)
    parser.add_argument("--coefficients", default="1,4,10")
    parser.add_argument("--bands", default="middle+late,late", help="names from layer_bands()")
    parser.add_argument("--span", action="store_true", help="vectors over the differing span only")
    args = parser.parse_args(argv)
    records = load_records(args.data)
    history = [r for r in records if r.split == "history"]
    ingest, dev = tuning_split(history, args.dev_per_user)
    lm = load_model()
    bands = layer_bands(lm.num_layers)
    unknown = [b for b in args.bands.split(",") if b not in bands]
    if unknown:
        parser.error(f"unknown bands {unknown}; use {sorted(bands)}")
    options = {"skip_shared_prefix": True, "skip_shared_suffix": True} if args.span else None
    with history_memory(lm, ingest, store=args.store, options=options) as (memory, _):
        engine = TurnEngine(lm, memory, SteeringConfig.for_model(lm.fingerprint))
        items = decisions(lm, engine, dev)
        results: dict[str, Any] = {"unsteered": margins(lm, items, 0.0, None)}
        for band in args.bands.split(","):
            for c in (float(x) for x in args.coefficients.split(",")):
                results[f"{band} c={c:g}"] = margins(lm, items, c, bands[band])
    print(
        json.dumps(
            {
                "model": lm.name,
                "span": args.span,
                "dev_records": len(dev),
                "decisions": len(items),
                "results": results,
                "machine": machine_info(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
