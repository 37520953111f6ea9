"""The trajectory store's exceptions.

The memory's input errors (:class:`~fints_agent.memory.negatives.MemoryInputError` and
:class:`~fints_agent.memory.negatives.InvalidCallError`) live with the checks that raise them.
"""

from __future__ import annotations

from fints_agent.steering.vector import VectorMismatchError

__all__ = [
    "StoreAuthError",
    "StoreBusyError",
    "StoreError",
    "StoreLayoutError",
    "StoreUnavailableError",
    "UnknownTrajectoryError",
]


class StoreError(RuntimeError):
    """The store cannot be opened or read (bad location, unreachable server, bad file)."""


class StoreBusyError(StoreError):
    """An embedded store is open in another process (one process at a time; a Chroma server
    shares a store between processes: see :mod:`~fints_agent.memory.lock`)."""


class StoreAuthError(StoreError):
    """The Chroma server refused the store's credentials (none given, or wrong ones), or the
    credentials cannot be used (malformed, or given both in the URL and as a token)."""


class StoreUnavailableError(StoreError):
    """The Chroma server cannot be reached now (not running, restarting, network down).

    Nothing already stored is lost; the same call can be tried again later.
    """


class StoreLayoutError(VectorMismatchError):
    """Vectors or embeddings that do not fit the store (another model, layers, or embedder)."""


class UnknownTrajectoryError(KeyError):
    """No trajectory with this id (for this user)."""
