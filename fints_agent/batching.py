"""Micro-batching: concurrent submissions to one batch function, grouped into batches; and
how the chat model's turns share them (:func:`turn_batch_key`, :func:`complete_turns`).

A :class:`MicroBatcher` collects items submitted from any number of threads and event loops and
hands them to its batch function in groups. Items with equal keys (that may share a batch) are
grouped; a group is run when it is full (``max_size``), when its first item has waited
``wait_s`` (the window: items arriving meanwhile join it), or, for items of a :class:`Cohort`
(callers known to come together, such as the inputs of one ``batch`` call), as soon as every
member of the cohort has submitted or left, without waiting for the window. One worker thread
runs the groups one after another, so items arriving while a group runs gather into the next.

Each submission gets its own result or its own exception through a
``concurrent.futures.Future``, which any event loop can await (:meth:`MicroBatcher.asubmit`).

Example:
    >>> batcher = MicroBatcher(lambda items: [x * 2 for x in items], max_size=8, wait_s=0.01)
    >>> batcher.submit("key", 21).result()
    42
    >>> await asyncio.gather(*(batcher.asubmit("key", x) for x in range(3)))  # one group
    [0, 2, 4]
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from fints_agent.engine import TurnEngine
    from fints_agent.turn import TurnRequest, TurnResult

__all__ = [
    "BatchFunction",
    "Cohort",
    "MicroBatcher",
    "complete_turns",
    "iterate_in_thread",
    "turn_batch_key",
]

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[list[T]], Sequence[R | BaseException]]
"""Runs a group of items; returns one result per item, in order. An exception in the list is
raised to that item's caller only; an exception raised by the function goes to every caller
of the group."""


class MicroBatcher(Generic[T, R]):
    """Groups concurrent submissions into batches for one batch function.

    Thread-safe; futures are ``concurrent.futures.Future``, so callers on different threads
    and event loops can share one batcher.

    Args:
        run: The batch function (called on the batcher's worker thread).
        max_size: Most items in one group.
        wait_s: How long the first item of a group waits for others to join (seconds).

    Raises:
        ValueError: ``max_size`` below 1 or a negative ``wait_s``.
    """

    def __init__(self, run: BatchFunction[T, R], *, max_size: int = 8, wait_s: float = 0.01):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.run = run
        self.max_size = int(max_size)
        self.wait_s = float(wait_s)
        self._cond = threading.Condition()
        self._queues: dict[Hashable, list[_Entry]] = {}
        self._worker: threading.Thread | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> MicroBatcher[T, R]:
        """A fresh, empty batcher with the same function and limits (queues are not copied)."""
        return MicroBatcher(self.run, max_size=self.max_size, wait_s=self.wait_s)

    def cohort(self, size: int) -> Cohort:
        """A cohort of ``size`` callers that will submit to this batcher together.

        Each member runs inside :meth:`Cohort.member`; the cohort's items are grouped as soon
        as every member has submitted or left.
        """
        return Cohort(self, size)

    def joined(self) -> bool:
        """Whether the caller is a member of one of this batcher's cohorts and has not yet
        submitted."""
        member = _MEMBER.get()
        return member is not None and member.cohort.batcher is self and not member.done

    def submit(self, key: Hashable, item: T) -> Future[R]:
        """Queue an item; the future holds its result (or its exception).

        Args:
            key: Items with equal keys may share a group.
            item: What the batch function gets.
        """
        future: Future[R] = Future()
        with self._cond:
            cohort = None
            member = _MEMBER.get()
            if member is not None and member.cohort.batcher is self and not member.done:
                member.done = True
                cohort = member.cohort
                cohort.pending -= 1
            entry = _Entry(item, future, time.monotonic() + self.wait_s, cohort)
            self._queues.setdefault(key, []).append(entry)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="fints-micro-batcher", daemon=True
                )
                self._worker.start()
            self._cond.notify_all()
        return future

    async def asubmit(self, key: Hashable, item: T) -> R:
        """:meth:`submit` and await the result on the running event loop."""
        return await asyncio.wrap_future(self.submit(key, item))

    # -- worker ------------------------------------------------------------------------------
    def _left(self, member: _Member) -> None:
        with self._cond:
            if not member.done:
                member.done = True
                member.cohort.pending -= 1
                self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._queues:
                        self._worker = None  # a later submit starts a new worker
                        return
                    key, wake = self._ready(time.monotonic())
                    if key is not None:
                        break
                    self._cond.wait(None if wake is None else max(0.0, wake - time.monotonic()))
                queue = self._queues.pop(key)
                group, rest = queue[: self.max_size], queue[self.max_size :]
                if rest:
                    self._queues[key] = rest
            self._run_group(group)

    def _ready(self, now: float) -> tuple[Hashable | None, float | None]:
        """The first key whose group can run now, else when to look again (None: on notify)."""
        wake: float | None = None
        for key, queue in self._queues.items():
            if len(queue) >= self.max_size:
                return key, None
            for entry in queue:
                if entry.cohort is not None:
                    if entry.cohort.pending <= 0:
                        return key, None
                elif entry.deadline <= now:
                    return key, None
                else:
                    wake = entry.deadline if wake is None else min(wake, entry.deadline)
        return None, wake

    def _run_group(self, group: list[_Entry]) -> None:
        entries = [e for e in group if e.future.set_running_or_notify_cancel()]
        if not entries:
            return
        try:
            results = list(self.run([e.item for e in entries]))
            if len(results) != len(entries):
                raise RuntimeError(
                    f"the batch function returned {len(results)} results for {len(entries)} items"
                )
        except BaseException as exc:  # the whole group failed: every caller gets the error
            for e in entries:
                e.future.set_exception(exc)
            return
        for e, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                e.future.set_exception(result)
            else:
                e.future.set_result(result)


class Cohort:
    """Callers known to submit to one :class:`MicroBatcher` together (say, one ``batch`` call).

    Their items are grouped once every member has submitted or left, with no window to wait
    for. A member that leaves without submitting (its call failed early or needed no batch)
    stops being waited for.

    Args:
        batcher: The batcher the members submit to.
        size: How many members there are; each must run inside :meth:`member`.
    """

    def __init__(self, batcher: MicroBatcher[Any, Any], size: int) -> None:
        if size < 1:
            raise ValueError(f"a cohort needs at least one member, got {size}")
        self.batcher = batcher
        self.pending = size
        """Members that may still submit (read and written under the batcher's lock)."""

    @contextmanager
    def member(self) -> Iterator[None]:
        """Run the body as one member: its first submission to the batcher counts for the
        cohort (in this thread or task and those it starts); leaving the body without one
        counts as leaving."""
        member = _Member(self)
        token = _MEMBER.set(member)
        try:
            yield
        finally:
            _MEMBER.reset(token)
            self.batcher._left(member)


@dataclass(eq=False)
class _Member:
    cohort: Cohort
    done: bool = False
    """Whether the member has submitted or left."""


@dataclass(eq=False)
class _Entry:
    item: Any
    future: Future[Any]
    deadline: float
    """When the item's window closes (``time.monotonic()``)."""
    cohort: Cohort | None


_MEMBER: ContextVar[_Member | None] = ContextVar("fints_batch_member", default=None)


# -- turns of the chat model -------------------------------------------------------------
def turn_batch_key(engine: TurnEngine, req: TurnRequest) -> Hashable:
    """Turns with equal keys may share a padded batch: the same model, memory and steering
    configuration, and the decode settings a batch shares (temperature, no-repeat size).

    A turn with stop sequences, or sampled with a seed, gets a key of its own: it is decoded
    alone, as :meth:`FintsChatModel.invoke` decodes it (a batch samples its rows from one
    random stream). Sampled turns without a seed share batches.
    """
    if req.stop or (req.temperature > 0 and req.seed is not None):
        return object()
    return (
        id(engine),
        id(engine.memory),
        req.temperature,
        req.no_repeat_ngram,
    )


def complete_turns(
    turns: list[tuple[TurnEngine, TurnRequest]],
) -> list[TurnResult | BaseException]:
    """Decode turns of one batch key together (the micro-batcher's batch function).

    A turn whose input fails before generation (a prompt longer than the context window, say)
    gets its own error; the others are decoded without it.
    """
    engine = turns[0][0]  # equal keys: the same model, memory and configuration
    requests = [req for _, req in turns]
    try:
        return list(engine.complete_batch(requests))
    except Exception:
        if len(requests) == 1:
            raise
        errors: dict[int, Exception] = {}
        for i, req in enumerate(requests):
            try:
                engine.prepare(req)
            except Exception as exc:
                errors[i] = exc
        if not errors:
            raise
        good = iter(engine.complete_batch([r for i, r in enumerate(requests) if i not in errors]))
        return [errors[i] if i in errors else next(good) for i in range(len(requests))]


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run a blocking iterator on a thread of its own and yield its items on the running event
    loop (through an ``asyncio.Queue``), so that decoding never blocks the loop.

    The thread runs in a copy of the caller's context. Leaving the iteration early stops the
    iterator after the item it is computing (closing it, which releases the model).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    stop = threading.Event()
    end = object()

    def put(ok: bool, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (ok, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def produce() -> None:
        iterator = make()
        try:
            for item in iterator:
                put(True, item)
                if stop.is_set():
                    break
        except BaseException as exc:
            put(False, exc)
        else:
            put(False, end)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), name="fints-stream", daemon=True).start()
    try:
        while True:
            ok, value = await queue.get()
            if ok:
                yield value
            elif value is end:
                return
            else:
                raise value
    finally:
        stop.set()
