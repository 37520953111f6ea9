"""Recording trajectories: checking a turn, building negatives, computing and storing vectors.

A :class:`Recorder` is the recording half of :class:`~fints_agent.memory.Memory` (which holds
one and delegates to it; retrieval lives in :mod:`~fints_agent.memory.retrieval`). Recording a
trajectory (a request, the tools offered, the call the user accepted and the calls they
rejected) stores its retrieval embedding and its steering vector
(:mod:`~fints_agent.memory.vectors`), computed on exactly the prompt the model sees at
inference, with chosen and rejected calls serialized by the same function. Without rejected
calls, negatives are built as described in :mod:`fints_agent.memory.negatives`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fints_agent.calls.request import retrieval_text
from fints_agent.memory.corrections import (
    ANY_TOOL,
    contradicted,
    makes_decision,
    rejected_decisions,
)
from fints_agent.memory.embed import Embedder
from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.negatives import (
    NEGATIVE_SOURCES,
    Call,
    InvalidCallError,
    MemoryInputError,
    build_negatives,
    call_choices,
    normalize_call,
    plain_messages,
    tool_specs,
)
from fints_agent.memory.records import TrajectoryRecord, check_user_id
from fints_agent.memory.store import TrajectoryStore
from fints_agent.memory.trajectory import NegativeFn, PreparedTrajectory, TrajectoryInput
from fints_agent.memory.vectors import flatten, steering_vectors
from fints_agent.models import LoadedModel
from fints_agent.steering.vector import SteeringVector, VectorMismatchError

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)


class Recorder:
    """Checks trajectories and records them, with their steering vectors, into a store.

    Args:
        lm: The model vectors are computed on.
        store: The store written to.
        embedder: The retrieval embedder.
        renderer: Renders prompts and calls.
        layout: The store's layout (layers, sites and kind of the vectors computed).
        n_negatives: Negatives built per trajectory recorded without rejected calls.
        negative_sources: Which negative sources to use, in order (see
            :mod:`fints_agent.memory.negatives`).
        negative_fn: Optional supplier of rejected calls (tried before the built ones).
        others_min_similarity: Other users' requests must be at least this similar to count.
        batch_size: Forward-pass batch size for vector computation.
        auto_supersede: When set, a new trajectory whose request is at least this similar to
            an older one of the same user, with another tool or other enum/boolean values,
            supersedes it (``None``: only explicit ``supersedes``).
        supersede_corrected: A trajectory recorded with rejected calls (the user's correction)
            supersedes the user's older trajectories whose chosen call makes a decision it
            rejects: the rejected call's tool, or any one enum or boolean value that the
            rejected call sets differently from the chosen one, in any tool with that argument
            (see :mod:`~fints_agent.memory.corrections`). Built negatives never supersede.
    """

    def __init__(
        self,
        lm: LoadedModel,
        store: TrajectoryStore,
        embedder: Embedder,
        renderer: Any,
        layout: StoreLayout,
        *,
        n_negatives: int = 2,
        negative_sources: Sequence[str] = NEGATIVE_SOURCES,
        negative_fn: NegativeFn | None = None,
        others_min_similarity: float = 0.5,
        batch_size: int = 8,
        auto_supersede: float | None = None,
        supersede_corrected: bool = True,
    ) -> None:
        self.lm = lm
        self.store = store
        self.embedder = embedder
        self.renderer = renderer
        self.layout = layout
        self.n_negatives = n_negatives
        self.negative_sources = tuple(negative_sources)
        self.negative_fn = negative_fn
        self.others_min_similarity = others_min_similarity
        self.batch_size = batch_size
        self.auto_supersede = auto_supersede
        self.supersede_corrected = supersede_corrected

    def prepare(self, item: TrajectoryInput | Mapping[str, Any]) -> PreparedTrajectory:
        """Check one trajectory (nothing is computed or written).

        Raises:
            MemoryInputError: Empty request, no tools, bad user id, unknown ``supersedes``, or
                no negative can be built.
            InvalidCallError: A malformed call, a tool not offered, or arguments that fail the
                tool's schema.
        """
        inp = item if isinstance(item, TrajectoryInput) else TrajectoryInput.from_dict(item)
        try:
            user_id = check_user_id(inp.user_id)
        except ValueError as exc:
            raise MemoryInputError(str(exc)) from None
        messages = plain_messages(inp.messages)
        text = retrieval_text(messages)
        if not text:
            raise MemoryInputError(f"empty request for user {user_id!r}: nothing to retrieve by")
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
                "boolean argument, arguments already at their defaults): pass rejected calls"
            )
        if inp.supersedes is not None and (
            not isinstance(inp.supersedes, str) or not self.store.get(user_id, [inp.supersedes])
        ):
            raise MemoryInputError(
                f"supersedes={inp.supersedes!r}: no such trajectory of user {user_id!r}"
            )
        created = time.time() if inp.created_at is None else float(inp.created_at)
        return PreparedTrajectory(
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

    def _negatives(
        self, items: list[PreparedTrajectory], embeddings: np.ndarray
    ) -> list[list[Call]]:
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
                    f"{p.user_id!r}: pass rejected calls"
                )
            out.append(merged)
        return out

    def _auto_supersede(self, p: PreparedTrajectory, embedding: np.ndarray) -> str | None:
        if self.auto_supersede is None or p.supersedes is not None:
            return p.supersedes
        best = self.store.query(p.user_id, embedding, 1)
        if not best or (best[0].similarity or 0.0) < self.auto_supersede:
            return None
        old = best[0].chosen
        if old.get("name") != p.chosen.name:
            return best[0].id
        spec = p.chosen_spec()
        old_choices = call_choices(Call(str(old.get("name")), dict(old.get("arguments", {}))), spec)
        return best[0].id if old_choices != call_choices(p.chosen, spec) else None

    def _record_chunk(self, items: list[PreparedTrajectory]) -> list[str]:
        embeddings = self.embedder.embed([p.request for p in items])
        negatives = self._negatives(items, embeddings)
        with self.lm.lock:
            vectors = steering_vectors(
                self.lm, self.renderer, self.layout, items, negatives, batch_size=self.batch_size
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
                    choices=call_choices(p.chosen, p.chosen_spec()),
                    supersedes=sup,
                    embedding=emb,
                    vector=vec,
                )
            )
        self.store.add(records)
        for p, r in zip(items, records, strict=True):
            self._supersede_corrected(p, r)
        return [r.id for r in records]

    def _supersede_corrected(self, p: PreparedTrajectory, record: TrajectoryRecord) -> int:
        """Mark the older trajectories that ``record``'s given rejected calls contradict."""
        if not self.supersede_corrected or not p.rejected:
            return 0
        decisions = rejected_decisions(p.chosen, p.rejected, p.specs)
        if not decisions:
            return 0
        older = [
            o
            for o in self.store.get(
                p.user_id,
                include_superseded=False,
                tools=None
                if any(name == ANY_TOOL for name, _ in decisions)
                else [name for name, _ in decisions],
            )
            if o.seq < record.seq
            and o.id != record.id
            and any(makes_decision(o.chosen, d) for d in decisions)
        ]
        if older and any(not values for _, values in decisions):
            # A rejected tool needs the older trajectories' rejected calls (their payload),
            # read for these few only.
            older = self.store.get(p.user_id, [o.id for o in older], with_payload=True)
        marked = 0
        for old_id in contradicted(p.chosen, decisions, older):
            marked += self.store.mark_superseded(p.user_id, old_id, record.id)
        if marked:
            logger.debug("trajectory %s supersedes %d corrected ones", record.id, marked)
        return marked

    def record_many(
        self,
        items: Iterable[TrajectoryInput | Mapping[str, Any]],
        *,
        batch_size: int = 32,
        progress: bool = True,
    ) -> list[str]:
        """Check every item, then record them in batches (see
        :meth:`Memory.record_many <fints_agent.memory.Memory.record_many>`)."""
        from tqdm.auto import tqdm

        prepared = [self.prepare(x) for x in items]
        ids: list[str] = []
        with tqdm(total=len(prepared), disable=not progress, desc="recording", unit="traj") as bar:
            for start in range(0, len(prepared), max(1, batch_size)):
                chunk = prepared[start : start + max(1, batch_size)]
                ids.extend(self._record_chunk(chunk))
                bar.update(len(chunk))
        return ids

    def record_vector(
        self,
        item: TrajectoryInput,
        parts: Sequence[SteeringVector],
    ) -> str:
        """Record a trajectory with vectors computed elsewhere (see
        :meth:`Memory.record_vector <fints_agent.memory.Memory.record_vector>`).

        Raises:
            VectorMismatchError: The parts are not those the store keeps.
            MemoryInputError: Bad request or calls.
        """
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
        p = self.prepare(item)
        emb = self.embedder.embed([p.request])[0]
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
            choices=call_choices(p.chosen, p.chosen_spec()),
            embedding=emb,
            vector=flatten(parts),
        )
        self.store.add([record])
        self._supersede_corrected(p, record)
        return record.id
