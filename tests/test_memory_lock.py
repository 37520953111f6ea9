"""One process per embedded store, and recovery that leaves a live writer's operations alone.

Writers run in real processes (``python -c``) that hold a store open, or stop in the middle of
an add (its vectors written, its trajectories not yet) until told to go on.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from memory_fixtures import TESTS_DIR, new_prefix

from fints_agent.memory import (
    RecoveryReport,
    StoreBusyError,
    StoreError,
    StoreLayout,
    TrajectoryRecord,
    TrajectoryStore,
)
from fints_agent.memory.cli import main
from fints_agent.memory.lock import (
    LOCK_FILE,
    ProcessIdentity,
    _stat,
    lock_store,
    this_process,
    writer_state,
)

LAYOUT = StoreLayout("lock-test", (0, 1), ("attn", "mlp"), 4, "random8", 8)

CHILD = r"""
import sys, time, uuid
import numpy as np
from fints_agent.memory import StoreLayout, TrajectoryRecord, TrajectoryStore
location, prefix, mode = sys.argv[1:4]
layout = StoreLayout("lock-test", (0, 1), ("attn", "mlp"), 4, "random8", 8)
store = TrajectoryStore(location, collection_prefix=prefix)
store.bind(layout)
if mode == "hold":  # keep the store open until told to go on
    print("ready", flush=True)
    sys.stdin.readline()
else:  # add three trajectories, stopping after their vectors until told to go on
    from chromadb.api.models.Collection import Collection
    real_add = Collection.add
    def add(self, *a, **k):
        if "-t-" in self.name:
            print("blocked", flush=True)
            sys.stdin.readline()
        return real_add(self, *a, **k)
    Collection.add = add
    rng = np.random.default_rng(0)
    records = [
        TrajectoryRecord(
            id=uuid.uuid4().hex, user_id="alice", request=f"request {i}",
            chosen={"name": "get_weather", "arguments": {"city": "Oslo"}},
            created_at=time.time(), seq=i,
            embedding=rng.standard_normal(layout.embed_dim).astype(np.float32),
            vector=rng.standard_normal(layout.vector_dim).astype(np.float32),
        )
        for i in range(3)
    ]
    print("ids", " ".join(r.id for r in records), flush=True)
    store.add(records)
    print("done", flush=True)
"""


@contextmanager
def _child(location: str, prefix: str, mode: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, location, prefix, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(TESTS_DIR.parent),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def _until(proc: subprocess.Popen[str], word: str) -> list[str]:
    """The child's output lines up to the first that starts with ``word``."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(word):
            return lines
    raise AssertionError(
        f"the child ended before {word!r}: {proc.stderr.read() if proc.stderr else ''}"
    )


def _go_on(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def _records(user: str, n: int, seed: int = 0) -> list[TrajectoryRecord]:
    rng = np.random.default_rng(seed)
    return [
        TrajectoryRecord(
            id=uuid.uuid4().hex,
            user_id=user,
            request=f"request {i}",
            chosen={"name": "get_weather", "arguments": {"city": "Oslo"}},
            created_at=time.time(),
            seq=i,
            embedding=rng.standard_normal(LAYOUT.embed_dim).astype(np.float32),
            vector=rng.standard_normal(LAYOUT.vector_dim).astype(np.float32),
        )
        for i in range(n)
    ]


def _whole(store: TrajectoryStore, user: str) -> set[str]:
    """The user's trajectory ids, each checked to have its vector and no orphan vector left."""
    records = store.get(user, with_vectors=True)
    for r in records:
        assert r.vector is not None and r.vector.shape == (LAYOUT.vector_dim,), r.id
    vectors = store.collections.vectors()
    assert vectors is not None
    ids = {r.id for r in records}
    assert set(vectors.get(where={"user_id": user}, include=[])["ids"]) == ids
    return ids


def _journal(store: TrajectoryStore) -> dict[str, dict[str, Any]]:
    journal = store.collections.journal(create=False)
    if journal is None:
        return {}
    got = journal.get(include=["metadatas"])
    return {e: dict(m or {}) for e, m in zip(got["ids"], got["metadatas"], strict=True)}


def _is_locked(directory: Path) -> bool:
    """Whether some open file description holds the store's lock (this process's too)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- one process per embedded store ---------------------------------------------------------------
def test_a_second_process_gets_store_busy_error_until_the_first_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location, prefix = str(tmp_path / "store"), new_prefix()
    export = tmp_path / "alice.jsonl"
    with _child(location, prefix, "hold") as proc:
        _until(proc, "ready")
        with pytest.raises(StoreBusyError) as caught:
            TrajectoryStore(location, collection_prefix=prefix)
        message = str(caught.value)
        assert isinstance(caught.value, StoreError)
        assert f"process {proc.pid}" in message and "one process at a time" in message
        assert f"chroma run --path {location}" in message and "http://127.0.0.1:8000" in message
        # Every command refuses it, reading ones too (they would read a stale index).
        opts = ["--store", location, "--prefix", prefix]
        for argv in (
            ["stats", *opts],
            ["list", "alice", *opts],
            ["export", "alice", str(export), *opts],
            ["import", str(export), "--as-user", "bob", *opts],
            ["recover", *opts],
        ):
            code, out, err = _cli(capsys, *argv)
            assert code == 2 and out == "", argv
            assert f"process {proc.pid}" in err and "chroma run --path" in err, argv
        _go_on(proc)  # the holder exits without closing the store: the OS releases the lock
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    with TrajectoryStore(location, collection_prefix=prefix) as store:
        assert store.layout == LAYOUT and store.users() == []
    code, out, _ = _cli(capsys, "stats", "--store", location, "--prefix", prefix, "--json")
    assert code == 0 and json.loads(out)["trajectories"] == 0


def test_stores_of_one_process_share_the_lock_and_close_releases_it(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    prefix = new_prefix()
    first = TrajectoryStore(directory, collection_prefix=prefix)
    first.bind(LAYOUT)
    (tmp_path / "link").symlink_to(directory)
    # Another spelling of the same directory, in the same process: the same lock, and the
    # same Chroma instance (a write through one is read through the other at once).
    second = TrajectoryStore(tmp_path / "link", collection_prefix=prefix)
    first.add(_records("alice", 2))
    assert second.count("alice") == 2 and len(second.query("alice", np.ones(8), 5)) == 2
    first.close()
    assert _is_locked(directory)  # the second store still holds it
    assert second.count("alice") == 2
    second.close()
    second.close()  # twice is fine
    assert not _is_locked(directory)
    holder = json.loads((directory / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid()
    with TrajectoryStore(directory, collection_prefix=prefix) as again:  # reopened, same data
        assert _is_locked(directory)
        assert _whole(again, "alice") and again.count("alice") == 2
    assert not _is_locked(directory)
    # A store that is dropped without close() gives its hold up when collected.
    TrajectoryStore(directory, collection_prefix=prefix)
    gc.collect()
    assert not _is_locked(directory)


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = TrajectoryStore(tmp_path / "store", collection_prefix=new_prefix())
    store.bind(LAYOUT)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(3):
                store.add(_records(f"user-{n}", 2, seed=10 * n + i))
                assert store.query(f"user-{n}", np.ones(8), 10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert [store.count(f"user-{n}") for n in range(3)] == [6, 6, 6]
    assert store.recover(full=True) == RecoveryReport()  # nothing to do
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_inherit_the_store(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = TrajectoryStore(directory, collection_prefix=new_prefix())
    pid = os.fork()
    if pid == 0:  # the child: the parent's store is not its own
        code = 3
        try:
            lock_store(directory)
            code = 1
        except StoreBusyError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _is_locked(directory)  # the child closing its copy left the parent's lock alone
    store.close()
    assert not _is_locked(directory)


def test_a_file_is_no_store(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        TrajectoryStore(tmp_path / "file")


# -- who a writer is ------------------------------------------------------------------------------
def test_writer_state_tells_live_dead_and_reused_pids_apart() -> None:
    me = this_process()
    assert me.pid == os.getpid() and ProcessIdentity.from_json(me.to_json()) == me
    assert writer_state(me) == "alive"
    if me.start is None or not me.boot:
        pytest.skip("no /proc here: pids are checked without start times")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.time() + 10
        live = None
        while live is None or live.start is None:  # its /proc entry is there at once
            stat = _stat(sleeper.pid)
            live = replace(me, pid=sleeper.pid, start=None if stat is None else stat[1])
            assert time.time() < deadline
        assert writer_state(live) == "alive"
        assert writer_state(replace(live, start=live.start + 1)) == "dead"  # a reused pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert writer_state(live) == "dead"
    assert writer_state(replace(me, start=(me.start or 0) + 1)) == "dead"
    assert writer_state(replace(me, host=me.host + "-elsewhere")) == "unknown"
    assert writer_state(replace(me, boot="another-boot")) == "unknown"
    assert writer_state(replace(me, pidns="pid:[1]")) == "unknown"
    assert writer_state(None) == "unknown"
    assert ProcessIdentity.from_json("not json") is None


# -- recovery never touches a live writer's operations --------------------------------------------
def test_recovery_leaves_a_thread_mid_add_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chromadb.api.models.Collection import Collection

    store = TrajectoryStore(tmp_path / "store", collection_prefix=new_prefix())
    store.bind(LAYOUT)
    blocked, go_on = threading.Event(), threading.Event()
    real_add = Collection.add

    def add(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "-t-" in self.name:
            blocked.set()
            assert go_on.wait(timeout=120)
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "add", add)
    records = _records("alice", 3)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.add(records)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert blocked.wait(timeout=120)
        for full in (False, True):
            report = store.recover(full=full)  # the default: no grace
            assert report.in_flight == 1 and report.journal_entries == 0
            assert report.orphan_vectors == 0 and report.dangling == 0
    finally:
        go_on.set()
        writer.join(timeout=120)
    assert not errors, errors
    assert _whole(store, "alice") == {r.id for r in records}
    assert _journal(store) == {}
    assert store.recover(full=True).in_flight == 0
    store.close()


def test_recovery_from_another_process_leaves_a_live_writer_of_a_server_alone(
    chroma_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()
    with _child(chroma_server, prefix, "add") as proc:
        ids = set(_until(proc, "ids")[-1].split()[1:])
        _until(proc, "blocked")  # its vectors are written, its trajectories not yet
        store = TrajectoryStore(chroma_server, collection_prefix=prefix)  # recovers on open
        assert len(_journal(store)) == 1
        for full in (False, True):
            report = store.recover(full=full)
            assert report.in_flight == 1 and report.journal_entries == 0
            assert report.orphan_vectors == 0 and report.dangling == 0
        code, out, _ = _cli(
            capsys, "recover", "--store", chroma_server, "--prefix", prefix, "--full", "--json"
        )
        assert code == 0
        assert json.loads(out) == {
            "journal_entries": 0,
            "orphan_vectors": 0,
            "deleted": 0,
            "superseded": 0,
            "dangling": 0,
            "in_flight": 1,
        }
        _go_on(proc)
        _until(proc, "done")
        assert proc.wait(timeout=60) == 0
    assert _whole(store, "alice") == ids  # every trajectory has its vector
    assert _journal(store) == {}
    assert store.recover(full=True) == RecoveryReport()  # nothing left to do


def test_an_embedded_store_refuses_recovery_while_its_writer_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location, prefix = str(tmp_path / "store"), new_prefix()
    with _child(location, prefix, "add") as proc:
        ids = set(_until(proc, "ids")[-1].split()[1:])
        _until(proc, "blocked")
        with pytest.raises(StoreBusyError, match=f"process {proc.pid}"):
            TrajectoryStore(location, collection_prefix=prefix, recover_after=0)
        code, out, err = _cli(capsys, "recover", "--store", location, "--prefix", prefix, "--full")
        assert code == 2 and out == "" and "chroma run --path" in err
        _go_on(proc)
        _until(proc, "done")
        assert proc.wait(timeout=60) == 0
    with TrajectoryStore(location, collection_prefix=prefix) as store:
        assert _whole(store, "alice") == ids
        assert store.recover(full=True) == RecoveryReport()


def test_operations_of_dead_writers_are_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, prefix = str(tmp_path / "store"), new_prefix()
    # A writer killed in the middle of an add: its vectors are orphans.
    with _child(location, prefix, "add") as proc:
        _until(proc, "blocked")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    store = TrajectoryStore(location, collection_prefix=prefix, recover_after=None)
    assert len(_journal(store)) == 1
    report = store.recover()
    assert (report.journal_entries, report.orphan_vectors, report.in_flight) == (1, 3, 0)
    assert _whole(store, "alice") == set()

    # Writes of this process that failed (not in flight any more) are recovered here.
    from chromadb.api.models.Collection import Collection

    real_add = Collection.add

    def failing_add(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "-t-" in self.name:
            raise RuntimeError("disk full")
        return real_add(self, *args, **kwargs)

    def failed_add(user: str) -> str:
        monkeypatch.setattr(Collection, "add", failing_add)
        with pytest.raises(RuntimeError, match="disk full"):
            store.add(_records(user, 2))
        monkeypatch.setattr(Collection, "add", real_add)
        (entry,) = [e for e, m in _journal(store).items() if m["user_id"] == user]
        return entry

    failed_add("bob")
    report = store.recover()
    assert (report.journal_entries, report.orphan_vectors, report.in_flight) == (1, 2, 0)

    def rewrite(entry: str, **changes: Any) -> None:
        journal = store.collections.journal()
        meta = {**_journal(store)[entry], **changes}
        journal.delete(ids=[entry])
        journal.add(
            ids=[entry],
            embeddings=[[0.0]],
            metadatas=[{k: v for k, v in meta.items() if v is not None}],
        )

    me = this_process()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stat = None
        while stat is None:
            stat = _stat(sleeper.pid)
        live = replace(me, pid=sleeper.pid, start=stat[1])
        old = time.time() - 3600
        cases = {  # user: (writer, created_at, recovered?)
            "live-process": (live.to_json(), None, False),
            "reused-pid": (replace(live, start=live.start + 1).to_json(), None, True),
            "this-pid-reused": (replace(me, start=(me.start or 0) + 1).to_json(), None, True),
            "elsewhere": (replace(me, host="another-host").to_json(), None, False),
            "elsewhere-old": (replace(me, host="another-host").to_json(), old, True),
            "no-writer": (None, None, False),
            "no-writer-old": (None, old, True),
        }
        if me.start is None:
            cases = {u: c for u, c in cases.items() if "reused" not in u}
        entries = {user: failed_add(user) for user in cases}
        for user, (writer, created, _) in cases.items():
            rewrite(entries[user], writer=writer, created_at=created)
        report = store.recover(full=True)
        left = set(_journal(store))
        for user, (_, _, recovered) in cases.items():
            assert (entries[user] not in left) == recovered, user
            if recovered:
                assert _whole(store, user) == set()
        assert report.in_flight == sum(not r for *_, r in cases.values())
        assert report.journal_entries == sum(r for *_, r in cases.values())
        # The full check left the vectors of operations still in flight alone.
        vectors = store.collections.vectors()
        assert vectors is not None
        assert len(vectors.get(where={"user_id": "live-process"}, include=[])["ids"]) == 2
    finally:
        sleeper.kill()
        sleeper.wait()
    # Once the writer is gone, its operation is recovered.
    report = store.recover()
    assert report.journal_entries == 1 and report.orphan_vectors == 2
    assert {m["user_id"] for m in _journal(store).values()} == {"elsewhere", "no-writer"}
    store.close()
