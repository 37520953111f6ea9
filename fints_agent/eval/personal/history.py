"""A memory holding exactly a run's history records: temporary, in a directory, or kept.

Example:
    >>> with history_memory(lm, records, cache=True, options={"vectors": "split"}) as h:
    ...     h.recorded, h.seconds, h.location   # 0 and 0.0 on the second run
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fints_agent.eval.personal.history_cache import _cached_history
from fints_agent.eval.personal.recording import (
    HistoryMemory,
    _check_holds,
    _close,
    _history,
    _user_counts,
    ingest_history,
    open_memory,
    temporary_memory,
)

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.memory import Embedder
    from fints_agent.models import LoadedModel

__all__ = ["history_memory"]


@contextmanager
def history_memory(
    lm: LoadedModel,
    records: Sequence[PersonalRecord],
    *,
    store: str | Path | None = None,
    cache: bool = False,
    fresh: bool = False,
    writable: bool = False,
    embedder: str | Embedder = "minilm",
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
) -> Iterator[HistoryMemory]:
    """A memory holding exactly the ``history`` records given, ready to answer turns.

    Recording vectors is the slow part of a run, so a recorded history can be kept and reused:

    * ``cache=True``: the store is kept in the user cache (:func:`history_cache_dir`), one
      directory per :func:`history_store_key` (records, model, vector kind, layers, sites,
      embedder and recording options). It is recorded into a temporary directory that is renamed
      into place only once complete, so a run that dies while recording leaves nothing that is
      ever reused (its leftovers are removed by a later run). A complete store is reused as is.
    * ``store``: a directory of your own. An empty store is ingested and kept; a store that
      already holds exactly these users' history counts is reused.
    * Neither: a fresh temporary memory is ingested and removed afterwards.

    Kept stores are opened for the duration of the ``with`` block only (their Chroma client is
    closed on exit, so the memory is not usable afterwards).

    Args:
        lm: The model.
        records: Records; only ``split == "history"`` ones are recorded.
        store: A directory to keep the memory in (None: temporary, or the cache).
        cache: Keep the memory in the user cache, keyed by what its vectors depend on.
        fresh: Record again even where a recorded store exists (the kept store is replaced;
            an own ``store`` directory has its users forgotten first).
        writable: The memory will be written to (online feedback, say): a cached store is
            copied into a temporary directory first, so that the kept one stays as recorded.
        embedder: Retrieval embedder.
        progress: Show a progress bar while recording.
        options: Further :class:`~fints_agent.memory.Memory` options.

    Yields:
        A :class:`HistoryMemory`, which also unpacks as ``(memory, seconds spent recording)``
        (0 when reused).

    Raises:
        ValueError: ``store`` holds trajectories other than these records' history, both
            ``store`` and ``cache`` are given, or an option cannot key a cached store.

    Example:
        >>> with history_memory(lm, records, cache=True, options={"vectors": "split"}) as h:
        ...     h.recorded, h.seconds, h.location   # 0 and 0.0 on the second run
    """
    history = _history(records)
    opts = dict(options or {})
    if cache and store is not None:
        raise ValueError("give either a store directory or cache=True, not both")
    if cache:
        with _cached_history(lm, history, embedder, opts, fresh, writable, progress) as kept:
            yield kept
        return
    if store is None:
        with temporary_memory(lm, embedder=embedder, **opts) as memory:
            began = time.perf_counter()
            recorded = ingest_history(memory, history, progress=progress)
            yield HistoryMemory(memory, time.perf_counter() - began, recorded)
        return
    Path(store).mkdir(parents=True, exist_ok=True)
    memory = open_memory(lm, store, embedder=embedder, **opts)
    if fresh:
        for user in memory.store.users():
            memory.forget_user(user)
    present = _user_counts(memory)
    seconds = 0.0
    recorded = 0
    if not present:
        began = time.perf_counter()
        recorded = ingest_history(memory, history, progress=progress)
        seconds = time.perf_counter() - began
    else:
        _check_holds(memory, history, store, present)
    try:
        yield HistoryMemory(memory, seconds, recorded, str(store))
    finally:
        _close(memory)
