"""Persistence across processes, SIGKILL in the middle of ingestion, and threads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from memory_fixtures import TESTS_DIR, make_memory, new_prefix, travel_item, user_msg, weather_item

from fints_agent.memory import TrajectoryStore
from fints_agent.steering import SteeringVector

pytestmark = pytest.mark.usefixtures("one_thread")

CHILD = r"""
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from memory_fixtures import make_memory, weather_item, travel_item
location, prefix, mode, out = sys.argv[1:5]
memory = make_memory(location, prefix)
if mode == "write":
    ids = memory.record_many([weather_item("alice", i) for i in range(5)]
                             + [travel_item("bob", i) for i in range(3)], progress=False)
    for tid in ids:
        user = "alice" if tid in ids[:5] else "bob"
        memory.get_vector(user, tid).save(os.path.join(out, tid + ".safetensors"))
    json.dump(ids, open(os.path.join(out, "ids.json"), "w"))
else:  # ingest until killed; mode "kill:<kind>:<n>" kills itself just before the n-th add to a kind
    if mode.startswith("kill:"):
        from chromadb.api.models.Collection import Collection
        _, kind, n = mode.split(":")
        real_add = Collection.add
        calls = {{"n": 0}}
        def add(self, *a, **k):
            if "-" + kind + "-" in self.name or self.name.endswith("-" + kind):
                calls["n"] += 1
                if calls["n"] == int(n):
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_add(self, *a, **k)
        Collection.add = add
    print("ready", flush=True)
    items = [weather_item("u%d" % (i % 3), i, ["celsius", "fahrenheit"][i % 2])
             for i in range(400)]
    for start in range(0, len(items), 8):
        memory.record_many(items[start:start + 8], batch_size=8, progress=False)
        print("batch", start, flush=True)
    print("done", flush=True)
"""


def _child(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    code = CHILD.format(tests=str(TESTS_DIR))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(TESTS_DIR.parent),
    )


def test_persistence_across_processes_is_bit_exact(tmp_path: Path) -> None:
    location, prefix = str(tmp_path / "store"), new_prefix()
    out = tmp_path / "out"
    out.mkdir()
    done = _child(location, prefix, "write", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    ids = json.loads((out / "ids.json").read_text())
    # This process opens the store the child wrote and exited from.
    memory = make_memory(location, prefix)
    assert memory.store.count("alice") == 5 and memory.store.count("bob") == 3
    for tid in ids:
        user = "alice" if tid in ids[:5] else "bob"
        saved = SteeringVector.load(out / f"{tid}.safetensors")
        assert memory.get_vector(user, tid) == saved
    records = memory.store.get("alice", with_vectors=True)
    assert all(r.vector is not None and r.vector.dtype == np.float32 for r in records)


def _vector_ids(store: TrajectoryStore, user: str) -> set[str]:
    col = store.collections.vectors()
    return set(col.get(where={"user_id": user}, include=[])["ids"]) if col is not None else set()


def _check_consistent(location: str, prefix: str) -> dict[str, Any]:
    """Every trajectory is whole; returns counts before and after recovery."""
    store = TrajectoryStore(location, collection_prefix=prefix, recover_after=None)
    memory = make_memory(location, prefix)
    layout = store.layout
    assert layout is not None
    total = 0
    orphans = 0
    for user in store.users():
        records = store.get(user, with_embeddings=True, with_payload=True, with_vectors=True)
        for r in records:
            assert r.request.startswith("what is the weather in")
            assert r.chosen["name"] == "get_weather" and r.rejected and r.tools
            assert r.embedding is not None and r.embedding.shape == (layout.embed_dim,)
            assert r.vector is not None and r.vector.shape == (layout.vector_dim,)
            assert np.isfinite(r.vector).all()
        total += len(records)
        t_ids = {r.id for r in records}
        v_ids = _vector_ids(store, user)
        assert t_ids <= v_ids
        orphans += len(v_ids - t_ids)
        rr = memory.retrieve(user, user_msg("what is the weather in oslo now"))
        assert set(rr.trajectory_ids) <= t_ids
        assert (rr.vector is not None) == bool(records)
    report = store.recover(grace_seconds=0)
    assert report.orphan_vectors == orphans
    for user in store.users():
        t_ids = {r.id for r in store.get(user)}
        assert _vector_ids(store, user) == t_ids
    journal = store.collections.journal(create=False)
    assert journal is None or journal.count() == 0
    # The store keeps working after the crash.
    memory.record_many([weather_item("u0", 1)], progress=False)
    return {"total": total, "orphans": orphans, "journal": report.journal_entries}


@pytest.mark.parametrize(
    "mode",
    [
        "kill:t:3",  # after the vectors of a batch are written, before its trajectories
        "kill:pop:2",  # after the trajectories, before the population entries
        "timed",  # at a random moment of ingestion
    ],
)
def test_sigkill_during_ingestion_leaves_whole_trajectories(tmp_path: Path, mode: str) -> None:
    location, prefix = str(tmp_path / "store"), new_prefix()
    code = CHILD.format(tests=str(TESTS_DIR))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, location, prefix, mode, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(TESTS_DIR.parent),
    )
    try:
        assert proc.stdout is not None
        if mode == "timed":
            batches = 0
            for line in proc.stdout:
                batches += line.startswith("batch")
                if batches == 2:
                    break
            time.sleep(0.05 + (os.getpid() % 7) * 0.03)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    counts = _check_consistent(location, prefix)
    if mode != "timed":
        # First batch: u0 (3 trajectories) and u1 (3) written, the kill hit before the rest.
        assert counts["total"] == 6 and counts["journal"] == 1
    if mode == "kill:t:3":
        assert counts["orphans"] == 2  # u2's two vectors, never returned, then removed


def test_sigkill_of_a_client_of_a_server(chroma_server: str, tmp_path: Path) -> None:
    prefix = new_prefix()
    code = CHILD.format(tests=str(TESTS_DIR))
    proc = subprocess.run(
        [sys.executable, "-c", code, chroma_server, prefix, "kill:t:2", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(TESTS_DIR.parent),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    counts = _check_consistent(chroma_server, prefix)
    assert counts["orphans"] > 0


def test_threads_record_and_retrieve_for_different_users(store_location: str) -> None:
    memory = make_memory(store_location)
    users = [f"thread-user-{i}" for i in range(4)]
    per_user = 6
    errors: list[BaseException] = []
    recorded: dict[str, list[str]] = {u: [] for u in users}
    seen: dict[str, set[str]] = {u: set() for u in users}
    # Two threads share a user, so the same user's writes also overlap.
    jobs = [(u, n) for n, u in enumerate(users)] + [(users[0], 10)]
    start = threading.Barrier(len(jobs))

    def work(user: str, n: int) -> None:
        try:
            start.wait()
            for i in range(per_user):
                item = (weather_item if n % 2 else travel_item)(user, i + n)
                if i % 2:
                    recorded[user] += memory.record_many([item], progress=False)
                else:
                    recorded[user].append(
                        memory.record(user, item["messages"], item["tools"], item["chosen"])
                    )
                r = memory.retrieve(user, item["messages"], item["tools"])
                seen[user].update(r.trajectory_ids)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for u in users:
        expected = per_user * sum(1 for user, _ in jobs if user == u)
        assert memory.store.count(u) == expected
        assert len(set(recorded[u])) == expected
        assert {t.id for t in memory.list_trajectories(u)} == set(recorded[u])
        assert seen[u] <= set(recorded[u])
    seqs = [t.seq for t in memory.list_trajectories(users[0])]
    assert len(set(seqs)) == len(seqs)
    assert torch.get_num_threads() == 1
