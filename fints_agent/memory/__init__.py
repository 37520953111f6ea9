"""Per-user trajectory memory: record tool calls with their steering vectors, retrieve per turn.

Recording a trajectory (a request, the tools offered, the call the user accepted and the calls
they rejected) stores its retrieval embedding and its contrastive steering vector, computed on
exactly the prompt the model sees at inference (:class:`fints_agent.prompting.PromptRenderer`),
with chosen and rejected calls serialized by the same function. Without rejected calls,
negatives are built as described in :mod:`fints_agent.memory.negatives`.

At each turn, :meth:`Memory.retrieve` embeds the request, finds the user's top-k most similar
past trajectories, weights them with ``softmax(similarity / T)`` (or a plain mean, optionally
times a recency decay) and sums their vectors into one :class:`SteeringVector`. It returns the
weights, similarities and ids (why it steered) and the retrieved requests and calls (for
retrieval-augmented prompting). A user with no history, or whose best match is below
``min_similarity``, gets no vector (or a given fallback).

Modules: :mod:`~fints_agent.memory.store` (Chroma persistence),
:mod:`~fints_agent.memory.embed` (retrieval embedders), :mod:`~fints_agent.memory.aggregate`
(weights and sums), :mod:`~fints_agent.memory.negatives` (call checks and negatives),
:mod:`~fints_agent.memory.cli` (``fints-agent memory ...``).

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

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fints_agent.calls.schema import ToolSpec
from fints_agent.memory.aggregate import (
    Recency,
    Weighting,
    aggregate_flat,
    log_decay,
    mix_weights,
    select_top,
)
from fints_agent.memory.embed import (
    Embedder,
    EmbedderError,
    LMEmbedder,
    MiniLMEmbedder,
    make_embedder,
)
from fints_agent.memory.negatives import (
    NEGATIVE_SOURCES,
    Call,
    InvalidCallError,
    MemoryInputError,
    build_negatives,
    call_choices,
    normalize_call,
    plain_messages,
    request_text,
    tool_specs,
)
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
from fints_agent.steering.vector import SteeringVector, VectorMismatchError

__all__ = [
    "Embedder",
    "EmbedderError",
    "InvalidCallError",
    "LMEmbedder",
    "Memory",
    "MemoryInputError",
    "MiniLMEmbedder",
    "Recency",
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

NegativeFn = Callable[[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]], Sequence[Any]]
"""``(messages, tools, chosen) -> calls``: supplies rejected calls (e.g. the unsteered model's)."""


@dataclass
class TrajectoryInput:
    """One trajectory to record.

    Attributes:
        user_id: Whose turn it was.
        messages: The request context (role/content dicts).
        tools: The tools offered (any form :func:`fints_agent.calls.schema.to_tool_specs` reads).
        chosen: The accepted call, ``{"name": ..., "arguments": {...}}``.
        rejected: Rejected calls, same form (``None``: build negatives).
        supersedes: Id of an older trajectory of the same user this one replaces.
        created_at: Unix time of the turn (default: now).
    """

    user_id: str
    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Any]
    chosen: Any
    rejected: Sequence[Any] | None = None
    supersedes: str | None = None
    created_at: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrajectoryInput:
        """From a dict with ``user_id``, ``messages``, ``tools``, ``chosen`` (or
        ``chosen_call``) and optionally ``rejected`` (or ``rejected_calls``), ``supersedes``,
        ``created_at``: for example a line of ``examples/data/personal_webapi.jsonl``.

        Raises:
            MemoryInputError: A required key is missing.
        """
        try:
            chosen = data["chosen"] if "chosen" in data else data["chosen_call"]
            return cls(
                user_id=data["user_id"],
                messages=data["messages"],
                tools=data["tools"],
                chosen=chosen,
                rejected=data.get("rejected", data.get("rejected_calls")),
                supersedes=data.get("supersedes"),
                created_at=data.get("created_at"),
            )
        except KeyError as exc:
            raise MemoryInputError(f"trajectory dict is missing {exc}") from None


@dataclass
class Retrieval:
    """The result of one turn's retrieval: the vector to steer with and why.

    Attributes:
        user_id: The user.
        vector: The aggregated vector (``None``: do not steer), or the fallback.
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


@dataclass
class _Prepared:
    user_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    specs: list[ToolSpec]
    request: str
    chosen: Call
    rejected: list[Call] | None
    supersedes: str | None
    created_at: float


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


class Memory:
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
        import torch

        vector = SteeringVector.from_flat(torch.from_numpy(flat), self.layout.vector_header())
        if vector.layers != self.layers or vector.sites != self.sites:
            vector = vector.select(self.layers, self.sites)
        return vector

    # -- recording ------------------------------------------------------------------------------
    def _prepare(self, item: TrajectoryInput | Mapping[str, Any]) -> _Prepared:
        inp = item if isinstance(item, TrajectoryInput) else TrajectoryInput.from_dict(item)
        try:
            user_id = check_user_id(inp.user_id)
        except ValueError as exc:
            raise MemoryInputError(str(exc)) from None
        text = request_text(inp.messages)
        if not text:
            raise MemoryInputError(f"empty request for user {user_id!r}: nothing to retrieve by")
        messages = plain_messages(inp.messages)
        try:
            json.dumps(messages, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise MemoryInputError(f"messages are not plain JSON: {exc}") from exc
        specs = tool_specs(inp.tools)
        if not specs:
            raise MemoryInputError("no tools offered: a trajectory needs the tools of its turn")
        chosen = normalize_call(inp.chosen, specs, what="chosen call")
        rejected: list[Call] | None = None
        if inp.rejected is not None:
            if isinstance(inp.rejected, Mapping | str) or not isinstance(inp.rejected, Sequence):
                raise InvalidCallError("rejected calls must be a list of calls")
            rejected = [
                normalize_call(r, specs, what=f"rejected call {i}")
                for i, r in enumerate(inp.rejected)
            ]
            for i, r in enumerate(rejected):
                if r.key() == chosen.key():
                    raise InvalidCallError(f"rejected call {i} is the chosen call")
            rejected = rejected or None
        sources = tuple(s for s in self.negative_sources if s != "others")
        fallback = build_negatives(chosen, specs, text, n=self.n_negatives, sources=sources)
        if rejected is None and not fallback and self.negative_fn is None:
            # Other users' calls may be missing, so they cannot be relied on here.
            raise MemoryInputError(
                f"cannot build a negative for call {chosen.name!r} (no other tool, no enum or "
                "boolean argument, arguments already at their defaults): pass rejected_calls"
            )
        if inp.supersedes is not None and (
            not isinstance(inp.supersedes, str) or not self.store.get(user_id, [inp.supersedes])
        ):
            raise MemoryInputError(
                f"supersedes={inp.supersedes!r}: no such trajectory of user {user_id!r}"
            )
        created = time.time() if inp.created_at is None else float(inp.created_at)
        return _Prepared(
            user_id=user_id,
            messages=messages,
            tools=[s.to_openai() for s in specs],
            specs=specs,
            request=text,
            chosen=chosen,
            rejected=rejected,
            supersedes=inp.supersedes,
            created_at=created,
        )

    def _negatives(self, items: list[_Prepared], embeddings: np.ndarray) -> list[list[Call]]:
        need = [i for i, p in enumerate(items) if p.rejected is None]
        others: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        if need and "others" in self.negative_sources:
            hits = self.store.query_population(
                embeddings[need], 10, exclude_users=[items[i].user_id for i in need]
            )
            for i, row in zip(need, hits, strict=True):
                others[i] = [(t, c) for s, t, c in row if s >= self.others_min_similarity]
        out: list[list[Call]] = []
        for i, p in enumerate(items):
            if p.rejected is not None:
                out.append(p.rejected)
                continue
            supplied: list[Call] = []
            if self.negative_fn is not None:
                for c in self.negative_fn(p.messages, p.tools, p.chosen.as_dict()):
                    try:
                        call = normalize_call(c, p.specs, what="supplied negative")
                    except InvalidCallError as exc:
                        logger.debug("dropping a supplied negative: %s", exc)
                        continue
                    if call.key() != p.chosen.key():
                        supplied.append(Call(call.name, call.arguments, "supplied"))
            built = build_negatives(
                p.chosen,
                p.specs,
                p.request,
                n=self.n_negatives,
                others=others.get(i, ()),
                sources=self.negative_sources,
            )
            merged: list[Call] = []
            seen = {p.chosen.key()}
            for c in [*supplied, *built]:
                if c.key() not in seen and len(merged) < self.n_negatives:
                    seen.add(c.key())
                    merged.append(c)
            if not merged:
                raise MemoryInputError(
                    f"cannot build a negative for call {p.chosen.name!r} of user "
                    f"{p.user_id!r}: pass rejected_calls"
                )
            out.append(merged)
        return out

    def _auto_supersede(self, p: _Prepared, embedding: np.ndarray) -> str | None:
        if self.auto_supersede is None or p.supersedes is not None:
            return p.supersedes
        best = self.store.query(p.user_id, embedding, 1)
        if not best or (best[0].similarity or 0.0) < self.auto_supersede:
            return None
        old = best[0].chosen
        if old.get("name") != p.chosen.name:
            return best[0].id
        spec = next(s for s in p.specs if s.name == p.chosen.name)
        old_choices = call_choices(Call(str(old.get("name")), dict(old.get("arguments", {}))), spec)
        return best[0].id if old_choices != call_choices(p.chosen, spec) else None

    def _record_chunk(self, items: list[_Prepared]) -> list[str]:
        from fints_agent.steering.contrast import contrastive_vectors

        embeddings = self.embedder.embed([p.request for p in items])
        negatives = self._negatives(items, embeddings)
        prompts = [self.renderer.render_prompt(p.messages, p.tools) for p in items]
        params = [{s.name: s.parameters for s in p.specs} for p in items]
        chosen = [
            self.renderer.render_call(p.chosen.name, p.chosen.arguments, ps.get(p.chosen.name))
            for p, ps in zip(items, params, strict=True)
        ]
        rejected = [
            [self.renderer.render_call(c.name, c.arguments, ps.get(c.name)) for c in n]
            for n, ps in zip(negatives, params, strict=True)
        ]
        with self.lm.lock:
            vectors = contrastive_vectors(
                self.lm,
                prompts,
                chosen,
                rejected,
                list(self.layout.layers),
                self.layout.sites,  # type: ignore[arg-type]
                batch_size=self.batch_size,
                skip_shared_prefix=self.skip_shared_prefix,
                skip_shared_suffix=self.skip_shared_suffix,
            )
        supersedes = [self._auto_supersede(p, e) for p, e in zip(items, embeddings, strict=True)]
        per_user: dict[str, int] = {}
        for p in items:
            per_user[p.user_id] = per_user.get(p.user_id, 0) + 1
        next_seq = {u: self.store.reserve_seq(u, n) for u, n in per_user.items()}
        records = []
        for p, emb, vec, negs, sup in zip(
            items, embeddings, vectors, negatives, supersedes, strict=True
        ):
            seq = next_seq[p.user_id]
            next_seq[p.user_id] += 1
            spec = next(s for s in p.specs if s.name == p.chosen.name)
            records.append(
                TrajectoryRecord(
                    id=uuid.uuid4().hex,
                    user_id=p.user_id,
                    request=p.request,
                    chosen=p.chosen.as_dict(),
                    created_at=p.created_at,
                    seq=seq,
                    rejected=[c.as_dict() for c in negs],
                    messages=p.messages,
                    tools=p.tools,
                    negatives=(
                        "given"
                        if p.rejected is not None
                        else ",".join(dict.fromkeys(c.source for c in negs))
                    ),
                    choices=call_choices(p.chosen, spec),
                    supersedes=sup,
                    embedding=emb,
                    vector=vec.tensor.numpy().reshape(-1),
                )
            )
        self.store.add(records)
        return [r.id for r in records]

    def record(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        chosen_call: Any,
        rejected_calls: Sequence[Any] | None = None,
        *,
        supersedes: str | None = None,
        created_at: float | None = None,
    ) -> str:
        """Record one trajectory; returns its id.

        Args:
            user_id: Whose turn it was.
            messages: The request context (role/content dicts).
            tools: The tools offered (OpenAI tool dicts, LangChain tools, ...).
            chosen_call: The accepted call, ``{"name": ..., "arguments": {...}}``.
            rejected_calls: Calls the user rejected (``None``: negatives are built).
            supersedes: Id of an older trajectory of this user that this one replaces (it is
                no longer retrieved).
            created_at: Unix time of the turn (default: now).

        Raises:
            MemoryInputError: Empty request, no tools, bad user id, unknown ``supersedes``.
            InvalidCallError: A malformed call, a tool not offered, or arguments that fail the
                tool's schema. Nothing is written.

        Example:
            >>> memory.record("alice", [{"role": "user", "content": "Weather in Oslo?"}],
            ...               tools, {"name": "get_weather", "arguments": {"city": "Oslo"}})
            '3f2c...'
        """
        item = TrajectoryInput(
            user_id, messages, tools, chosen_call, rejected_calls, supersedes, created_at
        )
        return self.record_many([item], progress=False)[0]

    def record_many(
        self,
        items: Iterable[TrajectoryInput | Mapping[str, Any]],
        *,
        batch_size: int = 32,
        progress: bool = True,
    ) -> list[str]:
        """Record many trajectories, computing their vectors in batches.

        Every item is checked before anything is computed or written, so one bad item writes
        nothing. Each batch is written as a unit of the store's crash-safe add.

        Args:
            items: :class:`TrajectoryInput` objects or dicts (see
                :meth:`TrajectoryInput.from_dict`).
            batch_size: Trajectories per batch (embedding, vectors and write).
            progress: Show a tqdm progress bar.

        Returns:
            The new trajectory ids, in input order.

        Example:
            >>> rows = [json.loads(line) for line in open("personal_webapi.jsonl")]
            >>> ids = memory.record_many(rows)
        """
        from tqdm.auto import tqdm

        prepared = [self._prepare(x) for x in items]
        ids: list[str] = []
        with tqdm(total=len(prepared), disable=not progress, desc="recording", unit="traj") as bar:
            for start in range(0, len(prepared), max(1, batch_size)):
                chunk = prepared[start : start + max(1, batch_size)]
                ids.extend(self._record_chunk(chunk))
                bar.update(len(chunk))
        return ids

    def record_vector(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        chosen_call: Any,
        vector: SteeringVector,
        rejected_calls: Sequence[Any] = (),
        *,
        created_at: float | None = None,
    ) -> str:
        """Record a trajectory with a vector computed elsewhere; returns its id.

        Raises:
            VectorMismatchError: The vector is of another model, or its layers, sites or width
                differ from the store's.
            MemoryInputError: Bad request or calls (as :meth:`record`).
        """
        vector.check_model(self.lm.fingerprint, self.lm.num_layers, self.lm.d_model)
        if vector.layers != self.layout.layers or vector.sites != self.layout.sites:
            raise VectorMismatchError(
                f"vector has layers {vector.layers} and sites {vector.sites}; the store holds "
                f"layers {self.layout.layers} and sites {self.layout.sites}"
            )
        p = self._prepare(
            TrajectoryInput(
                user_id,
                messages,
                tools,
                chosen_call,
                list(rejected_calls) or None,
                None,
                created_at,
            )
        )
        emb = self.embedder.embed([p.request])[0]
        spec = next(s for s in p.specs if s.name == p.chosen.name)
        record = TrajectoryRecord(
            id=uuid.uuid4().hex,
            user_id=p.user_id,
            request=p.request,
            chosen=p.chosen.as_dict(),
            created_at=p.created_at,
            seq=self.store.reserve_seq(p.user_id, 1),
            rejected=[c.as_dict() for c in p.rejected or []],
            messages=p.messages,
            tools=p.tools,
            negatives="given" if p.rejected else "external",
            choices=call_choices(p.chosen, spec),
            embedding=emb,
            vector=vector.tensor.numpy().reshape(-1),
        )
        self.store.add([record])
        return record.id

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
        vector = self._to_vector(summed)
        vector = vector.like(vector.tensor, kind="aggregate", n=len(picked))
        return Retrieval(
            user_id=user_id,
            vector=vector,
            trajectory_ids=[c.id for c in picked],
            weights=[float(w) for w in weights],
            similarities=[float(sims[i]) for i in keep],
            requests=[c.request for c in picked],
            calls=[c.chosen for c in picked],
            ages=[float(ages[i]) for i in keep],
            reason="steered",
        )

    def population_mean(self, *, max_trajectories: int = 2000) -> SteeringVector | None:
        """The mean vector over (up to ``max_trajectories``) trajectories of all users.

        A fallback for users without history: ``retrieve(..., fallback=memory.population_mean())``
        (compute it once and keep it; it reads many vectors).
        """
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
        if total is None or n == 0:
            return None
        mean = self._to_vector((total / n).astype(np.float32))
        return mean.like(mean.tensor, kind="population_mean", n=n)

    # -- lifecycle ------------------------------------------------------------------------------
    def list_trajectories(
        self, user_id: str, *, include_superseded: bool = True, limit: int | None = None
    ) -> list[TrajectoryRecord]:
        """A user's trajectories, oldest turn first (no vectors)."""
        return self.store.get(user_id, include_superseded=include_superseded, limit=limit)

    def get_vector(self, user_id: str, trajectory_id: str) -> SteeringVector:
        """One trajectory's steering vector.

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

    def export_user(self, user_id: str, path: str | Path) -> int:
        """Write a user's memory (vectors included, exact) to a JSON Lines file."""
        return self.store.export_user(user_id, path)

    def import_user(self, path: str | Path, *, as_user: str | None = None) -> int:
        """Add an exported memory (see :meth:`TrajectoryStore.import_user`).

        Raises:
            StoreLayoutError: The file's vectors are of another model, layers or embedder.
        """
        return self.store.import_user(path, as_user=as_user)

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
