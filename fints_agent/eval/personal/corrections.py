"""One correction is enough: a changed preference, answered turn by turn, corrected online.

The corrections protocol (``fints-agent eval personal --corrections``) replays the users whose
preference changed as a live user would meet the change:

1. The memory holds each changed user's history from *before* the change (old-phase and
   unchanged-domain history records).
2. Every record after the change (the ``new``-phase records, history and test, in turn order)
   is a turn of the stream: answered, then recorded as the user's feedback, with the model's
   call rejected when it was wrong (``feedback="correction"``) and the record's own rejected
   calls otherwise.
3. Each turn is labelled with the number of corrections its user had given in its domain
   before it (0 for the first turn after the change), and with the preference the answer
   follows (:func:`~fints_agent.eval.personal.preferences.follow_label`).

:func:`by_corrections` gives, per count, the share of turns that follow the new preference:
how fast the model listens. ``zero-shot`` answers the same turns without feedback (a flat
line: it has no memory).

Example:
    >>> run = run_corrections(lm, records, "rag+steer")
    >>> run.summary["by_corrections"]["1"]["follows_new"]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fints_agent.eval.personal.protocol import run_personal

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.eval.personal.summary import PersonalRun
    from fints_agent.models import LoadedModel

__all__ = ["MAX_CORRECTIONS", "by_corrections", "corrections_records", "run_corrections"]

MAX_CORRECTIONS = 3
"""Counts above this are reported together (``"3+"``)."""


def _phase(record: PersonalRecord) -> str:
    return str((record.meta or {}).get("phase", ""))


def _domain(record: PersonalRecord) -> str:
    return str((record.meta or {}).get("domain", ""))


def corrections_records(records: Sequence[PersonalRecord]) -> list[PersonalRecord]:
    """The records of the corrections protocol.

    Only users of kind ``changed``: their history records before the change stay history;
    every ``new``-phase record (history or test) becomes a test turn, in turn order. Other
    test records are left out.

    Raises:
        ValueError: The records have no user whose preference changed.
    """
    changed = {r.user_id for r in records if (r.meta or {}).get("user_kind") == "changed"}
    out: list[PersonalRecord] = []
    for r in records:
        if r.user_id not in changed:
            continue
        if _phase(r) == "new":
            out.append(r.model_copy(update={"split": "test"}))
        elif r.split == "history":
            out.append(r)
    if not any(r.split == "test" for r in out):
        raise ValueError("no user whose preference changed (meta.user_kind 'changed')")
    return sorted(out, key=lambda r: (r.user_id, r.turn))


def corrections_before(records: Sequence[PersonalRecord]) -> list[int]:
    """Per test record, how many test records of its user and domain came before it."""
    seen: dict[tuple[str, str], int] = defaultdict(int)
    order = sorted(range(len(records)), key=lambda i: (records[i].user_id, records[i].turn))
    out = [0] * len(records)
    for i in order:
        key = (records[i].user_id, _domain(records[i]))
        out[i] = seen[key]
        seen[key] += 1
    return out


def by_corrections(run: PersonalRun) -> dict[str, dict[str, Any]]:
    """Per number of corrections before a turn (``"0"``, ``"1"``, ``"2"``, ``"3+"``): turns
    where the change matters (``n``) and the shares following the new and the old preference."""
    records = [o.record for o in run.outcomes]
    counts = corrections_before(records)
    groups: dict[str, list[str]] = defaultdict(list)
    for i, label in run.follows.items():
        c = counts[i]
        key = str(c) if c < MAX_CORRECTIONS else f"{MAX_CORRECTIONS}+"
        groups[key].append(label)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(groups, key=lambda k: int(k.rstrip("+"))):
        labels = groups[key]
        out[key] = {
            "n": len(labels),
            "follows_new": round(labels.count("new") / len(labels), 4),
            "follows_old": round(labels.count("old") / len(labels), 4),
        }
    return out


def run_corrections(
    lm: LoadedModel | None, records: Sequence[PersonalRecord], method: str, **options: Any
) -> PersonalRun:
    """Runs one method on the corrections protocol (see the module).

    Args:
        lm: The model.
        records: All records of a dataset (only changed users are used).
        method: One of :data:`~fints_agent.eval.personal.METHODS`.
        **options: Further :func:`~fints_agent.eval.personal.run_personal` options (not
            ``online`` or ``feedback``, which the protocol sets).

    Returns:
        The run; its summary adds ``protocol: "corrections"`` and ``by_corrections``.
    """
    for fixed in ("online", "feedback"):
        if fixed in options:
            raise ValueError(f"the corrections protocol sets {fixed!r} itself")
    online = method != "zero-shot"
    run = run_personal(
        lm,
        corrections_records(records),
        method,
        online=online,
        feedback="correction",
        **options,
    )
    run.summary["protocol"] = "corrections"
    run.summary["by_corrections"] = by_corrections(run)
    return run
