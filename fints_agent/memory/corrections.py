"""Corrections: a trajectory recorded with rejected calls retires the older habits it rejects.

When a user's feedback rejects a call (``rejected``) in favour of another (``chosen``), the
rejected call says which *decisions* the user no longer wants: another tool, and values of
enum and boolean arguments that the chosen call sets differently, each on its own and for
every tool with an argument of that name (see :func:`rejected_decisions`). An older
trajectory of the same user whose chosen call makes one of those decisions is then outdated:
similarity-weighted retrieval cannot see that two similar trajectories disagree, so the more
numerous old ones would outvote the few recent ones. :func:`contradicted` finds those older
trajectories; the recorder marks them superseded by the correction, which takes them out of
retrieval (steering and examples) while they stay listed in the store.

Free-text arguments (copied from each request) never count. A rejected *tool* contradicts an
older trajectory only where that one chose it over the tool chosen now (its own rejected calls
name the new tool): both then answer the same choice, differently. An older turn that used the
tool because its request asked for it (its rejected calls are of the same tool) is no habit,
and a correction elsewhere does not retire it.

Example:
    >>> chosen = Call("search", {"cuisine": "italian"})
    >>> rejected = [Call("search", {"cuisine": "thai"})]
    >>> decision_of(chosen, rejected[0], spec)
    ('search', {'cuisine': 'thai'})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fints_agent.calls.specs import ToolSpec
from fints_agent.memory.negatives import Call, call_choices
from fints_agent.memory.records import TrajectoryRecord

_MISSING = object()

__all__ = [
    "ANY_TOOL",
    "Decision",
    "contradicted",
    "decision_of",
    "makes_decision",
    "rejected_decisions",
]

ANY_TOOL = "*"
"""The tool of a :data:`Decision` that any tool with the decision's arguments makes."""

Decision = tuple[str, dict[str, Any]]
"""A rejected decision: a tool name (or :data:`ANY_TOOL`), and the argument values rejected
with it (empty: the tool itself is rejected)."""


def decision_of(chosen: Call, rejected: Call, spec: ToolSpec | None) -> Decision | None:
    """What a rejected call rejects, compared with the chosen call.

    Args:
        chosen: The chosen call.
        rejected: One rejected call.
        spec: The rejected call's tool spec (for its enum and boolean arguments).

    Returns:
        ``(tool, {})`` when the rejected call names another tool; ``(tool, values)`` with the
        enum and boolean values in which it differs from the chosen call of the same tool; or
        ``None`` when it differs only in free text (nothing a habit decides).
    """
    if rejected.name != chosen.name:
        return (rejected.name, {})
    if spec is None:
        return None
    wanted = call_choices(chosen, spec)
    refused = call_choices(rejected, spec)
    differ = {k: v for k, v in refused.items() if wanted.get(k, _MISSING) != v}
    differ.update({k: None for k in wanted if k not in refused})
    return (rejected.name, differ) if differ else None


def makes_decision(call: Mapping[str, Any], decision: Decision) -> bool:
    """Whether a chosen call (``{"name", "arguments"}``) makes the rejected decision."""
    name, values = decision
    if name != ANY_TOOL and call.get("name") != name:
        return False
    arguments = call.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        return False
    if name == ANY_TOOL and not all(k in arguments for k in values):
        return False
    return all(arguments.get(k) == v for k, v in values.items())


def _chose_over(old: TrajectoryRecord, tool: str) -> bool:
    """Whether an older trajectory chose its tool over ``tool`` (its rejected calls name it)."""
    return any(isinstance(r, Mapping) and r.get("name") == tool for r in old.rejected)


def _add(out: list[Decision], decision: Decision) -> None:
    if decision not in out:
        out.append(decision)


def rejected_decisions(
    chosen: Call, rejected: Sequence[Call], specs: Iterable[ToolSpec]
) -> list[Decision]:
    """The decisions a trajectory's rejected calls refuse, one choice at a time.

    A rejected call of the chosen tool refuses each enum or boolean value in which it differs
    from the chosen call, each on its own (a wrong call often differs in more than the value
    the user corrects: the old cuisine *and* another service), and for every tool that has an
    argument of that name (:data:`ANY_TOOL`: the units of a forecast and of the current
    weather). A rejected call of another tool refuses that tool (see :func:`contradicted`)
    and its values of the arguments both tools share that the chosen call sets differently.

    Args:
        chosen: The trajectory's chosen call.
        rejected: Its rejected calls (given by the user's feedback, not built ones).
        specs: The tools offered with it.

    Example:
        >>> rejected_decisions(Call("forecast", {"units": "celsius"}),
        ...                    [Call("forecast", {"units": "fahrenheit"})], specs)
        [('forecast', {'units': 'fahrenheit'}), ('*', {'units': 'fahrenheit'})]
    """
    by_name = {s.name: s for s in specs}
    out: list[Decision] = []
    for r in rejected:
        d = decision_of(chosen, r, by_name.get(r.name))
        if d is None:
            continue
        name, values = d
        if not values:
            _add(out, d)
            spec, own = by_name.get(r.name), by_name.get(chosen.name)
            if spec is not None and own is not None:
                ours = call_choices(chosen, own)
                for k, v in call_choices(r, spec).items():
                    if k in ours and ours[k] != v:
                        _add(out, (ANY_TOOL, {k: v}))
            continue
        concrete = {k: v for k, v in values.items() if v is not None}
        if not concrete:
            # Only choices the rejected call leaves out: rejected together, for this tool.
            _add(out, d)
            continue
        for k, v in concrete.items():
            _add(out, (name, {k: v}))
            _add(out, (ANY_TOOL, {k: v}))
    return out


def contradicted(
    chosen: Call, decisions: Sequence[Decision], older: Iterable[TrajectoryRecord]
) -> list[str]:
    """Ids of the older trajectories whose chosen call makes one of the rejected ``decisions``.

    Args:
        chosen: The new trajectory's chosen call.
        decisions: What its rejected calls refuse (:func:`rejected_decisions`).
        older: The user's older trajectories (``id`` and ``chosen`` are read, and ``rejected``
            where a decision rejects a whole tool).

    Example:
        >>> decisions = rejected_decisions(Call("ride", {}), [Call("transit", {})], specs)
        >>> contradicted(Call("ride", {}), decisions, [old_transit_trip])
        ['3f2a...']
    """
    out = []
    for o in older:
        for name, values in decisions:
            if not makes_decision(o.chosen, (name, values)):
                continue
            # A rejected tool contradicts an older use of it only where that older turn chose
            # it over the tool chosen now: a request that asked for the tool by name (whose
            # rejected calls are of the same tool) is no habit.
            if values or _chose_over(o, chosen.name):
                out.append(o.id)
                break
    return out
