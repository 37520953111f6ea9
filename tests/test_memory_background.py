"""Background recording: a bounded queue, one worker, futures, and SIGKILL while it records."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from memory_fixtures import TESTS_DIR, make_memory, new_prefix, weather_item

from fints_agent.memory import (
    BackgroundRecorder,
    InvalidCallError,
    Memory,
    MemoryInputError,
    RecorderClosedError,
    TrajectoryStore,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def item(i: int, user: str = "alice") -> dict[str, Any]:
    """A weather trajectory whose request is unique to ``i``."""
    row = weather_item(user, i, ["celsius", "fahrenheit"][i % 2])
    row["messages"] = [{"role": "user", "content": row["messages"][0]["content"] + f" {i}"}]
    return row


class Gate:
    """Holds ``record_many`` of a memory until opened; counts the items of each call."""

    def __init__(self, memory: Memory) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        self.calls: list[int] = []
        real = memory.record_many

        def held(items: Any, **kwargs: Any) -> list[str]:
            items = list(items)
            self.entered.set()
            assert self.open.wait(60), "the test never opened the gate"
            self.calls.append(len(items))
            return real(items, **kwargs)

        memory.record_many = held  # type: ignore[method-assign]


@pytest.fixture
def memory(tmp_path: Path) -> Memory:
    return make_memory(tmp_path / "store")


@pytest.fixture
def gated(memory: Memory) -> Iterator[tuple[BackgroundRecorder, Gate]]:
    gate = Gate(memory)
    recorder = BackgroundRecorder(memory, maxsize=2, batch_size=8)
    try:
        yield recorder, gate
    finally:
        gate.open.set()
        recorder.close(timeout=60)


def test_submit_returns_before_recording_and_queued_items_are_grouped(
    memory: Memory, gated: tuple[BackgroundRecorder, Gate]
) -> None:
    recorder, gate = gated
    first = recorder.submit(item(0))
    assert gate.entered.wait(30)  # the worker is recording the first item, held at the gate
    assert not first.done()  # so submit returned before recording finished
    later = [recorder.submit(item(1)), recorder.record(**_record_args(item(2)))]
    assert recorder.pending == 3 and not any(f.done() for f in later)
    gate.open.set()
    recorder.flush(timeout=60)
    ids = [f.result(timeout=0) for f in (first, *later)]
    assert gate.calls == [1, 2]  # what queued meanwhile went in one record_many call
    stored = memory.list_trajectories("alice")
    assert [t.id for t in stored] == ids and recorder.pending == 0
    assert [t.request for t in stored] == [item(i)["messages"][0]["content"] for i in range(3)]
    assert all(memory.get_vector("alice", tid) is not None for tid in ids)


def _record_args(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": row["user_id"],
        "messages": row["messages"],
        "tools": row["tools"],
        "chosen": row["chosen"],
    }


def test_bad_items_raise_at_submit_and_nothing_is_queued(
    memory: Memory, gated: tuple[BackgroundRecorder, Gate]
) -> None:
    recorder, gate = gated
    bad_tool = {**item(0), "chosen": {"name": "book_ride", "arguments": {}}}
    bad_args = {**item(0), "chosen": {"name": "get_weather", "arguments": {"units": "kelvin"}}}
    empty = {**item(0), "messages": [{"role": "user", "content": "  "}]}
    with pytest.raises(InvalidCallError, match="book_ride"):
        recorder.submit(bad_tool)
    with pytest.raises(InvalidCallError):
        recorder.submit(bad_args)
    with pytest.raises(MemoryInputError, match="empty request"):
        recorder.submit(empty)
    with pytest.raises(MemoryInputError, match="missing"):
        recorder.submit({"user_id": "alice"})
    assert recorder.pending == 0 and not gate.entered.is_set()
    recorder.close()
    with pytest.raises(RecorderClosedError):
        recorder.submit(item(0))
    assert memory.store.count() == 0


def test_full_queue_waits_then_raises_and_cancelled_items_are_skipped(
    memory: Memory, gated: tuple[BackgroundRecorder, Gate]
) -> None:
    recorder, gate = gated  # maxsize 2
    taken = recorder.submit(item(0))
    assert gate.entered.wait(30)  # item 0 is being recorded: the queue is empty again
    skipped, kept = recorder.submit(item(1)), recorder.submit(item(2))
    with pytest.raises(queue.Full):
        recorder.submit(item(3), timeout=0.05)
    with pytest.raises(TimeoutError):
        recorder.flush(timeout=0.05)
    assert skipped.cancel()
    gate.open.set()
    recorder.flush(timeout=60)
    assert taken.result(timeout=0) and kept.result(timeout=0) and skipped.cancelled()
    assert memory.store.count("alice") == 2 and gate.calls == [1, 1]


def test_worker_errors_are_set_on_the_futures_and_the_worker_goes_on(
    memory: Memory, gated: tuple[BackgroundRecorder, Gate]
) -> None:
    recorder, gate = gated
    old = Memory.record_many(memory, [item(9)], progress=False)[0]  # past the gate
    first = recorder.submit(item(0))
    assert gate.entered.wait(30)
    # Both pass their checks now; by the time they are recorded, what one supersedes is gone.
    doomed = recorder.submit({**item(1), "supersedes": old})
    fine = recorder.submit(item(2))
    memory.delete(old)
    gate.open.set()
    recorder.flush(timeout=60)
    assert first.result(timeout=0) and fine.result(timeout=0)
    with pytest.raises(MemoryInputError, match="supersedes"):
        doomed.result(timeout=0)

    def broken(items: Any, **kwargs: Any) -> list[str]:
        raise OSError("disk full")

    memory.record_many = broken  # type: ignore[method-assign]
    failed = recorder.submit(item(3))
    with pytest.raises(OSError, match="disk full"):
        failed.result(timeout=60)
    del memory.record_many  # back to the real method
    assert recorder.submit(item(4)).result(timeout=60)
    assert memory.store.count("alice") == 3


def test_context_manager_flushes_on_exit(memory: Memory) -> None:
    with BackgroundRecorder(memory, batch_size=2) as recorder:
        futures = [recorder.submit(item(i)) for i in range(5)]
    assert recorder.closed and all(f.done() for f in futures)
    assert memory.store.count("alice") == 5
    recorder.close()  # twice is fine
    with pytest.raises(ValueError, match="maxsize"):
        BackgroundRecorder(memory, maxsize=0)


def test_chat_model_records_feedback_in_the_background(memory: Memory) -> None:
    from langchain_core.messages import HumanMessage

    from fints_agent.chat_model import FintsChatModel

    gate = Gate(memory)
    row = item(0)
    messages = [HumanMessage(row["messages"][0]["content"])]
    accepted = {"name": "get_weather", "args": row["chosen"]["arguments"]}
    llm = FintsChatModel(model="unused", record_in_background=True).use_memory(memory)
    future = llm.record_feedback("alice", messages, row["tools"], accepted)
    assert isinstance(future, Future)
    assert gate.entered.wait(30) and not future.done()  # returned while recording is held
    with pytest.raises(InvalidCallError, match="book_ride"):
        llm.record_feedback("alice", messages, row["tools"], {"name": "book_ride"})
    gate.open.set()
    llm.flush_feedback(timeout=60)
    assert future.done() and [t.id for t in memory.list_trajectories("alice")] == [future.result()]
    llm._recorder.close()
    # Off (the default): the id itself, recorded before returning.
    tid = (
        FintsChatModel(model="unused")
        .use_memory(memory)
        .record_feedback("alice", messages, row["tools"], accepted)
    )
    assert isinstance(tid, str) and memory.store.count("alice") == 2
    FintsChatModel(model="unused").flush_feedback()  # nothing queued: returns


# --------------------------------------------------------------------------------------------
# SIGKILL while the worker records
# --------------------------------------------------------------------------------------------

N_ITEMS = 12

CHILD = r"""
import os, signal, sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from memory_fixtures import make_memory
from test_memory_background import item, N_ITEMS
from fints_agent.memory import BackgroundRecorder
location, prefix, mode = sys.argv[1:4]
memory = make_memory(location, prefix)
if mode.startswith("kill:"):  # "kill:<kind>:<n>": SIGKILL just before the n-th add to a kind
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
recorder = BackgroundRecorder(memory, batch_size=3)
for i in range(N_ITEMS):
    future = recorder.submit(item(i))
    future.add_done_callback(lambda f, i=i: print("done", i, f.result(), flush=True))
print("queued", flush=True)
recorder.flush()
print("flushed", flush=True)
time.sleep(120)  # stay alive until killed
"""


@pytest.mark.parametrize(
    "mode",
    [
        "kill:t:2",  # the second batch's vectors are written, its trajectories are not
        "timed",  # soon after the first batch is recorded, at a moment left to chance
    ],
)
def test_sigkill_while_recording_in_the_background(tmp_path: Path, mode: str) -> None:
    location, prefix = str(tmp_path / "store"), new_prefix()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(tests=str(TESTS_DIR)), location, prefix, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(TESTS_DIR.parent),
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        if mode == "timed":
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("done"):
                    break
            time.sleep(0.05 + (time.time_ns() // 1000 % 5) * 0.04)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        lines += proc.stdout.read().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    reported = {
        int(parts[1]): parts[2] for parts in (x.split() for x in lines) if parts[0] == "done"
    }

    store = TrajectoryStore(location, collection_prefix=prefix, recover_after=None)
    layout = store.layout
    assert layout is not None
    records = store.get("alice", with_embeddings=True, with_payload=True, with_vectors=True)
    for r in records:  # every stored trajectory is whole, with its vector
        assert r.vector is not None and r.vector.shape == (layout.vector_dim,)
        assert np.isfinite(r.vector).all()
        assert r.embedding is not None and r.embedding.shape == (layout.embed_dim,)
        assert r.chosen["name"] == "get_weather" and r.rejected and r.tools and r.messages
    # Recorded in submission order: what is missing is exactly what was still queued.
    submitted = [item(i)["messages"][0]["content"] for i in range(N_ITEMS)]
    assert [r.request for r in records] == submitted[: len(records)]
    assert len(records) < N_ITEMS or mode == "timed"
    ids = [r.id for r in records]
    assert all(ids[i] == tid for i, tid in reported.items())  # every reported id is stored
    if mode == "kill:t:2":
        assert len(records) == len(reported) >= 1  # the first batch, and nothing of the second
    # Vectors of the interrupted batch are never returned; recovery removes them.
    vectors = store.collections.vectors()
    assert vectors is not None
    vector_ids = set(vectors.get(where={"user_id": "alice"}, include=[])["ids"])
    assert set(ids) <= vector_ids
    report = store.recover(grace_seconds=0)
    assert report.orphan_vectors == len(vector_ids - set(ids))
    assert set(vectors.get(where={"user_id": "alice"}, include=[])["ids"]) == set(ids)
    if mode == "kill:t:2":
        assert report.orphan_vectors >= 1 and report.journal_entries == 1
    # The memory keeps working: recording the rest completes the history.
    memory = make_memory(location, prefix)
    with BackgroundRecorder(memory) as recorder:
        for i in range(len(records), N_ITEMS):
            recorder.submit(item(i))
    assert [t.request for t in memory.list_trajectories("alice")] == submitted
