"""BFCL with the local model: constrained decoding, batched, optionally under a fixed vector.

Every case is answered by :class:`~fints_agent.engine.TurnEngine` with grammar-constrained
decoding: ``tool_choice="any"`` (a call is forced), except for irrelevance categories, which use
``"auto"`` so that answering without a call is possible; parallel categories allow several
calls. Grading is the official AST checker (:func:`fints_agent.eval.bfcl.evaluate_bfcl`).

The "no harm" check (:func:`run_bfcl_no_harm`) answers the same cases twice, unsteered and
steered with the mean vector of one user's memory from the personalized dataset (a user whose
history has nothing to do with BFCL), and reports the accuracy difference.

Example:
    >>> report = run_bfcl(load_model(), "simple_python", limit=50)
    >>> report["accuracy"], report["valid_rate"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fints_agent.config import DEFAULT_RETRIEVAL
from fints_agent.eval.bfcl import BfclCase, evaluate_bfcl, load_bfcl

if TYPE_CHECKING:
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.memory import Embedder
    from fints_agent.models import LoadedModel
    from fints_agent.steering.vector import SteeringVector
    from fints_agent.turn import TurnRequest, TurnResult

__all__ = [
    "NO_HARM_TOLERANCE",
    "FixedVectorMemory",
    "bfcl_request",
    "predict_bfcl",
    "run_bfcl",
    "run_bfcl_no_harm",
    "user_mean_vector",
]

NO_HARM_TOLERANCE = 0.02
"""Steering with an unrelated user's vector must keep BFCL accuracy within this of unsteered."""

_STEER_USER = "bfcl-steer"


@dataclass
class _FixedRetrieval:
    """A retrieval that always returns the same vector and no examples."""

    vector: SteeringVector | None
    trajectory_ids: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)
    value_vector: SteeringVector | None = None


class FixedVectorMemory:
    """A stand-in memory whose every retrieval is one fixed steering vector.

    Args:
        vector: The vector to steer every turn with.
        label: The id reported as the (only) trajectory that steered.
        value_vector: The value vector of every turn (see
            :attr:`fints_agent.memory.Retrieval.value_vector`), if any.
    """

    def __init__(
        self,
        vector: SteeringVector,
        label: str = "fixed",
        value_vector: SteeringVector | None = None,
    ) -> None:
        self.vector = vector
        self.label = label
        self.value_vector = value_vector

    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        k: int = DEFAULT_RETRIEVAL.k,
        temperature: float = DEFAULT_RETRIEVAL.softmax_temperature,
        min_similarity: float | None = None,
        recency_half_life: float | None = None,
    ) -> _FixedRetrieval:
        """The fixed vector, whatever the request."""
        return _FixedRetrieval(
            self.vector, [self.label], [1.0], [1.0], value_vector=self.value_vector
        )


def bfcl_request(case: BfclCase, *, steer: bool = False) -> TurnRequest:
    """The engine request for a BFCL case.

    Args:
        case: The case.
        steer: Personalize with the engine's memory (``"steer"``), else ``"none"``.

    Returns:
        A request with ``tool_choice`` ``"auto"`` for irrelevance categories, ``"any"``
        otherwise, and parallel calls allowed for parallel categories. A call cut short by the
        token budget still counts as a call (an irrelevance case is then wrong).
    """
    from fints_agent.calls import to_tool_specs
    from fints_agent.turn import TurnRequest

    irrelevance = "irrelevance" in case.category
    parallel = "parallel" in case.category
    return TurnRequest(
        messages=[dict(m) for m in case.messages],
        tools=to_tool_specs(case.tools),
        tool_choice="auto" if irrelevance else "any",
        user_id=_STEER_USER if steer else None,
        personalization="steer" if steer else "none",
        # Without a call, an irrelevance answer is prose: its first tokens decide the case.
        max_new_tokens=384 if parallel else (96 if irrelevance else 192),
        parallel=parallel,
    )


def _calls(result: TurnResult) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = [
        {"name": c.name, "arguments": dict(c.arguments)} for c in result.calls
    ]
    # A call that failed validation was still a call (it counts against irrelevance).
    calls += [{"name": c.name or "", "arguments": c.args} for c in result.invalid_calls]
    return calls


def predict_bfcl(
    engine: TurnEngine,
    cases: Sequence[BfclCase],
    *,
    steer: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "BFCL",
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float], dict[str, int]]:
    """Answers cases in padded batches (similar prompt lengths together).

    Args:
        engine: The turn engine.
        cases: The cases.
        steer: Steer with the engine's memory.
        batch_size: Rows per batch.
        progress: Show a progress bar.
        desc: Progress bar label.

    Returns:
        ``(calls, latency_s, prompt_tokens)`` keyed by case id; latency is the batch wall time
        divided by its rows.
    """
    from tqdm.auto import tqdm

    order = sorted(
        range(len(cases)), key=lambda i: len(str(cases[i].tools)) + len(cases[i].question)
    )
    calls: dict[str, list[dict[str, Any]]] = {}
    latency: dict[str, float] = {}
    tokens: dict[str, int] = {}
    size = max(1, batch_size)
    with tqdm(total=len(cases), desc=desc, unit="case", disable=not progress) as bar:
        for start in range(0, len(order), size):
            chunk = [cases[i] for i in order[start : start + size]]
            began = time.perf_counter()
            results = engine.complete_batch([bfcl_request(c, steer=steer) for c in chunk])
            per_case = (time.perf_counter() - began) / len(chunk)
            for case, result in zip(chunk, results, strict=True):
                calls[case.id] = _calls(result)
                latency[case.id] = per_case
                tokens[case.id] = result.prompt_tokens
            bar.update(len(chunk))
    return calls, latency, tokens


def _grade(
    category: str,
    cases: Sequence[BfclCase],
    calls: Mapping[str, list[dict[str, Any]]],
    latency: Mapping[str, float],
    tokens: Mapping[str, int],
) -> dict[str, Any]:
    report = evaluate_bfcl(category, lambda case: calls[case.id], progress=False, cases=list(cases))
    n = len(cases)
    times = sorted(latency.values())
    report["mean_latency_ms"] = round(1000 * sum(times) / n, 1) if n else None
    report["p50_latency_ms"] = round(1000 * times[n // 2], 1) if n else None
    report["mean_prompt_tokens"] = round(sum(tokens.values()) / n, 1) if n else None
    return report


def run_bfcl(
    lm: LoadedModel,
    category: str,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    config: Preset | None = None,
    progress: bool = True,
    keep_results: bool = False,
) -> dict[str, Any]:
    """Evaluates the model, unsteered, on one BFCL category.

    Args:
        lm: The model.
        category: A single-turn AST category (see :data:`fints_agent.eval.bfcl.AST_CATEGORIES`).
        limit: Evaluate the first ``limit`` cases.
        batch_size: Cases per padded batch.
        config: Options (the steering part is unused unsteered).
        progress: Show a progress bar.
        keep_results: Keep per-case results in the report.

    Returns:
        ``{"category", "n", "accuracy", "valid_rate", ..., "model", "fingerprint"}``.
    """
    from fints_agent.engine import TurnEngine

    cases = load_bfcl(category, limit)
    engine = TurnEngine(lm, None, config)
    began = time.perf_counter()
    calls, latency, tokens = predict_bfcl(
        engine, cases, batch_size=batch_size, progress=progress, desc=f"BFCL {category}"
    )
    report = _grade(category, cases, calls, latency, tokens)
    report.update(_facts(lm, batch_size, time.perf_counter() - began))
    if not keep_results:
        report.pop("results", None)
    return report


def _facts(lm: LoadedModel, batch_size: int, elapsed: float) -> dict[str, Any]:
    from fints_agent.eval.personal import LATENCY_BASIS, machine_info

    return {
        "batch_size": batch_size,
        "latency_basis": LATENCY_BASIS,
        "eval_seconds": round(elapsed, 1),
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "machine": machine_info(),
    }


def user_mean_vector(
    lm: LoadedModel,
    records: Sequence[PersonalRecord],
    user_id: str,
    *,
    embedder: str | Embedder = "minilm",
    progress: bool = True,
    vectors: str = "contrast",
) -> tuple[SteeringVector, SteeringVector | None, int]:
    """The mean steering vector over one user's history trajectories.

    The user's history records are recorded into a fresh temporary memory and their vectors
    averaged (only history: test records are never read).

    Args:
        lm: The model.
        records: Records of the personalized dataset.
        user_id: The user.
        embedder: Retrieval embedder of the temporary memory.
        progress: Show a progress bar while recording.
        vectors: The kind of vectors recorded (:data:`fints_agent.memory.VECTOR_KINDS`).

    Returns:
        ``(vector, value vector (split vectors only, else None), number of trajectories)``.

    Raises:
        ValueError: The user has no history records.
    """
    from fints_agent.eval.personal import ingest_history, temporary_memory

    history = [r for r in records if r.user_id == user_id and r.split == "history"]
    if not history:
        raise ValueError(f"user {user_id!r} has no history records in the dataset")
    with temporary_memory(lm, embedder=embedder, vectors=vectors) as memory:
        ingest_history(memory, history, progress=progress)
        means = memory.population_means()
    if not means:  # pragma: no cover - a recorded user always has vectors
        raise ValueError(f"no vectors recorded for user {user_id!r}")
    return means[0], means[1] if len(means) > 1 else None, len(history)


def run_bfcl_no_harm(
    lm: LoadedModel,
    category: str,
    records: Sequence[PersonalRecord],
    user_id: str,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    config: Preset | None = None,
    embedder: str | Embedder = "minilm",
    progress: bool = True,
) -> dict[str, Any]:
    """Unsteered vs steered with an unrelated user's mean vector, on the same BFCL cases.

    Args:
        lm: The model.
        category: The BFCL category.
        records: The personalized dataset (only ``user_id``'s history is read).
        user_id: The user whose memory steers.
        limit: Evaluate the first ``limit`` cases.
        batch_size: Cases per padded batch.
        config: Retrieval, steering and decoding options (default: the model's preset).
        embedder: Retrieval embedder of the temporary memory.
        progress: Show progress bars.

    Returns:
        ``{"category", "n", "unsteered": {...}, "steered": {...}, "accuracy_delta",
        "no_harm" (steered at most ``tolerance`` below unsteered), "within_tolerance"
        (``|delta| <= tolerance``), "tolerance", "steer_user", "trajectories", "config", ...}``.
    """
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine

    cfg = config or Preset.for_model(lm.fingerprint)
    vector, value_vector, n_traj = user_mean_vector(
        lm, records, user_id, embedder=embedder, progress=progress, vectors=cfg.vector_kind
    )
    cases = load_bfcl(category, limit)
    began = time.perf_counter()
    plain = TurnEngine(lm, None, cfg)
    memory = FixedVectorMemory(vector, f"mean:{user_id}", value_vector)
    steered = TurnEngine(lm, memory, cfg)
    reports = {}
    for name, engine, steer in (("unsteered", plain, False), ("steered", steered, True)):
        calls, latency, tokens = predict_bfcl(
            engine,
            cases,
            steer=steer,
            batch_size=batch_size,
            progress=progress,
            desc=f"BFCL {category} {name}",
        )
        report = _grade(category, cases, calls, latency, tokens)
        report.pop("results", None)
        reports[name] = report
    delta = (reports["steered"]["accuracy"] or 0.0) - (reports["unsteered"]["accuracy"] or 0.0)
    out: dict[str, Any] = {
        "category": category,
        "n": len(cases),
        "unsteered": reports["unsteered"],
        "steered": reports["steered"],
        "accuracy_delta": round(delta, 4),
        "tolerance": NO_HARM_TOLERANCE,
        "no_harm": delta >= -NO_HARM_TOLERANCE - 1e-9,
        "within_tolerance": abs(delta) <= NO_HARM_TOLERANCE + 1e-9,
        "steer_user": user_id,
        "trajectories": n_traj,
        "config": cfg.model_dump(),
    }
    out.update(_facts(lm, batch_size, time.perf_counter() - began))
    return out
