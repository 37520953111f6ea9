"""The personalized tool-calling benchmark: ingest each user's history, answer their test turns.

Protocol (``fints-agent eval personal``):

1. Every answered user's ``history`` records are recorded into one memory (users are isolated
   by ``user_id``), with their chosen and rejected calls. The command keeps that memory in the
   user cache, keyed by the records, the model and the vector settings, and a later run with
   the same key reuses it instead of recording again (:func:`history_memory`, ``--fresh``
   records again); :func:`run_personal` records into a temporary memory unless asked to.
2. Each user's ``test`` records are answered in turn order with ``tool_choice="any"`` (a call is
   forced; constrained decoding makes it schema-valid), by one of the :data:`METHODS`:

   * ``zero-shot``: the model alone (personalization ``"none"``);
   * ``rag``: the user's most similar past requests and calls in the prompt;
   * ``steer``: the Fints steering vector of the most similar past trajectories;
   * ``rag+steer``: both;
   * ``knn``: no model at all: copy the call of the user's most similar past trajectory whose
     tool is offered (the memory's own retrieval, top-1).

3. With ``online``, each test record's gold call (and its rejected calls) is recorded as
   feedback right after it is answered, so later turns of the same user can use it; turns are
   then batched across users only, one round of turns at a time. With
   ``feedback="correction"``, a wrong answer is recorded as the user would correct it: the
   gold call chosen, the model's own call rejected (see
   :mod:`~fints_agent.eval.personal.corrections`).

Test turns of all users are answered in padded batches (:meth:`TurnEngine.complete_batch`);
the latency of a turn is reported as the wall time of its batch divided by the batch's rows.

Example:
    >>> run = run_personal(load_model(), load_records(path), "rag+steer", limit=40)
    >>> run.summary["call_acc"], run.rows()[0]["domain"]
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from fints_agent.eval.dataset import PersonalRecord, UserRecords, group_by_user
from fints_agent.eval.personal.answering import LATENCY_BASIS, TurnOutcome, answer_turns
from fints_agent.eval.personal.history import history_memory
from fints_agent.eval.personal.methods import _check_method
from fints_agent.eval.personal.preferences import (
    _old_preferences,
    follow_label,
    old_preference_call,
)
from fints_agent.eval.personal.recording import HistoryMemory, _trajectory
from fints_agent.eval.personal.summary import PersonalRun, machine_info, summarize_outcomes

if TYPE_CHECKING:
    from fints_agent.config import Preset
    from fints_agent.memory import Embedder, Memory
    from fints_agent.models import LoadedModel

__all__ = ["domain_history_counts", "run_personal", "select_test_records"]


def select_test_records(
    grouped: Mapping[str, UserRecords], limit: int | None = None
) -> dict[str, list[PersonalRecord]]:
    """Picks the test turns to answer, spread over users deterministically.

    Turns are taken round-robin over users (in order of first appearance), each user's
    earliest turns first, so that a limit keeps a prefix of every user's test turns.

    Args:
        grouped: Records per user (:func:`~fints_agent.eval.dataset.group_by_user`).
        limit: Maximum number of test turns (None: all).

    Returns:
        ``{user_id: [test records in turn order]}`` for users with at least one turn picked.

    Raises:
        ValueError: ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    picked: dict[str, list[PersonalRecord]] = {}
    total = sum(len(u.test) for u in grouped.values())
    budget = total if limit is None else min(limit, total)
    depth = 0
    count = 0
    while count < budget:
        for user_id, user in grouped.items():
            if count >= budget:
                break
            if depth < len(user.test):
                picked.setdefault(user_id, []).append(user.test[depth])
                count += 1
        depth += 1
    return picked


def domain_history_counts(user: UserRecords) -> dict[str, int]:
    """How many history records a user has per domain (``meta["domain"]``)."""
    counts: dict[str, int] = defaultdict(int)
    for record in user.history:
        counts[str((record.meta or {}).get("domain", ""))] += 1
    return dict(counts)


def run_personal(
    lm: LoadedModel | None,
    records: Sequence[PersonalRecord],
    method: str,
    *,
    config: Preset | None = None,
    k: int | None = None,
    online: bool = False,
    feedback: Literal["gold", "correction"] = "gold",
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    copy_strings: bool = False,
    memory: Memory | None = None,
    embedder: str | Embedder = "minilm",
    progress: bool = True,
    engine_factory: Callable[..., Any] | None = None,
    cache: bool = False,
    fresh: bool = False,
) -> PersonalRun:
    """Runs one method of the personalized benchmark.

    Args:
        lm: The model (``knn`` still needs it to record history vectors, unless a ready
            ``memory`` is given).
        records: All records (history and test).
        method: One of :data:`METHODS`.
        config: Retrieval, steering and decoding options (default: the model's preset).
        k: Trajectories retrieved per turn (default: the configuration's).
        online: Record each test turn's gold call as feedback after answering it.
        feedback: With ``online``: ``"gold"`` records the record's own rejected calls;
            ``"correction"`` rejects the model's call instead when it was wrong.
        limit: Answer at most this many test turns (spread over users).
        batch_size: Turns per padded batch.
        max_new_tokens: Token budget of a call.
        copy_strings: Restrict free string arguments to spans of the request
            (:mod:`fints_agent.calls.spans`).
        memory: A memory that already holds exactly these records' history (it is not
            ingested again; with ``online`` it receives the feedback). Default: the history
            of the users answered, recorded here (see ``cache``).
        embedder: Retrieval embedder of the history memory.
        progress: Show progress bars.
        engine_factory: Builds the engine from ``(lm, memory, config)`` (default
            :class:`~fints_agent.engine.TurnEngine`).
        cache: Keep the recorded history in the user cache and reuse it when the same
            history is recorded again with the same model and vector settings (see
            :func:`history_memory`); with ``online``, the feedback goes to a copy. Default: a
            temporary memory, removed afterwards.
        fresh: With ``cache``, record the history again (replacing the kept store).

    Returns:
        The :class:`PersonalRun`; its summary tells ``recorded_trajectories`` (0 when a kept
        store was reused), ``ingest_seconds`` and ``history_store`` (the kept store, if any).

    Raises:
        ValueError: Unknown method, bad limit or batch size, or no test records.
    """
    _check_method(method)
    if feedback not in ("gold", "correction"):
        raise ValueError(f"feedback must be 'gold' or 'correction', got {feedback!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    grouped = group_by_user(records)
    picked = select_test_records(grouped, limit)
    if not picked:
        raise ValueError("no test records to answer (is there a split 'test'?)")
    needs_memory = method != "zero-shot"
    if lm is None and (method != "knn" or memory is None):
        raise ValueError(f"method {method!r} needs a model")
    if lm is not None and config is None:
        from fints_agent.config import Preset

        config = Preset.for_model(lm.fingerprint)
    vectors = config.vector_kind if config is not None else "contrast"
    users = set(picked)  # users are isolated: only those answered need their history
    answered = [r for r in records if r.user_id in users]
    with _memory_scope(
        lm,
        memory,
        needs_memory,
        answered,
        embedder,
        vectors,
        cache=cache,
        fresh=fresh,
        writable=online,
        progress=progress,
    ) as ingest:
        run = _answer_all(
            lm,
            grouped,
            picked,
            method,
            ingest.memory if ingest is not None else memory,
            config,
            k,
            online,
            feedback,
            batch_size,
            max_new_tokens,
            progress,
            engine_factory,
            copy_strings=copy_strings,
        )
        run.summary["ingest_seconds"] = round(ingest.seconds, 1) if ingest else 0.0
        run.summary["recorded_trajectories"] = ingest.recorded if ingest else 0
        run.summary["history_store"] = ingest.location if ingest else None
        return run


def _feedback(memory: Memory, outcome: TurnOutcome, feedback: str) -> dict[str, Any]:
    """The trajectory recorded after an answered turn (``correction``: a wrong call is the
    rejected one, unless it cannot be recorded as a call of the turn's tools)."""
    from fints_agent.memory import MemoryInputError

    item = _trajectory(outcome.record)
    if feedback != "correction" or outcome.score.call or not outcome.call:
        return item
    corrected = {**item, "rejected": [outcome.call]}
    try:
        memory.recorder.prepare(corrected)
    except MemoryInputError:
        return item
    return corrected


@contextmanager
def _memory_scope(
    lm: LoadedModel | None,
    memory: Memory | None,
    needed: bool,
    records: Sequence[PersonalRecord],
    embedder: str | Embedder,
    vectors: str,
    **how: Any,
) -> Iterator[HistoryMemory | None]:
    """The history memory of a run (None: the given memory, or none needed)."""
    if memory is not None or not needed:
        yield None
        return
    assert lm is not None
    with history_memory(
        lm, records, embedder=embedder, options={"vectors": vectors}, **how
    ) as ingest:
        yield ingest


def _answer_all(
    lm: LoadedModel | None,
    grouped: Mapping[str, UserRecords],
    picked: Mapping[str, list[PersonalRecord]],
    method: str,
    memory: Memory | None,
    config: Preset | None,
    k: int | None,
    online: bool,
    feedback: str,
    batch_size: int,
    max_new_tokens: int,
    progress: bool,
    engine_factory: Callable[..., Any] | None,
    *,
    copy_strings: bool = False,
) -> PersonalRun:
    from tqdm.auto import tqdm

    engine = None
    if method != "knn":
        from fints_agent.engine import TurnEngine

        assert lm is not None and config is not None  # run_personal resolves it
        cfg = config
        if k is not None:
            cfg = cfg.replace(k=k)
        engine = (engine_factory or TurnEngine)(lm, memory, cfg)
        config = cfg
    if online and memory is None:
        raise ValueError("online feedback needs a memory (not with zero-shot)")

    rounds: list[list[PersonalRecord]]
    if online:
        depth = max(len(v) for v in picked.values())
        rounds = [[v[d] for v in picked.values() if d < len(v)] for d in range(depth)]
    else:
        rounds = [[r for v in picked.values() for r in v]]
    total = sum(len(r) for r in rounds)
    outcomes: list[TurnOutcome] = []
    began = time.perf_counter()
    with tqdm(total=total, desc=f"personal {method}", unit="turn", disable=not progress) as bar:
        for turns in rounds:
            answered = answer_turns(
                turns,
                method,
                engine=engine,
                memory=memory,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                copy_strings=copy_strings,
                on_batch=bar.update,
            )
            outcomes.extend(answered)
            if online and memory is not None:
                items = [_feedback(memory, o, feedback) for o in answered]
                memory.record_many(items, progress=False)
    elapsed = time.perf_counter() - began

    history_counts = {u: domain_history_counts(g) for u, g in grouped.items()}
    old_prefs = {u: _old_preferences(g) for u, g in grouped.items()}
    follows: dict[int, str] = {}
    for i, o in enumerate(outcomes):
        domain = str((o.record.meta or {}).get("domain", ""))
        old = old_preference_call(o.record, old_prefs.get(o.record.user_id, {}).get(domain))
        if old is not None:
            follows[i] = follow_label(o.call, o.record.chosen.as_dict(), old, o.record.tools)

    summary: dict[str, Any] = {"method": method}
    summary.update(summarize_outcomes(outcomes, follows))
    summary.update(
        {
            "latency_basis": LATENCY_BASIS if method != "knn" else "retrieval time per turn",
            "batch_size": batch_size if method != "knn" else 1,
            "online": online,
            "feedback": feedback if online else None,
            "copy_strings": copy_strings if method != "knn" else None,
            "k": config.retrieval.k if config is not None else 1,
            "eval_seconds": round(elapsed, 1),
            "turns_per_second": round(total / elapsed, 3) if elapsed > 0 else None,
            "users": len(picked),
            "model": lm.name if lm is not None else None,
            "fingerprint": lm.fingerprint if lm is not None else None,
            "config": config.model_dump() if config is not None and method != "zero-shot" else None,
            "machine": machine_info(),
        }
    )
    return PersonalRun(summary, outcomes, history_counts, follows)
