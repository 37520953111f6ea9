"""The trajectory store: users' trajectories and their steering vectors, in Chroma.

:class:`TrajectoryStore` is what the memory reads and writes. Where each part of a trajectory is
kept, and why: :mod:`~fints_agent.memory.chroma`; what one stored trajectory holds:
:mod:`~fints_agent.memory.records`; how writes stay whole through a crash:
:mod:`~fints_agent.memory.journal`; export files: :mod:`~fints_agent.memory.transfer`.

An embedded store (a directory) serves one process at a time: opening it takes the directory's
lock (:mod:`~fints_agent.memory.lock`), and another process that opens it gets
:class:`~fints_agent.memory.errors.StoreBusyError`, the ``fints-agent memory`` commands
included, until the first one closes it or ends. Processes share a store through a Chroma
server (``chroma run --path DIR``, then its URL as the location).

Example:
    >>> store = TrajectoryStore("./memory")                 # embedded, this process only
    >>> store = TrajectoryStore("http://127.0.0.1:8000")    # a Chroma server, shared
    >>> store.users(), store.count("alice")
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fints_agent.memory.chroma import PREFIX_PATTERN, Collections, open_client, redact_location
from fints_agent.memory.errors import StoreError, StoreLayoutError
from fints_agent.memory.journal import RecoveryReport, Writer
from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.lock import StoreLock, lock_store
from fints_agent.memory.reader import Reader
from fints_agent.memory.records import TrajectoryRecord, check_user_id, value_problem
from fints_agent.memory.transfer import (
    export_target,
    read_export,
    refuse_taken_ids,
    under_fresh_ids,
    write_export,
)

__all__ = ["TrajectoryStore"]


class TrajectoryStore:
    """Per-user trajectories and steering vectors in Chroma (see the module docstring).

    Thread-safe: several threads may add, query and delete for different users (and the same
    user) at once.

    One process at a time for an embedded store: opening a directory locks it for this process
    (stores of one process on the same directory share the lock), and a second process gets
    :class:`~fints_agent.memory.errors.StoreBusyError`, for reading too (it would not see the
    first one's writes, and could fail reading them). :meth:`close` (or the end of the
    ``with`` block, or of the process, however it ends) releases the lock. Several processes
    share a store through a Chroma server: pass its URL. A store on a server takes no lock.

    Args:
        location: A directory (embedded store) or an ``http(s)://host:port`` URL (server).
        collection_prefix: Prefix of the store's collection names (several stores can share a
            server or directory under different prefixes).
        recover_after: On open, complete or roll back operations interrupted more than this
            many seconds ago (``None``: do not recover on open). Operations of a writer still
            running are never touched (see :meth:`recover`).
        client: An already open Chroma client to use instead of ``location`` (no lock is
            taken: the one-process rule of an embedded client is then the caller's to keep).
        token: The token of a Chroma server with token authentication (a string or a
            ``SecretStr``; default: ``$FINTS_AGENT_CHROMA_TOKEN``). A server with basic
            authentication takes ``http(s)://USER:PASSWORD@host:port`` instead. Never shown.
        tenant: The Chroma tenant (default: ``default_tenant``).
        database: The Chroma database (default: ``default_database``).

    Raises:
        StoreAuthError: The server refused the credentials, or they cannot be used (see
            :func:`~fints_agent.memory.chroma.open_client`).
        StoreUnavailableError: The server does not answer.
        StoreBusyError: The store is a directory another process has open.
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
        token: Any = None,
        tenant: str | None = None,
        database: str | None = None,
    ) -> None:
        if not PREFIX_PATTERN.fullmatch(collection_prefix):
            raise StoreError(
                f"collection_prefix {collection_prefix!r} must match {PREFIX_PATTERN.pattern}"
            )
        self.location = redact_location(location)  # a URL's password is never shown
        self.prefix = collection_prefix
        self._lock: StoreLock | None = None
        if client is None and "://" not in self.location:
            # The lock first: a second process must not even open the Chroma directory.
            self._lock = lock_store(location)
            try:
                # One spelling per directory, so this process's stores share Chroma's instance.
                client = open_client(
                    Path(location).expanduser().resolve(),
                    token=token,
                    tenant=tenant,
                    database=database,
                )
            except BaseException:
                self._lock.release()
                raise
            self._closer = weakref.finalize(self, _close, client, self._lock)
            self._closer.atexit = False  # the OS releases the lock of an ending process
        elif client is None:
            client = open_client(location, token=token, tenant=tenant, database=database)
        self.client = client
        self.collections = Collections(self.client, collection_prefix, where=self.location)
        self.reader = Reader(self.collections)
        self.writer = Writer(self.collections)
        self._layout: StoreLayout | None = None
        if recover_after is not None:
            self.recover(grace_seconds=recover_after)

    def __repr__(self) -> str:
        return f"TrajectoryStore({self.location!r}, collection_prefix={self.prefix!r})"

    def close(self) -> None:
        """Close an embedded store: its Chroma client, and this process's hold on its lock.

        Another process can open the store once every store of this process on it is closed
        (or garbage-collected). The store is not usable afterwards. Closing twice, or a store
        on a server or a given client, does nothing.
        """
        if self._lock is not None:
            self._closer()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layout ---------------------------------------------------------------------------------
    @property
    def layout(self) -> StoreLayout | None:
        """The store's layout, or ``None`` before its first vector."""
        if self._layout is None:
            meta = self.collections.collection(self.collections.name("meta"), fresh=True)
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
            cols = self.collections
            with cols.lock:
                col = cols.collection(cols.name("meta"), create=True, metadata=layout.to_metadata())
                current = StoreLayout.from_dict(col.metadata or layout.to_metadata())
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
            StoreError: No layout bound yet.
            StoreLayoutError: A vector or embedding of the wrong width.
        """
        self._require_layout().check_records(records)

    # -- writing --------------------------------------------------------------------------------
    def reserve_seq(self, user_id: str, n: int) -> int:
        """Reserve ``n`` turn numbers for a user; returns the first.

        Turn numbers order a user's trajectories for recency in turns. Concurrent writers in
        other processes may, rarely, get the same numbers; that only blurs recency.
        """
        check_user_id(user_id)
        return self.writer.reserve_seq(user_id, n)

    def latest_seq(self, user_id: str) -> int:
        """The highest turn number given to the user (-1 when none)."""
        return self.reader.latest_seq(user_id)

    def add(self, records: Sequence[TrajectoryRecord]) -> None:
        """Write trajectories (vectors first, then the trajectory records; see
        :mod:`~fints_agent.memory.journal`).

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
                problem = value_problem(values, limit=None)
                if problem is not None:
                    raise StoreError(f"trajectory {r.id}: its {what} {problem}")
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("repeated trajectory ids in one add")
        by_user: dict[str, list[TrajectoryRecord]] = {}
        for r in records:
            by_user.setdefault(check_user_id(r.user_id), []).append(r)
        for user_id, group in by_user.items():
            self.writer.add(user_id, group)

    def mark_superseded(self, user_id: str, old_id: str, new_id: str) -> bool:
        """Mark ``old_id`` superseded by ``new_id`` (it is no longer retrieved).

        Returns:
            False when the user has no trajectory ``old_id``.
        """
        return self.writer.mark_superseded(user_id, old_id, new_id)

    # -- reading --------------------------------------------------------------------------------
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
        return self.reader.query(
            user_id, embedding, n, self.layout, include_superseded=include_superseded
        )

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
            tools: Only those whose chosen call names one of these tools.
        """
        check_user_id(user_id)
        return self.reader.get(
            user_id,
            ids,
            include_superseded=include_superseded,
            with_embeddings=with_embeddings,
            with_payload=with_payload,
            with_vectors=with_vectors,
            limit=limit,
            offset=offset,
            tools=tools,
        )

    def get_vectors(self, user_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Flat float32 vectors of the user's trajectories, by id (missing ids are absent)."""
        check_user_id(user_id)
        return self.reader.get_vectors(user_id, ids)

    def query_population(
        self, embeddings: np.ndarray, n: int, *, exclude_users: Sequence[str]
    ) -> list[list[tuple[float, str, dict[str, Any]]]]:
        """Per query row, other users' ``(similarity, tool, choices)`` for similar requests.

        Row ``i`` leaves out ``exclude_users[i]``'s own trajectories. No free text is read:
        only tool names and enum/boolean argument values.
        """
        return self.reader.query_population(embeddings, n, exclude_users=exclude_users)

    def users(self) -> list[str]:
        """Ids of users with a trajectory collection (possibly empty), sorted (see
        :meth:`Collections.users <fints_agent.memory.chroma.Collections.users>`)."""
        return self.collections.users()

    def count(self, user_id: str | None = None) -> int:
        """Number of trajectories of a user (all users when ``None``)."""
        if user_id is None:
            return sum(self.count(u) for u in self.users())
        return self.reader.count(check_user_id(user_id))

    def find_user(self, trajectory_id: str) -> str | None:
        """The user a trajectory belongs to (``None`` if unknown)."""
        return self.reader.find_user(trajectory_id)

    # -- deleting and recovery ------------------------------------------------------------------
    def delete(self, user_id: str, ids: Sequence[str]) -> int:
        """Delete some of a user's trajectories (trajectory record first, then the vector).

        Returns:
            How many existed.
        """
        check_user_id(user_id)
        ids = list(ids)
        if not ids:
            return 0
        return self.writer.delete(user_id, ids)

    def delete_user(self, user_id: str) -> int:
        """Forget a user: their collections and population entries are deleted.

        Returns:
            How many trajectories they had.
        """
        check_user_id(user_id)
        n = self.count(user_id)
        self.writer.forget(user_id)
        return n

    def recover(self, *, grace_seconds: float = 0.0, full: bool = False) -> RecoveryReport:
        """Complete or roll back operations that a crash interrupted.

        Interrupted adds lose the vectors whose trajectory record was never written;
        interrupted deletes and forgets are completed. Never touched: an operation whose writer
        is still running (a thread of this process in the middle of it, or another process
        that is alive: each journal entry names its writer's pid and start time, so a reused
        pid does not count), nor one whose writer cannot be checked (another machine on a
        shared server) until it is ten minutes old; they are counted as ``in_flight``. Also
        skipped: entries younger than ``grace_seconds``. With ``full``, every user's vectors
        and trajectories are also cross-checked, leaving those of operations in flight alone.

        An embedded store is open in one process only, so this recovers what that process's
        earlier runs left; a store on a server can be recovered from any process, while its
        writers run.

        Returns:
            What was found and done.
        """
        return self.writer.recover(grace_seconds=grace_seconds, full=full)

    # -- export / import ------------------------------------------------------------------------
    def export_user(self, user_id: str, path: str | Path, *, force: bool = False) -> int:
        """Write a user's trajectories, embeddings and vectors to a JSON Lines file (the format:
        :func:`~fints_agent.memory.transfer.write_export`).

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
        target = export_target(path, force=force)
        layout = self.layout
        records = self.get(user_id, with_embeddings=True, with_payload=True, with_vectors=True)
        return write_export(target, user_id, layout, records)

    def import_user(
        self,
        path: str | Path,
        *,
        as_user: str | None = None,
        allow_unchecked: bool = False,
    ) -> int:
        """Add the trajectories of an export file to one user, all or nothing.

        The whole file is checked first (see :func:`~fints_agent.memory.transfer.read_export`):
        every record must belong to
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
        header, records = read_export(path, allow_unchecked=allow_unchecked)
        if not records:
            return 0
        self.bind(StoreLayout.from_dict(header["layout"]))
        user_id = str(header["user_id"])
        if as_user is not None:
            user_id = as_user
            records = under_fresh_ids(records, as_user)
        group = sorted(records, key=lambda r: r.seq)
        existing = {r.id for r in self.get(user_id, [r.id for r in group])}
        group = [r for r in group if r.id not in existing]
        if not group:
            return 0
        refuse_taken_ids(self.collections, user_id, [r.id for r in group], path)
        self.check_vectors(group)
        first = self.reserve_seq(user_id, len(group))
        group = [replace(r, seq=first + i) for i, r in enumerate(group)]
        self.writer.add(user_id, group, rollback=True)
        return len(group)

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


def _close(client: Any, lock: StoreLock) -> None:
    """Close an embedded store's Chroma client, then release its lock (once)."""
    try:
        close = getattr(client, "close", None)
        if callable(close):
            close()
    finally:
        lock.release()
