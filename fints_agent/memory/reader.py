"""Reading a store: a user's trajectories by similarity or id, their vectors, other users' choices.

Reads only ever start from the user's own trajectory collection (``P-t-K``, see
:mod:`~fints_agent.memory.chroma`), and every result is checked to carry the user's id (vectors
too), so one user's reads never return another's trajectories. A collection that another
process deleted reads as empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from fints_agent.memory.chroma import Collections, is_not_found
from fints_agent.memory.errors import StoreLayoutError
from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.records import (
    TrajectoryRecord,
    check_user_id,
    read_payload,
    records_from,
)

__all__ = ["Reader"]


class Reader:
    """Reads a store's collections (arguments checked by :class:`TrajectoryStore`).

    Args:
        collections: The store's collections.
    """

    def __init__(self, collections: Collections) -> None:
        self.collections = collections

    def latest_seq(self, user_id: str) -> int:
        """The highest turn number given to the user (-1 when none)."""
        col = self.collections.collection(self.collections.name("t", user_id), fresh=True)
        if col is None:
            return -1
        return int((col.metadata or {}).get("next_seq", 0)) - 1

    def query(
        self,
        user_id: str,
        embedding: np.ndarray | Sequence[float],
        n: int,
        layout: StoreLayout | None,
        *,
        include_superseded: bool = False,
    ) -> list[TrajectoryRecord]:
        """The user's ``n`` trajectories most similar to ``embedding``, best first.

        Raises:
            StoreLayoutError: The embedding is not as wide as ``layout``'s.
        """
        cols = self.collections
        t = cols.trajectories(user_id)
        if t is None:
            return []
        emb = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        if layout is not None and emb.shape[1] != layout.embed_dim:
            raise StoreLayoutError(
                f"query embedding of width {emb.shape[1]}; the store's embedder "
                f"{layout.embedder!r} gives {layout.embed_dim}"
            )
        fetch = n if include_superseded else n + 4
        while True:
            try:
                got = t.query(
                    query_embeddings=emb,
                    n_results=fetch,
                    include=["metadatas", "documents", "distances"],
                )
            except Exception as exc:
                if is_not_found(exc):
                    cols.forget_handle(cols.name("t", user_id))
                    return []
                raise
            if not got["ids"] or not got["ids"][0]:
                return []
            flat = {
                "ids": got["ids"][0],
                "metadatas": (got["metadatas"] or [[]])[0],
                "documents": (got["documents"] or [[]])[0],
                "distances": (got["distances"] or [[]])[0],
            }
            records = records_from(flat, user_id, with_emb=False)
            for r, d in zip(records, flat["distances"], strict=True):
                r.similarity = 1.0 - float(d)
            kept = [r for r in records if include_superseded or not r.superseded]
            if len(kept) >= n or len(records) < fetch:
                return kept[:n]
            fetch *= 4

    def get(
        self,
        user_id: str,
        ids: Sequence[str] | None = None,
        *,
        include_superseded: bool = True,
        with_embeddings: bool = False,
        with_payload: bool = False,
        with_vectors: bool = False,
        limit: int | None = None,
        offset: int | None = None,
        tools: Sequence[str] | None = None,
    ) -> list[TrajectoryRecord]:
        """The user's trajectories (all, those with the given ids, or those whose chosen call
        names one of ``tools``), oldest turn first."""
        cols = self.collections
        t = cols.trajectories(user_id)
        if t is None or (ids is not None and len(ids) == 0) or (tools is not None and not tools):
            return []
        include = ["metadatas", "documents"] + (["embeddings"] if with_embeddings else [])
        where: Any = None if tools is None else {"tool": {"$in": sorted(set(tools))}}
        with cols.retry_stale(cols.name("t", user_id)):
            got = t.get(ids=list(ids) if ids is not None else None, where=where, include=include)
        records = records_from(got, user_id, with_emb=with_embeddings)
        if not include_superseded:
            records = [r for r in records if not r.superseded]
        records.sort(key=lambda r: (r.seq, r.created_at, r.id))
        start = offset or 0
        records = records[start : start + limit if limit is not None else None]
        v = cols.vectors() if (with_payload or with_vectors) and records else None
        if v is not None:
            inc = ["metadatas"] + (["embeddings"] if with_vectors else [])
            got_v = v.get(ids=[r.id for r in records], include=inc)
            by_id = {tid: i for i, tid in enumerate(got_v["ids"])}
            for r in records:
                i = by_id.get(r.id)
                if i is None or (got_v["metadatas"][i] or {}).get("user_id") != user_id:
                    continue
                if with_payload:
                    read_payload(r, got_v["metadatas"][i] or {})
                if with_vectors:
                    r.vector = np.asarray(got_v["embeddings"][i], dtype=np.float32)
        return records

    def get_vectors(self, user_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Flat float32 vectors of the user's trajectories, by id (missing ids are absent)."""
        if not ids:
            return {}
        v = self.collections.vectors()
        if v is None:
            return {}
        got = v.get(ids=list(ids), include=["embeddings", "metadatas"])
        embs, metas = got["embeddings"], got["metadatas"]
        return {
            tid: np.asarray(embs[i], dtype=np.float32)
            for i, tid in enumerate(got["ids"])
            if (metas[i] or {}).get("user_id") == user_id  # ids come from the user's own query
        }

    def query_population(
        self, embeddings: np.ndarray, n: int, *, exclude_users: Sequence[str]
    ) -> list[list[tuple[float, str, dict[str, Any]]]]:
        """Per query row, other users' ``(similarity, tool, choices)`` for similar requests."""
        cols = self.collections
        pop = cols.population()
        rows = np.asarray(embeddings, dtype=np.float32)
        empty: list[list[tuple[float, str, dict[str, Any]]]] = [[] for _ in range(len(rows))]
        if pop is None or rows.shape[0] == 0:
            return empty
        try:
            got = pop.query(query_embeddings=rows, n_results=n, include=["metadatas", "distances"])
        except Exception as exc:
            if is_not_found(exc):
                cols.forget_handle(cols.name("pop"))
                return empty
            raise
        metas_rows = got["metadatas"] or []
        dist_rows = got["distances"] or []
        for i, (metas, dists) in enumerate(zip(metas_rows, dist_rows, strict=True)):
            for meta, d in zip(metas, dists, strict=True):
                if not meta or meta.get("user_id") == exclude_users[i]:
                    continue
                choices = json.loads(str(meta.get("choices", "{}")))
                empty[i].append((1.0 - float(d), str(meta.get("tool", "")), choices))
        return empty

    def count(self, user_id: str) -> int:
        """Number of trajectories of a user."""
        cols = self.collections
        t = cols.trajectories(user_id)
        if t is None:
            return 0
        try:
            return int(t.count())
        except Exception as exc:
            if is_not_found(exc):
                cols.forget_handle(cols.name("t", user_id))
                return 0
            raise

    def find_user(self, trajectory_id: str) -> str | None:
        """The user a trajectory belongs to (``None`` if unknown)."""
        pop = self.collections.population()
        if pop is not None:
            got = pop.get(ids=[trajectory_id], include=["metadatas"])
            if got["ids"]:
                uid = (got["metadatas"][0] or {}).get("user_id")
                if isinstance(uid, str) and self.get(check_user_id(uid), [trajectory_id]):
                    return uid
        for uid in self.collections.users():  # slow path: a population entry lost to a crash
            if self.get(check_user_id(uid), [trajectory_id]):
                return uid
        return None
