"""Tune the steering configuration of a model on the HISTORY split only.

Per user, the latest ``dev_per_user`` history records are held out as a dev set (only while a
record with the same offered tools stays in the memory) and the others are recorded into a
memory (vectors of every layer and both sites, so that any configuration can select from them;
``fints-agent tune`` keeps it in the user cache and reuses it on the next run with the same
records, model and vector settings, see :func:`~fints_agent.eval.personal.history_memory`).
A coordinate search then evaluates ``steer`` and ``rag+steer`` on the dev set for one setting
at a time, keeping the best so far:

1. ``steer_prompt`` (steering the prompt positions too, or only generated ones),
2. coefficient, 3. layer band (all, early, middle, late, early+middle, middle+late),
4. sites (attention, MLP, both), 5. coefficient again around the best, 6. gate (``all``,
``choices`` or ``decisions``), 7. canonical tool names and enum values, alone and with the
``decisions`` gate at stronger coefficients, 8. the scale of the demonstration vector at
argument values (``vector_kind="split"`` only), 9. top-k, 10. softmax temperature, 11. similarity
threshold below which a past trajectory is not used, 12. recency half-life.

The objective is ``steer.function_acc + steer.call_acc + rag+steer.call_acc`` on the dev set.
Test records are never read: they are dropped before anything else happens (checked).
The search stops when the time budget would be exceeded; the best configuration is saved as
the model's preset (:meth:`Preset.save_for`).

Example:
    >>> result = tune(load_model(), load_records(path), budget_minutes=25)
    >>> result["best"], result["table"][:3]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fints_agent.eval.dataset import PersonalRecord
from fints_agent.eval.dev_split import pick_users, tuning_split
from fints_agent.eval.personal import (
    answer_turns,
    history_memory,
    machine_info,
    summarize_outcomes,
)

if TYPE_CHECKING:
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine
    from fints_agent.memory import Embedder
    from fints_agent.models import LoadedModel

__all__ = [
    "TUNED_METHODS",
    "layer_bands",
    "objective",
    "search_steps",
    "tune",
]

TUNED_METHODS: tuple[str, ...] = ("steer", "rag+steer")
"""Methods evaluated for every candidate configuration."""


def layer_bands(num_layers: int) -> dict[str, list[int] | None]:
    """Named layer bands: ``all`` (None), thirds, and two adjacent pairs of thirds."""
    third = max(1, num_layers // 3)
    early = list(range(0, third))
    middle = list(range(third, 2 * third))
    late = list(range(2 * third, num_layers))
    return {
        "all": None,
        "early": early,
        "middle": middle,
        "late": late,
        "early+middle": early + middle,
        "middle+late": middle + late,
    }


def objective(results: dict[str, dict[str, Any]]) -> float:
    """``steer.function_acc + steer.call_acc + rag+steer.call_acc`` (missing parts count 0)."""
    steer = results.get("steer", {})
    both = results.get("rag+steer", {})
    return float(
        (steer.get("function_acc") or 0.0)
        + (steer.get("call_acc") or 0.0)
        + (both.get("call_acc") or 0.0)
    )


def search_steps(num_layers: int) -> list[tuple[str, Callable[[Preset], list[dict]]]]:
    """The coordinate-search steps: a name and, from the best config, the updates to try."""
    bands = layer_bands(num_layers)

    def coefficient(_: Preset) -> list[dict[str, Any]]:
        return [{"coefficient": c} for c in (1.0, 2.0, 4.0, 6.0)]

    def layers(_: Preset) -> list[dict[str, Any]]:
        return [{"layers": band} for band in bands.values()]

    def sites(_: Preset) -> list[dict[str, Any]]:
        return [{"sites": s} for s in (["attn"], ["mlp"], ["attn", "mlp"])]

    def refine(cfg: Preset) -> list[dict[str, Any]]:
        c = cfg.steering.coefficient
        return [{"coefficient": round(x, 3)} for x in (c * 0.75, c, c * 1.5)]

    def gate(_: Preset) -> list[dict[str, Any]]:
        return [{"gate": g} for g in ("choices", "all", "decisions")]

    def decisions(_: Preset) -> list[dict[str, Any]]:
        # Steering only the deciding tokens, spelled canonically, tolerates stronger coefficients.
        return [{"canonical_choices": True}] + [
            {"gate": "decisions", "canonical_choices": True, "coefficient": c}
            for c in (2.0, 4.0, 6.0)
        ]

    def value_coefficient(cfg: Preset) -> list[dict[str, Any]]:
        if cfg.vector_kind != "split":
            return []
        return [{"value_coefficient": v} for v in (0.25, 0.5, 1.0, 2.0)]

    def steer_prompt(_: Preset) -> list[dict[str, Any]]:
        return [{"steer_prompt": b} for b in (True, False)]

    def top_k(_: Preset) -> list[dict[str, Any]]:
        return [{"k": k} for k in (3, 5, 8)]

    def temperature(_: Preset) -> list[dict[str, Any]]:
        return [{"softmax_temperature": t} for t in (0.05, 0.1, 0.3)]

    def min_similarity(_: Preset) -> list[dict[str, Any]]:
        return [{"min_similarity": m} for m in (0.2, 0.35, 0.5)]

    def recency(_: Preset) -> list[dict[str, Any]]:
        return [{"recency_half_life": h} for h in (None, 8.0)]

    return [
        ("steer_prompt", steer_prompt),
        ("coefficient", coefficient),
        ("layers", layers),
        ("sites", sites),
        ("coefficient_refine", refine),
        ("gate", gate),
        ("decisions", decisions),
        ("value_coefficient", value_coefficient),
        ("k", top_k),
        ("softmax_temperature", temperature),
        ("min_similarity", min_similarity),
        ("recency_half_life", recency),
    ]


def _key(cfg: Preset) -> str:
    return json.dumps(cfg.model_dump(), sort_keys=True)


def _band_name(layers: list[int] | None, num_layers: int) -> str:
    for name, band in layer_bands(num_layers).items():
        if band == layers:
            return name
    return ",".join(str(x) for x in layers or [])


def _evaluate(
    engine: TurnEngine,
    dev: Sequence[PersonalRecord],
    methods: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    copy_strings: bool = False,
) -> dict[str, dict[str, Any]]:
    results = {}
    for method in methods:
        outcomes = answer_turns(
            dev,
            method,
            engine=engine,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            copy_strings=copy_strings,
        )
        s = summarize_outcomes(outcomes)
        results[method] = {k: s[k] for k in ("function_acc", "arg_acc", "call_acc", "valid_rate")}
    return results


def tune(
    lm: LoadedModel,
    records: Sequence[PersonalRecord],
    *,
    budget_minutes: float = 25.0,
    users: int | None = 12,
    dev_per_user: int = 3,
    batch_size: int = 8,
    max_new_tokens: int = 96,
    copy_strings: bool = False,
    start: Preset | None = None,
    methods: Sequence[str] = TUNED_METHODS,
    embedder: str | Embedder = "minilm",
    save: bool = True,
    progress: bool = True,
    engine_factory: Callable[..., Any] | None = None,
    store: str | Path | None = None,
    steps: Sequence[str] | None = None,
    cache: bool = False,
    fresh: bool = False,
) -> dict[str, Any]:
    """Coordinate search of the steering configuration on held-out HISTORY records.

    Args:
        lm: The model.
        records: The dataset; test records are dropped unread.
        budget_minutes: Wall-time budget of the search (ingest included); the search stops
            before a candidate that would exceed it.
        users: Tune on this many users, spread over user kinds (None: all).
        dev_per_user: Latest history records per user held out as dev.
        batch_size: Turns per padded batch.
        max_new_tokens: Token budget of a call.
        copy_strings: Answer dev turns with free string arguments restricted to spans of the
            request, as ``eval personal --copy-strings`` does.
        start: The configuration the search starts from (default: the model's saved one,
            so that a second run refines the first).
        methods: Methods evaluated per candidate.
        embedder: Retrieval embedder.
        save: Save the best configuration as the model's default.
        progress: Print one line per candidate to stderr.
        engine_factory: Builds the engine from ``(lm, memory, config)`` (default
            :class:`~fints_agent.engine.TurnEngine`).
        store: Keep the recorded history in this directory and reuse it on the next run with
            the same users and ``dev_per_user`` (default: a temporary memory, or the cache).
        steps: Run only these search steps (names of :func:`search_steps`), in their order.
        cache: Keep the recorded history in the user cache and reuse it whenever the same
            records are recorded with the same model and vector settings
            (:func:`~fints_agent.eval.personal.history_memory`); ignored with ``store``.
        fresh: Record the history again even where a recorded store exists (replacing it).

    Returns:
        ``{"best", "best_score", "baseline", "table", "dev_turns", "ingest_turns", "users",
        "seconds", "saved_to", "recorded_trajectories", "history_store", ...}``; ``table`` lists
        every evaluated candidate; ``recorded_trajectories`` is 0 when a kept history store
        was reused.

    Raises:
        ValueError: No dev records (too little history), an unknown step, or a ``store``
            holding other trajectories.
    """
    import sys

    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine

    began = time.perf_counter()
    budget_s = budget_minutes * 60.0
    history = [r for r in records if r.split == "history"]  # the only records read below
    chosen_users = pick_users(history, users)
    ingest, dev = tuning_split(history, dev_per_user, chosen_users)
    if not dev:
        raise ValueError("no dev records: every user needs at least 3 history records")
    base = start or Preset.for_model(lm.fingerprint)
    num_layers = lm.num_layers
    plan = search_steps(num_layers)
    if steps is not None:
        unknown = [s for s in steps if s not in {name for name, _ in plan}]
        if unknown:
            raise ValueError(f"unknown tuning steps {unknown}; use {[n for n, _ in plan]}")
        plan = [(name, fn) for name, fn in plan if name in steps]
    table: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}

    def log(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    with history_memory(
        lm,
        ingest,
        store=store,
        cache=cache and store is None,
        fresh=fresh,
        embedder=embedder,
        progress=progress,
        options={"vectors": base.vector_kind},
    ) as kept:
        memory, ingest_s, recorded = kept.memory, kept.seconds, kept.recorded
        how = f"reused {kept.location}" if kept.reused else f"in {ingest_s:.0f}s"
        log(f"tune: recorded {recorded} of {len(ingest)} history turns ({how}); dev {len(dev)}")
        engine = (engine_factory or TurnEngine)(lm, memory, base)
        t0 = time.perf_counter()
        baseline = _evaluate(
            engine, dev, ["zero-shot", "rag"], batch_size, max_new_tokens, copy_strings
        )
        log(f"tune: baselines {baseline} in {time.perf_counter() - t0:.0f}s")
        per_candidate = (time.perf_counter() - t0) * len(methods) / 2

        def run(cfg: Preset, step: str) -> dict[str, Any] | None:
            nonlocal per_candidate
            key = _key(cfg)
            if key in seen:
                return seen[key]
            if time.perf_counter() - began + per_candidate > budget_s:
                return None
            engine.preset = cfg
            t = time.perf_counter()
            results = _evaluate(engine, dev, methods, batch_size, max_new_tokens, copy_strings)
            seconds = time.perf_counter() - t
            per_candidate = 0.5 * per_candidate + 0.5 * seconds
            steering, retrieval = cfg.steering, cfg.retrieval
            row = {
                "step": step,
                "layers": _band_name(steering.layers, num_layers),
                "sites": "+".join(steering.sites),
                "coefficient": steering.coefficient,
                "value_coefficient": steering.value_coefficient,
                "gate": steering.gate,
                "steer_prompt": steering.steer_prompt,
                "k": retrieval.k,
                "softmax_temperature": retrieval.softmax_temperature,
                "recency_half_life": retrieval.recency_half_life,
                **{m: results[m] for m in methods},
                "score": round(objective(results), 4),
                "seconds": round(seconds, 1),
            }
            table.append(row)
            seen[key] = row
            log(f"tune: {json.dumps(row)}")
            return row

        best = base
        best_row = run(best, "start")
        stopped = best_row is None
        for step, candidates in plan:
            if stopped:
                break
            for update in candidates(best):
                cfg = best.replace(**update)
                row = run(cfg, step)
                if row is None:
                    stopped = True
                    break
                if best_row is None or row["score"] > best_row["score"] + 1e-9:
                    best, best_row = cfg, row
    saved = str(best.save_for(lm.fingerprint)) if save and best_row is not None else None
    return {
        "best": best.model_dump(),
        "best_score": best_row["score"] if best_row else None,
        "best_dev": {m: best_row[m] for m in methods} if best_row else None,
        "baseline": baseline,
        "objective": "steer.function_acc + steer.call_acc + rag+steer.call_acc",
        "copy_strings": copy_strings,
        "table": table,
        "complete": not stopped,
        "users": chosen_users,
        "dev_turns": len(dev),
        "ingest_turns": len(ingest),
        "ingest_seconds": round(ingest_s, 1),
        "recorded_trajectories": recorded,
        "history_store": kept.location,
        "seconds": round(time.perf_counter() - began, 1),
        "budget_minutes": budget_minutes,
        "saved_to": saved,
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "machine": machine_info(),
    }
