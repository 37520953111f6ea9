"""The personalized tool-calling benchmark: ingest each user's history, answer their test turns.

Protocol (``fints-agent eval personal``):

1. Every answered user's ``history`` records are recorded into one memory (users are isolated
   by ``user_id``), with their chosen and rejected calls. The command keeps that memory in the
   user cache, keyed by the records, the model and the vector settings, and a later run with
   the same key reuses it instead of recording again (:func:`history_memory`, ``--fresh``
   records again); :func:`run_personal` records into a temporary memory unless asked to.
2. Each user's ``test`` records are answered in turn order with ``tool_choice="any"`` (a call is
   forced; constrained decoding makes it schema-valid), by one of the :data:`METHODS`:

   * ``zero-shot``: the model alone (personalization ``"none"``);
   * ``rag``: the user's most similar past requests and calls in the prompt;
   * ``steer``: the Fints steering vector of the most similar past trajectories;
   * ``rag+steer``: both;
   * ``knn``: no model at all: copy the call of the user's most similar past trajectory whose
     tool is offered (the memory's own retrieval, top-1).

3. With ``online``, each test record's gold call (and its rejected calls) is recorded as
   feedback right after it is answered, so later turns of the same user can use it; turns are
   then batched across users only, one round of turns at a time.

Test turns of all users are answered in padded batches (:meth:`TurnEngine.complete_batch`);
the latency of a turn is reported as the wall time of its batch divided by the batch's rows.

Example:
    >>> run = run_personal(load_model(), load_records(path), "rag+steer", limit=40)
    >>> run.summary["call_acc"], run.rows()[0]["domain"]
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fints_agent.eval.dataset import PersonalRecord, UserRecords, group_by_user
from fints_agent.eval.scoring import CallScore, score_call, summarize, values_equal

if TYPE_CHECKING:
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine
    from fints_agent.turn import TurnRequest, TurnResult
    from fints_agent.memory import Embedder, Memory
    from fints_agent.models import LoadedModel

__all__ = [
    "HISTORY_CACHE",
    "LATENCY_BASIS",
    "METHODS",
    "HistoryMemory",
    "PersonalRun",
    "TurnOutcome",
    "answer_turns",
    "decided_by",
    "domain_history_counts",
    "follow_label",
    "history_cache_dir",
    "history_memory",
    "history_store_key",
    "ingest_history",
    "knn_call",
    "machine_info",
    "old_preference_call",
    "open_memory",
    "personalization_of",
    "run_personal",
    "select_test_records",
    "summarize_outcomes",
    "temporary_memory",
]

METHODS: tuple[str, ...] = ("zero-shot", "rag", "steer", "rag+steer", "knn")
"""The methods of the benchmark, in the order results are reported."""

_PERSONALIZATION = {"zero-shot": "none", "rag": "rag", "steer": "steer", "rag+steer": "rag+steer"}

LATENCY_BASIS = "batch wall time / rows in the batch (retrieval, prompt and decoding included)"
"""How per-turn latencies are measured when turns run in batches."""


def personalization_of(method: str) -> str:
    """The engine's ``personalization`` for an LM method.

    Args:
        method: One of :data:`METHODS` except ``knn``.

    Returns:
        ``"none"``, ``"rag"``, ``"steer"`` or ``"rag+steer"``.

    Raises:
        ValueError: The method is unknown or does not use the model.
    """
    if method not in _PERSONALIZATION:
        raise ValueError(f"unknown LM method {method!r}; choose from {list(_PERSONALIZATION)}")
    return _PERSONALIZATION[method]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def select_test_records(
    grouped: Mapping[str, UserRecords], limit: int | None = None
) -> dict[str, list[PersonalRecord]]:
    """Picks the test turns to answer, spread over users deterministically.

    Turns are taken round-robin over users (in order of first appearance), each user's
    earliest turns first, so that a limit keeps a prefix of every user's test turns.

    Args:
        grouped: Records per user (:func:`~fints_agent.eval.dataset.group_by_user`).
        limit: Maximum number of test turns (None: all).

    Returns:
        ``{user_id: [test records in turn order]}`` for users with at least one turn picked.

    Raises:
        ValueError: ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    picked: dict[str, list[PersonalRecord]] = {}
    total = sum(len(u.test) for u in grouped.values())
    budget = total if limit is None else min(limit, total)
    depth = 0
    count = 0
    while count < budget:
        for user_id, user in grouped.items():
            if count >= budget:
                break
            if depth < len(user.test):
                picked.setdefault(user_id, []).append(user.test[depth])
                count += 1
        depth += 1
    return picked


def domain_history_counts(user: UserRecords) -> dict[str, int]:
    """How many history records a user has per domain (``meta["domain"]``)."""
    counts: dict[str, int] = defaultdict(int)
    for record in user.history:
        counts[str((record.meta or {}).get("domain", ""))] += 1
    return dict(counts)


def _old_preferences(user: UserRecords) -> dict[str, dict[str, Any]]:
    """Per domain, the preference of the user's history records in the ``old`` phase."""
    out: dict[str, dict[str, Any]] = {}
    for record in user.history:
        meta = record.meta or {}
        if meta.get("phase") == "old" and isinstance(meta.get("preference"), dict):
            out[str(meta.get("domain", ""))] = dict(meta["preference"])
    return out


def _mentions(call: Mapping[str, Any], part: str) -> bool:
    if call.get("name") == part:
        return True
    arguments = call.get("arguments")
    return isinstance(arguments, Mapping) and any(values_equal(v, part) for v in arguments.values())


def old_preference_call(
    record: PersonalRecord, old_preference: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The call the user's old preference would have made for a ``new``-phase test record.

    The dataset lists that call first among the rejected calls whenever it differs from the
    chosen call. It is recognized by carrying every changed preference value (``"a:b"`` values
    name a tool and an argument value) where the chosen call does not.

    Args:
        record: A test record (``meta.phase == "new"``).
        old_preference: The preference of the user's ``old``-phase history in its domain.

    Returns:
        The old-preference call, or None when the record does not depend on the change.
    """
    meta = record.meta or {}
    if not old_preference or meta.get("phase") != "new" or not record.rejected:
        return None
    new_preference = meta.get("preference") or {}
    parts = [
        part
        for key, value in old_preference.items()
        if new_preference.get(key) != value
        for part in str(value).split(":")
    ]
    if not parts:
        return None
    candidate = record.rejected[0].as_dict()
    chosen = record.chosen.as_dict()
    if all(_mentions(candidate, p) for p in parts) and not all(_mentions(chosen, p) for p in parts):
        return candidate
    return None


def follow_label(
    predicted: Mapping[str, Any] | None, chosen: Mapping[str, Any], old: Mapping[str, Any]
) -> str:
    """Whether a prediction follows the new preference, the old one, or neither.

    Only what distinguishes the two calls is compared: the tool name and the arguments whose
    values differ between them.

    Args:
        predicted: The predicted call (None: no call).
        chosen: The gold call (new preference).
        old: The call of the old preference.

    Returns:
        ``"new"``, ``"old"`` or ``"neither"``.
    """
    if not predicted:
        return "neither"
    new_args = chosen.get("arguments") or {}
    old_args = old.get("arguments") or {}
    keys = [
        k
        for k in dict.fromkeys([*new_args, *old_args])
        if not (k in new_args and k in old_args and values_equal(new_args[k], old_args[k]))
    ]
    args = predicted.get("arguments")
    args = args if isinstance(args, Mapping) else {}

    def matches(target: Mapping[str, Any]) -> bool:
        target_args = target.get("arguments") or {}
        if predicted.get("name") != target.get("name"):
            return False
        return all(
            (k in args) == (k in target_args)
            and (k not in args or values_equal(args[k], target_args[k]))
            for k in keys
        )

    if matches(chosen):
        return "new"
    if matches(old):
        return "old"
    return "neither"


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def open_memory(
    lm: LoadedModel,
    location: str | Path,
    *,
    embedder: str | Embedder = "minilm",
    layers: Sequence[int] | None = None,
    sites: Sequence[str] = ("attn", "mlp"),
    batch_size: int = 8,
    **options: Any,
) -> Memory:
    """A :class:`~fints_agent.memory.Memory` on a Chroma directory (vectors of all layers).

    Args:
        lm: The model.
        location: A directory (created) or a Chroma server URL.
        embedder: Retrieval embedder (``"minilm"``, ``"lm"`` or an embedder object).
        layers: Layers of the stored vectors (default all, so any configuration can select).
        sites: Sites of the stored vectors.
        batch_size: Forward-pass batch size for vector computation.
        **options: Further :class:`~fints_agent.memory.Memory` options (for example
            ``skip_shared_prefix=True``).
    """
    from fints_agent.memory import Memory, TrajectoryStore

    return Memory(
        lm,
        TrajectoryStore(location),
        layers=layers,
        sites=tuple(sites),  # type: ignore[arg-type]
        embedder=embedder,
        batch_size=batch_size,
        **options,
    )


@contextmanager
def temporary_memory(
    lm: LoadedModel, *, embedder: str | Embedder = "minilm", **kwargs: Any
) -> Iterator[Memory]:
    """A memory on a fresh temporary Chroma directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="fints-eval-") as folder:
        yield open_memory(lm, folder, embedder=embedder, **kwargs)


HISTORY_CACHE = "eval-history"
"""The folder of the user cache (:func:`~fints_agent.models.cache_dir`) that keeps recorded
history stores (see :func:`history_memory` with ``cache=True``)."""

_HISTORY_FORMAT = 1  # bump when what a recorded store holds changes: older stores are not reused
_COMPLETE = "complete.json"
# Memory options that only shape retrieval: a recorded store does not depend on them.
_RETRIEVAL_OPTIONS = frozenset(
    {"k", "temperature", "weighting", "min_similarity", "match_tools", "cache_size", "batch_size"}
)


@dataclass
class HistoryMemory:
    """What :func:`history_memory` yields: the memory and how its history got there.

    It also unpacks as ``(memory, seconds)``.

    Attributes:
        memory: The memory, holding exactly the history records given.
        seconds: Seconds spent recording (0 when a recorded store was reused).
        recorded: Trajectories recorded by this call (0 when a recorded store was reused).
        location: The kept store's directory (None for a temporary memory).
    """

    memory: Memory
    seconds: float
    recorded: int
    location: str | None = None

    @property
    def reused(self) -> bool:
        """Whether a store recorded earlier was used (nothing recorded now)."""
        return self.location is not None and self.recorded == 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.memory, self.seconds))


def _history(records: Sequence[PersonalRecord]) -> list[PersonalRecord]:
    """The records :func:`ingest_history` records, in the order it records them."""
    history = [r for r in records if r.split == "history"]
    history.sort(key=lambda r: (r.user_id, r.turn))
    return history


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
    that changes what is recorded (negatives, shared prefix or suffix skipping,
    superseding). Retrieval-only options (``k``, ``temperature``, ...) are left out.

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


@contextmanager
def history_memory(
    lm: LoadedModel,
    records: Sequence[PersonalRecord],
    *,
    store: str | Path | None = None,
    cache: bool = False,
    fresh: bool = False,
    writable: bool = False,
    embedder: str | Embedder = "minilm",
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
) -> Iterator[HistoryMemory]:
    """A memory holding exactly the ``history`` records given, ready to answer turns.

    Recording vectors is the slow part of a run, so a recorded history can be kept and reused:

    * ``cache=True``: the store is kept in the user cache (:func:`history_cache_dir`), one
      directory per :func:`history_store_key` (records, model, vector kind, layers, sites,
      embedder and recording options). It is recorded into a temporary directory that is renamed
      into place only once complete, so a run that dies while recording leaves nothing that is
      ever reused (its leftovers are removed by a later run). A complete store is reused as is.
    * ``store``: a directory of your own. An empty store is ingested and kept; a store that
      already holds exactly these users' history counts is reused (flags an older version did
      not keep are filled in, see :meth:`~fints_agent.memory.TrajectoryStore.fill_tool_contrasts`).
    * Neither: a fresh temporary memory is ingested and removed afterwards.

    Kept stores are opened for the duration of the ``with`` block only (their Chroma client is
    closed on exit, so the memory is not usable afterwards).

    Args:
        lm: The model.
        records: Records; only ``split == "history"`` ones are recorded.
        store: A directory to keep the memory in (None: temporary, or the cache).
        cache: Keep the memory in the user cache, keyed by what its vectors depend on.
        fresh: Record again even where a recorded store exists (the kept store is replaced;
            an own ``store`` directory has its users forgotten first).
        writable: The memory will be written to (online feedback, say): a cached store is
            copied into a temporary directory first, so that the kept one stays as recorded.
        embedder: Retrieval embedder.
        progress: Show a progress bar while recording.
        options: Further :class:`~fints_agent.memory.Memory` options.

    Yields:
        A :class:`HistoryMemory`, which also unpacks as ``(memory, seconds spent recording)``
        (0 when reused).

    Raises:
        ValueError: ``store`` holds trajectories other than these records' history, both
            ``store`` and ``cache`` are given, or an option cannot key a cached store.

    Example:
        >>> with history_memory(lm, records, cache=True, options={"vectors": "split"}) as h:
        ...     h.recorded, h.seconds, h.location   # 0 and 0.0 on the second run
    """
    history = _history(records)
    opts = dict(options or {})
    if cache and store is not None:
        raise ValueError("give either a store directory or cache=True, not both")
    if cache:
        with _cached_history(lm, history, embedder, opts, fresh, writable, progress) as kept:
            yield kept
        return
    if store is None:
        with temporary_memory(lm, embedder=embedder, **opts) as memory:
            began = time.perf_counter()
            recorded = ingest_history(memory, history, progress=progress)
            yield HistoryMemory(memory, time.perf_counter() - began, recorded)
        return
    Path(store).mkdir(parents=True, exist_ok=True)
    memory = open_memory(lm, store, embedder=embedder, **opts)
    if fresh:
        for user in memory.store.users():
            memory.forget_user(user)
    present = _user_counts(memory)
    seconds = 0.0
    recorded = 0
    if not present:
        began = time.perf_counter()
        recorded = ingest_history(memory, history, progress=progress)
        seconds = time.perf_counter() - began
    else:
        _check_holds(memory, history, store, present)
        for user in present:  # a store kept by an older version lacks this flag
            memory.store.fill_tool_contrasts(user)
    try:
        yield HistoryMemory(memory, seconds, recorded, str(store))
    finally:
        _close(memory)


def _user_counts(memory: Memory) -> dict[str, int]:
    present = {u: memory.store.count(u) for u in memory.store.users()}
    return {u: n for u, n in present.items() if n}


def _check_holds(
    memory: Memory,
    history: Sequence[PersonalRecord],
    where: str | Path,
    present: Mapping[str, int] | None = None,
    hint: str = "use an empty or matching directory",
) -> None:
    expected: dict[str, int] = defaultdict(int)
    for r in history:
        expected[r.user_id] += 1
    present = _user_counts(memory) if present is None else present
    if dict(present) != dict(expected):
        raise ValueError(
            f"store {where} holds other trajectories ({sum(present.values())} of "
            f"{len(present)} users) than the {len(history)} history records of "
            f"{len(expected)} users of this run: {hint}"
        )


def _close(memory: Memory) -> None:
    """Releases the Chroma client of a memory (its files can then be moved or removed)."""
    close = getattr(memory.store.client, "close", None)
    if callable(close):
        close()


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


def _trajectory(record: PersonalRecord) -> dict[str, Any]:
    return {
        "user_id": record.user_id,
        "messages": [m.model_dump() for m in record.messages],
        "tools": record.openai_tools(),
        "chosen": record.chosen.as_dict(),
        "rejected": [r.as_dict() for r in record.rejected] or None,
    }


def ingest_history(
    memory: Memory, records: Sequence[PersonalRecord], *, progress: bool = True
) -> int:
    """Records ``history`` records into a memory, each user's in turn order.

    Args:
        memory: The memory.
        records: Records; only ``split == "history"`` ones are recorded.
        progress: Show a progress bar.

    Returns:
        How many trajectories were recorded.
    """
    history = _history(records)
    if not history:
        return 0
    memory.record_many([_trajectory(r) for r in history], progress=progress)
    return len(history)


# --------------------------------------------------------------------------------------------
# Answering
# --------------------------------------------------------------------------------------------


@dataclass
class TurnOutcome:
    """One answered test turn.

    Attributes:
        record: The test record.
        call: The predicted call (``{"name", "arguments"}``), or None without a call.
        score: Its score against the record.
        prompt_tokens: Prompt length (0 for ``knn``).
        latency_s: Wall time per turn, in seconds (batch wall time / rows).
        steering: Which trajectories personalized the turn.
    """

    record: PersonalRecord
    call: dict[str, Any] | None
    score: CallScore
    prompt_tokens: int
    latency_s: float
    steering: dict[str, Any] = field(default_factory=dict)


def _predicted(result: TurnResult) -> dict[str, Any] | None:
    if result.calls:
        return {"name": result.calls[0].name, "arguments": dict(result.calls[0].arguments)}
    if result.invalid_calls and result.invalid_calls[0].name:
        bad = result.invalid_calls[0]
        return {"name": bad.name, "arguments": bad.args}
    return None


def _request(
    record: PersonalRecord, personalization: str, max_new_tokens: int, copy_strings: bool = False
) -> TurnRequest:
    from fints_agent.calls import to_tool_specs
    from fints_agent.turn import TurnRequest

    return TurnRequest(
        messages=[m.model_dump() for m in record.messages],
        tools=to_tool_specs(record.openai_tools()),
        tool_choice="any",
        user_id=record.user_id,
        personalization=personalization,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        copy_strings=copy_strings,
    )


def knn_call(memory: Memory, record: PersonalRecord) -> tuple[dict[str, Any] | None, str | None]:
    """The ``knn`` baseline: the call of the user's most similar past trajectory.

    Only trajectories whose tool is offered this turn count (the memory's tool matching); no
    similarity threshold applies.

    Args:
        memory: The memory holding the user's trajectories.
        record: The turn to answer.

    Returns:
        ``(call, trajectory id)``, or ``(None, None)`` when the user has no usable trajectory.
    """
    retrieval = memory.retrieve(
        record.user_id,
        [m.model_dump() for m in record.messages],
        record.openai_tools(),
        k=1,
        min_similarity=-2.0,
    )
    if not retrieval.calls:
        return None, None
    call = retrieval.calls[0]
    tid = retrieval.trajectory_ids[0] if retrieval.trajectory_ids else None
    return {"name": call.get("name"), "arguments": dict(call.get("arguments") or {})}, tid


def _length_key(record: PersonalRecord) -> tuple[int, int]:
    return (len(json.dumps(record.openai_tools())), len(record.request))


def answer_turns(
    records: Sequence[PersonalRecord],
    method: str,
    *,
    engine: TurnEngine | None = None,
    memory: Memory | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    copy_strings: bool = False,
    on_batch: Any = None,
) -> list[TurnOutcome]:
    """Answers independent turns in padded batches (similar prompt lengths together).

    Args:
        records: The turns; they must not depend on each other (no feedback between them).
        method: One of :data:`METHODS`.
        engine: The turn engine (LM methods).
        memory: The memory (``knn``).
        batch_size: Rows per batch.
        max_new_tokens: Token budget of a call.
        copy_strings: Restrict free string arguments to spans of the request
            (:mod:`fints_agent.calls.spans`).
        on_batch: Called with the number of rows after each batch (progress).

    Returns:
        One outcome per record, in the order of ``records``.

    Raises:
        ValueError: Unknown method, or the engine or memory it needs is missing.
    """
    _check_method(method)
    outcomes: list[TurnOutcome | None] = [None] * len(records)
    if method == "knn":
        if memory is None:
            raise ValueError("the knn baseline needs a memory")
        for i, record in enumerate(records):
            start = time.perf_counter()
            call, tid = knn_call(memory, record)
            elapsed = time.perf_counter() - start
            steering = {"trajectories": [{"id": tid}] if tid else []}
            outcomes[i] = TurnOutcome(record, call, score_call(call, record), 0, elapsed, steering)
            if on_batch is not None:
                on_batch(1)
        return [o for o in outcomes if o is not None]
    if engine is None:
        raise ValueError(f"method {method!r} needs a turn engine")
    personalization = personalization_of(method)
    order = sorted(range(len(records)), key=lambda i: _length_key(records[i]))
    size = max(1, batch_size)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        requests = [
            _request(records[i], personalization, max_new_tokens, copy_strings) for i in chunk
        ]
        began = time.perf_counter()
        results = engine.complete_batch(requests)
        per_turn = (time.perf_counter() - began) / len(chunk)
        for i, result in zip(chunk, results, strict=True):
            call = _predicted(result)
            outcomes[i] = TurnOutcome(
                records[i],
                call,
                score_call(call, records[i]),
                result.prompt_tokens,
                per_turn,
                result.steering,
            )
        if on_batch is not None:
            on_batch(len(chunk))
    return [o for o in outcomes if o is not None]


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine a run used: OS, CPU, core count, torch threads and version."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def decided_by(record: PersonalRecord) -> str:
    """Whether the user's preference or the request decides a record's tool.

    ``"preference"`` when a rejected call names another tool (the record marks another tool as
    plausible for the request, so the user's preference decides), else ``"request"``.
    """
    from fints_agent.memory.store import contrasts_tool  # keeps torch out of this import

    rejected = [{"name": r.name} for r in record.rejected]
    return "preference" if contrasts_tool({"name": record.chosen.name}, rejected) else "request"


def _rates(outcomes: Sequence[TurnOutcome]) -> dict[str, Any]:
    s = summarize([o.score for o in outcomes])
    return {k: s[k] for k in ("n", "function_acc", "arg_acc", "call_acc", "valid_rate")}


def summarize_outcomes(
    outcomes: Sequence[TurnOutcome], follows: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Accuracy, validity, prompt size, latency, and breakdowns by user kind and preference.

    Args:
        outcomes: Answered turns.
        follows: Per outcome index, ``"new"``/``"old"``/``"neither"`` for turns where a
            changed preference matters (see :func:`follow_label`).

    Returns:
        :func:`~fints_agent.eval.scoring.summarize` fields plus ``by_user_kind``,
        ``by_decider`` (turns whose tool the preference or the request decides, see
        :func:`decided_by`) and
        ``changed_preference`` (``n``, ``follows_new``, ``follows_old`` rates).
    """
    tokens = [o.prompt_tokens for o in outcomes if o.prompt_tokens]
    summary = summarize([o.score for o in outcomes], tokens, [o.latency_s for o in outcomes])
    kinds: dict[str, list[TurnOutcome]] = defaultdict(list)
    for o in outcomes:
        kinds[str((o.record.meta or {}).get("user_kind", "unknown"))].append(o)
    summary["by_user_kind"] = {kind: _rates(group) for kind, group in sorted(kinds.items())}
    deciders: dict[str, list[TurnOutcome]] = defaultdict(list)
    for o in outcomes:
        deciders[decided_by(o.record)].append(o)
    summary["by_decider"] = {k: _rates(group) for k, group in sorted(deciders.items())}
    labels = list((follows or {}).values())
    summary["changed_preference"] = {
        "n": len(labels),
        "follows_new": round(labels.count("new") / len(labels), 4) if labels else None,
        "follows_old": round(labels.count("old") / len(labels), 4) if labels else None,
    }
    return summary


@dataclass
class PersonalRun:
    """A finished benchmark run.

    Attributes:
        summary: The JSON summary (what the command prints).
        outcomes: Every answered turn.
        history_counts: Per user, history records per domain.
        follows: Per outcome index, whether a changed preference was followed.
    """

    summary: dict[str, Any]
    outcomes: list[TurnOutcome]
    history_counts: dict[str, dict[str, int]]
    follows: dict[int, str]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per answered turn (for plots)."""
        out = []
        for i, o in enumerate(self.outcomes):
            r = o.record
            meta = r.meta or {}
            domain = str(meta.get("domain", ""))
            counts = self.history_counts.get(r.user_id, {})
            out.append(
                {
                    "method": self.summary.get("method"),
                    "user_id": r.user_id,
                    "turn": r.turn,
                    "user_kind": meta.get("user_kind"),
                    "domain": domain,
                    "family": meta.get("family"),
                    "phase": meta.get("phase"),
                    "n_history_domain": counts.get(domain, 0),
                    "n_history": sum(counts.values()),
                    "function": o.score.function,
                    "args": o.score.args,
                    "call": o.score.call,
                    "valid": o.score.valid,
                    "error": o.score.error,
                    "follows": self.follows.get(i),
                    "predicted": o.call,
                    "gold": r.chosen.as_dict(),
                    "prompt_tokens": o.prompt_tokens,
                    "latency_s": round(o.latency_s, 4),
                    "steered": bool(o.steering.get("steered", False)),
                    "trajectories": [t.get("id") for t in o.steering.get("trajectories", [])],
                }
            )
        return out

    def write_rows(self, path: str | Path) -> None:
        """Writes :meth:`rows` as JSON Lines."""
        with open(path, "w", encoding="utf-8") as handle:
            for row in self.rows():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run_personal(
    lm: LoadedModel | None,
    records: Sequence[PersonalRecord],
    method: str,
    *,
    config: Preset | None = None,
    k: int | None = None,
    online: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    copy_strings: bool = False,
    memory: Memory | None = None,
    embedder: str | Embedder = "minilm",
    progress: bool = True,
    engine_factory: Callable[..., Any] | None = None,
    cache: bool = False,
    fresh: bool = False,
) -> PersonalRun:
    """Runs one method of the personalized benchmark.

    Args:
        lm: The model (``knn`` still needs it to record history vectors, unless a ready
            ``memory`` is given).
        records: All records (history and test).
        method: One of :data:`METHODS`.
        config: Retrieval, steering and decoding options (default: the model's preset).
        k: Trajectories retrieved per turn (default: the configuration's).
        online: Record each test turn's gold call as feedback after answering it.
        limit: Answer at most this many test turns (spread over users).
        batch_size: Turns per padded batch.
        max_new_tokens: Token budget of a call.
        copy_strings: Restrict free string arguments to spans of the request
            (:mod:`fints_agent.calls.spans`).
        memory: A memory that already holds exactly these records' history (it is not
            ingested again; with ``online`` it receives the feedback). Default: the history
            of the users answered, recorded here (see ``cache``).
        embedder: Retrieval embedder of the history memory.
        progress: Show progress bars.
        engine_factory: Builds the engine from ``(lm, memory, config)`` (default
            :class:`~fints_agent.engine.TurnEngine`).
        cache: Keep the recorded history in the user cache and reuse it when the same
            history is recorded again with the same model and vector settings (see
            :func:`history_memory`); with ``online``, the feedback goes to a copy. Default: a
            temporary memory, removed afterwards.
        fresh: With ``cache``, record the history again (replacing the kept store).

    Returns:
        The :class:`PersonalRun`; its summary tells ``recorded_trajectories`` (0 when a kept
        store was reused), ``ingest_seconds`` and ``history_store`` (the kept store, if any).

    Raises:
        ValueError: Unknown method, bad limit or batch size, or no test records.
    """
    _check_method(method)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    grouped = group_by_user(records)
    picked = select_test_records(grouped, limit)
    if not picked:
        raise ValueError("no test records to answer (is there a split 'test'?)")
    needs_memory = method != "zero-shot"
    if lm is None and (method != "knn" or memory is None):
        raise ValueError(f"method {method!r} needs a model")
    if lm is not None and config is None:
        from fints_agent.config import Preset

        config = Preset.for_model(lm.fingerprint)
    vectors = config.vector_kind if config is not None else "contrast"
    users = set(picked)  # users are isolated: only those answered need their history
    answered = [r for r in records if r.user_id in users]
    with _memory_scope(
        lm,
        memory,
        needs_memory,
        answered,
        embedder,
        vectors,
        cache=cache,
        fresh=fresh,
        writable=online,
        progress=progress,
    ) as ingest:
        run = _answer_all(
            lm,
            grouped,
            picked,
            method,
            ingest.memory if ingest is not None else memory,
            config,
            k,
            online,
            batch_size,
            max_new_tokens,
            progress,
            engine_factory,
            copy_strings=copy_strings,
        )
        run.summary["ingest_seconds"] = round(ingest.seconds, 1) if ingest else 0.0
        run.summary["recorded_trajectories"] = ingest.recorded if ingest else 0
        run.summary["history_store"] = ingest.location if ingest else None
        return run


@contextmanager
def _memory_scope(
    lm: LoadedModel | None,
    memory: Memory | None,
    needed: bool,
    records: Sequence[PersonalRecord],
    embedder: str | Embedder,
    vectors: str,
    **how: Any,
) -> Iterator[HistoryMemory | None]:
    """The history memory of a run (None: the given memory, or none needed)."""
    if memory is not None or not needed:
        yield None
        return
    assert lm is not None
    with history_memory(
        lm, records, embedder=embedder, options={"vectors": vectors}, **how
    ) as ingest:
        yield ingest


def _answer_all(
    lm: LoadedModel | None,
    grouped: Mapping[str, UserRecords],
    picked: Mapping[str, list[PersonalRecord]],
    method: str,
    memory: Memory | None,
    config: Preset | None,
    k: int | None,
    online: bool,
    batch_size: int,
    max_new_tokens: int,
    progress: bool,
    engine_factory: Callable[..., Any] | None,
    *,
    copy_strings: bool = False,
) -> PersonalRun:
    from tqdm.auto import tqdm

    engine = None
    if method != "knn":
        from fints_agent.engine import TurnEngine

        assert lm is not None and config is not None  # run_personal resolves it
        cfg = config
        if k is not None:
            cfg = cfg.replace(k=k)
        engine = (engine_factory or TurnEngine)(lm, memory, cfg)
        config = cfg
    if online and memory is None:
        raise ValueError("online feedback needs a memory (not with zero-shot)")

    rounds: list[list[PersonalRecord]]
    if online:
        depth = max(len(v) for v in picked.values())
        rounds = [[v[d] for v in picked.values() if d < len(v)] for d in range(depth)]
    else:
        rounds = [[r for v in picked.values() for r in v]]
    total = sum(len(r) for r in rounds)
    outcomes: list[TurnOutcome] = []
    began = time.perf_counter()
    with tqdm(total=total, desc=f"personal {method}", unit="turn", disable=not progress) as bar:
        for turns in rounds:
            outcomes.extend(
                answer_turns(
                    turns,
                    method,
                    engine=engine,
                    memory=memory,
                    batch_size=batch_size,
                    max_new_tokens=max_new_tokens,
                    copy_strings=copy_strings,
                    on_batch=bar.update,
                )
            )
            if online and memory is not None:
                memory.record_many([_trajectory(r) for r in turns], progress=False)
    elapsed = time.perf_counter() - began

    history_counts = {u: domain_history_counts(g) for u, g in grouped.items()}
    old_prefs = {u: _old_preferences(g) for u, g in grouped.items()}
    follows: dict[int, str] = {}
    for i, o in enumerate(outcomes):
        domain = str((o.record.meta or {}).get("domain", ""))
        old = old_preference_call(o.record, old_prefs.get(o.record.user_id, {}).get(domain))
        if old is not None:
            follows[i] = follow_label(o.call, o.record.chosen.as_dict(), old)

    summary: dict[str, Any] = {"method": method}
    summary.update(summarize_outcomes(outcomes, follows))
    summary.update(
        {
            "latency_basis": LATENCY_BASIS if method != "knn" else "retrieval time per turn",
            "batch_size": batch_size if method != "knn" else 1,
            "online": online,
            "copy_strings": copy_strings if method != "knn" else None,
            "k": config.retrieval.k if config is not None else 1,
            "eval_seconds": round(elapsed, 1),
            "turns_per_second": round(total / elapsed, 3) if elapsed > 0 else None,
            "users": len(picked),
            "model": lm.name if lm is not None else None,
            "fingerprint": lm.fingerprint if lm is not None else None,
            "config": config.model_dump() if config is not None and method != "zero-shot" else None,
            "machine": machine_info(),
        }
    )
    return PersonalRun(summary, outcomes, history_counts, follows)
