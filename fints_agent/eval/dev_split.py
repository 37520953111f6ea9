"""The records tuning works on: which users, and which of their HISTORY records are dev turns.

Only history records are read (test records are dropped first). Per user, the latest records
are held out as dev turns while a record with the same offered tools stays to be recorded
(:func:`tuning_split`); :func:`pick_users` spreads the users tuned on over user kinds.

Example:
    >>> ingest, dev = tuning_split(records, dev_per_user=3, users=pick_users(records, 12))
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from fints_agent.eval.dataset import PersonalRecord

__all__ = ["pick_users", "tuning_split"]


def _tool_set(record: PersonalRecord) -> tuple[str, ...]:
    return tuple(sorted(t.function.name for t in record.tools))


def tuning_split(
    records: Sequence[PersonalRecord], dev_per_user: int = 2, users: Sequence[str] | None = None
) -> tuple[list[PersonalRecord], list[PersonalRecord]]:
    """Splits HISTORY records into (ingest, dev): each user's latest records are the dev set.

    Test records are dropped first and never looked at again. A record is held out only while
    another record of the user with the same offered tools stays to be ingested: a dev turn
    whose kind of request the memory has never seen tests nothing the configuration can change
    (a sparse user's only weather turn would get no vector). A user keeps at least two history
    records to ingest; users with fewer than ``dev_per_user + 2`` history records contribute
    fewer dev records. Per set of offered tools, the dev records are later than the ingested
    ones.

    Args:
        records: Records of any split.
        dev_per_user: How many of each user's latest history records to hold out.
        users: Restrict to these users (default: all).

    Returns:
        ``(ingest, dev)`` lists of history records, each sorted by user and turn.
    """
    history = [r for r in records if r.split == "history"]
    assert all(r.split == "history" for r in history)
    wanted = None if users is None else set(users)
    per_user: dict[str, list[PersonalRecord]] = defaultdict(list)
    for r in history:
        if wanted is None or r.user_id in wanted:
            per_user[r.user_id].append(r)
    ingest: list[PersonalRecord] = []
    dev: list[PersonalRecord] = []
    for user in sorted(per_user):
        rows = sorted(per_user[user], key=lambda r: r.turn)
        left = Counter(_tool_set(r) for r in rows)
        held: set[int] = set()
        for i in range(len(rows) - 1, -1, -1):
            if len(held) >= dev_per_user or len(rows) - len(held) <= 2:
                break
            if left[_tool_set(rows[i])] >= 2:
                held.add(i)
                left[_tool_set(rows[i])] -= 1
        ingest.extend(r for i, r in enumerate(rows) if i not in held)
        dev.extend(r for i, r in enumerate(rows) if i in held)
    return ingest, dev


def pick_users(records: Sequence[PersonalRecord], n: int | None) -> list[str]:
    """Up to ``n`` users, spread over user kinds (round-robin over ``meta.user_kind``).

    Only history records are read.
    """
    kinds: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.split != "history":
            continue
        kind = str((r.meta or {}).get("user_kind", ""))
        if r.user_id not in kinds[kind]:
            kinds[kind].append(r.user_id)
    order: list[str] = []
    depth = 0
    while any(depth < len(v) for v in kinds.values()):
        for kind in sorted(kinds):
            if depth < len(kinds[kind]):
                order.append(kinds[kind][depth])
        depth += 1
    return order if n is None else order[:n]
