"""Per-user trajectory memory: record tool calls with their steering vectors, retrieve per turn.

Recording a trajectory (a request, the tools offered, the call the user accepted and the calls
they rejected) stores its retrieval embedding and its steering vector, computed on exactly the
prompt the model sees at inference. At each turn, :meth:`Memory.retrieve` finds the user's most
similar past trajectories and sums their vectors, softmax-weighted by similarity, into one
:class:`~fints_agent.steering.vector.SteeringVector`.

Modules, each importing only from those listed before it:

* :mod:`~fints_agent.memory.errors`: the store's exceptions.
* :mod:`~fints_agent.memory.lock`: one process per embedded store (its directory's lock), and
  who a process is (for the journal).
* :mod:`~fints_agent.memory.records`: one stored trajectory (:class:`TrajectoryRecord`) and
  its Chroma metadata.
* :mod:`~fints_agent.memory.embed`: retrieval embedders.
* :mod:`~fints_agent.memory.layout`: what a store's vectors are (:class:`StoreLayout`).
* :mod:`~fints_agent.memory.chroma`: the Chroma client and the store's collections.
* :mod:`~fints_agent.memory.reader`: reading a store.
* :mod:`~fints_agent.memory.journal`: crash-safe writes and recovery (:class:`RecoveryReport`).
* :mod:`~fints_agent.memory.transfer`: export files.
* :mod:`~fints_agent.memory.store`: :class:`TrajectoryStore`, the store itself.
* :mod:`~fints_agent.memory.aggregate`: retrieval weights and weighted sums.
* :mod:`~fints_agent.memory.negatives`: call checks, and negatives built when none are given.
* :mod:`~fints_agent.memory.trajectory`: a trajectory to record (:class:`TrajectoryInput`).
* :mod:`~fints_agent.memory.vectors`: computing a trajectory's steering vectors.
* :mod:`~fints_agent.memory.recorder`: recording (:class:`Recorder`).
* :mod:`~fints_agent.memory.retrieval`: retrieval (:class:`Retrieval`, :class:`Retriever`).
* :mod:`~fints_agent.memory.memory`: :class:`Memory`, which holds a recorder and a retriever.
* :mod:`~fints_agent.memory.background`: recording without blocking the caller
  (:class:`BackgroundRecorder`).
* :mod:`~fints_agent.memory.cli`: ``fints-agent memory ...``.

Example:
    >>> lm = load_model()
    >>> memory = Memory(lm, TrajectoryStore("./memory"))
    >>> tid = memory.record("alice", [{"role": "user", "content": "Weather in Oslo?"}], tools,
    ...                     {"name": "get_weather", "arguments": {"city": "Oslo",
    ...                                                       "units": "celsius"}})
    >>> r = memory.retrieve("alice", [{"role": "user", "content": "Weather in Paris?"}])
    >>> r.vector, r.trajectory_ids, r.weights, r.similarities
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fints_agent.lazy import lazy_exports

if TYPE_CHECKING:
    from fints_agent.config import VECTOR_KINDS
    from fints_agent.memory.aggregate import (
        Recency,
        aggregate_flat,
        log_decay,
        mix_weights,
        select_top,
    )
    from fints_agent.memory.background import BackgroundRecorder, RecorderClosedError
    from fints_agent.memory.embed import (
        Embedder,
        EmbedderError,
        LMEmbedder,
        MiniLMEmbedder,
        make_embedder,
    )
    from fints_agent.memory.errors import (
        StoreAuthError,
        StoreBusyError,
        StoreError,
        StoreLayoutError,
        StoreUnavailableError,
        UnknownTrajectoryError,
    )
    from fints_agent.memory.journal import RecoveryReport
    from fints_agent.memory.layout import StoreLayout
    from fints_agent.memory.memory import Memory
    from fints_agent.memory.negatives import (
        NEGATIVE_SOURCES,
        InvalidCallError,
        MemoryInputError,
        plain_messages,
        tool_specs,
    )
    from fints_agent.memory.recorder import Recorder
    from fints_agent.memory.records import TrajectoryRecord, check_user_id
    from fints_agent.memory.retrieval import Retrieval, Retriever
    from fints_agent.memory.store import TrajectoryStore
    from fints_agent.memory.trajectory import NegativeFn, TrajectoryInput

# Public names load on first use: importing the package (or its cli module, for a
# command's --help) does not load numpy, torch or chromadb.
_EXPORTS: dict[str, str] = {
    "VECTOR_KINDS": "fints_agent.config",
    "Recency": "fints_agent.memory.aggregate",
    "aggregate_flat": "fints_agent.memory.aggregate",
    "log_decay": "fints_agent.memory.aggregate",
    "mix_weights": "fints_agent.memory.aggregate",
    "select_top": "fints_agent.memory.aggregate",
    "BackgroundRecorder": "fints_agent.memory.background",
    "RecorderClosedError": "fints_agent.memory.background",
    "Embedder": "fints_agent.memory.embed",
    "EmbedderError": "fints_agent.memory.embed",
    "LMEmbedder": "fints_agent.memory.embed",
    "MiniLMEmbedder": "fints_agent.memory.embed",
    "make_embedder": "fints_agent.memory.embed",
    "StoreAuthError": "fints_agent.memory.errors",
    "StoreBusyError": "fints_agent.memory.errors",
    "StoreError": "fints_agent.memory.errors",
    "StoreLayoutError": "fints_agent.memory.errors",
    "StoreUnavailableError": "fints_agent.memory.errors",
    "UnknownTrajectoryError": "fints_agent.memory.errors",
    "RecoveryReport": "fints_agent.memory.journal",
    "StoreLayout": "fints_agent.memory.layout",
    "Memory": "fints_agent.memory.memory",
    "NEGATIVE_SOURCES": "fints_agent.memory.negatives",
    "InvalidCallError": "fints_agent.memory.negatives",
    "MemoryInputError": "fints_agent.memory.negatives",
    "plain_messages": "fints_agent.memory.negatives",
    "tool_specs": "fints_agent.memory.negatives",
    "Recorder": "fints_agent.memory.recorder",
    "TrajectoryRecord": "fints_agent.memory.records",
    "check_user_id": "fints_agent.memory.records",
    "Retrieval": "fints_agent.memory.retrieval",
    "Retriever": "fints_agent.memory.retrieval",
    "TrajectoryStore": "fints_agent.memory.store",
    "NegativeFn": "fints_agent.memory.trajectory",
    "TrajectoryInput": "fints_agent.memory.trajectory",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "NEGATIVE_SOURCES",
    "VECTOR_KINDS",
    "BackgroundRecorder",
    "Embedder",
    "EmbedderError",
    "InvalidCallError",
    "LMEmbedder",
    "Memory",
    "MemoryInputError",
    "MiniLMEmbedder",
    "NegativeFn",
    "Recency",
    "Recorder",
    "RecorderClosedError",
    "RecoveryReport",
    "Retrieval",
    "Retriever",
    "StoreAuthError",
    "StoreBusyError",
    "StoreError",
    "StoreLayout",
    "StoreLayoutError",
    "StoreUnavailableError",
    "TrajectoryInput",
    "TrajectoryRecord",
    "TrajectoryStore",
    "UnknownTrajectoryError",
    "aggregate_flat",
    "check_user_id",
    "log_decay",
    "make_embedder",
    "mix_weights",
    "plain_messages",
    "select_top",
    "tool_specs",
]
