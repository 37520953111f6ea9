"""Per-user trajectory memory: record tool calls with their steering vectors, retrieve per turn.

Recording a trajectory (a request, the tools offered, the call the user accepted and the calls
they rejected) stores its retrieval embedding and its steering vector (contrastive by default;
see ``vectors`` of :class:`Memory` for the other kinds), computed on
exactly the prompt the model sees at inference (:class:`fints_agent.prompting.PromptRenderer`),
with chosen and rejected calls serialized by the same function. Without rejected calls,
negatives are built as described in :mod:`fints_agent.memory.negatives`.

At each turn, :meth:`Memory.retrieve` embeds the request, finds the user's top-k most similar
past trajectories, weights them with ``softmax(similarity / T)`` (or a plain mean, optionally
times a recency decay) and sums their vectors into one :class:`SteeringVector` (a
``vectors="split"`` memory sums both of its vectors, with the same weights). It returns the
weights, similarities and ids (why it steered) and the retrieved requests and calls (for
retrieval-augmented prompting). A user with no history, or whose best match is below
``min_similarity``, gets no vector (or a given fallback).

Modules: :mod:`~fints_agent.memory.recording` (checking and recording trajectories, mixed
into :class:`Memory`), :mod:`~fints_agent.memory.store` (Chroma persistence),
:mod:`~fints_agent.memory.embed` (retrieval embedders), :mod:`~fints_agent.memory.aggregate`
(weights and sums), :mod:`~fints_agent.memory.negatives` (call checks and negatives),
:mod:`~fints_agent.memory.cli` (``fints-agent memory ...``),
:mod:`~fints_agent.memory.background` (recording without blocking the caller:
:class:`BackgroundRecorder`).

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

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fints_agent.config import VECTOR_KINDS, VectorKind
from fints_agent.memory.aggregate import (
    Recency,
    Weighting,
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
from fints_agent.memory.negatives import (
    NEGATIVE_SOURCES,
    InvalidCallError,
    MemoryInputError,
    request_text,
    tool_specs,
)
from fints_agent.memory.recording import NegativeFn, Recording, TrajectoryInput
from fints_agent.memory.store import (
    RecoveryReport,
    StoreError,
    StoreLayout,
    StoreLayoutError,
    TrajectoryRecord,
    TrajectoryStore,
    UnknownTrajectoryError,
    check_user_id,
)
from fints_agent.models import LoadedModel
from fints_agent.steering.layers import SITES, Site, check_layers, check_sites
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "VECTOR_KINDS",
    "BackgroundRecorder",
    "Embedder",
    "EmbedderError",
    "InvalidCallError",
    "LMEmbedder",
    "Memory",
    "MemoryInputError",
    "MiniLMEmbedder",
    "Recency",
    "RecorderClosedError",
    "RecoveryReport",
    "Retrieval",
    "StoreError",
    "StoreLayout",
    "StoreLayoutError",
    "TrajectoryInput",
    "TrajectoryRecord",
    "TrajectoryStore",
    "UnknownTrajectoryError",
    "make_embedder",
]

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
        tool_contrasts: Per trajectory, whether its rejected calls name another tool (``None``:
            unknown, from a store written before this was kept).
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
    tool_contrasts: list[bool | None] = field(default_factory=list)
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

    @property
    def tool_share(self) -> float:
        """The share of the mixing weight from trajectories that contrast the choice of tool.

        1.0 for a fallback vector, without trajectories, or where it is unknown (a trajectory
        of unknown contrast counts as contrasting the tool, the behaviour before it was kept).
        """
        if self.fallback or not self.weights:
            return 1.0
        flags = self._contrast_flags(len(self.weights))
        share = sum(w for w, f in zip(self.weights, flags, strict=True) if f is not False)
        return float(min(1.0, max(0.0, share)))

    def _contrast_flags(self, n: int) -> list[bool | None]:
        """:attr:`tool_contrasts` padded or cut to ``n`` (``None`` where not given)."""
        return (list(self.tool_contrasts) + [None] * n)[:n]

    def explain(self) -> dict[str, Any]:
        """JSON-ready account of the decision (no vector values)."""
        return {
            "user_id": self.user_id,
            "steered": self.steered,
            "reason": self.reason,
            "fallback": self.fallback,
            "tool_share": round(self.tool_share, 6),
            "trajectories": [
                {
                    "id": i,
                    "weight": round(w, 6),
                    "similarity": round(s, 6),
                    "request": r,
                    "call": c,
                    "contrasts_tool": f,
                }
                for i, w, s, r, c, f in zip(
                    self.trajectory_ids,
                    self.weights,
                    self.similarities,
                    self.requests,
                    self.calls,
                    self._contrast_flags(len(self.trajectory_ids)),
                    strict=True,
                )
            ],
        }


def _tool_names(tools: Sequence[Any]) -> set[str]:
    """Names of the offered tools (OpenAI dicts read directly, other forms through specs)."""
    names = set()
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
        else:
            names.update(s.name for s in tool_specs([tool]))
    return names


class Memory(Recording):
    """Records users' trajectories with steering vectors and retrieves them per turn.

    Args:
        lm: The model vectors are computed on (and, for ``embedder="lm"``, embeddings).
        store: A :class:`TrajectoryStore`, or its location (a directory or a server URL).
        layers: Decoder layers of the vectors (default: all). A store built with more layers
            serves a subset.
        sites: ``"attn"`` and/or ``"mlp"``.
        embedder: ``"minilm"`` (default), ``"lm"`` or an :class:`Embedder`.
        renderer: Renders prompts and calls (default: ``PromptRenderer(lm.tokenizer)``).
        n_negatives: Negatives built per trajectory recorded without rejected calls.
        negative_sources: Which negative sources to use, in order (see
            :mod:`fints_agent.memory.negatives`).
        negative_fn: Optional supplier of rejected calls (tried before the built ones).
        others_min_similarity: Other users' requests must be at least this similar to count.
        batch_size: Forward-pass batch size for vector computation.
        skip_shared_prefix: Average answer tokens only from where chosen and rejected differ.
        skip_shared_suffix: Average answer tokens only up to where chosen and rejected differ.
        vectors: How a trajectory's steering vector is computed: ``"contrast"`` (activations
            over the chosen answer minus over the rejected ones,
            :mod:`~fints_agent.steering.contrast`) or ``"demonstration"`` (the decision
            position with the chosen call shown as a worked example minus with a rejected one
            shown, :mod:`~fints_agent.steering.demonstration`; two prompt passes per rejected
            call) or ``"split"`` (both: the contrastive vector steers the tool name, the
            demonstration vector enum, boolean and null argument values; see
            :attr:`Retrieval.value_vector`). A store keeps one kind.
        k: Default number of trajectories mixed per turn.
        temperature: Default softmax temperature.
        weighting: Default weighting, ``"softmax"`` or ``"mean"``.
        min_similarity: Default gate: below this best similarity, no steering.
        match_tools: By default, only mix trajectories whose chosen tool is offered this turn.
        auto_supersede: When set, a new trajectory whose request is at least this similar to
            an older one of the same user, with another tool or other enum/boolean values,
            supersedes it (``None``: only explicit ``supersedes``).
        cache_size: Decoded vectors kept in memory (ids are immutable, so never stale), and
            request embeddings kept (an agent loop asks again for the same request after each
            tool result).

    Raises:
        StoreLayoutError: The store holds vectors of another model, layers or embedder.
    """

    def __init__(
        self,
        lm: LoadedModel,
        store: TrajectoryStore | str | Path,
        *,
        layers: Sequence[int] | None = None,
        sites: Sequence[Site] = SITES,
        embedder: str | Embedder = "minilm",
        renderer: Any = None,
        n_negatives: int = 2,
        negative_sources: Sequence[str] = NEGATIVE_SOURCES,
        negative_fn: NegativeFn | None = None,
        others_min_similarity: float = 0.5,
        batch_size: int = 8,
        skip_shared_prefix: bool = False,
        skip_shared_suffix: bool = False,
        vectors: VectorKind = "contrast",
        k: int = 5,
        temperature: float = 0.1,
        weighting: Weighting = "softmax",
        min_similarity: float = 0.2,
        match_tools: bool = True,
        auto_supersede: float | None = None,
        cache_size: int = 256,
    ) -> None:
        self.lm = lm
        self.store = store if isinstance(store, TrajectoryStore) else TrajectoryStore(store)
        self.embedder = make_embedder(embedder, lm)
        if renderer is None:
            from fints_agent.prompting import PromptRenderer

            renderer = PromptRenderer(lm.tokenizer)
        self.renderer = renderer
        num_layers = lm.num_layers
        layer_list = list(range(num_layers)) if layers is None else [int(x) for x in layers]
        if not layer_list:
            raise ValueError("no layers chosen")
        check_layers(layer_list, num_layers)
        check_sites(list(sites))
        self.layers: tuple[int, ...] = tuple(layer_list)
        self.sites: tuple[Site, ...] = tuple(sites)
        self.n_negatives = n_negatives
        self.negative_sources = tuple(negative_sources)
        unknown = [s for s in self.negative_sources if s not in NEGATIVE_SOURCES]
        if unknown:
            raise ValueError(f"unknown negative sources {unknown}; use {NEGATIVE_SOURCES}")
        self.negative_fn = negative_fn
        self.others_min_similarity = others_min_similarity
        self.batch_size = batch_size
        self.skip_shared_prefix = skip_shared_prefix
        self.skip_shared_suffix = skip_shared_suffix
        if vectors not in VECTOR_KINDS:
            raise ValueError(f"unknown vectors {vectors!r}; use one of {VECTOR_KINDS}")
        self.vectors = vectors
        self.k = k
        self.temperature = temperature
        self.weighting: Weighting = weighting
        self.min_similarity = min_similarity
        self.match_tools = match_tools
        self.auto_supersede = auto_supersede
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._embed_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.layout = self._bind()

    def __repr__(self) -> str:
        return (
            f"Memory({self.lm.name!r}, {self.store!r}, layers={len(self.layers)}, "
            f"sites={self.sites}, embedder={self.embedder.name!r})"
        )

    # -- layout ---------------------------------------------------------------------------------
    def _bind(self) -> StoreLayout:
        wanted = StoreLayout(
            model_fingerprint=self.lm.fingerprint,
            layers=self.layers,
            sites=self.sites,
            d_model=self.lm.d_model,
            embedder=self.embedder.name,
            embed_dim=self.embedder.dim,
            vectors=self.vectors,
        )
        current = self.store.layout
        if current is None:
            return self.store.bind(wanted)
        diffs = []
        for d in current.differences(wanted):
            # A store with more layers or sites serves a subset (selected at retrieval).
            if d.startswith("layers:") and set(self.layers) <= set(current.layers):
                continue
            if d.startswith("sites:") and set(self.sites) <= set(current.sites):
                continue
            diffs.append(d)
        if diffs:
            raise StoreLayoutError(
                f"store {self.store.location} (prefix {self.store.prefix!r}) does not fit this "
                "model and embedder: " + "; ".join(diffs)
            )
        return current

    def _to_vector(self, flat: np.ndarray) -> SteeringVector:
        """The first part of a flat vector (the contrastive one of a split store)."""
        return self._to_vectors(flat)[0]

    def _to_vectors(self, flat: np.ndarray) -> list[SteeringVector]:
        """Every part of a flat vector (see :attr:`StoreLayout.parts`)."""
        import torch

        out = []
        for part in np.split(flat, self.layout.parts):
            vector = SteeringVector.from_flat(
                torch.from_numpy(np.ascontiguousarray(part)), self.layout.vector_header()
            )
            if vector.layers != self.layers or vector.sites != self.sites:
                vector = vector.select(self.layers, self.sites)
            out.append(vector)
        return out

    # -- retrieval ------------------------------------------------------------------------------
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

    def _embed_request(self, text: str) -> np.ndarray:
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

    def _uncache(self, ids: Iterable[str] | None = None) -> None:
        with self._cache_lock:
            if ids is None:
                self._cache.clear()
            else:
                for tid in ids:
                    self._cache.pop(tid, None)

    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        *,
        k: int | None = None,
        temperature: float | None = None,
        weighting: Weighting | None = None,
        min_similarity: float | None = None,
        recency: Recency | None = None,
        recency_half_life: float | None = None,
        fallback: SteeringVector | None = None,
        include_superseded: bool = False,
    ) -> Retrieval:
        """The steering vector for this turn, from the user's most similar past trajectories.

        Args:
            user_id: The user (an unknown user gets no steering, not an error).
            messages: The conversation so far; the last user message is the request.
            tools: The tools offered this turn: with ``match_tools``, only trajectories whose
                chosen tool is among them are mixed.
            k: How many trajectories to mix (default: the memory's).
            temperature: Softmax temperature (default: the memory's, 0.1).
            weighting: ``"softmax"`` or ``"mean"``.
            min_similarity: No steering when the best similarity is below this.
            recency: Recency weighting (turns or seconds).
            recency_half_life: Shorthand for ``Recency(recency_half_life, "turns")``.
            fallback: Vector returned when there is nothing to steer with (e.g.
                :meth:`population_mean`); ``None``: no vector.
            include_superseded: Also mix superseded trajectories.

        Raises:
            MemoryInputError: ``user_id`` is not a non-empty string, or malformed messages.

        Example:
            >>> r = memory.retrieve("alice", [{"role": "user", "content": "Weather in Rome?"}])
            >>> r.reason, r.trajectory_ids[:2], [round(w, 2) for w in r.weights]
            ('steered', ['3f2c...', '9a1b...'], [0.71, 0.27])
        """
        try:
            check_user_id(user_id)
        except ValueError as exc:
            raise MemoryInputError(str(exc)) from None
        text = request_text(messages)
        if not text:
            return self._unsteered(user_id, "empty_request", fallback)
        embedding = self._embed_request(text)
        return self.retrieve_by_embedding(
            user_id,
            embedding,
            tools,
            k=k,
            temperature=temperature,
            weighting=weighting,
            min_similarity=min_similarity,
            recency=recency,
            recency_half_life=recency_half_life,
            fallback=fallback,
            include_superseded=include_superseded,
        )

    def _unsteered(
        self, user_id: str, reason: str, fallback: SteeringVector | None, **found: Any
    ) -> Retrieval:
        if fallback is not None:
            fallback.check_model(self.lm.fingerprint, self.lm.num_layers, self.lm.d_model)
        return Retrieval(user_id, fallback, reason=reason, fallback=fallback is not None, **found)

    def retrieve_by_embedding(
        self,
        user_id: str,
        embedding: np.ndarray,
        tools: Sequence[Any] | None = None,
        *,
        k: int | None = None,
        temperature: float | None = None,
        weighting: Weighting | None = None,
        min_similarity: float | None = None,
        recency: Recency | None = None,
        recency_half_life: float | None = None,
        fallback: SteeringVector | None = None,
        include_superseded: bool = False,
    ) -> Retrieval:
        """:meth:`retrieve` for an already embedded request (same arguments)."""
        k = self.k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        temperature = self.temperature if temperature is None else temperature
        weighting = self.weighting if weighting is None else weighting
        min_sim = self.min_similarity if min_similarity is None else min_similarity
        if recency is None and recency_half_life is not None:
            recency = Recency(recency_half_life, "turns")
        offered = _tool_names(tools) if tools and self.match_tools else set()
        fetch = k * 4 if (recency is not None or offered) else k
        candidates = self.store.query(
            user_id, embedding, fetch, include_superseded=include_superseded
        )
        if not candidates:
            return self._unsteered(user_id, "no_history", fallback)
        if offered:
            candidates = [c for c in candidates if c.chosen.get("name") in offered]
            if not candidates:
                return self._unsteered(user_id, "no_matching_tools", fallback)
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
        if float(sims.max()) < min_sim:
            return self._unsteered(
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
        order = select_top(sims, k, temperature=temperature, weighting=weighting, decay=decay)
        chosen = [candidates[i] for i in order]
        flats = self._vectors(user_id, [c.id for c in chosen])
        keep = [i for i, c in zip(order, chosen, strict=True) if c.id in flats]
        if len(keep) < len(order):
            logger.warning("%d retrieved trajectories have no vector", len(order) - len(keep))
        if not keep:
            return self._unsteered(user_id, "no_history", fallback)
        weights = mix_weights(
            sims[keep],
            temperature=temperature,
            weighting=weighting,
            decay=None if decay is None else decay[keep],
        )
        picked = [candidates[i] for i in keep]
        summed = aggregate_flat([flats[c.id] for c in picked], weights)
        parts = [
            v.like(v.tensor, kind="aggregate", n=len(picked)) for v in self._to_vectors(summed)
        ]
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
            tool_contrasts=[c.contrasts_tool for c in picked],
        )

    def population_mean(
        self, *, max_trajectories: int = 2000, value: bool = False
    ) -> SteeringVector | None:
        """The mean vector over (up to ``max_trajectories``) trajectories of all users.

        A fallback for users without history: ``retrieve(..., fallback=memory.population_mean())``
        (compute it once and keep it; it reads many vectors). With ``value``, the mean of a
        ``vectors="split"`` memory's value vectors instead (``None`` for other kinds).
        """
        means = self.population_means(max_trajectories=max_trajectories)
        index = 1 if value else 0
        return means[index] if len(means) > index else None

    def population_means(self, *, max_trajectories: int = 2000) -> list[SteeringVector]:
        """:meth:`population_mean` of every part at once (the vector, then a split memory's
        value vector); empty without trajectories."""
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
        parts = self._to_vectors((total / n).astype(np.float32))
        return [v.like(v.tensor, kind="population_mean", n=n) for v in parts]

    # -- lifecycle ------------------------------------------------------------------------------
    def list_trajectories(
        self, user_id: str, *, include_superseded: bool = True, limit: int | None = None
    ) -> list[TrajectoryRecord]:
        """A user's trajectories, oldest turn first (no vectors)."""
        return self.store.get(user_id, include_superseded=include_superseded, limit=limit)

    def get_vector(self, user_id: str, trajectory_id: str) -> SteeringVector:
        """One trajectory's steering vector (of a split memory, its contrastive vector).

        Raises:
            UnknownTrajectoryError: The user has no such trajectory.
        """
        flats = self.store.get_vectors(user_id, [trajectory_id])
        if trajectory_id not in flats or not self.store.get(user_id, [trajectory_id]):
            raise UnknownTrajectoryError(f"user {user_id!r} has no trajectory {trajectory_id!r}")
        return self._to_vector(flats[trajectory_id])

    def delete(self, trajectory_id: str, user_id: str | None = None) -> bool:
        """Delete one trajectory; returns whether it existed."""
        user = user_id if user_id is not None else self.store.find_user(trajectory_id)
        if user is None:
            return False
        self._uncache([trajectory_id])
        return self.store.delete(user, [trajectory_id]) > 0

    def forget_user(self, user_id: str) -> int:
        """Delete everything of a user; returns how many trajectories they had."""
        ids = [r.id for r in self.store.get(user_id)]
        self._uncache(ids)
        return self.store.delete_user(user_id)

    def export_user(self, user_id: str, path: str | Path, *, force: bool = False) -> int:
        """Write a user's memory (vectors included, exact) to a JSON Lines file (see
        :meth:`TrajectoryStore.export_user`; an existing file is refused unless ``force``)."""
        return self.store.export_user(user_id, path, force=force)

    def import_user(
        self, path: str | Path, *, as_user: str | None = None, allow_unchecked: bool = False
    ) -> int:
        """Add an exported memory, all or nothing (see :meth:`TrajectoryStore.import_user`).

        Raises:
            StoreError: The file fails a check (records of another user, count, checksum,
                values) or an id belongs to another user of the store.
            StoreLayoutError: The file's vectors are of another model, layers or embedder.
        """
        return self.store.import_user(path, as_user=as_user, allow_unchecked=allow_unchecked)

    def stats(self) -> dict[str, Any]:
        """The store's statistics plus this memory's settings."""
        return {
            **self.store.stats(),
            "memory": {
                "layers": list(self.layers),
                "sites": list(self.sites),
                "embedder": self.embedder.name,
                "k": self.k,
                "temperature": self.temperature,
                "weighting": self.weighting,
                "min_similarity": self.min_similarity,
            },
        }
