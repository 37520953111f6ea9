"""One stored trajectory (:class:`TrajectoryRecord`) and how it is kept in Chroma metadata.

A trajectory is written to three collections (see :mod:`~fints_agent.memory.chroma`): its
request, chosen call, time, turn number and supersession marks in the user's trajectory
collection; its messages, offered tools, rejected calls and choices (the *payload*) with its
steering vector; its tool name and choices (no free text) with its embedding in the population
collection. The functions here turn a record into each metadata form and back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fints_agent.memory.errors import StoreError

__all__ = [
    "TrajectoryRecord",
    "check_user_id",
    "population_metadata",
    "read_payload",
    "records_from",
    "trajectory_metadata",
    "value_problem",
    "vector_metadata",
]


@dataclass
class TrajectoryRecord:
    """One stored trajectory (fields not read are left at their defaults).

    Attributes:
        id: Trajectory id.
        user_id: Whose it is.
        request: The request text it is retrieved by.
        chosen: The chosen call, ``{"name": ..., "arguments": {...}}``.
        created_at: Unix time it was recorded.
        seq: The user's turn number (0, 1, ...) when it was recorded.
        rejected: The rejected calls its vector was computed against.
        messages: The request context.
        tools: The tools offered (OpenAI function-tool dicts).
        negatives: Where the rejected calls came from (``"given"`` or the sources used).
        choices: The chosen call's enum and boolean argument values.
        supersedes: Id of the trajectory this one replaced, if any.
        superseded_by: Id of the trajectory that replaced this one, if any.
        similarity: Cosine similarity to the query (query results only).
        embedding: The retrieval embedding (float32), when read.
        vector: The flat steering vector (float32), when read.
    """

    id: str
    user_id: str
    request: str
    chosen: dict[str, Any]
    created_at: float = 0.0
    seq: int = -1
    rejected: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    negatives: str = "given"
    choices: dict[str, Any] = field(default_factory=dict)
    supersedes: str | None = None
    superseded_by: str | None = None
    similarity: float | None = None
    embedding: np.ndarray | None = None
    vector: np.ndarray | None = None

    @property
    def superseded(self) -> bool:
        """Whether a newer trajectory replaced this one."""
        return bool(self.superseded_by)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no embedding or vector)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "request": self.request,
            "chosen": self.chosen,
            "created_at": self.created_at,
            "seq": self.seq,
            "negatives": self.negatives,
            "superseded_by": self.superseded_by,
            "supersedes": self.supersedes,
        }


def check_user_id(user_id: Any) -> str:
    """Return ``user_id`` if it is a usable user id.

    Raises:
        ValueError: Not a non-empty string of at most 256 characters.
    """
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"user_id must be a non-empty string, got {user_id!r}")
    if len(user_id) > 256:
        raise ValueError("user_id is longer than 256 characters")
    return user_id


def value_problem(values: Any, limit: float | None) -> str | None:
    """Why a vector or embedding cannot be stored or imported (``None``: it can).

    Args:
        values: The vector or embedding.
        limit: The largest magnitude allowed (``None``: any finite value).
    """
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return None
    if not np.isfinite(array).all():
        return "has values that are not finite (NaN or infinity)"
    peak = float(np.abs(array).max())
    if limit is not None and peak > limit:
        return f"has a value of magnitude {peak:.3g}, beyond the limit of {limit:.0e}"
    return None


def trajectory_metadata(r: TrajectoryRecord) -> dict[str, Any]:
    """Metadata of the record in its user's trajectory collection."""
    return {
        "user_id": r.user_id,
        "created_at": float(r.created_at),
        "seq": int(r.seq),
        "chosen": json.dumps(r.chosen, ensure_ascii=False),
        "tool": str(r.chosen.get("name", "")),
        "negatives": r.negatives,
        "superseded": bool(r.superseded_by),
        "superseded_by": r.superseded_by or "",
        "supersedes": r.supersedes or "",
    }


def vector_metadata(r: TrajectoryRecord) -> dict[str, Any]:
    """Metadata of the record's vector: its user and the payload."""
    payload = {
        "messages": r.messages,
        "tools": r.tools,
        "rejected": r.rejected,
        "choices": r.choices,
    }
    return {
        "user_id": r.user_id,
        "created_at": float(r.created_at),
        "payload": json.dumps(payload, ensure_ascii=False),
    }


def population_metadata(r: TrajectoryRecord) -> dict[str, Any]:
    """Metadata of the record's population entry: tool name and choices, no free text."""
    return {
        "user_id": r.user_id,
        "tool": str(r.chosen.get("name", "")),
        "choices": json.dumps(r.choices, ensure_ascii=False),
        "created_at": r.created_at,
    }


def read_payload(r: TrajectoryRecord, meta: Mapping[str, Any]) -> None:
    """Fill the record's messages, tools, rejected calls and choices from vector metadata."""
    payload = json.loads(meta.get("payload", "{}"))
    r.messages = payload.get("messages", [])
    r.tools = payload.get("tools", [])
    r.rejected = payload.get("rejected", [])
    r.choices = payload.get("choices", {})


def records_from(got: Mapping[str, Any], user_id: str, with_emb: bool) -> list[TrajectoryRecord]:
    """Records from a ``get`` (or flattened ``query``) result of a user's trajectory collection.

    Metadata keys that older versions wrote and that are no longer read are ignored.

    Raises:
        StoreError: A record of another user (the store is corrupt).
    """
    out = []
    docs = got.get("documents") or []
    for i, tid in enumerate(got["ids"]):
        meta = got["metadatas"][i] or {}
        if meta.get("user_id") != user_id:
            raise StoreError(
                f"trajectory {tid} in user {user_id!r}'s collection belongs to "
                f"{meta.get('user_id')!r}: the store is corrupt"
            )
        emb = None
        if with_emb and got.get("embeddings") is not None:
            emb = np.asarray(got["embeddings"][i], dtype=np.float32)
        out.append(
            TrajectoryRecord(
                id=tid,
                user_id=user_id,
                request=str(docs[i] or "") if i < len(docs) else "",
                chosen=json.loads(meta.get("chosen", "{}")),
                created_at=float(meta.get("created_at", 0.0)),
                seq=int(meta.get("seq", -1)),
                negatives=str(meta.get("negatives", "given")),
                supersedes=meta.get("supersedes") or None,
                superseded_by=meta.get("superseded_by") or None,
                embedding=emb,
            )
        )
    return out
