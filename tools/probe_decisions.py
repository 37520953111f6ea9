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
With ``--key-vectors``, argument decisions are also steered with a vector of that argument alone
(see :func:`attach_key_vectors`); with ``--demo-vectors``, every decision is also steered with
the vector of a ``vectors="demonstration"`` memory of the same history
(:mod:`fints_agent.steering.demonstration`).

Usage:
    .venv/bin/python tools/probe_decisions.py --store runs/probe_store
    .venv/bin/python tools/probe_decisions.py --coefficients 1,4 --bands late
    .venv/bin/python tools/probe_decisions.py --demo-vectors --bands middle+late
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
from fints_agent.config import Preset
from fints_agent.engine import TurnEngine
from fints_agent.eval.dataset import load_records
from fints_agent.eval.dev_split import layer_bands, tuning_split
from fints_agent.eval.personal import history_memory, machine_info
from fints_agent.models import load_model
from fints_agent.steering import SteeringVector, steer
from fints_agent.turn import TurnRequest

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "personal_webapi.jsonl"


@dataclass
class Decision:
    """One teacher-forced decision: the context ids, the gold next token and its rivals."""

    ids: list[int]
    gold: int
    rivals: list[int]
    vector: SteeringVector
    kind: str
    key: str | None = None
    user: str = ""
    retrieved: tuple[tuple[str, float], ...] = ()
    key_vector: SteeringVector | None = None
    demo_vector: SteeringVector | None = None


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
        keys: dict[int, str | None] = {}
        for rejected in record.rejected:
            if rejected.name == record.chosen.name:
                other = ids(rejected.name, rejected.arguments)
                n = _first_difference(gold, other)
                if n is not None:
                    values.setdefault(n, set()).add(other[n])
                    keys.setdefault(
                        n, _differing_enum_key(record.chosen, rejected, schemas[rejected.name])
                    )
        retrieved = tuple(
            (t["id"], float(t["weight"])) for t in prepared.info.get("trajectories", [])
        )
        for n, rivals in values.items():
            found.append(
                Decision(
                    prompt + gold[:n],
                    gold[n],
                    sorted(rivals),
                    prepared.vector,
                    "arg",
                    keys.get(n),
                    record.user_id,
                    retrieved,
                )
            )
    return found


KINDS = ("name-preference", "name-request", "arg")


def _differing_enum_key(chosen: Any, rejected: Any, schema: dict[str, Any]) -> str | None:
    """The first enum argument (in the chosen call's order) whose value the rejected call
    does not share."""
    props = schema.get("properties", {})
    for key, value in chosen.arguments.items():
        if "enum" in props.get(key, {}) and rejected.arguments.get(key) != value:
            return str(key)
    return None


def attach_key_vectors(lm: Any, memory: Any, items: list[Decision]) -> None:
    """Per argument decision, a vector of that argument alone, from the retrieved trajectories.

    For each retrieved trajectory whose chosen call has the decision's enum argument, its value is
    contrasted with every other value of the enum (the same call, that argument changed), over
    the differing tokens only; the vectors are mixed with the retrieval weights of the
    trajectories that have the argument.
    """

    renderer = memory.renderer
    wanted: dict[tuple[str, str], tuple[str, str, list[str]]] = {}
    records: dict[str, Any] = {}
    for item in items:
        if item.kind != "arg" or item.key is None:
            continue
        missing = [tid for tid, _ in item.retrieved if tid not in records]
        for rec in memory.store.get(item.user, missing, with_payload=True):
            records[rec.id] = rec
        for tid, _ in item.retrieved:
            rec = records.get(tid)
            if rec is None or (tid, item.key) in wanted:
                continue
            name, args = rec.chosen["name"], rec.chosen.get("arguments", {})
            tool = next((t["function"] for t in rec.tools if t["function"]["name"] == name), None)
            prop = (tool or {}).get("parameters", {}).get("properties", {}).get(item.key, {})
            if item.key not in args or "enum" not in prop:
                continue
            schema = tool["parameters"]  # type: ignore[index]
            others = [v for v in prop["enum"] if v != args[item.key]]
            wanted[(tid, item.key)] = (
                renderer.render_prompt(rec.messages, rec.tools),
                renderer.render_call(name, args, schema),
                [renderer.render_call(name, {**args, item.key: v}, schema) for v in others],
            )
    if not wanted:
        return
    sample = next(i for i in items if i.kind == "arg")
    order = list(wanted)
    vectors = _span_contrasts(
        lm,
        [wanted[k] for k in order],
        list(sample.vector.layers),
        sample.vector.sites,
    )
    by_key = dict(zip(order, vectors, strict=True))
    for item in items:
        if item.kind != "arg" or item.key is None:
            continue
        parts = [(by_key[(t, item.key)], w) for t, w in item.retrieved if (t, item.key) in by_key]
        total = sum(w for _, w in parts)
        if parts and total > 0:
            tensor = sum(v.tensor * (w / total) for v, w in parts)
            first = parts[0][0]
            item.key_vector = SteeringVector(
                tensor,  # type: ignore[arg-type]
                first.layers,
                first.sites,
                first.model_fingerprint,
            )


@torch.no_grad()
def margins(
    lm: Any,
    items: list[Decision],
    coefficient: float,
    layers: list[int] | None,
    key_vectors: bool = False,
    demo_vectors: bool = False,
) -> dict[str, dict[str, float]]:
    """Per decision kind: mean margin of the gold token over its best rival, and how often the
    gold token beats every rival (coefficient 0: unsteered)."""
    rows: list[tuple[str, float]] = []
    for item in tqdm(items, desc=f"c={coefficient}", leave=False, file=sys.stderr):
        x = torch.tensor([item.ids], device=lm.device)
        source = item.vector
        if key_vectors and item.kind == "arg":
            source = item.key_vector  # type: ignore[assignment]
        if demo_vectors:
            source = item.demo_vector  # type: ignore[assignment]
        if coefficient == 0 or source is None:
            logits = lm.model(x).logits[0, -1]
        else:
            keep = [i for i in (layers or source.layers) if i in source.layers]
            vector = source.select(keep, list(source.sites))
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


def attach_demo_vectors(
    lm: Any, ingest: list[Any], dev: list[Any], items: list[Decision], store: Path | None
) -> None:
    """Gives every decision the vector a ``vectors="demonstration"`` memory of the same history
    retrieves for its turn (the same retrieval weights: only the stored vectors differ)."""
    where = None if store is None else store.with_name(store.name + "_demonstration")
    options = {"vectors": "demonstration"}
    with history_memory(lm, ingest, store=where, options=options) as (memory, _):
        engine = TurnEngine(lm, memory, Preset.for_model(lm.fingerprint))
        demo = decisions(lm, engine, dev)
    if [(d.ids, d.gold) for d in demo] != [(i.ids, i.gold) for i in items]:
        raise RuntimeError("the demonstration memory steers other turns than the contrast one")
    for item, d in zip(items, demo, strict=True):
        item.demo_vector = d.vector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--store", type=Path, default=None, help="keep/reuse the memory here")
    parser.add_argument("--dev-per-user", type=int, default=3)
    parser.add_argument("--coefficients", default="1,4,10")
    parser.add_argument("--bands", default="middle+late,late", help="names from layer_bands()")
    parser.add_argument(
        "--key-vectors",
        action="store_true",
        help="also steer argument decisions with a vector of that argument alone",
    )
    parser.add_argument(
        "--demo-vectors",
        action="store_true",
        help="also steer every decision with an in-context (demonstration) vector",
    )
    args = parser.parse_args(argv)
    records = load_records(args.data)
    history = [r for r in records if r.split == "history"]
    ingest, dev = tuning_split(history, args.dev_per_user)
    lm = load_model()
    bands = layer_bands(lm.num_layers)
    unknown = [b for b in args.bands.split(",") if b not in bands]
    if unknown:
        parser.error(f"unknown bands {unknown}; use {sorted(bands)}")
    with history_memory(lm, ingest, store=args.store) as (memory, _):
        engine = TurnEngine(lm, memory, Preset.for_model(lm.fingerprint))
        items = decisions(lm, engine, dev)
        if args.key_vectors:
            attach_key_vectors(lm, memory, items)
        if args.demo_vectors:
            attach_demo_vectors(lm, ingest, dev, items, args.store)
        results: dict[str, Any] = {"unsteered": margins(lm, items, 0.0, None)}
        for band in args.bands.split(","):
            for c in (float(x) for x in args.coefficients.split(",")):
                results[f"{band} c={c:g}"] = margins(lm, items, c, bands[band])
                if args.demo_vectors:
                    results[f"{band} c={c:g} demo vectors"] = margins(
                        lm, items, c, bands[band], demo_vectors=True
                    )
                if args.key_vectors:
                    arg_items = [i for i in items if i.kind == "arg"]
                    results[f"{band} c={c:g} key vectors"] = margins(
                        lm, arg_items, c, bands[band], key_vectors=True
                    )
    print(
        json.dumps(
            {
                "model": lm.name,
                "dev_records": len(dev),
                "decisions": len(items),
                "arg_decisions_with_key_vector": sum(i.key_vector is not None for i in items),
                "results": results,
                "machine": machine_info(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _span_contrasts(
    lm: Any, triples: list[tuple[str, str, list[str]]], layers: list[int], sites: Any
) -> list[SteeringVector]:
    """Contrastive vectors averaged only over the span where each answer differs from the
    other (``"fahrenheit"`` against ``"celsius"``, not the whole call): the chosen answer
    minus the mean of its rejected ones, each pair over its own differing span."""
    from fints_agent.prefix_cache import common_prefix
    from fints_agent.steering import capture_answer_means

    def ids(text: str) -> list[int]:
        return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def shared_tail(a: list[int], b: list[int], limit: int) -> int:
        n = 0
        while n < limit and a[-1 - n] == b[-1 - n]:
            n += 1
        return n

    out = []
    for prompt, chosen, rejected in triples:
        c = ids(chosen)
        rows = []
        for r in rejected:
            rid = ids(r)
            head = common_prefix(c, rid)
            tail = shared_tail(c, rid, min(len(c), len(rid)) - head)
            means = capture_answer_means(
                lm,
                [prompt, prompt],
                [chosen, r],
                layers,
                sites,
                answer_offsets=[head, head],
                answer_tails=[tail, tail],
            )
            rows.append(means[0] - means[1])
        tensor = torch.stack(rows).mean(0)
        out.append(SteeringVector(tensor, tuple(layers), tuple(sites), lm.fingerprint))
    return out
