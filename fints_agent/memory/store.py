"""Chroma persistence of users' trajectories and their steering vectors.

A store lives in a local directory (embedded ``chromadb.PersistentClient``) or on a Chroma
server (``chromadb.HttpClient``; start one with ``chroma run --path DIR --host 127.0.0.1 --port
N``): :func:`open_client` picks by the location, a path or an ``http(s)://host:port`` URL, and
everything else is the same code. Embeddings are always passed in; Chroma's default embedding
function (which downloads a model) is never used.

Collections (``P`` is the prefix, ``K`` the first 32 hex digits of SHA-256 of the user id):

``P-meta``
    No records; its metadata is the :class:`StoreLayout` (model fingerprint, layers, sites,
    ``d_model``, retrieval embedder). Vectors of another model are refused.
``P-t-K``
    One collection per user, queried by similarity: per trajectory, the request's retrieval
    embedding (cosine space), the request text, the chosen call, time, turn number and
    supersession marks.
``P-vectors``
    The steering vectors of all users, keyed by trajectory id: the flat float32 vector (layers x
    sites x d_model: 34,560 values for the default model) *as the record's embedding*, which
    Chroma stores as float32, so vectors come back bit-exact; plus the user id and the rest of
    the trajectory (messages, offered tools, rejected calls) as metadata. It is only read by id,
    so its HNSW graph is built with the smallest settings (``max_neighbors=2``,
    ``ef_construction=4``).
``P-pop``
    One small record per trajectory of every user (retrieval embedding, tool name and the enum and
    boolean argument values; no free text): other users' choices for similar requests, used to
    build negatives.
``P-journal``
    Write intents, for crash recovery (below).

Measurements behind these choices (2-core CPU, chromadb 1.5.9):

* Vectors as embeddings with the smallest HNSW settings ingest at ~290/s for 34,560 values
  (~140/s with the default settings) and take ~140 KB each in the index. Base64 text ingests at
  ~10/s as a document (the full-text index tokenizes it) and ~100/s in metadata at 4x the disk
  (the metadata index and the write log each keep a copy). Reading back 5 vectors by id costs
  ~10 ms, mostly turning 170,000 floats into Python objects in the client.
* One *shared* vector collection: an HNSW index reserves room for 100 vectors when created
  (13.8 MB at 34,560 values), so one vector collection per user would cost ~14 MB for a user
  with a single trajectory.
* One trajectory collection *per user*: Chroma's filtered queries (``where={"user_id": ...}``)
  took 12-70 ms in a store of 1,000 users and 20,000 trajectories, an unfiltered query of the
  user's own collection 1.3-2 ms. Isolation is structural, and every result is still checked to
  carry the user's id (vectors too).

Crash safety: an add writes a journal entry, then the vectors, then the trajectory records (one
record = text, embedding and metadata, written in one Chroma call), then the population entries,
then removes the journal entry. Reads only ever start from ``P-t-K``, and a trajectory record is
written only after its vector, so a reader never sees a trajectory without its vector. Vectors
left without a trajectory by a crash are never returned, and :meth:`TrajectoryStore.recover` (run
on open for journal entries older than a grace period) deletes them. Deletes and forgets remove
the trajectory records first, are journaled the same way, and are completed on recovery.

Export files (:meth:`TrajectoryStore.export_user`, ``fints-agent memory export``) are JSON Lines:
a header (format, version, user, trajectory count, layout, and the SHA-256 of every byte after
the header line), then one trajectory per line. Import checks the whole file before writing
anything: every record must belong to the header's user, the count and checksum must match,
values must be finite; ids of another user of the store are refused (``as_user`` imports under
fresh ids instead), and a write that fails midway is undone. Files of the first version have no
checksum and are imported only when asked to (``allow_unchecked``, ``--allow-unchecked``).

Example:
    >>> store = TrajectoryStore("./memory")                 # embedded
    >>> store = TrajectoryStore("http://127.0.0.1:8000")    # a Chroma server
    >>> store.users(), store.count("alice")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from fints_agent.steering.vector import VectorMismatchError

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_ABS_VALUE",
    "RecoveryReport",
    "StoreError",
    "StoreLayout",
    "StoreLayoutError",
    "TrajectoryRecord",
    "TrajectoryStore",
    "UnknownTrajectoryError",
    "contrasts_tool",
    "open_client",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "fints-trajectories"
"""The ``format`` field of an export file's header line."""
EXPORT_VERSION = 2
"""The ``version`` of the export files written now: version 2 added the header's ``checksum``
(version 1 files have none and are imported only on request, see
:meth:`TrajectoryStore.import_user`)."""
MAX_ABS_VALUE = 1e6
"""The largest magnitude an imported vector or embedding value may have (steering vectors and
retrieval embeddings are far smaller; a value near the float32 maximum overflows the weighted
sums of retrieval to infinity)."""
_FORMAT_VERSION = 1
_CHECKSUM_PLACEHOLDER = "sha256:" + "0" * 64
_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
_VECTOR_HNSW = {"ef_construction": 4, "max_neighbors": 2, "ef_search": 1}
_ADD_CHUNK = 64


class StoreError(RuntimeError):
    """The store cannot be opened or read (bad location, unreachable server, bad file)."""


class StoreLayoutError(VectorMismatchError):
    """Vectors or embeddings that do not fit the store (another model, layers, or embedder)."""


class UnknownTrajectoryError(KeyError):
    """No trajectory with this id (for this user)."""


@dataclass(frozen=True)
class StoreLayout:
    """What a store's vectors and embeddings are: fixed when the store gets its first vector.

    Attributes:
        model_fingerprint: Fingerprint of the model the vectors were computed on.
        layers: Decoder layers of each vector.
        sites: Sites of each vector.
        d_model: Width of each direction.
        embedder: Name of the retrieval embedder.
        embed_dim: Width of a retrieval embedding.
        vectors: How the steering vectors were computed (``"contrast"``,
            ``"demonstration"`` or ``"split"``, see :class:`~fints_agent.memory.Memory`).
    """

    model_fingerprint: str
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    d_model: int
    embedder: str
    embed_dim: int
    vectors: str = "contrast"

    @property
    def parts(self) -> int:
        """Steering vectors per trajectory: 2 for ``"split"`` (the contrastive vector, then
        the demonstration vector), else 1."""
        return 2 if self.vectors == "split" else 1

    @property
    def vector_dim(self) -> int:
        """Number of floats of one flat vector (all its parts)."""
        return self.parts * len(self.layers) * len(self.sites) * self.d_model

    def vector_header(self) -> dict[str, Any]:
        """The header :meth:`SteeringVector.from_flat` needs."""
        return {
            "layers": list(self.layers),
            "sites": list(self.sites),
            "d_model": self.d_model,
            "model_fingerprint": self.model_fingerprint,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model_fingerprint": self.model_fingerprint,
            "layers": list(self.layers),
            "sites": list(self.sites),
            "d_model": self.d_model,
            "embedder": self.embedder,
            "embed_dim": self.embed_dim,
            "vectors": self.vectors,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreLayout:
        """Inverse of :meth:`to_dict` (also reads collection metadata).

        Raises:
            StoreError: Fields are missing or malformed.
        """
        try:
            layers = data["layers"]
            sites = data["sites"]
            if isinstance(layers, str):
                layers = json.loads(layers)
            if isinstance(sites, str):
                sites = json.loads(sites)
            return cls(
                model_fingerprint=str(data["model_fingerprint"]),
                layers=tuple(int(x) for x in layers),
                sites=tuple(str(s) for s in sites),
                d_model=int(data["d_model"]),
                embedder=str(data["embedder"]),
                embed_dim=int(data["embed_dim"]),
                # Stores written before the field existed hold contrastive vectors.
                vectors=str(data.get("vectors", "contrast")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"malformed store layout {dict(data)!r}: {exc}") from exc

    def _metadata(self) -> dict[str, str | int]:
        d = self.to_dict()
        d["layers"] = json.dumps(d["layers"])
        d["sites"] = json.dumps(d["sites"])
        return {**d, "format_version": _FORMAT_VERSION}

    def differences(self, other: StoreLayout) -> list[str]:
        """Human-readable differences from another layout (empty when equal)."""
        out = []
        names = (
            "model_fingerprint",
            "layers",
            "sites",
            "d_model",
            "embedder",
            "embed_dim",
            "vectors",
        )
        for name in names:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: store has {a!r}, got {b!r}")
        return out


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
        contrasts_tool: Whether a rejected call names another tool than the chosen one (its
            vector then also contrasts the choice of tool). ``None`` when unknown (a store
            written before this was kept).
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
    contrasts_tool: bool | None = None
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


@dataclass
class RecoveryReport:
    """What :meth:`TrajectoryStore.recover` did.

    Attributes:
        journal_entries: Interrupted operations found (and completed or rolled back).
        orphan_vectors: Vectors removed because their trajectory was never written.
        deleted: Records removed to complete interrupted deletes and forgets.
        superseded: Supersession marks re-applied.
        dangling: Trajectories removed because their vector was missing (full check only).
    """

    journal_entries: int = 0
    orphan_vectors: int = 0
    deleted: int = 0
    superseded: int = 0
    dangling: int = 0


def open_client(location: str | Path) -> Any:
    """A Chroma client for a directory (embedded) or an ``http(s)://host:port`` URL (server).

    Raises:
        StoreError: A malformed URL, or the server does not answer.
    """
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    text = str(location)
    if text.startswith(("http://", "https://")):
        url = urlparse(text)
        if not url.hostname:
            raise StoreError(f"no host in store URL {text!r}")
        ssl = url.scheme == "https"
        try:
            port = url.port or (443 if ssl else 8000)
            client = chromadb.HttpClient(host=url.hostname, port=port, ssl=ssl, settings=settings)
            client.heartbeat()
        except Exception as exc:
            raise StoreError(f"cannot reach the Chroma server at {text}: {exc}") from exc
        return client
    if "://" in text:
        raise StoreError(f"unsupported store URL {text!r}: use a path or http(s)://host:port")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"store location {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    except Exception as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}") from exc


def contrasts_tool(chosen: Mapping[str, Any], rejected: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a rejected call names another tool than the chosen call.

    A trajectory whose rejected calls all use the chosen tool contrasts only argument values:
    its vector says nothing about which tool to call.

    Example:
        >>> contrasts_tool({"name": "a"}, [{"name": "a"}, {"name": "b"}])
        True
    """
    name = chosen.get("name")
    return any(r.get("name") != name for r in rejected)


def _optional_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _user_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]


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


def _f32_b64(array: np.ndarray) -> str:
    return base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode("ascii")


def _b64_f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def _value_problem(values: Any, limit: float | None = MAX_ABS_VALUE) -> str | None:
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


def _export_record(line: str, where: str) -> TrajectoryRecord:
    """One trajectory line of an export file.

    Raises:
        StoreError: A malformed line (``where`` names it).
    """
    try:
        d = json.loads(line)
        tid = d["id"]
        if not isinstance(tid, str) or not tid:
            raise ValueError(f"id {tid!r} is not a non-empty string")
        return TrajectoryRecord(
            id=tid,
            user_id=str(d["user_id"]),
            request=str(d["request"]),
            chosen=dict(d["chosen"]),
            created_at=float(d["created_at"]),
            seq=int(d["seq"]),
            rejected=list(d.get("rejected", [])),
            messages=list(d.get("messages", [])),
            tools=list(d.get("tools", [])),
            negatives=str(d.get("negatives", "given")),
            choices=dict(d.get("choices", {})),
            supersedes=d.get("supersedes") or None,
            superseded_by=d.get("superseded_by") or None,
            embedding=_b64_f32(d["embedding"]),
            vector=_b64_f32(d["vector"]),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise StoreError(f"{where}: malformed trajectory: {exc}") from exc


def _is_not_found(exc: BaseException) -> bool:
    from chromadb.errors import NotFoundError

    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)


class TrajectoryStore:
    """Per-user trajectories and steering vectors in Chroma (see the module docstring).

    Thread-safe: several threads may add, query and delete for different users (and the same
    user) at once.

    Args:
        location: A directory (embedded store) or an ``http(s)://host:port`` URL (server).
        collection_prefix: Prefix of the store's collection names (several stores can share a
            server or directory under different prefixes).
        recover_after: On open, complete or roll back operations interrupted more than this
            many seconds ago (``None``: do not recover on open).
        client: An already open Chroma client to use instead of ``location``.

    Raises:
        StoreError: The location cannot be opened or the prefix is not usable.

    Example:
        >>> store = TrajectoryStore(tmp_path / "memory", collection_prefix="demo")
        >>> store.layout is None      # nothing recorded yet
        True
    """

    def __init__(
        self,
        location: str | Path,
        *,
        collection_prefix: str = "fints",
        recover_after: float | None = 600.0,
        client: Any = None,
    ) -> None:
        if not _PREFIX_PATTERN.fullmatch(collection_prefix):
            raise StoreError(
                f"collection_prefix {collection_prefix!r} must match {_PREFIX_PATTERN.pattern}"
            )
        self.location = str(location)
        self.prefix = collection_prefix
        self.client = client if client is not None else open_client(location)
        self._lock = threading.RLock()
        self._user_locks: dict[str, threading.Lock] = {}
        self._handles: dict[str, Any] = {}
        self._layout: StoreLayout | None = None
        if recover_after is not None:
            self.recover(grace_seconds=recover_after)

    def __repr__(self) -> str:
        return f"TrajectoryStore({self.location!r}, collection_prefix={self.prefix!r})"

    # -- names and handles ----------------------------------------------------------------------
    def _name(self, kind: str, user_id: str | None = None) -> str:
        if user_id is None:
            return f"{self.prefix}-{kind}"
        return f"{self.prefix}-{kind}-{_user_key(user_id)}"

    def _user_lock(self, user_id: str) -> threading.Lock:
        with self._lock:
            return self._user_locks.setdefault(user_id, threading.Lock())

    def _collection(
        self,
        name: str,
        *,
        create: bool = False,
        metadata: dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
        fresh: bool = False,
    ) -> Any:
        with self._lock:
            if not fresh and name in self._handles:
                return self._handles[name]
        try:
            if create:
                col = self.client.get_or_create_collection(
                    name, embedding_function=None, metadata=metadata, configuration=configuration
                )
            else:
                col = self.client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if not create and _is_not_found(exc):
                with self._lock:
                    self._handles.pop(name, None)
                return None
            raise StoreError(f"cannot open collection {name}: {exc}") from exc
        with self._lock:
            self._handles[name] = col
        return col

    def _forget_handle(self, name: str) -> None:
        with self._lock:
            self._handles.pop(name, None)

    @contextmanager
    def _retry_stale(self, *names: str) -> Iterator[None]:
        """Drop cached handles of collections another process may have deleted."""
        try:
            yield
        except Exception as exc:
            if _is_not_found(exc):
                for n in names:
                    self._forget_handle(n)
            raise

    def _trajectories(self, user_id: str, *, create: bool = False) -> Any:
        # Writers always re-open (another process may have deleted the collection since);
        # readers use cached handles and treat a vanished collection as no history.
        return self._collection(
            self._name("t", user_id),
            create=create,
            fresh=create,
            metadata={"user_id": user_id, "next_seq": 0, "kind": "trajectories"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    def _vectors(self, *, create: bool = False) -> Any:
        return self._collection(
            self._name("vectors"),
            create=create,
            metadata={"kind": "vectors"},
            configuration={"hnsw": {"space": "l2", **_VECTOR_HNSW}},
        )

    def _pop(self, *, create: bool = False) -> Any:
        return self._collection(
            self._name("pop"),
            create=create,
            metadata={"kind": "population"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    def _journal(self) -> Any:
        return self._collection(self._name("journal"), create=True, metadata={"kind": "journal"})

    # -- layout ---------------------------------------------------------------------------------
    @property
    def layout(self) -> StoreLayout | None:
        """The store's layout, or ``None`` before its first vector."""
        if self._layout is None:
            meta = self._collection(self._name("meta"), fresh=True)
            if meta is not None and meta.metadata:
                self._layout = StoreLayout.from_dict(meta.metadata)
        return self._layout

    def bind(self, layout: StoreLayout) -> StoreLayout:
        """Fix the store's layout, or check that it matches the one already fixed.

        Raises:
            StoreLayoutError: The store holds vectors of another model, layers, sites or
                embedder.
        """
        current = self.layout
        if current is None:
            with self._lock:
                col = self._collection(self._name("meta"), create=True, metadata=layout._metadata())
                current = StoreLayout.from_dict(col.metadata or layout._metadata())
                self._layout = current
        diffs = current.differences(layout)
        if diffs:
            raise StoreLayoutError(
                f"store {self.location} (prefix {self.prefix!r}) was built for another model or "
                "embedder: " + "; ".join(diffs)
            )
        return current

    def _require_layout(self) -> StoreLayout:
        layout = self.layout
        if layout is None:
            raise StoreError("the store has no layout yet: record a trajectory first")
        return layout

    def check_vectors(self, records: Sequence[TrajectoryRecord]) -> None:
        """Check vector and embedding widths against the layout.

        Raises:
            StoreLayoutError: A vector or embedding of the wrong width.
        """
        layout = self._require_layout()
        for r in records:
            if r.vector is None or r.embedding is None:
                raise StoreLayoutError(f"trajectory {r.id} has no vector or no embedding")
            if np.asarray(r.vector).size != layout.vector_dim:
                raise StoreLayoutError(
                    f"trajectory {r.id}: vector of {np.asarray(r.vector).size} values, the store "
                    f"holds {layout.vector_dim} ({layout.parts} x {len(layout.layers)} layers "
                    f"x {len(layout.sites)} sites x {layout.d_model})"
                )
            if np.asarray(r.embedding).size != layout.embed_dim:
                raise StoreLayoutError(
                    f"trajectory {r.id}: embedding of {np.asarray(r.embedding).size} values, the "
                    f"store's embedder {layout.embedder!r} gives {layout.embed_dim}"
                )

    # -- journal --------------------------------------------------------------------------------
    def _journal_begin(self, op: str, user_id: str, ids: Sequence[str], **extra: Any) -> str:
        entry = uuid.uuid4().hex
        meta = {
            "op": op,
            "user_id": user_id,
            "ids": json.dumps(list(ids)),
            "created_at": time.time(),
            "extra": json.dumps(extra),
        }
        self._journal().add(ids=[entry], embeddings=[[0.0]], metadatas=[meta])
        return entry

    def _journal_end(self, entry: str) -> None:
        self._journal().delete(ids=[entry])

    # -- writing --------------------------------------------------------------------------------
    def reserve_seq(self, user_id: str, n: int) -> int:
        """Reserve ``n`` turn numbers for a user; returns the first.

        Turn numbers order a user's trajectories for recency in turns. Concurrent writers in
        other processes may, rarely, get the same numbers; that only blurs recency.
        """
        check_user_id(user_id)
        with self._user_lock(user_id):
            t = self._trajectories(user_id, create=True)
            fresh = self._collection(self._name("t", user_id), fresh=True) or t
            meta = dict(fresh.metadata or {})
            first = int(meta.get("next_seq", 0))
            meta["next_seq"] = first + n
            fresh.modify(metadata=meta)
            return first

    def latest_seq(self, user_id: str) -> int:
        """The highest turn number given to the user (-1 when none)."""
        col = self._collection(self._name("t", user_id), fresh=True)
        if col is None:
            return -1
        return int((col.metadata or {}).get("next_seq", 0)) - 1

    def add(self, records: Sequence[TrajectoryRecord]) -> None:
        """Write trajectories (vectors first, then the trajectory records; see crash safety).

        Each record needs ``embedding`` and ``vector``. Records that set ``supersedes`` mark
        that trajectory (of the same user) superseded.

        Raises:
            StoreError: No layout bound yet, or a vector or embedding value is not finite
                (nothing is written, not even a journal entry).
            StoreLayoutError: Wrong vector or embedding width.
            ValueError: Bad user id or repeated ids.
        """
        if not records:
            return
        self.check_vectors(records)
        for r in records:
            for what, values in (("vector", r.vector), ("embedding", r.embedding)):
                problem = _value_problem(values, limit=None)
                if problem is not None:
                    raise StoreError(f"trajectory {r.id}: its {what} {problem}")
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("repeated trajectory ids in one add")
        by_user: dict[str, list[TrajectoryRecord]] = {}
        for r in records:
            by_user.setdefault(check_user_id(r.user_id), []).append(r)
        for user_id, group in by_user.items():
            self._add_user(user_id, group)

    def _add_user(self, user_id: str, group: list[TrajectoryRecord]) -> None:
        with self._user_lock(user_id):  # same-user writes (and forgets) in order
            self._add_user_locked(user_id, group)

    def _add_user_locked(
        self, user_id: str, group: list[TrajectoryRecord], *, rollback: bool = False
    ) -> None:
        """Write one user's trajectories (journaled).

        With ``rollback`` (the ids must be new to the store), a failed write deletes what it
        wrote and its journal entry before the error propagates: all or nothing.
        """
        ids = [r.id for r in group]
        supersede = [(r.supersedes, r.id) for r in group if r.supersedes]
        entry = self._journal_begin("add", user_id, ids, supersede=supersede)
        if not rollback:
            self._write_user(user_id, group, supersede)
            self._journal_end(entry)
            return
        try:
            self._write_user(user_id, group, supersede)
        except BaseException:
            try:
                self._delete_ids(user_id, ids)
            except Exception:
                logger.exception("rolling back %d trajectories of %r failed", len(ids), user_id)
                raise  # the journal entry stays: recover() completes the rollback
            self._journal_end(entry)
            raise
        self._journal_end(entry)

    def _write_user(
        self,
        user_id: str,
        group: list[TrajectoryRecord],
        supersede: Sequence[tuple[str | None, str]],
    ) -> None:
        """Vectors, then trajectory records, then population entries, then supersession."""
        t = self._trajectories(user_id, create=True)
        v = self._vectors(create=True)
        pop = self._pop(create=True)
        with self._retry_stale(self._name("t", user_id)):
            for start in range(0, len(group), _ADD_CHUNK):
                chunk = group[start : start + _ADD_CHUNK]
                v.add(
                    ids=[r.id for r in chunk],
                    embeddings=np.stack([np.asarray(r.vector, dtype=np.float32) for r in chunk]),
                    metadatas=[self._vector_meta(r) for r in chunk],
                )
            for start in range(0, len(group), 512):
                chunk = group[start : start + 512]
                t.add(
                    ids=[r.id for r in chunk],
                    embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in chunk]),
                    documents=[r.request for r in chunk],
                    metadatas=[self._trajectory_meta(r) for r in chunk],
                )
        for start in range(0, len(group), 512):
            chunk = group[start : start + 512]
            pop.add(
                ids=[r.id for r in chunk],
                embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in chunk]),
                metadatas=[
                    {
                        "user_id": user_id,
                        "tool": str(r.chosen.get("name", "")),
                        "choices": json.dumps(r.choices, ensure_ascii=False),
                        "created_at": r.created_at,
                    }
                    for r in chunk
                ],
            )
        for old, new in supersede:
            if old is not None:
                self.mark_superseded(user_id, old, new)

    @staticmethod
    def _trajectory_meta(r: TrajectoryRecord) -> dict[str, Any]:
        return {
            "user_id": r.user_id,
            "created_at": float(r.created_at),
            "seq": int(r.seq),
            "chosen": json.dumps(r.chosen, ensure_ascii=False),
            "tool": str(r.chosen.get("name", "")),
            "contrasts_tool": contrasts_tool(r.chosen, r.rejected),
            "negatives": r.negatives,
            "superseded": bool(r.superseded_by),
            "superseded_by": r.superseded_by or "",
            "supersedes": r.supersedes or "",
        }

    @staticmethod
    def _vector_meta(r: TrajectoryRecord) -> dict[str, Any]:
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

    def fill_tool_contrasts(self, user_id: str) -> int:
        """Set :attr:`TrajectoryRecord.contrasts_tool` where an older store lacks it.

        It is worked out from the stored rejected calls. Until then such trajectories count as
        contrasting the tool (full tool-name steering). Returns how many were filled.
        """
        unknown = [r.id for r in self.get(user_id) if r.contrasts_tool is None]
        if not unknown:
            return 0  # the usual case: metadata only, no payload read
        missing = self.get(user_id, unknown, with_payload=True)
        t = self._trajectories(user_id)
        with self._user_lock(user_id), self._retry_stale(self._name("t", user_id)):
            got = t.get(ids=[r.id for r in missing], include=["metadatas"])
            by_id = {r.id: r for r in missing}
            metas = []
            for tid, meta in zip(got["ids"], got["metadatas"], strict=True):
                r = by_id[tid]
                metas.append(
                    {**dict(meta or {}), "contrasts_tool": contrasts_tool(r.chosen, r.rejected)}
                )
            if got["ids"]:
                t.update(ids=list(got["ids"]), metadatas=metas)
        return len(got["ids"])

    def mark_superseded(self, user_id: str, old_id: str, new_id: str) -> bool:
        """Mark ``old_id`` superseded by ``new_id`` (it is no longer retrieved).

        Returns:
            False when the user has no trajectory ``old_id``.
        """
        t = self._trajectories(user_id)
        if t is None:
            return False
        with self._retry_stale(self._name("t", user_id)):
            got = t.get(ids=[old_id], include=["metadatas"])
            if not got["ids"]:
                return False
            meta = dict(got["metadatas"][0])
            meta.update(superseded=True, superseded_by=new_id)
            t.update(ids=[old_id], metadatas=[meta])
        return True

    # -- reading --------------------------------------------------------------------------------
    def _records(
        self, got: Mapping[str, Any], user_id: str, with_emb: bool
    ) -> list[TrajectoryRecord]:
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
                    contrasts_tool=_optional_bool(meta.get("contrasts_tool")),
                    supersedes=meta.get("supersedes") or None,
                    superseded_by=meta.get("superseded_by") or None,
                    embedding=emb,
                )
            )
        return out

    def query(
        self,
        user_id: str,
        embedding: np.ndarray | Sequence[float],
        n: int,
        *,
        include_superseded: bool = False,
    ) -> list[TrajectoryRecord]:
        """The user's ``n`` trajectories most similar to ``embedding``, best first.

        Only the user's own collection is searched. ``similarity`` is the cosine similarity.
        Superseded trajectories are skipped unless ``include_superseded``.

        Raises:
            StoreLayoutError: The embedding has the wrong width.
        """
        check_user_id(user_id)
        if n < 1:
            return []
        t = self._trajectories(user_id)
        if t is None:
            return []
        emb = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        layout = self.layout
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
                if _is_not_found(exc):
                    self._forget_handle(self._name("t", user_id))
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
            records = self._records(flat, user_id, with_emb=False)
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
    ) -> list[TrajectoryRecord]:
        """The user's trajectories (all, or those with the given ids), oldest turn first.

        Args:
            user_id: The user.
            ids: Only these ids (missing ones are skipped).
            include_superseded: Also superseded ones.
            with_embeddings: Read the retrieval embeddings.
            with_payload: Read messages, tools and rejected calls.
            with_vectors: Read the flat steering vectors.
            limit: At most this many (after sorting by turn).
            offset: Skip this many first.
        """
        check_user_id(user_id)
        t = self._trajectories(user_id)
        if t is None or (ids is not None and len(ids) == 0):
            return []
        include = ["metadatas", "documents"] + (["embeddings"] if with_embeddings else [])
        with self._retry_stale(self._name("t", user_id)):
            got = t.get(ids=list(ids) if ids is not None else None, include=include)
        records = self._records(got, user_id, with_emb=with_embeddings)
        if not include_superseded:
            records = [r for r in records if not r.superseded]
        records.sort(key=lambda r: (r.seq, r.created_at, r.id))
        start = offset or 0
        records = records[start : start + limit if limit is not None else None]
        v = self._vectors() if (with_payload or with_vectors) and records else None
        if v is not None:
            inc = ["metadatas"] + (["embeddings"] if with_vectors else [])
            got_v = v.get(ids=[r.id for r in records], include=inc)
            by_id = {tid: i for i, tid in enumerate(got_v["ids"])}
            for r in records:
                i = by_id.get(r.id)
                if i is None or (got_v["metadatas"][i] or {}).get("user_id") != user_id:
                    continue
                if with_payload:
                    payload = json.loads((got_v["metadatas"][i] or {}).get("payload", "{}"))
                    r.messages = payload.get("messages", [])
                    r.tools = payload.get("tools", [])
                    r.rejected = payload.get("rejected", [])
                    r.choices = payload.get("choices", {})
                if with_vectors:
                    r.vector = np.asarray(got_v["embeddings"][i], dtype=np.float32)
        return records

    def get_vectors(self, user_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Flat float32 vectors of the user's trajectories, by id (missing ids are absent)."""
        check_user_id(user_id)
        if not ids:
            return {}
        v = self._vectors()
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
        """Per query row, other users' ``(similarity, tool, choices)`` for similar requests.

        Row ``i`` leaves out ``exclude_users[i]``'s own trajectories. No free text is read:
        only tool names and enum/boolean argument values.
        """
        pop = self._pop()
        rows = np.asarray(embeddings, dtype=np.float32)
        empty: list[list[tuple[float, str, dict[str, Any]]]] = [[] for _ in range(len(rows))]
        if pop is None or rows.shape[0] == 0:
            return empty
        try:
            got = pop.query(query_embeddings=rows, n_results=n, include=["metadatas", "distances"])
        except Exception as exc:
            if _is_not_found(exc):
                self._forget_handle(self._name("pop"))
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

    def users(self) -> list[str]:
        """Ids of users with a trajectory collection (possibly empty), sorted.

        Only this store's collections count: ``P-t-`` and a user key, that key being the hash
        of the collection's user id (a store whose prefix extends this one's, such as ``P-t``,
        is another store).
        """
        pattern = re.compile(re.escape(self._name("t")) + r"-([0-9a-f]{32})")
        found = []
        for col in self.client.list_collections():
            name = col if isinstance(col, str) else col.name
            match = pattern.fullmatch(name)
            if match is None:
                continue
            c = col if not isinstance(col, str) else self._collection(name)
            uid = (getattr(c, "metadata", None) or {}).get("user_id")
            if isinstance(uid, str) and _user_key(uid) == match.group(1):
                found.append(uid)
        return sorted(found)

    def count(self, user_id: str | None = None) -> int:
        """Number of trajectories of a user (all users when ``None``)."""
        if user_id is None:
            return sum(self.count(u) for u in self.users())
        t = self._trajectories(check_user_id(user_id))
        if t is None:
            return 0
        try:
            return int(t.count())
        except Exception as exc:
            if _is_not_found(exc):
                self._forget_handle(self._name("t", user_id))
                return 0
            raise

    def find_user(self, trajectory_id: str) -> str | None:
        """The user a trajectory belongs to (``None`` if unknown)."""
        pop = self._pop()
        if pop is not None:
            got = pop.get(ids=[trajectory_id], include=["metadatas"])
            if got["ids"]:
                uid = (got["metadatas"][0] or {}).get("user_id")
                if isinstance(uid, str) and self.get(uid, [trajectory_id]):
                    return uid
        for uid in self.users():  # slow path: a population entry lost to a crash
            if self.get(uid, [trajectory_id]):
                return uid
        return None

    # -- deleting -------------------------------------------------------------------------------
    def delete(self, user_id: str, ids: Sequence[str]) -> int:
        """Delete some of a user's trajectories (trajectory record first, then the vector).

        Returns:
            How many existed.
        """
        check_user_id(user_id)
        ids = list(ids)
        if not ids:
            return 0
        t = self._trajectories(user_id)
        if t is None:
            return 0
        with self._retry_stale(self._name("t", user_id)):
            present = t.get(ids=ids, include=[])["ids"]
        if not present:
            return 0
        entry = self._journal_begin("delete", user_id, present)
        self._delete_ids(user_id, present)
        self._journal_end(entry)
        return len(present)

    def _delete_ids(self, user_id: str, ids: list[str]) -> None:
        """Delete ids everywhere: the trajectory record first, then vector and population."""
        for col in (self._trajectories(user_id), self._vectors(), self._pop()):
            if col is not None:
                try:
                    col.delete(ids=ids)
                except Exception as exc:
                    if not _is_not_found(exc):
                        raise

    def delete_user(self, user_id: str) -> int:
        """Forget a user: their collections and population entries are deleted.

        Returns:
            How many trajectories they had.
        """
        check_user_id(user_id)
        n = self.count(user_id)
        entry = self._journal_begin("forget", user_id, [])
        with self._user_lock(user_id):
            self._delete_user_records(user_id, before=None)
        self._journal_end(entry)
        return n

    def _delete_user_records(self, user_id: str, before: float | None) -> int:
        """Delete a user's data (only records created up to ``before``, when given).

        The trajectory collection goes first (after it, nothing of the user is retrieved),
        then their vectors and population entries.
        """
        removed = 0
        name = self._name("t", user_id)
        t = self._collection(name, fresh=True)
        if t is not None:
            got = t.get(include=["metadatas"])
            old = [
                tid
                for tid, m in zip(got["ids"], got["metadatas"], strict=True)
                if before is None or float((m or {}).get("created_at", 0.0)) <= before
            ]
            removed = len(old)
            if len(old) < len(got["ids"]):
                t.delete(ids=old)
            else:
                try:
                    self.client.delete_collection(name)
                except Exception as exc:
                    if not _is_not_found(exc):
                        raise
                self._forget_handle(name)
        for col in (self._vectors(), self._pop()):
            if col is None:
                continue
            # A filtered read: slow in a large store, but forgetting is rare.
            got = col.get(where={"user_id": user_id}, include=["metadatas"])
            old = [
                tid
                for tid, m in zip(got["ids"], got["metadatas"], strict=True)
                if before is None or float((m or {}).get("created_at", 0.0)) <= before
            ]
            for start in range(0, len(old), 1000):
                col.delete(ids=old[start : start + 1000])
        return removed

    # -- recovery -------------------------------------------------------------------------------
    def recover(self, *, grace_seconds: float = 0.0, full: bool = False) -> RecoveryReport:
        """Complete or roll back operations that a crash interrupted.

        Interrupted adds lose the vectors whose trajectory record was never written;
        interrupted deletes and forgets are completed. Only journal entries older than
        ``grace_seconds`` are touched, so a writer still running in another process is left
        alone. With ``full``, every user's vectors and trajectories are also cross-checked.

        Returns:
            What was found and done.
        """
        report = RecoveryReport()
        journal = self._collection(self._name("journal"))
        if journal is not None:
            got = journal.get(include=["metadatas"])
            now = time.time()
            for entry, meta in zip(got["ids"], got["metadatas"], strict=True):
                meta = meta or {}
                if now - float(meta.get("created_at", now)) < grace_seconds:
                    continue
                report.journal_entries += 1
                self._recover_entry(meta, report)
                journal.delete(ids=[entry])
        if full:
            self._check_all(report)
        return report

    def _recover_entry(self, meta: Mapping[str, Any], report: RecoveryReport) -> None:
        op, user_id = meta.get("op"), str(meta.get("user_id", ""))
        ids = json.loads(str(meta.get("ids", "[]")))
        extra = json.loads(str(meta.get("extra", "{}")))
        if not user_id:
            return
        if op == "add":
            t = self._trajectories(user_id)
            v = self._vectors()
            present = set(t.get(ids=ids, include=[])["ids"]) if t is not None else set()
            missing = [i for i in ids if i not in present]
            if missing:
                if v is not None:
                    report.orphan_vectors += len(v.get(ids=missing, include=[])["ids"])
                self._delete_ids(user_id, missing)
            for old, new in extra.get("supersede", []):
                if new in present and self.mark_superseded(user_id, old, new):
                    report.superseded += 1
        elif op == "delete":
            self._delete_ids(user_id, ids)
            report.deleted += len(ids)
        elif op == "forget":
            report.deleted += self._delete_user_records(
                user_id, before=float(meta.get("created_at", time.time()))
            )

    def _check_all(self, report: RecoveryReport) -> None:
        """Cross-check every vector against its user's trajectories (reads the whole store)."""
        v = self._vectors()
        vector_ids: dict[str, set[str]] = {}
        if v is not None:
            total = v.count()
            for offset in range(0, total, 1000):
                got = v.get(include=["metadatas"], limit=1000, offset=offset)
                for tid, meta in zip(got["ids"], got["metadatas"], strict=True):
                    vector_ids.setdefault(str((meta or {}).get("user_id", "")), set()).add(tid)
        for user_id in sorted(set(self.users()) | set(vector_ids)):
            t = self._trajectories(user_id) if user_id else None
            t_ids = set(t.get(include=[])["ids"]) if t is not None else set()
            v_ids = vector_ids.get(user_id, set())
            orphans = sorted(v_ids - t_ids)
            dangling = sorted(t_ids - v_ids)
            if orphans:
                report.orphan_vectors += len(orphans)
                if v is not None:
                    v.delete(ids=orphans)
            if dangling:
                logger.warning(
                    "removing %d trajectories of %r without a vector", len(dangling), user_id
                )
                report.dangling += len(dangling)
                self._delete_ids(user_id, dangling)

    # -- export / import ------------------------------------------------------------------------
    def export_user(self, user_id: str, path: str | Path, *, force: bool = False) -> int:
        """Write a user's trajectories, embeddings and vectors to a JSON Lines file.

        The first line is a header: format, version (:data:`EXPORT_VERSION`), user, count,
        layout and ``checksum``, the SHA-256 of every byte after the header line
        (``"sha256:<hex>"``). Each further line is one trajectory of the user, with its
        embedding and vector as base64 of little-endian float32 (exact). The file is written
        under ``PATH.tmp`` and renamed into place once complete; on failure the temporary file
        is removed.

        Args:
            user_id: Whose trajectories.
            path: The file to write.
            force: Overwrite an existing file (otherwise it is refused).

        Returns:
            How many trajectories were written.

        Raises:
            StoreError: The file exists (without ``force``) or cannot be written.
        """
        check_user_id(user_id)
        target = Path(path)
        if target.is_dir():
            raise StoreError(f"{target} is a directory")
        if target.exists() and not force:
            raise StoreError(f"{target} already exists: pass --force to overwrite it")
        layout = self.layout
        records = [
            r
            for r in self.get(user_id, with_embeddings=True, with_payload=True, with_vectors=True)
            if r.vector is not None and r.embedding is not None
        ]
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "user_id": user_id,
            "count": len(records),
            "layout": layout.to_dict() if layout else None,
            "checksum": _CHECKSUM_PLACEHOLDER,
        }
        tmp = target.with_name(target.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                head = (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8")
                f.write(head)
                digest = hashlib.sha256()
                for r in records:
                    assert r.vector is not None and r.embedding is not None
                    line = {
                        **r.summary(),
                        "rejected": r.rejected,
                        "messages": r.messages,
                        "tools": r.tools,
                        "choices": r.choices,
                        "embedding": _f32_b64(r.embedding),
                        "vector": _f32_b64(r.vector),
                    }
                    data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
                    digest.update(data)
                    f.write(data)
                # The checksum replaces its placeholder: same length, the header is rewritten.
                header["checksum"] = "sha256:" + digest.hexdigest()
                final = (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8")
                if len(final) != len(head):
                    raise StoreError("internal error: the export header changed length")
                f.seek(0)
                f.write(final)
            tmp.replace(target)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot write {target}: {exc}") from exc
            raise
        return len(records)

    @staticmethod
    def read_export(
        path: str | Path, *, allow_unchecked: bool = False
    ) -> tuple[dict[str, Any], list[TrajectoryRecord]]:
        """Read and check an export file: its header and its records.

        Checked: the header (format, version, a usable ``user_id``, ``count``, ``layout``), the
        checksum of the body (files of version 1 have none: they are read only with
        ``allow_unchecked``), that every record belongs to the header's user, that ids do not
        repeat, that vectors and embeddings have the layout's widths and finite values within
        :data:`MAX_ABS_VALUE`, and that the file holds exactly ``count`` records (a file cut
        at a line boundary is refused too).

        Args:
            path: A file written by :meth:`export_user`.
            allow_unchecked: Accept a version-1 file, which has no checksum.

        Returns:
            ``(header, records)``, records with embeddings and vectors.

        Raises:
            StoreError: Not an export file, or any check fails (the message names the line and
                the trajectory).
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        first, _, body = data.partition(b"\n")
        try:
            header = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path} is not a trajectory export: {exc}") from exc
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise StoreError(f"{path} is not a trajectory export (no {EXPORT_FORMAT!r} header)")
        version = header.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StoreError(f"{path}: malformed header: version {version!r}")
        if version > EXPORT_VERSION:
            raise StoreError(f"{path} has format version {version}, newer than this")
        owner = header.get("user_id")
        try:
            check_user_id(owner)
        except ValueError as exc:
            raise StoreError(f"{path}: malformed header: {exc}") from exc
        count = header.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise StoreError(f"{path}: malformed header: count {count!r}")
        checksum = header.get("checksum")
        if version >= 2 or checksum is not None:
            actual = "sha256:" + hashlib.sha256(body).hexdigest()
            if checksum != actual:
                raise StoreError(
                    f"{path}: the trajectories do not match the header's checksum (the file was "
                    "cut short or changed): nothing imported"
                )
        elif not allow_unchecked:
            raise StoreError(
                f"{path} was written by an older version, without a checksum: its integrity "
                "cannot be verified; pass --allow-unchecked to import it anyway (the count "
                "of trajectories is still checked)"
            )
        layout = None
        if header.get("layout") is not None:
            layout = StoreLayout.from_dict(header["layout"])
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"{path} is not UTF-8 text: {exc}") from exc
        records: list[TrajectoryRecord] = []
        seen: set[str] = set()
        for n, line in enumerate(text.split("\n"), start=2):
            if not line.strip():
                continue
            record = _export_record(line, f"{path}, line {n}")
            where = f"{path}, line {n} (trajectory {record.id})"
            if record.user_id != owner:
                raise StoreError(
                    f"{where}: the record belongs to user {record.user_id!r}, but the file is "
                    f"an export of {owner!r}: nothing imported"
                )
            if record.id in seen:
                raise StoreError(f"{where}: the id repeats an earlier record")
            seen.add(record.id)
            if layout is None:
                raise StoreError(f"{where}: the header has no layout for its vectors")
            assert record.vector is not None and record.embedding is not None
            if record.vector.size != layout.vector_dim:
                raise StoreError(
                    f"{where}: a vector of {record.vector.size} values, the header's layout "
                    f"has {layout.vector_dim}"
                )
            if record.embedding.size != layout.embed_dim:
                raise StoreError(
                    f"{where}: an embedding of {record.embedding.size} values, the header's "
                    f"layout has {layout.embed_dim}"
                )
            for what, values in (("vector", record.vector), ("embedding", record.embedding)):
                problem = _value_problem(values)
                if problem is not None:
                    raise StoreError(f"{where}: its {what} {problem}: nothing imported")
            records.append(record)
        if len(records) != count:
            raise StoreError(
                f"{path}: the header announces {count} trajectories but the file holds "
                f"{len(records)} (cut short or changed): nothing imported"
            )
        return header, records

    def import_user(
        self,
        path: str | Path,
        *,
        as_user: str | None = None,
        allow_unchecked: bool = False,
    ) -> int:
        """Add the trajectories of an export file to one user, all or nothing.

        The whole file is checked first (see :meth:`read_export`): every record must belong to
        the header's user, the count and checksum must match, and values must be finite. The
        trajectories go to the header's user, keeping their ids (ids the user already has are
        skipped, so importing a file twice adds it once); an id that exists in the store for
        another user, or as a vector without a trajectory, refuses the whole file. With
        ``as_user`` they go to that user under fresh ids instead. If writing fails midway,
        what was written is removed again.

        Args:
            path: A file written by :meth:`export_user`.
            as_user: Import under this user id (with fresh trajectory ids) instead.
            allow_unchecked: Accept a file of version 1, which has no checksum (its count is
                still checked).

        Returns:
            How many trajectories were added.

        Raises:
            StoreError: Not an export file, a check failed, or an id belongs to another user.
            StoreLayoutError: The file's vectors are of another model, layers or embedder.
            ValueError: ``as_user`` is not a usable user id.
        """
        if as_user is not None:
            check_user_id(as_user)
        header, records = self.read_export(path, allow_unchecked=allow_unchecked)
        if not records:
            return 0
        self.bind(StoreLayout.from_dict(header["layout"]))
        user_id = str(header["user_id"])
        if as_user is not None:
            user_id = as_user
            fresh = {r.id: uuid.uuid4().hex for r in records}
            records = [
                replace(
                    r,
                    id=fresh[r.id],
                    user_id=as_user,
                    supersedes=fresh.get(r.supersedes or ""),
                    superseded_by=fresh.get(r.superseded_by or ""),
                )
                for r in records
            ]
        group = sorted(records, key=lambda r: r.seq)
        existing = {r.id for r in self.get(user_id, [r.id for r in group])}
        group = [r for r in group if r.id not in existing]
        if not group:
            return 0
        self._refuse_taken_ids(user_id, [r.id for r in group], path)
        self.check_vectors(group)
        first = self.reserve_seq(user_id, len(group))
        group = [replace(r, seq=first + i) for i, r in enumerate(group)]
        with self._user_lock(user_id):
            self._add_user_locked(user_id, group, rollback=True)
        return len(group)

    def _refuse_taken_ids(self, user_id: str, ids: list[str], path: str | Path) -> None:
        """Refuse ids the shared collections already hold (another user's, or orphans)."""
        for col in (self._vectors(), self._pop()):
            if col is None:
                continue
            for start in range(0, len(ids), 1000):
                got = col.get(ids=ids[start : start + 1000], include=["metadatas"])
                for tid, meta in zip(got["ids"], got["metadatas"], strict=True):
                    if (meta or {}).get("user_id") != user_id:
                        raise StoreError(
                            f"{path}: trajectory id {tid} already belongs to another user of "
                            "this store: nothing imported (import with --as-user to give the "
                            "trajectories fresh ids)"
                        )
                    raise StoreError(
                        f"{path}: trajectory id {tid} is in the store without a trajectory "
                        "(left by an interrupted write): run `fints-agent memory recover "
                        "--full` first; nothing imported"
                    )

    # -- stats ----------------------------------------------------------------------------------
    def stats(self, *, per_user: bool = False) -> dict[str, Any]:
        """Users, trajectories, layout and location (with per-user counts on request)."""
        users = self.users()
        counts = {u: self.count(u) for u in users}
        out: dict[str, Any] = {
            "location": self.location,
            "collection_prefix": self.prefix,
            "layout": self.layout.to_dict() if self.layout else None,
            "users": sum(1 for c in counts.values() if c > 0),
            "trajectories": sum(counts.values()),
        }
        if per_user:
            out["per_user"] = counts
        return out
