"""Memories for the benchmark, and recording the ``history`` records of a dataset into them.

* :func:`open_memory` and :func:`temporary_memory` open a memory (vectors of every layer).
* :func:`ingest_history` records the history records, each user's in turn order.
* :class:`HistoryMemory` is what :func:`~fints_agent.eval.personal.history.history_memory`
  yields: the memory and how its history got there.

Example:
    >>> with temporary_memory(lm) as memory:
    ...     ingest_history(memory, records)
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.memory import Embedder, Memory
    from fints_agent.models import LoadedModel

__all__ = ["HistoryMemory", "ingest_history", "open_memory", "temporary_memory"]


def open_memory(
    lm: LoadedModel,
    location: str | Path,
    *,
    embedder: str | Embedder = "minilm",
    layers: Sequence[int] | None = None,
    sites: Sequence[str] = ("attn", "mlp"),
    batch_size: int = 8,
    **options: Any,
) -> Memory:
    """A :class:`~fints_agent.memory.Memory` on a Chroma directory (vectors of all layers).

    Args:
        lm: The model.
        location: A directory (created) or a Chroma server URL.
        embedder: Retrieval embedder (``"minilm"``, ``"lm"`` or an embedder object).
        layers: Layers of the stored vectors (default all, so any configuration can select).
        sites: Sites of the stored vectors.
        batch_size: Forward-pass batch size for vector computation.
        **options: Further :class:`~fints_agent.memory.Memory` options (for example
            ``n_negatives=3``).
    """
    from fints_agent.memory import Memory, TrajectoryStore

    return Memory(
        lm,
        TrajectoryStore(location),
        layers=layers,
        sites=tuple(sites),  # type: ignore[arg-type]
        embedder=embedder,
        batch_size=batch_size,
        **options,
    )


@contextmanager
def temporary_memory(
    lm: LoadedModel, *, embedder: str | Embedder = "minilm", **kwargs: Any
) -> Iterator[Memory]:
    """A memory on a fresh temporary Chroma directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="fints-eval-") as folder:
        yield open_memory(lm, folder, embedder=embedder, **kwargs)


@dataclass
class HistoryMemory:
    """What :func:`history_memory` yields: the memory and how its history got there.

    It also unpacks as ``(memory, seconds)``.

    Attributes:
        memory: The memory, holding exactly the history records given.
        seconds: Seconds spent recording (0 when a recorded store was reused).
        recorded: Trajectories recorded by this call (0 when a recorded store was reused).
        location: The kept store's directory (None for a temporary memory).
    """

    memory: Memory
    seconds: float
    recorded: int
    location: str | None = None

    @property
    def reused(self) -> bool:
        """Whether a store recorded earlier was used (nothing recorded now)."""
        return self.location is not None and self.recorded == 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.memory, self.seconds))


def _history(records: Sequence[PersonalRecord]) -> list[PersonalRecord]:
    """The records :func:`ingest_history` records, in the order it records them."""
    history = [r for r in records if r.split == "history"]
    history.sort(key=lambda r: (r.user_id, r.turn))
    return history


def _trajectory(record: PersonalRecord) -> dict[str, Any]:
    return {
        "user_id": record.user_id,
        "messages": [m.model_dump() for m in record.messages],
        "tools": record.openai_tools(),
        "chosen": record.chosen.as_dict(),
        "rejected": [r.as_dict() for r in record.rejected] or None,
    }


def ingest_history(
    memory: Memory, records: Sequence[PersonalRecord], *, progress: bool = True
) -> int:
    """Records ``history`` records into a memory, each user's in turn order.

    Args:
        memory: The memory.
        records: Records; only ``split == "history"`` ones are recorded.
        progress: Show a progress bar.

    Returns:
        How many trajectories were recorded.
    """
    history = _history(records)
    if not history:
        return 0
    memory.record_many([_trajectory(r) for r in history], progress=progress)
    return len(history)


def _user_counts(memory: Memory) -> dict[str, int]:
    present = {u: memory.store.count(u) for u in memory.store.users()}
    return {u: n for u, n in present.items() if n}


def _check_holds(
    memory: Memory,
    history: Sequence[PersonalRecord],
    where: str | Path,
    present: Mapping[str, int] | None = None,
    hint: str = "use an empty or matching directory",
) -> None:
    expected: dict[str, int] = defaultdict(int)
    for r in history:
        expected[r.user_id] += 1
    present = _user_counts(memory) if present is None else present
    if dict(present) != dict(expected):
        raise ValueError(
            f"store {where} holds other trajectories ({sum(present.values())} of "
            f"{len(present)} users) than the {len(history)} history records of "
            f"{len(expected)} users of this run: {hint}"
        )


def _close(memory: Memory) -> None:
    """Releases the Chroma client of a memory (its files can then be moved or removed)."""
    close = getattr(memory.store.client, "close", None)
    if callable(close):
        close()
