"""Kept history stores: recorded history memories in the user cache, keyed by what they hold.

A store is keyed by :func:`history_store_key` (the history records, the model, the vector
kind, layers, sites, embedder and recording options) and lives under
:func:`history_cache_dir`. It is recorded into a temporary directory that is renamed into place
only once complete, so a run that dies while recording leaves nothing that is ever reused (its
leftovers are removed by a later run).

Example:
    >>> key, about = history_store_key(lm, records, options={"vectors": "split"})
    >>> history_cache_dir() / key
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fints_agent.eval.personal.recording import (
    HistoryMemory,
    _check_holds,
    _close,
    _history,
    _trajectory,
    ingest_history,
    open_memory,
)

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.memory import Embedder
    from fints_agent.models import LoadedModel

__all__ = ["HISTORY_CACHE", "history_cache_dir", "history_store_key"]

HISTORY_CACHE = "eval-history"
"""The folder of the user cache (:func:`~fints_agent.models.cache_dir`) that keeps recorded
history stores (see :func:`history_memory` with ``cache=True``)."""

_HISTORY_FORMAT = 4  # bump when what a recorded store holds changes: older stores are not reused
_COMPLETE = "complete.json"
# Memory options that only shape retrieval: a recorded store does not depend on them.
_RETRIEVAL_OPTIONS = frozenset(
    {"k", "temperature", "min_similarity", "match_tools", "cache_size", "batch_size"}
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _store_options(lm: LoadedModel, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every Memory option that changes what is recorded, defaults filled in, JSON-ready."""
    import inspect

    from fints_agent.memory import Memory

    params = inspect.signature(Memory.__init__).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown Memory options {unknown}")
    layers = options.get("layers")
    out: dict[str, Any] = {
        "layers": list(range(lm.num_layers)) if layers is None else [int(x) for x in layers],
        "sites": list(options.get("sites", ("attn", "mlp"))),
    }
    for name, param in params.items():
        if name in ("self", "lm", "store", "embedder", "layers", "sites"):
            continue
        if name in _RETRIEVAL_OPTIONS:
            continue
        value = options.get(name, param.default)
        value = list(value) if isinstance(value, tuple) else value
        try:
            _canonical(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"Memory option {name}={value!r} cannot key a kept history store: record into "
                "a temporary memory or a store directory of your own instead"
            ) from None
        out[name] = value
    return out


def history_store_key(
    lm: LoadedModel,
    records: Sequence[PersonalRecord],
    *,
    embedder: str | Embedder = "minilm",
    options: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The key of a kept history store: what the recorded vectors depend on, hashed.

    The key covers the content of the history records recorded (their messages, tools, chosen
    and rejected calls, in recording order), the model fingerprint, the vector kind, layers and
    sites, the retrieval embedder, and every other :class:`~fints_agent.memory.Memory` option
    that changes what is recorded (negatives, superseding). Retrieval-only options (``k``,
    ``temperature``, ...) are left out.

    Args:
        lm: The model.
        records: Records; only ``split == "history"`` ones count.
        embedder: Retrieval embedder.
        options: Further Memory options (as :func:`history_memory` takes them).

    Returns:
        ``(key, description)``: 32 hex digits, and the JSON-ready description hashed.

    Raises:
        ValueError: An option is unknown or cannot be part of a key (a function, say).

    Example:
        >>> key, about = history_store_key(lm, records, options={"vectors": "split"})
        >>> about["history"]["trajectories"], about["vectors"]
        (120, 'split')
    """
    from fints_agent.memory import make_embedder

    history = _history(records)
    content = hashlib.sha256(
        _canonical([_trajectory(r) for r in history]).encode("utf-8")
    ).hexdigest()
    resolved = _store_options(lm, dict(options or {}))
    description = {
        "format": _HISTORY_FORMAT,
        "history": {
            "sha256": content,
            "trajectories": len(history),
            "users": len({r.user_id for r in history}),
        },
        "model_fingerprint": lm.fingerprint,
        "vectors": resolved.pop("vectors"),
        "layers": resolved.pop("layers"),
        "sites": resolved.pop("sites"),
        "embedder": make_embedder(embedder, lm).name,
        "options": resolved,
    }
    key = hashlib.sha256(_canonical(description).encode("utf-8")).hexdigest()[:32]
    return key, description


def history_cache_dir() -> Path:
    """Where kept history stores live: ``eval-history`` under the user cache."""
    from fints_agent.paths import cache_dir

    return cache_dir() / HISTORY_CACHE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(root: Path) -> None:
    """Removes the temporary directories of runs that died (``.tmp-KEY-PID-...``)."""
    for entry in root.glob(".*-*-*-*"):
        kind, _, pid, _ = entry.name.split("-", 3)
        if kind in (".tmp", ".old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _aside(root: Path, kind: str, key: str) -> Path:
    return root / f".{kind}-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _discard(path: Path) -> None:
    """Removes a kept store: first renamed aside (atomic), then deleted."""
    aside = _aside(path.parent, "old", path.name)
    try:
        path.rename(aside)
    except FileNotFoundError:  # not there, or another run removed it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _is_complete(path: Path, description: Mapping[str, Any]) -> bool:
    try:
        about = json.loads((path / _COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(about, dict) and about.get("key") == dict(description)


def _record_kept(
    lm: LoadedModel,
    history: Sequence[PersonalRecord],
    final: Path,
    description: Mapping[str, Any],
    embedder: str | Embedder,
    options: Mapping[str, Any],
    progress: bool,
) -> tuple[float, int]:
    """Records a store into a temporary directory and renames it to ``final`` when complete."""
    work = _aside(final.parent, "tmp", final.name)
    try:
        memory = open_memory(lm, work / "store", embedder=embedder, **options)
        try:
            began = time.perf_counter()
            recorded = ingest_history(memory, history, progress=progress)
            seconds = time.perf_counter() - began
        finally:
            _close(memory)
        about = {"key": dict(description), "recorded_at": time.time(), "seconds": seconds}
        (work / _COMPLETE).write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")
        try:
            work.rename(final)
        except OSError:
            if not _is_complete(final, description):
                raise
            shutil.rmtree(work, ignore_errors=True)  # another run completed it first
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return seconds, recorded


@contextmanager
def _cached_history(
    lm: LoadedModel,
    history: Sequence[PersonalRecord],
    embedder: str | Embedder,
    options: Mapping[str, Any],
    fresh: bool,
    writable: bool,
    progress: bool,
) -> Iterator[HistoryMemory]:
    key, description = history_store_key(lm, history, embedder=embedder, options=options)
    root = history_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    final = root / key
    if fresh or (final.exists() and not _is_complete(final, description)):
        _discard(final)
    seconds, recorded = 0.0, 0
    if not final.exists():
        seconds, recorded = _record_kept(
            lm, history, final, description, embedder, options, progress
        )
    with ExitStack() as stack:
        location = final / "store"
        if writable:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="fints-eval-"))
            location = Path(shutil.copytree(location, Path(folder) / "store"))
        memory = open_memory(lm, location, embedder=embedder, **options)
        stack.callback(_close, memory)
        _check_holds(memory, history, final, hint="record it again (fresh=True, --fresh)")
        yield HistoryMemory(memory, seconds, recorded, str(final))
