"""Input-aware aggregation: weights over retrieved trajectories and the weighted vector sum.

Pure functions, no storage. Given the cosine similarities ``s_i`` of the current request to the
user's retrieved trajectories (top-k), the Fints weights are ``softmax(s / T)`` (default
``T = 0.1``). An optional recency term multiplies each weight by
``2 ** (-age_i / half_life)`` (age in the user's turns, or in seconds) before normalizing, which
is the same as adding ``-ln(2) * age_i / half_life`` to the softmax logits.

Example:
    >>> w = mix_weights([0.9, 0.8, 0.2], temperature=0.1)
    >>> w.round(3).tolist()
    [0.731, 0.269, 0.001]
    >>> v = aggregate([v1, v2, v3], w)          # one SteeringVector
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fints_agent.config import DEFAULT_RETRIEVAL
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "Recency",
    "aggregate",
    "aggregate_flat",
    "log_decay",
    "mix_weights",
    "select_top",
    "softmax",
]


@dataclass(frozen=True)
class Recency:
    """Down-weight old trajectories: a trajectory ``half_life`` old counts half as much.

    Attributes:
        half_life: Age at which a weight is halved (must be > 0).
        unit: ``"turns"`` (the user's trajectories recorded since) or ``"seconds"``.

    Example:
        >>> Recency(half_life=20)            # halve every 20 newer turns of the user
        >>> Recency(3600 * 24 * 7, "seconds")  # halve every week
    """

    half_life: float
    unit: Literal["turns", "seconds"] = "turns"

    def __post_init__(self) -> None:
        if not (self.half_life > 0 and math.isfinite(self.half_life)):
            raise ValueError(f"half_life must be a positive number, got {self.half_life!r}")
        if self.unit not in ("turns", "seconds"):
            raise ValueError(f"unit must be 'turns' or 'seconds', got {self.unit!r}")


def softmax(logits: Sequence[float] | np.ndarray) -> np.ndarray:
    """Numerically stable softmax in float64.

    Raises:
        ValueError: Empty input.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.size == 0:
        raise ValueError("softmax of nothing")
    x = x - x.max()
    e = np.exp(x)
    return np.asarray(e / e.sum(), dtype=np.float64)


def log_decay(ages: Sequence[float] | np.ndarray, half_life: float) -> np.ndarray:
    """``log(2 ** (-age / half_life))`` per age (negative ages count as 0).

    Example:
        >>> np.exp(log_decay([0, 10, 20], half_life=10)).tolist()
        [1.0, 0.5, 0.25]
    """
    if not half_life > 0:
        raise ValueError(f"half_life must be > 0, got {half_life}")
    a = np.maximum(np.asarray(ages, dtype=np.float64), 0.0)
    return np.asarray(-math.log(2.0) * a / half_life, dtype=np.float64)


def _logits(similarities: np.ndarray, temperature: float, decay: np.ndarray | None) -> np.ndarray:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = similarities / temperature
    if decay is not None:
        if decay.shape != similarities.shape:
            raise ValueError(f"{decay.size} decay terms for {similarities.size} similarities")
        logits = logits + decay
    return logits


def mix_weights(
    similarities: Sequence[float] | np.ndarray,
    *,
    temperature: float = DEFAULT_RETRIEVAL.softmax_temperature,
    decay: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Weights (summing to 1) for retrieved trajectories.

    Args:
        similarities: Cosine similarity of each trajectory to the current request.
        temperature: Softmax temperature.
        decay: Optional log-weight added per trajectory (see :func:`log_decay`).

    Raises:
        ValueError: Empty input, non-positive temperature.

    Example:
        >>> mix_weights([0.5, 0.5]).tolist()
        [0.5, 0.5]
    """
    s = np.asarray(similarities, dtype=np.float64)
    d = None if decay is None else np.asarray(decay, dtype=np.float64)
    return softmax(_logits(s, temperature, d))


def select_top(
    similarities: Sequence[float] | np.ndarray,
    k: int,
    *,
    temperature: float = DEFAULT_RETRIEVAL.softmax_temperature,
    decay: Sequence[float] | np.ndarray | None = None,
) -> list[int]:
    """Indices of the ``k`` candidates with the largest weight logits, best first.

    Without ``decay`` this is the top-k by similarity; with it, an old trajectory can lose its
    place to a slightly less similar recent one.

    Raises:
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = np.asarray(similarities, dtype=np.float64)
    if s.size == 0:
        return []
    d = None if decay is None else np.asarray(decay, dtype=np.float64)
    logits = _logits(s, temperature, d)
    order = np.lexsort((-s, -logits))  # by logit, then by similarity
    return [int(i) for i in order[:k]]


def aggregate(
    vectors: Sequence[SteeringVector], weights: Sequence[float] | np.ndarray
) -> SteeringVector:
    """``sum_i weights[i] * vectors[i]`` as one :class:`SteeringVector`.

    Raises:
        ValueError: No vectors, or as many weights as vectors are not given.
        VectorMismatchError: The vectors differ in model, layers, sites or width.

    Example:
        >>> aggregate([v1, v2], [0.25, 0.75]) == 0.25 * v1 + 0.75 * v2
        True
    """
    w = [float(x) for x in np.asarray(weights, dtype=np.float64).ravel()]
    out = SteeringVector.weighted_sum(list(vectors), w)
    return out.like(out.tensor, kind="aggregate", n=len(w))


def aggregate_flat(
    flats: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float] | np.ndarray
) -> np.ndarray:
    """``sum_i weights[i] * flats[i]`` for flat float32 vectors, in float32.

    The same sum as :func:`aggregate` without building one :class:`SteeringVector` per input
    (the retrieval hot path).

    Raises:
        ValueError: No vectors, a count mismatch, or vectors of different lengths.

    Example:
        >>> aggregate_flat([np.ones(3, np.float32), np.zeros(3, np.float32)], [0.25, 0.75])
        array([0.25, 0.25, 0.25], dtype=float32)
    """
    if len(flats) == 0:
        raise ValueError("aggregate of no vectors")
    w = np.asarray(weights, dtype=np.float32).ravel()
    if w.size != len(flats):
        raise ValueError(f"{len(flats)} vectors but {w.size} weights")
    widths = {np.asarray(f).size for f in flats}
    if len(widths) != 1:
        raise ValueError(f"vectors of different lengths: {sorted(widths)}")
    stacked = np.stack([np.asarray(f, dtype=np.float32).ravel() for f in flats])
    return np.asarray(w @ stacked, dtype=np.float32)
