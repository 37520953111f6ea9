"""Recording trajectories: checking a turn, building negatives, computing and storing vectors.

:class:`Recording` holds the recording half of :class:`~fints_agent.memory.Memory` (which mixes
it in; retrieval and housekeeping live there). Recording a trajectory (a request, the tools
offered, the call the user accepted and the calls they rejected) stores its retrieval embedding
and its contrastive steering vector, computed on exactly the prompt the model sees at inference,
with chosen and rejected calls serialized by the same function. Without rejected calls,
negatives are built as described in :mod:`fints_agent.memory.negatives`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fints_agent.calls.schema import ToolSpec
from fints_agent.memory.embed import Embedder
from fints_agent.memory.negatives import (
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
    StoreLayout,
    TrajectoryRecord,
    TrajectoryStore,
    check_user_id,
)
from fints_agent.models import LoadedModel
from fints_agent.steering.layers import Site
from fints_agent.steering.vector import SteeringVector, VectorMismatchError

__all__ = ["NegativeFn", "Recording", "TrajectoryInput"]

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


class Recording:
    """The recording half of :class:`~fints_agent.memory.Memory`, which sets these attributes."""

    lm: LoadedModel
    store: TrajectoryStore
    embedder: Embedder
    renderer: Any
    layout: StoreLayout
    layers: tuple[int, ...]
    sites: tuple[Site, ...]
    n_negatives: int
    negative_sources: tuple[str, ...]
    negative_fn: NegativeFn | None
    others_min_similarity: float
    batch_size: int
    skip_shared_prefix: bool
    skip_shared_suffix: bool
    vectors: str
    auto_supersede: float | None

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
        embeddings = self.embedder.embed([p.request for p in items])
        negatives = self._negatives(items, embeddings)
        with self.lm.lock:
            vectors = self._steering_vectors(items, negatives)
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
                    vector=vec,
                )
            )
        self.store.add(records)
        return [r.id for r in records]

    def _steering_vectors(
        self, items: list[_Prepared], negatives: list[list[Call]]
    ) -> list[np.ndarray]:
        """The flat steering vectors of a chunk of trajectories, by the memory's ``vectors``
        kind (a split memory's: the contrastive vector, then the demonstration vector)."""
        from fints_agent.prompting import format_examples
        from fints_agent.steering.capture import CapturePlan
        from fints_agent.steering.contrast import plan_contrastive
        from fints_agent.steering.demonstration import plan_demonstration

        params = [{s.name: s.parameters for s in p.specs} for p in items]
        chosen = [
            self.renderer.render_call(p.chosen.name, p.chosen.arguments, ps.get(p.chosen.name))
            for p, ps in zip(items, params, strict=True)
        ]
        rejected = [
            [self.renderer.render_call(c.name, c.arguments, ps.get(c.name)) for c in n]
            for n, ps in zip(negatives, params, strict=True)
        ]
        prefixes = [self.renderer.render_prefix(p.messages, p.tools) for p in items]
        # Both kinds of a split memory are captured in one plan: one set of forward passes.
        plan = CapturePlan(
            self.lm,
            list(self.layout.layers),
            self.layout.sites,  # type: ignore[arg-type]
            batch_size=self.batch_size,
        )
        finishers = []
        if self.vectors in ("contrast", "split"):
            finishers.append(
                plan_contrastive(
                    plan,
                    [self.renderer.render_prompt(p.messages, p.tools) for p in items],
                    chosen,
                    rejected,
                    skip_shared_prefix=self.skip_shared_prefix,
                    skip_shared_suffix=self.skip_shared_suffix,
                    prefixes=prefixes,
                )
            )
        if self.vectors in ("demonstration", "split"):

            def shown(p: _Prepared, call: Call) -> str:
                examples = format_examples([(p.messages, call.as_dict())], p.specs)
                return str(self.renderer.render_prompt(p.messages, p.tools, examples=examples))

            finishers.append(
                plan_demonstration(
                    plan,
                    [shown(p, p.chosen) for p in items],
                    [[shown(p, c) for c in n] for p, n in zip(items, negatives, strict=True)],
                    chosen,
                    rejected,
                    prefixes=prefixes,
                )
            )
        means = plan.run()
        parts = [finish(means) for finish in finishers]
        return [_flatten(row) for row in zip(*parts, strict=True)]

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
        if len(parts) != self.layout.parts:
            raise VectorMismatchError(
                f"the store keeps {self.layout.parts} vector(s) per trajectory "
                f"({self.layout.vectors!r}), {len(parts)} given"
            )
        for v in parts:
            v.check_model(self.lm.fingerprint, self.lm.num_layers, self.lm.d_model)
            if v.layers != self.layout.layers or v.sites != self.layout.sites:
                raise VectorMismatchError(
                    f"vector has layers {v.layers} and sites {v.sites}; the store holds "
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
            vector=_flatten(parts),
        )
        self.store.add([record])
        return record.id


def _flatten(parts: Sequence[SteeringVector]) -> np.ndarray:
    """A trajectory's vectors as the one flat array the store keeps (see ``StoreLayout.parts``)."""
    return np.concatenate([v.tensor.numpy().reshape(-1) for v in parts])
