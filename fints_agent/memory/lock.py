"""One process per embedded store: its directory's lock, and who a process is.

An embedded Chroma store (``chromadb.PersistentClient`` on a directory) keeps its vector indexes
in the memory of the process that opened it: it does not see another process's writes, and
reads can fail on them (``Error finding id``). So an embedded
:class:`~fints_agent.memory.store.TrajectoryStore` takes an exclusive advisory lock
(``fcntl.flock``) on ``<store>/.fints-lock`` when it is opened (:func:`lock_store`), and a
second process that opens the store gets :class:`~fints_agent.memory.errors.StoreBusyError`,
which names the process holding it and the server mode, the way to share a store. The stores of
one process share its lock (their threads share the store objects), and it is released by
:meth:`TrajectoryStore.close <fints_agent.memory.store.TrajectoryStore.close>`, or by the OS
when the process ends, however it ends: a crashed process never leaves a store locked.

Who a process is (:class:`ProcessIdentity`: host, boot, PID namespace, pid and start time) is
recorded with every journaled write, so that recovery can tell a writer still running from one
that died (:func:`writer_state`), a pid reused by another process included.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fints_agent.memory.errors import StoreBusyError, StoreError

__all__ = [
    "LOCK_FILE",
    "ProcessIdentity",
    "StoreLock",
    "lock_store",
    "this_process",
    "writer_state",
]

LOCK_FILE = ".fints-lock"
"""The lock file in an embedded store's directory (it names the process holding the store)."""


# -- who a process is ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessIdentity:
    """A process, told apart from any other that had its pid before or after.

    Attributes:
        host: The host name.
        boot: The kernel's boot id (``/proc/sys/kernel/random/boot_id``; empty where unknown).
        pidns: The PID namespace (``/proc/self/ns/pid``; empty where unknown).
        pid: The process id.
        start: The start time in clock ticks after boot (``/proc/<pid>/stat``, field 22;
            ``None`` where unknown).
    """

    host: str
    boot: str
    pidns: str
    pid: int
    start: int | None

    def to_json(self) -> str:
        """As a JSON object (the journal keeps it as a string)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: Any) -> ProcessIdentity | None:
        """Read back :meth:`to_json`'s text (``None`` for anything else)."""
        try:
            d = json.loads(str(text))
            start = d.get("start")
            return cls(
                host=str(d["host"]),
                boot=str(d["boot"]),
                pidns=str(d["pidns"]),
                pid=int(d["pid"]),
                start=None if start is None else int(start),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time)`` of a process from ``/proc/<pid>/stat`` (``None``: unreadable)."""
    text = _read(f"/proc/{pid}/stat")
    # The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    fields = text[text.rfind(")") + 1 :].split()
    if len(fields) < 20:
        return None
    try:
        return fields[0], int(fields[19])  # field 3 (state) and field 22 (starttime)
    except ValueError:
        return None


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_this: ProcessIdentity | None = None


def this_process() -> ProcessIdentity:
    """This process's identity (computed again in a forked child)."""
    global _this
    pid = os.getpid()
    if _this is None or _this.pid != pid:
        stat = _stat(pid)
        _this = ProcessIdentity(
            host=socket.gethostname(),
            boot=_read("/proc/sys/kernel/random/boot_id"),
            pidns=_pidns(),
            pid=pid,
            start=None if stat is None else stat[1],
        )
    return _this


def writer_state(writer: ProcessIdentity | None) -> Literal["alive", "dead", "unknown"]:
    """Whether the process that journaled a write is still running.

    ``"unknown"`` when it cannot be checked from here: it ran on another machine (or in another
    PID namespace, or the host has no ``/proc``), or nothing was recorded (an earlier version).
    A pid that now belongs to a process with another start time, or to a zombie, is ``"dead"``.
    This process counts as alive; which of its writes are still going is for the caller to know.
    """
    if writer is None or writer.pid <= 0:
        return "unknown"
    me = this_process()
    if (writer.host, writer.boot, writer.pidns) != (me.host, me.boot, me.pidns) or not me.boot:
        return "unknown"
    if writer.pid == me.pid and writer.start == me.start:
        return "alive"
    try:
        os.kill(writer.pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # it exists, run by another user
    except OSError:
        return "unknown"
    stat = _stat(writer.pid)
    if stat is None:
        return "dead" if not os.path.exists(f"/proc/{writer.pid}") else "unknown"
    state, start = stat
    if state in ("Z", "X") or (writer.start is not None and start != writer.start):
        return "dead"
    return "alive"


# -- the store's lock ----------------------------------------------------------------------------
class StoreLock:
    """This process's hold on one store directory's lock, shared by its stores.

    Each :func:`lock_store` for the directory adds a holder; :meth:`release` removes one, and the
    last one unlocks and closes the file. Thread-safe.
    """

    def __init__(self, path: Path, fd: int | None, key: tuple[int, int]) -> None:
        self.path = path
        self.fd = fd
        self.key = key
        self.pid = os.getpid()
        self.holders = 1

    def release(self) -> None:
        """Give up one hold; the last unlocks the store (other processes may then open it)."""
        with _locks_guard:
            if self.holders <= 0 or self.pid != os.getpid():
                return  # released already, or inherited by a forked child (not its to unlock)
            self.holders -= 1
            if self.holders > 0:
                return
            _locks.pop(self.key, None)
            if self.fd is not None:
                os.close(self.fd)  # closing the only descriptor unlocks the file
                self.fd = None


_locks: dict[tuple[int, int], StoreLock] = {}
# Reentrant: a store collected while this thread holds it releases its lock from inside.
_locks_guard = threading.RLock()


def _forget_locks_in_child() -> None:
    # A forked child shares the parent's open lock files: it closes its copies (which leaves
    # the parent's lock in place) and holds no store; opening one gets StoreBusyError.
    global _locks_guard
    _locks_guard = threading.RLock()
    for lock in _locks.values():
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
            lock.fd = None
    _locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def _holder(path: Path) -> str:
    """Who holds the lock, as the lock file says (in words)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        pid = int(info["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return "another process"
    words = f"process {pid}"
    if info.get("host") and info["host"] != socket.gethostname():
        words += f" on {info['host']}"
    about = []
    if info.get("command"):
        about.append(f"`{info['command']}`")
    if isinstance(info.get("since"), int | float):
        about.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"])))
    return words + (f" ({', '.join(about)})" if about else "")


def busy_message(directory: Path, holder: str) -> str:
    """The message of :class:`StoreBusyError` for a store directory held by ``holder``."""
    return (
        f"the store at {directory} is open in {holder}. An embedded store serves one process at "
        "a time (a second one would not see the first one's writes and could fail reading "
        "them). To share a store between processes, run a Chroma server on its directory "
        f"(`chroma run --path {directory} --host 127.0.0.1 --port 8000`, with the other process "
        "stopped) and pass its URL (http://127.0.0.1:8000) as the store; or stop the other "
        "process first"
    )


def lock_store(directory: str | Path) -> StoreLock:
    """Lock an embedded store's directory for this process (created if missing).

    Stores of this process on the same directory (under any spelling of its path) share one
    lock. Where the file system cannot lock files, a warning says so and the store is used
    without a lock.

    Raises:
        StoreBusyError: Another process has the store open.
        StoreError: The location is a file, or the directory or its lock file cannot be made.
    """
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"store location {path} is a file, not a directory")
    lock_path = path / LOCK_FILE
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited
    except OSError as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}") from exc
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with _locks_guard:
            held = _locks.get(key)
            if held is not None:  # this process holds it already (another store, or spelling)
                held.holders += 1
                os.close(fd)
                return held
            if not _flock(fd, lock_path):
                raise StoreBusyError(busy_message(path, _holder(lock_path)))
            me = this_process()
            info = {
                "pid": me.pid,
                "host": me.host,
                "since": time.time(),
                "command": " ".join(sys.argv)[:200],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
            lock = StoreLock(path, fd, key)
            _locks[key] = lock
            return lock
    except BaseException as exc:
        os.close(fd)  # not kept: closing it gives the lock up, if it was taken
        if isinstance(exc, OSError):
            raise StoreError(f"cannot lock the store at {path}: {exc}") from exc
        raise


def _flock(fd: int, lock_path: Path) -> bool:
    """Take the exclusive lock without waiting: False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        _unlocked(lock_path, "this platform has no fcntl.flock")
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        _unlocked(lock_path, str(exc))
    return True


def _unlocked(lock_path: Path, why: str) -> None:
    warnings.warn(
        f"cannot lock {lock_path} ({why}): nothing keeps a second process from opening this "
        "embedded store; share a store between processes through a Chroma server",
        RuntimeWarning,
        stacklevel=4,
    )
