"""The trajectory store's exceptions.

The memory's input errors (:class:`~fints_agent.memory.negatives.MemoryInputError` and
:class:`~fints_agent.memory.negatives.InvalidCallError`) live with the checks that raise them.
"""

from __future__ import annotations

from fints_agent.steering.vector import VectorMismatchError

__all__ = ["StoreError", "StoreLayoutError", "UnknownTrajectoryError"]


class StoreError(RuntimeError):
    """The store cannot be opened or read (bad location, unreachable server, bad file)."""


class StoreLayoutError(VectorMismatchError):
    """Vectors or embeddings that do not fit the store (another model, layers, or embedder)."""


class UnknownTrajectoryError(KeyError):
    """No trajectory with this id (for this user)."""
