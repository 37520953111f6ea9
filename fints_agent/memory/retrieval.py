"""Retrieval: the steering vector for a turn, from the user's most similar past trajectories.

At each turn the request is embedded, the user's top-k most similar past trajectories are found,
weighted with ``softmax(similarity / T)`` (optionally times a recency decay; see
:mod:`~fints_agent.memory.aggregate`) and their vectors summed into one :class:`SteeringVector`
(a ``vectors="split"`` memory sums both of its vectors, with the same weights). The
:class:`Retrieval` also says why it steered (weights, similarities, ids) and carries the
retrieved requests and calls (for retrieval-augmented prompting). A user with no history, or
whose best match is below ``min_similarity``, gets no vector (or a given fallback).

A :class:`Retriever` is the retrieval half of :class:`~fints_agent.memory.Memory`, which holds
one and delegates to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fints_agent.calls.specs import ToolSpec
from fints_agent.memory.aggregate import Recency, aggregate_flat, log_decay, mix_weights, select_top
from fints_agent.memory.embed import Embedder
from fints_agent.memory.errors import UnknownTrajectoryError
from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.negatives import tool_specs
from fints_agent.memory.store import TrajectoryStore
from fints_agent.memory.vectors import unflatten
from fints_agent.models import LoadedModel
from fints_agent.steering.layers import Site
from fints_agent.steering.vector import SteeringVector

__all__ = ["Retrieval", "Retriever"]

logger = logging.getLogger(__name__)


@dataclass
class Retrieval:
    """The result of one turn's retrieval: the vector to steer with and why.

    Attributes:
        user_id: The user.
        vector: The aggregated vector (``None``: do not steer), or the fallback.
        value_vector: For a ``vectors="split"`` memory, the aggregated demonstration vector,
            which steers argument values while ``vector`` steers the rest (``None``: none).
        trajectory_ids: Ids of the trajectories mixed, highest weight first.
        weights: Their weights (sum to 1).
        similarities: Their cosine similarities to the request.
        requests: Their request texts.
        calls: Their chosen calls.
        ages: Their ages (turns or seconds, with recency weighting; else turns).
        reason: ``"steered"``, ``"no_history"``, ``"below_threshold"``, ``"empty_request"`` or
            ``"no_matching_tools"``.
        fallback: Whether ``vector`` is the fallback vector.
        examples: ``(messages, call)`` per retrieved trajectory, for prompting.
    """

    user_id: str
    vector: SteeringVector | None
    trajectory_ids: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    reason: str = "steered"
    fallback: bool = False
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)
    value_vector: SteeringVector | None = None

    def __post_init__(self) -> None:
        if not self.examples:
            self.examples = [
                ([{"role": "user", "content": req}], call)
                for req, call in zip(self.requests, self.calls, strict=True)
            ]

    @property
    def steered(self) -> bool:
        """Whether a vector (retrieved or fallback) is returned."""
        return self.vector is not None

    def explain(self) -> dict[str, Any]:
        """JSON-ready account of the decision (no vector values)."""
        return {
            "user_id": self.user_id,
            "steered": self.steered,
            "reason": self.reason,
            "fallback": self.fallback,
            "trajectories": [
                {"id": i, "weight": round(w, 6), "similarity": round(s, 6), "request": r, "call": c}
                for i, w, s, r, c in zip(
                    self.trajectory_ids,
                    self.weights,
                    self.similarities,
                    self.requests,
                    self.calls,
                    strict=True,
                )
            ],
        }


def _tool_names(tools: Sequence[Any]) -> set[str]:
    """Names of the offered tools (specs and OpenAI dicts read directly, other forms through
    specs)."""
    names = set()
    for tool in tools:
        if isinstance(tool, ToolSpec):  # what the turn engine passes: checked already
            names.add(tool.name)
            continue
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
        else:
            names.update(s.name for s in tool_specs([tool]))
    return names


class Retriever:
    """Finds, weights and sums a user's trajectory vectors, with caches of vectors and request
    embeddings.

    Args:
        lm: The model (a fallback vector must be of it).
        store: The store read.
        embedder: The retrieval embedder.
        layout: The store's layout.
        layers: Layers of the vectors returned (a subset of the layout's).
        sites: Sites of the vectors returned (a subset of the layout's).
        cache_size: Decoded vectors kept in memory (ids are immutable, so never stale), and
            request embeddings kept (an agent loop asks again for the same request after each
            tool result).
    """

    def __init__(
        self,
        lm: LoadedModel,
        store: TrajectoryStore,
        embedder: Embedder,
        layout: StoreLayout,
        layers: tuple[int, ...],
        sites: tuple[Site, ...],
        *,
        cache_size: int = 256,
    ) -> None:
        self.lm = lm
        self.store = store
        self.embedder = embedder
        self.layout = layout
        self.layers = layers
        self.sites = sites
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._embed_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def to_vectors(self, flat: np.ndarray) -> list[SteeringVector]:
        """Every part of a stored flat vector, on this retriever's layers and sites."""
        return unflatten(flat, self.layout, self.layers, self.sites)

    def stored_vector(self, user_id: str, trajectory_id: str) -> SteeringVector:
        """One trajectory's stored vector (of a split store, its first part), uncached.

        Raises:
            UnknownTrajectoryError: The user has no such trajectory.
        """
        flats = self.store.get_vectors(user_id, [trajectory_id])
        if trajectory_id not in flats or not self.store.get(user_id, [trajectory_id]):
            raise UnknownTrajectoryError(f"user {user_id!r} has no trajectory {trajectory_id!r}")
        return self.to_vectors(flats[trajectory_id])[0]

    # -- caches ---------------------------------------------------------------------------------
    def _vectors(self, user_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for tid in ids:
                if tid in self._cache:
                    self._cache.move_to_end(tid)
                    found[tid] = self._cache[tid]
        missing = [t for t in ids if t not in found]
        if missing:
            fetched = self.store.get_vectors(user_id, missing)
            found.update(fetched)
            if self._cache_size > 0:
                with self._cache_lock:
                    for tid, v in fetched.items():
                        self._cache[tid] = v
                        self._cache.move_to_end(tid)
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return found

    def embed_request(self, text: str) -> np.ndarray:
        """The request's retrieval embedding (cached)."""
        with self._cache_lock:
            hit = self._embed_cache.get(text)
            if hit is not None:
                self._embed_cache.move_to_end(text)
                return hit
        embedding = self.embedder.embed([text])[0]
        if self._cache_size > 0:
            with self._cache_lock:
                self._embed_cache[text] = embedding
                while len(self._embed_cache) > self._cache_size:
                    self._embed_cache.popitem(last=False)
        return embedding

    def uncache(self, ids: Iterable[str] | None = None) -> None:
        """Drop cached vectors (of these ids; all when ``None``)."""
        with self._cache_lock:
            if ids is None:
                self._cache.clear()
            else:
                for tid in ids:
                    self._cache.pop(tid, None)

    # -- retrieval ------------------------------------------------------------------------------
    def unsteered(
        self, user_id: str, reason: str, fallback: SteeringVector | None, **found: Any
    ) -> Retrieval:
        """A retrieval without a retrieved vector (the fallback, checked, if given)."""
        if fallback is not None:
            fallback.check_model(self.lm.fingerprint, self.lm.num_layers, self.lm.d_model)
        return Retrieval(user_id, fallback, reason=reason, fallback=fallback is not None, **found)

    def retrieve(
        self,
        user_id: str,
        embedding: np.ndarray,
        tools: Sequence[Any] | None,
        *,
        k: int,
        temperature: float,
        min_similarity: float,
        match_tools: bool,
        recency: Recency | None,
        fallback: SteeringVector | None,
        include_superseded: bool,
    ) -> Retrieval:
        """The retrieval for an embedded request (see :meth:`Memory.retrieve
        <fints_agent.memory.Memory.retrieve>`; here every setting is explicit)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        offered = _tool_names(tools) if tools and match_tools else set()
        fetch = k * 4 if (recency is not None or offered) else k
        candidates = self.store.query(
            user_id, embedding, fetch, include_superseded=include_superseded
        )
        if not candidates:
            return self.unsteered(user_id, "no_history", fallback)
        if offered:
            candidates = [c for c in candidates if c.chosen.get("name") in offered]
            if not candidates:
                return self.unsteered(user_id, "no_matching_tools", fallback)
        sims = np.array([c.similarity or 0.0 for c in candidates], dtype=np.float64)
        if recency is not None and recency.unit == "seconds":
            now = time.time()
            ages = np.array([now - c.created_at for c in candidates], dtype=np.float64)
        else:
            latest = self.store.latest_seq(user_id) if recency is not None else None
            if latest is None:
                latest = max(c.seq for c in candidates)
            ages = np.array([max(0, latest - c.seq) for c in candidates], dtype=np.float64)
        decay = log_decay(ages, recency.half_life) if recency is not None else None
        if float(sims.max()) < min_similarity:
            return self.unsteered(
                user_id,
                "below_threshold",
                fallback,
                trajectory_ids=[c.id for c in candidates[:k]],
                similarities=[float(s) for s in sims[:k]],
                weights=[0.0] * min(k, len(sims)),
                requests=[c.request for c in candidates[:k]],
                calls=[c.chosen for c in candidates[:k]],
                ages=[float(a) for a in ages[:k]],
            )
        order = select_top(sims, k, temperature=temperature, decay=decay)
        top = [candidates[i] for i in order]
        flats = self._vectors(user_id, [c.id for c in top])
        keep = [i for i, c in zip(order, top, strict=True) if c.id in flats]
        if len(keep) < len(order):
            logger.warning("%d retrieved trajectories have no vector", len(order) - len(keep))
        if not keep:
            return self.unsteered(user_id, "no_history", fallback)
        weights = mix_weights(
            sims[keep], temperature=temperature, decay=None if decay is None else decay[keep]
        )
        picked = [candidates[i] for i in keep]
        summed = aggregate_flat([flats[c.id] for c in picked], weights)
        parts = [v.like(v.tensor, kind="aggregate", n=len(picked)) for v in self.to_vectors(summed)]
        return Retrieval(
            user_id=user_id,
            vector=parts[0],
            value_vector=parts[1] if len(parts) > 1 else None,
            trajectory_ids=[c.id for c in picked],
            weights=[float(w) for w in weights],
            similarities=[float(sims[i]) for i in keep],
            requests=[c.request for c in picked],
            calls=[c.chosen for c in picked],
            ages=[float(ages[i]) for i in keep],
            reason="steered",
        )

    def population_means(self, *, max_trajectories: int = 2000) -> list[SteeringVector]:
        """The mean of every part over (up to ``max_trajectories``) trajectories of all users
        (see :meth:`Memory.population_means <fints_agent.memory.Memory.population_means>`)."""
        total: np.ndarray | None = None
        n = 0
        for user_id in self.store.users():
            records = self.store.get(user_id, limit=max_trajectories - n, with_vectors=True)
            for r in records:
                if r.vector is None:
                    continue
                total = r.vector.astype(np.float64) if total is None else total + r.vector
                n += 1
            if n >= max_trajectories:
                break
        if total is None:
            return []
        parts = self.to_vectors((total / n).astype(np.float32))
        return [v.like(v.tensor, kind="population_mean", n=n) for v in parts]
