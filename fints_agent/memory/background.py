"""Recording trajectories in the background, so that recording feedback does not block a turn.

Recording one trajectory runs the model (its steering vector) and writes to Chroma; done inline,
it delays whatever the caller does next. A :class:`BackgroundRecorder` wraps a
:class:`~fints_agent.memory.Memory` with a bounded queue and one worker thread:

* :meth:`BackgroundRecorder.submit` checks the trajectory at once (a bad one raises there and
  nothing is queued), queues it and returns a :class:`concurrent.futures.Future` of its id;
* the worker takes everything queued so far (up to ``batch_size``) and records it with one
  :meth:`~fints_agent.memory.Memory.record_many` call, so vectors are computed in batches;
* a full queue makes :meth:`~BackgroundRecorder.submit` wait for room (back-pressure: feedback
  is never dropped and memory use stays bounded), or raise :class:`queue.Full` once a
  ``timeout`` has passed;
* an error while recording is set on the futures of the trajectories it concerns (an item that
  fails its checks only on its own future), never lost; the worker keeps going;
* :meth:`~BackgroundRecorder.flush` waits until everything queued is recorded,
  :meth:`~BackgroundRecorder.close` flushes and stops the worker (also done when the process
  exits normally). A process that is killed loses only what was still queued: each batch is
  written with the store's crash-safe add, so what is stored is whole.

The model's lock serializes vector computation with generation on the same model, so a turn
may still wait for a batch already being computed, never for the queue.

Example:
    >>> with BackgroundRecorder(memory, maxsize=64) as recorder:
    ...     future = recorder.record("alice", [{"role": "user", "content": "Weather in Oslo?"}],
    ...                              tools, {"name": "get_weather", "arguments": {"city": "Oslo"}})
    ...     # ... answer the next turn ...
    ...     future.result()   # the trajectory id, once recorded
    '3f2c...'
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from fints_agent.memory.memory import Memory
from fints_agent.memory.negatives import MemoryInputError
from fints_agent.memory.trajectory import TrajectoryInput

__all__ = ["BackgroundRecorder", "RecorderClosedError"]

logger = logging.getLogger(__name__)


class RecorderClosedError(RuntimeError):
    """A trajectory was submitted to a closed :class:`BackgroundRecorder`."""


@dataclass
class _Job:
    item: TrajectoryInput
    future: Future[str]


class BackgroundRecorder:
    """Records a memory's trajectories on one worker thread, from a bounded queue.

    Args:
        memory: The memory to record into.
        maxsize: Most trajectories waiting in the queue (those being recorded do not count);
            :meth:`submit` waits while it is full.
        batch_size: Most trajectories recorded in one ``record_many`` call.
        name: Name of the worker thread.

    Raises:
        ValueError: ``maxsize`` or ``batch_size`` is below 1.

    Example:
        >>> recorder = BackgroundRecorder(memory)
        >>> futures = [recorder.submit(row) for row in rows]   # returns at once
        >>> recorder.flush()                                   # all recorded
        >>> [f.result() for f in futures]
        ['3f2c...', '9a1b...']
        >>> recorder.close()
    """

    def __init__(
        self,
        memory: Memory,
        *,
        maxsize: int = 64,
        batch_size: int = 32,
        name: str = "fints-recorder",
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.memory = memory
        self.maxsize = maxsize
        self.batch_size = batch_size
        self._queue: deque[_Job] = deque()
        self._unfinished = 0  # queued plus being recorded
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        # Record what is queued when the process exits normally (the worker is a daemon
        # thread, so it never keeps the process alive on its own).
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            recorder = ref()
            if recorder is not None:
                recorder.close()

        self._at_exit = close_at_exit
        atexit.register(close_at_exit)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.pending} pending"
        return f"BackgroundRecorder({self.memory!r}, {state})"

    # -- submitting -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Trajectories submitted and not yet recorded (queued or being recorded)."""
        with self._cond:
            return self._unfinished

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def submit(
        self, item: TrajectoryInput | Mapping[str, Any], *, timeout: float | None = None
    ) -> Future[str]:
        """Check a trajectory now and queue it for recording.

        The trajectory is checked as :meth:`~fints_agent.memory.Memory.record_many` checks it,
        before anything is queued; its time defaults to now (the time of the turn, not of the
        recording).

        Args:
            item: A :class:`~fints_agent.memory.TrajectoryInput` or a dict (see
                :meth:`~fints_agent.memory.TrajectoryInput.from_dict`).
            timeout: Most seconds to wait for room in a full queue (None: as long as it takes).

        Returns:
            A future of the trajectory's id: its result once recorded, or the error that
            prevented recording. Cancelling it before the worker takes it skips the trajectory.

        Raises:
            MemoryInputError: Empty request, no tools, bad user id, unknown ``supersedes``.
            InvalidCallError: A malformed call, a tool not offered, or arguments that fail the
                tool's schema.
            queue.Full: The queue stayed full for ``timeout`` seconds.
            RecorderClosedError: The recorder is closed.

        Example:
            >>> future = recorder.submit({"user_id": "alice", "messages": messages,
            ...                           "tools": tools, "chosen": call})
            >>> future.done()      # usually not yet
            False
        """
        if self._closed:
            raise RecorderClosedError("the background recorder is closed")
        inp = item if isinstance(item, TrajectoryInput) else TrajectoryInput.from_dict(item)
        if inp.created_at is None:
            inp = replace(inp, created_at=time.time())
        self.memory.recorder.prepare(inp)  # raises on bad input; nothing is queued
        job = _Job(inp, Future())
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._queue) >= self.maxsize and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Full(f"the recording queue stayed full for {timeout} s")
                self._cond.wait(left)
            if self._closed:
                raise RecorderClosedError("the background recorder is closed")
            self._queue.append(job)
            self._unfinished += 1
            self._cond.notify_all()
        return job.future

    def record(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        chosen: Any,
        rejected: Sequence[Any] | None = None,
        *,
        supersedes: str | None = None,
        created_at: float | None = None,
        timeout: float | None = None,
    ) -> Future[str]:
        """:meth:`~fints_agent.memory.Memory.record` in the background (see :meth:`submit`).

        Example:
            >>> recorder.record("alice", messages, tools, {"name": "get_weather",
            ...                 "arguments": {"city": "Oslo"}}).result()
            '3f2c...'
        """
        item = TrajectoryInput(user_id, messages, tools, chosen, rejected, supersedes, created_at)
        return self.submit(item, timeout=timeout)

    # -- waiting and stopping -------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Wait until every trajectory submitted so far is recorded (or has failed).

        Args:
            timeout: Most seconds to wait (None: as long as it takes).

        Raises:
            TimeoutError: Trajectories are still pending after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._unfinished == 0, timeout):
                raise TimeoutError(
                    f"{self._unfinished} trajectories still pending after {timeout} s"
                )

    def close(self, timeout: float | None = None) -> None:
        """Record everything queued, then stop the worker; later submits raise.

        Closing twice is harmless.

        Args:
            timeout: Most seconds to wait for the queue to drain (None: as long as it takes).

        Raises:
            TimeoutError: The worker is still recording after ``timeout`` seconds (it stops
                once the queue is empty).
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"{self.pending} trajectories still pending after {timeout} s")
        atexit.unregister(self._at_exit)

    def __enter__(self) -> BackgroundRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the worker -----------------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        """The next batch (waits for one); None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            jobs: list[_Job] = []
            while self._queue and len(jobs) < self.batch_size:
                jobs.append(self._queue.popleft())
            self._cond.notify_all()  # room in the queue
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                running = [j for j in jobs if j.future.set_running_or_notify_cancel()]
                if running:
                    self._record(running)
            except BaseException as exc:  # never lose an error, never stop the worker
                logger.exception("background recording failed")
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
            finally:
                with self._cond:
                    self._unfinished -= len(jobs)
                    self._cond.notify_all()

    def _record(self, jobs: list[_Job]) -> None:
        try:
            ids = self.memory.record_many(
                [j.item for j in jobs], batch_size=self.batch_size, progress=False
            )
        except MemoryInputError:
            # A check failed that passed at submit (a superseded trajectory deleted since,
            # say). Checks run before anything is written, so record one by one: each
            # trajectory gets its own result or error.
            if len(jobs) == 1:
                raise
            for j in jobs:
                try:
                    j.future.set_result(self.memory.record_many([j.item], progress=False)[0])
                except Exception as exc:
                    j.future.set_exception(exc)
            return
        for j, tid in zip(jobs, ids, strict=True):
            j.future.set_result(tid)
