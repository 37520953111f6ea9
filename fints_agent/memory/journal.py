"""Crash-safe writes: every add, delete and forget is journaled, and recovery completes or rolls
back what a crash interrupted (:meth:`Writer.recover`).

An add writes a journal entry, then the vectors, then the trajectory records (one record = text,
embedding and metadata, written in one Chroma call), then the population entries, then removes
the journal entry. Reads only ever start from ``P-t-K``, and a trajectory record is written only
after its vector, so a reader never sees a trajectory without its vector. Vectors left without a
trajectory by a crash are never returned, and :meth:`Writer.recover` (run when a store is opened,
for journal entries older than a grace period) deletes them. Deletes and forgets remove the
trajectory records first, are journaled the same way, and are completed on recovery.

Each journal entry names its writer (:class:`~fints_agent.memory.lock.ProcessIdentity`: host,
boot, pid and the process's start time), and recovery never touches an entry whose writer is
still running: a thread of this process in the middle of the write, or another process that is
alive (one with the same pid but another start time is not). An entry whose writer cannot be
checked (it ran on another machine sharing a Chroma server, or was journaled by an earlier
version) counts as in flight until it is :data:`UNCHECKED_WRITER_GRACE` seconds old.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fints_agent.memory.chroma import Collections, is_not_found
from fints_agent.memory.lock import ProcessIdentity, this_process, writer_state
from fints_agent.memory.records import (
    TrajectoryRecord,
    population_metadata,
    trajectory_metadata,
    vector_metadata,
)

__all__ = ["UNCHECKED_WRITER_GRACE", "RecoveryReport", "Writer"]

logger = logging.getLogger(__name__)

_ADD_CHUNK = 64

UNCHECKED_WRITER_GRACE = 600.0
"""Seconds a journal entry whose writer cannot be checked from here (another machine, or no
writer recorded) counts as in flight: recovery leaves it alone until it is this old."""

# Journal entries of this process whose write is still going (recovery in this process skips
# them; an entry of this process not in here was left by a write that failed).
_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


def _settled(entry: str) -> None:
    with _in_flight_lock:
        _in_flight.discard(entry)


@dataclass
class RecoveryReport:
    """What :meth:`TrajectoryStore.recover` did.

    Attributes:
        journal_entries: Interrupted operations found (and completed or rolled back).
        orphan_vectors: Vectors removed because their trajectory was never written.
        deleted: Records removed to complete interrupted deletes and forgets.
        superseded: Supersession marks re-applied.
        dangling: Trajectories removed because their vector was missing (full check only).
        in_flight: Operations left alone because their writer is still running (or cannot be
            checked and is younger than :data:`UNCHECKED_WRITER_GRACE`); their records are
            not touched by the full check either.
    """

    journal_entries: int = 0
    orphan_vectors: int = 0
    deleted: int = 0
    superseded: int = 0
    dangling: int = 0
    in_flight: int = 0


class Writer:
    """A store's writes, journaled and ordered for crash safety (see the module docstring).

    Args:
        collections: The store's collections.
    """

    def __init__(self, collections: Collections) -> None:
        self.collections = collections

    # -- the journal ----------------------------------------------------------------------------
    def _begin(self, op: str, user_id: str, ids: Sequence[str], **extra: Any) -> str:
        """Journal an operation (in flight until :meth:`_end` or :func:`_settled`)."""
        entry = uuid.uuid4().hex
        meta = {
            "op": op,
            "user_id": user_id,
            "ids": json.dumps(list(ids)),
            "created_at": time.time(),
            "extra": json.dumps(extra),
            "writer": this_process().to_json(),
        }
        with _in_flight_lock:  # before the entry exists, so recovery never sees it unclaimed
            _in_flight.add(entry)
        try:
            self.collections.journal().add(ids=[entry], embeddings=[[0.0]], metadatas=[meta])
        except BaseException:
            _settled(entry)
            raise
        return entry

    def _end(self, entry: str) -> None:
        try:
            self.collections.journal().delete(ids=[entry])
        finally:
            _settled(entry)

    # -- adding ---------------------------------------------------------------------------------
    def reserve_seq(self, user_id: str, n: int) -> int:
        """Reserve ``n`` turn numbers for a user; returns the first."""
        cols = self.collections
        with cols.user_lock(user_id):
            t = cols.trajectories(user_id, create=True)
            fresh = cols.collection(cols.name("t", user_id), fresh=True) or t
            meta = dict(fresh.metadata or {})
            first = int(meta.get("next_seq", 0))
            meta["next_seq"] = first + n
            fresh.modify(metadata=meta)
            return first

    def add(self, user_id: str, group: list[TrajectoryRecord], *, rollback: bool = False) -> None:
        """Write one user's trajectories (journaled, under the user's lock).

        With ``rollback`` (the ids must be new to the store), a failed write deletes what it
        wrote and its journal entry before the error propagates: all or nothing.
        """
        with self.collections.user_lock(user_id):  # same-user writes (and forgets) in order
            ids = [r.id for r in group]
            supersede = [(r.supersedes, r.id) for r in group if r.supersedes]
            entry = self._begin("add", user_id, ids, supersede=supersede)
            try:
                if not rollback:
                    self._write(user_id, group, supersede)
                    self._end(entry)
                    return
                try:
                    self._write(user_id, group, supersede)
                except BaseException:
                    try:
                        self._delete_ids(user_id, ids)
                    except Exception:
                        logger.exception(
                            "rolling back %d trajectories of %r failed", len(ids), user_id
                        )
                        raise  # the journal entry stays: recover() completes the rollback
                    self._end(entry)
                    raise
                self._end(entry)
            finally:
                _settled(entry)  # a failed write's entry is left for recovery

    def _write(
        self,
        user_id: str,
        group: list[TrajectoryRecord],
        supersede: Sequence[tuple[str | None, str]],
    ) -> None:
        """Vectors, then trajectory records, then population entries, then supersession."""
        cols = self.collections
        t = cols.trajectories(user_id, create=True)
        v = cols.vectors(create=True)
        pop = cols.population(create=True)
        with cols.retry_stale(cols.name("t", user_id)):
            for start in range(0, len(group), _ADD_CHUNK):
                chunk = group[start : start + _ADD_CHUNK]
                v.add(
                    ids=[r.id for r in chunk],
                    embeddings=np.stack([np.asarray(r.vector, dtype=np.float32) for r in chunk]),
                    metadatas=[vector_metadata(r) for r in chunk],
                )
            for start in range(0, len(group), 512):
                chunk = group[start : start + 512]
                t.add(
                    ids=[r.id for r in chunk],
                    embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in chunk]),
                    documents=[r.request for r in chunk],
                    metadatas=[trajectory_metadata(r) for r in chunk],
                )
        for start in range(0, len(group), 512):
            chunk = group[start : start + 512]
            pop.add(
                ids=[r.id for r in chunk],
                embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in chunk]),
                metadatas=[population_metadata(r) for r in chunk],
            )
        for old, new in supersede:
            if old is not None:
                self.mark_superseded(user_id, old, new)

    def mark_superseded(self, user_id: str, old_id: str, new_id: str) -> bool:
        """Mark ``old_id`` superseded by ``new_id``; False when the user has no ``old_id``."""
        cols = self.collections
        t = cols.trajectories(user_id)
        if t is None:
            return False
        with cols.retry_stale(cols.name("t", user_id)):
            got = t.get(ids=[old_id], include=["metadatas"])
            if not got["ids"]:
                return False
            meta = dict(got["metadatas"][0])
            meta.update(superseded=True, superseded_by=new_id)
            t.update(ids=[old_id], metadatas=[meta])
        return True

    # -- deleting -------------------------------------------------------------------------------
    def delete(self, user_id: str, ids: list[str]) -> int:
        """Delete some of a user's trajectories (journaled); returns how many existed."""
        cols = self.collections
        t = cols.trajectories(user_id)
        if t is None:
            return 0
        with cols.retry_stale(cols.name("t", user_id)):
            present = t.get(ids=ids, include=[])["ids"]
        if not present:
            return 0
        entry = self._begin("delete", user_id, present)
        try:
            self._delete_ids(user_id, present)
            self._end(entry)
        finally:
            _settled(entry)
        return len(present)

    def forget(self, user_id: str) -> None:
        """Delete a user's collection, vectors and population entries (journaled)."""
        entry = self._begin("forget", user_id, [])
        try:
            with self.collections.user_lock(user_id):
                self._delete_user_records(user_id, before=None)
            self._end(entry)
        finally:
            _settled(entry)

    def _delete_ids(self, user_id: str, ids: list[str]) -> None:
        """Delete ids everywhere: the trajectory record first, then vector and population."""
        cols = self.collections
        for col in (cols.trajectories(user_id), cols.vectors(), cols.population()):
            if col is not None:
                try:
                    col.delete(ids=ids)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise

    def _delete_user_records(self, user_id: str, before: float | None) -> int:
        """Delete a user's data (only records created up to ``before``, when given).

        The trajectory collection goes first (after it, nothing of the user is retrieved),
        then their vectors and population entries.
        """
        cols = self.collections
        removed = 0
        name = cols.name("t", user_id)
        t = cols.collection(name, fresh=True)
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
                    cols.client.delete_collection(name)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
                cols.forget_handle(name)
        for col in (cols.vectors(), cols.population()):
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
        """Complete or roll back operations that a crash interrupted (see
        :meth:`TrajectoryStore.recover`)."""
        report = RecoveryReport()
        journal = self.collections.journal(create=False)
        if journal is not None:
            got = journal.get(include=["metadatas"])
            now = time.time()
            for entry, meta in zip(got["ids"], got["metadatas"], strict=True):
                meta = meta or {}
                age = now - float(meta.get("created_at", now))
                if age < grace_seconds:
                    continue
                if _writer_running(entry, meta, age):
                    report.in_flight += 1
                    continue
                report.journal_entries += 1
                self._recover_entry(meta, report)
                journal.delete(ids=[entry])
        if full:
            self._check_all(report)
        return report

    def _journaled_ids(self) -> set[str]:
        """The ids of every operation in the journal now (those left alone by recovery)."""
        journal = self.collections.journal(create=False)
        if journal is None:
            return set()
        ids: set[str] = set()
        for meta in journal.get(include=["metadatas"])["metadatas"]:
            ids.update(json.loads(str((meta or {}).get("ids", "[]"))))
        return ids

    def _recover_entry(self, meta: Mapping[str, Any], report: RecoveryReport) -> None:
        op, user_id = meta.get("op"), str(meta.get("user_id", ""))
        ids = json.loads(str(meta.get("ids", "[]")))
        extra = json.loads(str(meta.get("extra", "{}")))
        if not user_id:
            return
        if op == "add":
            t = self.collections.trajectories(user_id)
            v = self.collections.vectors()
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
        """Cross-check every vector against its user's trajectories (reads the whole store).

        Writes may go on meanwhile: the ids of operations still journaled (in flight) are left
        alone, and what looks orphaned or dangling is read again before it is removed (a write
        that ended since has its trajectory; a vector is always written before its trajectory).
        """
        cols = self.collections
        v = self.collections.vectors()
        vector_ids: dict[str, set[str]] = {}
        if v is not None:
            total = v.count()
            for offset in range(0, total, 1000):
                got = v.get(include=["metadatas"], limit=1000, offset=offset)
                for tid, meta in zip(got["ids"], got["metadatas"], strict=True):
                    vector_ids.setdefault(str((meta or {}).get("user_id", "")), set()).add(tid)
        for user_id in sorted(set(self.collections.users()) | set(vector_ids)):
            t = self.collections.trajectories(user_id) if user_id else None
            t_ids = set(t.get(include=[])["ids"]) if t is not None else set()
            v_ids = vector_ids.get(user_id, set())
            orphan_set, dangling_set = v_ids - t_ids, t_ids - v_ids
            if orphan_set or dangling_set:
                busy = self._journaled_ids()
                orphan_set -= busy
                dangling_set -= busy
            if orphan_set and user_id:
                t_now = cols.collection(cols.name("t", user_id), fresh=True)
                if t_now is not None:
                    orphan_set -= set(t_now.get(ids=sorted(orphan_set), include=[])["ids"])
            if dangling_set and v is not None:
                dangling_set -= set(v.get(ids=sorted(dangling_set), include=[])["ids"])
            orphans = sorted(orphan_set)
            dangling = sorted(dangling_set)
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


def _writer_running(entry: str, meta: Mapping[str, Any], age: float) -> bool:
    """Whether a journal entry's writer may still be at it (recovery then leaves it alone)."""
    writer = ProcessIdentity.from_json(meta["writer"]) if "writer" in meta else None
    state = writer_state(writer)
    if state == "alive" and writer == this_process():
        with _in_flight_lock:  # this process: is that write still going, or did it fail?
            return entry in _in_flight
    if state == "unknown":
        return age < UNCHECKED_WRITER_GRACE
    return state == "alive"
