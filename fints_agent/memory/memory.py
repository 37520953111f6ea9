"""The per-user trajectory memory of one model: :class:`Memory`.

A :class:`Memory` binds a model, a retrieval embedder and a :class:`TrajectoryStore`, checks
that the store's layout fits them, and holds a :class:`~fints_agent.memory.recorder.Recorder`
(recording) and a :class:`~fints_agent.memory.retrieval.Retriever` (retrieval), to which it
delegates (see the package docstring of :mod:`fints_agent.memory` for an example).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fints_agent.calls.request import retrieval_text
from fints_agent.config import DEFAULT_RETRIEVAL, VectorKind
from fints_agent.memory.aggregate import Recency
from fints_agent.memory.embed import Embedder, make_embedder
from fints_agent.memory.errors import StoreLayoutError
from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.negatives import NEGATIVE_SOURCES, MemoryInputError, plain_messages
from fints_agent.memory.recorder import Recorder
from fints_agent.memory.records import TrajectoryRecord, check_user_id
from fints_agent.memory.retrieval import Retrieval, Retriever
from fints_agent.memory.store import TrajectoryStore
from fints_agent.memory.trajectory import NegativeFn, TrajectoryInput
from fints_agent.models import LoadedModel
from fints_agent.steering.layers import SITES, Site
from fints_agent.steering.vector import SteeringVector

__all__ = ["Memory"]


class Memory:
    """Records users' trajectories with steering vectors and retrieves them per turn.

    Threads of one process share a memory. A memory on a directory (an embedded store) holds it
    for this process until :meth:`close` or the process ends: another process that opens the
    directory gets :class:`~fints_agent.memory.errors.StoreBusyError`. Processes that serve the
    same users share a memory on a Chroma server (a URL as ``store``).

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
        vectors: How a trajectory's steering vector is computed: ``"contrast"`` (activations
            over the chosen answer minus over the rejected ones,
            :mod:`~fints_agent.steering.contrast`) or ``"demonstration"`` (the decision
            position with the chosen call shown as a worked example minus with a rejected one
            shown, :mod:`~fints_agent.steering.demonstration`; two prompt passes per rejected
            call) or ``"split"`` (both: the contrastive vector steers the tool name and
            contrasts with the rejected calls of another tool where there are any, the
            demonstration vector enum, boolean and null argument values; see
            :attr:`Retrieval.value_vector`). A store keeps one kind.
        k: Default number of trajectories mixed per turn.
        temperature: Default softmax temperature.
        min_similarity: Default gate: below this best similarity, no steering.
        match_tools: By default, only mix trajectories whose chosen tool is offered this turn.
        auto_supersede: When set, a new trajectory whose request is at least this similar to
            an older one of the same user, with another tool or other enum/boolean values,
            supersedes it (``None``: only explicit ``supersedes``).
        supersede_corrected: A trajectory recorded with rejected calls supersedes the user's
            older trajectories whose chosen call makes a decision it rejects (another tool, or
            a rejected enum or boolean value): a correction wins over older habits at once (see
            :mod:`~fints_agent.memory.corrections`).
        cache_size: Decoded vectors kept in memory (ids are immutable, so never stale), and
            request embeddings kept (an agent loop asks again for the same request after each
            tool result).
        token: For ``store`` given as a server URL: the server's token (default:
            ``$FINTS_AGENT_CHROMA_TOKEN``; see :class:`TrajectoryStore`). Never shown.
        tenant: For a server URL: the Chroma tenant (default: ``default_tenant``).
        database: For a server URL: the Chroma database (default: ``default_database``).

    Raises:
        StoreBusyError: ``store`` is a directory another process has open.
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
        vectors: VectorKind = "contrast",
        k: int = DEFAULT_RETRIEVAL.k,
        temperature: float = DEFAULT_RETRIEVAL.softmax_temperature,
        min_similarity: float = DEFAULT_RETRIEVAL.min_similarity,
        match_tools: bool = True,
        auto_supersede: float | None = None,
        supersede_corrected: bool = True,
        cache_size: int = 256,
        token: Any = None,
        tenant: str | None = None,
        database: str | None = None,
    ) -> None:
        self.lm = lm
        if isinstance(store, TrajectoryStore):
            self.store = store
        else:
            self.store = TrajectoryStore(store, token=token, tenant=tenant, database=database)
        self.embedder = make_embedder(embedder, lm)
        if renderer is None:
            from fints_agent.prompting import PromptRenderer

            renderer = PromptRenderer(lm.tokenizer)
        self.renderer = renderer
        wanted = StoreLayout.of(lm, self.embedder, layers, sites, vectors)
        self.layers: tuple[int, ...] = wanted.layers
        self.sites: tuple[Site, ...] = tuple(sites)
        unknown = [s for s in negative_sources if s not in NEGATIVE_SOURCES]
        if unknown:
            raise ValueError(f"unknown negative sources {unknown}; use {NEGATIVE_SOURCES}")
        self.vectors = vectors
        self.k = k
        self.temperature = temperature
        self.min_similarity = min_similarity
        self.match_tools = match_tools
        self.layout = self._bind(wanted)
        self.recorder = Recorder(
            lm,
            self.store,
            self.embedder,
            renderer,
            self.layout,
            n_negatives=n_negatives,
            negative_sources=negative_sources,
            negative_fn=negative_fn,
            others_min_similarity=others_min_similarity,
            batch_size=batch_size,
            auto_supersede=auto_supersede,
            supersede_corrected=supersede_corrected,
        )
        self.retriever = Retriever(
            lm,
            self.store,
            self.embedder,
            self.layout,
            self.layers,
            self.sites,
            cache_size=cache_size,
        )

    def __repr__(self) -> str:
        return (
            f"Memory({self.lm.name!r}, {self.store!r}, layers={len(self.layers)}, "
            f"sites={self.sites}, embedder={self.embedder.name!r})"
        )

    def _bind(self, wanted: StoreLayout) -> StoreLayout:
        """The store's layout, bound to ``wanted`` if new, checked to serve it if not."""
        current = self.store.layout
        if current is None:
            return self.store.bind(wanted)
        diffs = current.unserved(wanted)
        if diffs:
            raise StoreLayoutError(
                f"store {self.store.location} (prefix {self.store.prefix!r}) does not fit this "
                "model and embedder: " + "; ".join(diffs)
            )
        return current

    # -- recording ------------------------------------------------------------------------------
    def record(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        chosen: Any,
        rejected: Sequence[Any] | None = None,
        *,
        supersedes: str | None = None,
        created_at: float | None = None,
    ) -> str:
        """Record one trajectory; returns its id.

        Args:
            user_id: Whose turn it was.
            messages: The request context (role/content dicts).
            tools: The tools offered (OpenAI tool dicts, LangChain tools, ...).
            chosen: The accepted call, ``{"name": ..., "arguments": {...}}``.
            rejected: Calls the user rejected (``None``: negatives are built).
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
        item = TrajectoryInput(user_id, messages, tools, chosen, rejected, supersedes, created_at)
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
        return self.recorder.record_many(items, batch_size=batch_size, progress=progress)

    def record_vector(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        chosen: Any,
        vector: SteeringVector,
        rejected: Sequence[Any] = (),
        *,
        created_at: float | None = None,
        value_vector: SteeringVector | None = None,
    ) -> str:
        """Record a trajectory with a vector computed elsewhere; returns its id.

        ``value_vector`` is the demonstration vector a ``vectors="split"`` memory also keeps
        (required there, refused elsewhere).

        Raises:
            VectorMismatchError: A vector is of another model, or its layers, sites or width
                differ from the store's, or ``value_vector`` is missing or not wanted.
            MemoryInputError: Bad request or calls (as :meth:`record`).
        """
        parts = [vector] if value_vector is None else [vector, value_vector]
        item = TrajectoryInput(
            user_id, messages, tools, chosen, list(rejected) or None, None, created_at
        )
        return self.recorder.record_vector(item, parts)

    # -- retrieval ------------------------------------------------------------------------------
    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        *,
        k: int | None = None,
        temperature: float | None = None,
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
        text = retrieval_text(plain_messages(messages))
        if not text:
            return self.retriever.unsteered(user_id, "empty_request", fallback)
        return self.retrieve_by_embedding(
            user_id,
            self.retriever.embed_request(text),
            tools,
            k=k,
            temperature=temperature,
            min_similarity=min_similarity,
            recency=recency,
            recency_half_life=recency_half_life,
            fallback=fallback,
            include_superseded=include_superseded,
        )

    def retrieve_by_embedding(
        self,
        user_id: str,
        embedding: np.ndarray,
        tools: Sequence[Any] | None = None,
        *,
        k: int | None = None,
        temperature: float | None = None,
        min_similarity: float | None = None,
        recency: Recency | None = None,
        recency_half_life: float | None = None,
        fallback: SteeringVector | None = None,
        include_superseded: bool = False,
    ) -> Retrieval:
        """:meth:`retrieve` for an already embedded request (same arguments)."""
        if recency is None and recency_half_life is not None:
            recency = Recency(recency_half_life, "turns")
        return self.retriever.retrieve(
            user_id,
            embedding,
            tools,
            k=self.k if k is None else k,
            temperature=self.temperature if temperature is None else temperature,
            min_similarity=self.min_similarity if min_similarity is None else min_similarity,
            match_tools=self.match_tools,
            recency=recency,
            fallback=fallback,
            include_superseded=include_superseded,
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
        return self.retriever.population_means(max_trajectories=max_trajectories)

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
        return self.retriever.stored_vector(user_id, trajectory_id)

    def delete(self, trajectory_id: str, user_id: str | None = None) -> bool:
        """Delete one trajectory; returns whether it existed."""
        user = user_id if user_id is not None else self.store.find_user(trajectory_id)
        if user is None:
            return False
        self.retriever.uncache([trajectory_id])
        return self.store.delete(user, [trajectory_id]) > 0

    def forget_user(self, user_id: str) -> int:
        """Delete everything of a user; returns how many trajectories they had."""
        ids = [r.id for r in self.store.get(user_id)]
        self.retriever.uncache(ids)
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

    def close(self) -> None:
        """Close the store (see :meth:`TrajectoryStore.close`): another process may then open
        an embedded one. The memory is not usable afterwards."""
        self.store.close()

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
                "min_similarity": self.min_similarity,
            },
        }
