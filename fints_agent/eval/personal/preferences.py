"""Changed preferences: the call of a user's old preference, and which preference a prediction
follows.

Example:
    >>> old = old_preference_call(record, old_preference)
    >>> follow_label(predicted, record.chosen.as_dict(), old)   # "new", "old" or "neither"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fints_agent.eval.scoring import values_equal

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord, UserRecords

__all__ = ["follow_label", "old_preference_call"]


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


def _choice_arguments(tools: Sequence[Any], name: Any) -> set[str]:
    """The enum and boolean arguments of the offered tool ``name`` (dataset tool specs)."""
    from fints_agent.memory.negatives import is_choice  # the memory's notion of a choice

    for tool in tools:
        function = getattr(tool, "function", None)
        if function is None or function.name != name:
            continue
        properties = (function.parameters or {}).get("properties") or {}
        return {k for k, p in properties.items() if is_choice(p)}
    return set()


def follow_label(
    predicted: Mapping[str, Any] | None,
    chosen: Mapping[str, Any],
    old: Mapping[str, Any],
    tools: Sequence[Any] | None = None,
) -> str:
    """Whether a prediction follows the new preference, the old one, or neither.

    Only what distinguishes the two calls is compared: the tool name and the arguments whose
    values differ between them. With ``tools`` (the record's offered tools), only the enum and
    boolean ones among those arguments count: a preference is a tool and its choices, and a
    free string copied from the request (a place, a review) wrongly is an argument error,
    which call accuracy counts, not the old preference.

    Args:
        predicted: The predicted call (None: no call).
        chosen: The gold call (new preference).
        old: The call of the old preference.
        tools: The offered tools (``PersonalRecord.tools``); None compares every differing
            argument.

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
    if tools is not None:
        choices = _choice_arguments(tools, chosen.get("name"))
        choices |= _choice_arguments(tools, old.get("name"))
        keys = [k for k in keys if k in choices]
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
