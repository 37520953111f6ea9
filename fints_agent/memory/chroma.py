"""The store's Chroma client and collections: where each part of a trajectory is kept, and why.

A store lives in a local directory (embedded ``chromadb.PersistentClient``) or on a Chroma
server (``chromadb.HttpClient``; start one with ``chroma run --path DIR --host 127.0.0.1 --port
N``): :func:`open_client` picks by the location, a path or an ``http(s)://host:port`` URL, and
everything else is the same code. Embeddings are always passed in; Chroma's default embedding
function (which downloads a model) is never used.

Collections (``P`` is the prefix, ``K`` the first 32 hex digits of SHA-256 of the user id):

``P-meta``
    No records; its metadata is the :class:`~fints_agent.memory.layout.StoreLayout` (model
    fingerprint, layers, sites, ``d_model``, retrieval embedder). Vectors of another model are
    refused.
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
    Write intents, for crash recovery (see :mod:`~fints_agent.memory.journal`).

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
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fints_agent.memory.errors import StoreError

__all__ = ["PREFIX_PATTERN", "Collections", "is_not_found", "open_client", "user_key"]

PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
"""What a collection prefix must look like."""
_VECTOR_HNSW = {"ef_construction": 4, "max_neighbors": 2, "ef_search": 1}


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


def is_not_found(exc: BaseException) -> bool:
    """Whether a Chroma error says that a collection does not exist."""
    from chromadb.errors import NotFoundError

    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)


def user_key(user_id: str) -> str:
    """The user's part of their trajectory collection's name (``K`` above)."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]


class Collections:
    """A store's collections on one Chroma client: names, cached handles and per-user locks.

    Thread-safe. Handles are cached; a collection another process deleted is dropped from the
    cache (:meth:`retry_stale`) and counts as absent.

    Args:
        client: An open Chroma client.
        prefix: The store's collection prefix (``P`` above).
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.lock = threading.RLock()
        self._user_locks: dict[str, threading.Lock] = {}
        self._handles: dict[str, Any] = {}

    def name(self, kind: str, user_id: str | None = None) -> str:
        """The name of a collection: ``P-kind``, or ``P-kind-K`` for a user's."""
        if user_id is None:
            return f"{self.prefix}-{kind}"
        return f"{self.prefix}-{kind}-{user_key(user_id)}"

    def user_lock(self, user_id: str) -> threading.Lock:
        """The lock that orders one user's writes (and forgets)."""
        with self.lock:
            return self._user_locks.setdefault(user_id, threading.Lock())

    def collection(
        self,
        name: str,
        *,
        create: bool = False,
        metadata: dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
        fresh: bool = False,
    ) -> Any:
        """A collection's handle (``None`` when it does not exist and ``create`` is not set).

        Raises:
            StoreError: The collection cannot be opened or created.
        """
        with self.lock:
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
            if not create and is_not_found(exc):
                with self.lock:
                    self._handles.pop(name, None)
                return None
            raise StoreError(f"cannot open collection {name}: {exc}") from exc
        with self.lock:
            self._handles[name] = col
        return col

    def forget_handle(self, name: str) -> None:
        """Drop a cached handle."""
        with self.lock:
            self._handles.pop(name, None)

    @contextmanager
    def retry_stale(self, *names: str) -> Iterator[None]:
        """Drop cached handles of collections another process may have deleted."""
        try:
            yield
        except Exception as exc:
            if is_not_found(exc):
                for n in names:
                    self.forget_handle(n)
            raise

    def trajectories(self, user_id: str, *, create: bool = False) -> Any:
        """The user's trajectory collection (``P-t-K``)."""
        # Writers always re-open (another process may have deleted the collection since);
        # readers use cached handles and treat a vanished collection as no history.
        return self.collection(
            self.name("t", user_id),
            create=create,
            fresh=create,
            metadata={"user_id": user_id, "next_seq": 0, "kind": "trajectories"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    def vectors(self, *, create: bool = False) -> Any:
        """The shared vector collection (``P-vectors``)."""
        return self.collection(
            self.name("vectors"),
            create=create,
            metadata={"kind": "vectors"},
            configuration={"hnsw": {"space": "l2", **_VECTOR_HNSW}},
        )

    def population(self, *, create: bool = False) -> Any:
        """The population collection (``P-pop``)."""
        return self.collection(
            self.name("pop"),
            create=create,
            metadata={"kind": "population"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    def journal(self, *, create: bool = True) -> Any:
        """The journal collection (``P-journal``)."""
        return self.collection(self.name("journal"), create=create, metadata={"kind": "journal"})

    def users(self) -> list[str]:
        """Ids of users with a trajectory collection (possibly empty), sorted.

        Only this store's collections count: ``P-t-`` and a user key, that key being the hash
        of the collection's user id (a store whose prefix extends this one's, such as ``P-t``,
        is another store).
        """
        pattern = re.compile(re.escape(self.name("t")) + r"-([0-9a-f]{32})")
        found = []
        for col in self.client.list_collections():
            name = col if isinstance(col, str) else col.name
            match = pattern.fullmatch(name)
            if match is None:
                continue
            c = col if not isinstance(col, str) else self.collection(name)
            uid = (getattr(c, "metadata", None) or {}).get("user_id")
            if isinstance(uid, str) and user_key(uid) == match.group(1):
                found.append(uid)
        return sorted(found)
