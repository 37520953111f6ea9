"""Checking recorded calls, and building rejected calls (negatives) when none are given.

A trajectory's steering vector is ``mean_act(prompt + chosen) - mean_act(prompt + rejected)``, so
what the rejected calls differ in is what the vector encodes. When the caller gives no rejected
calls, Fints uses calls generated for the same request with another user's memory. Generating
them needs the model and a decode per trajectory; this module builds the same kind of
alternatives directly, in this order of preference (the first ``n`` distinct ones are used):

1. ``"others"``: what *other users* chose for similar requests. Their choice (tool name plus the
   values of enum and boolean arguments, never free text) is applied to this request: arguments
   that are not choices (copied spans such as a city or a query) keep this call's values, so the
   vector encodes the preference, not the copied text.
2. ``"variants"``: the same tool with one enum or boolean argument set to another allowed value
   (for example ``units="celsius"`` instead of ``"fahrenheit"``).
3. ``"tools"``: another tool from the offered set, its arguments filled from this call's
   arguments of the same name, then from the request text for string slots, then from the
   schema (enum: first value, number: minimum or 1, boolean: false, array: empty or minimal).
4. ``"defaults"``: the chosen tool with schema-default arguments.

Every negative validates against its tool's schema and differs from the chosen call. Calls the
unsteered model would make can be supplied instead through ``Memory(negative_fn=...)``.

Example:
    >>> chosen = normalize_call({"name": "get_weather", "arguments": {"city": "Oslo",
    ...                          "units": "celsius"}}, specs)
    >>> [c.arguments for c in build_negatives(chosen, specs, "weather in Oslo", n=2)]
    [{'city': 'Oslo', 'units': 'fahrenheit'}, ...]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fints_agent.calls import (
    ToolSchemaError,
    ToolSpec,
    example_value,
    order_arguments,
    to_tool_specs,
    validate_arguments,
)
from fints_agent.calls.validators import schema_validator

__all__ = [
    "NEGATIVE_SOURCES",
    "Call",
    "InvalidCallError",
    "MemoryInputError",
    "build_negatives",
    "call_choices",
    "contrasts_tool",
    "fill_arguments",
    "is_choice",
    "normalize_call",
    "plain_messages",
    "tool_specs",
]

NEGATIVE_SOURCES = ("others", "variants", "tools", "defaults")
"""Where negatives come from, in order of preference (see the module docstring)."""


class MemoryInputError(ValueError):
    """Bad input to the memory: empty request, bad user id, malformed messages or tools."""


class InvalidCallError(MemoryInputError):
    """A call is malformed, names a tool that was not offered, or fails the tool's schema."""


@dataclass(frozen=True)
class Call:
    """A tool call: a tool name and its arguments (keys in schema order).

    Attributes:
        name: The tool name.
        arguments: The arguments.
        source: Where a negative came from (``"given"`` for calls passed in).
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    source: str = "given"

    def as_dict(self) -> dict[str, Any]:
        """``{"name": ..., "arguments": {...}}``."""
        return {"name": self.name, "arguments": copy.deepcopy(self.arguments)}

    def key(self) -> str:
        """Canonical JSON of name and arguments (for equality up to key order)."""
        return json.dumps([self.name, self.arguments], sort_keys=True, ensure_ascii=False)


def tool_specs(tools: Sequence[Any] | None) -> list[ToolSpec]:
    """Tool specs from any tool form :func:`fints_agent.calls.specs.to_tool_specs` accepts.

    Raises:
        MemoryInputError: A tool cannot be read.
    """
    if not tools:
        return []
    try:
        return to_tool_specs(list(tools))
    except ToolSchemaError as exc:
        raise MemoryInputError(f"bad tools: {exc}") from exc


_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def plain_messages(messages: Any) -> list[dict[str, Any]]:
    """Messages as plain role/content dicts.

    Accepts dicts and message objects with ``type``/``role`` and ``content`` attributes (such as
    LangChain messages).

    Raises:
        MemoryInputError: ``messages`` is not a sequence of messages.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise MemoryInputError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for m in messages:
        if isinstance(m, Mapping):
            out.append(dict(m))
        elif hasattr(m, "content") and (hasattr(m, "type") or hasattr(m, "role")):
            role = getattr(m, "role", None) or _ROLES.get(str(m.type), str(m.type))
            out.append({"role": role, "content": m.content})
        else:
            raise MemoryInputError(f"a message must be a dict, got {type(m).__name__}")
    return out


def normalize_call(call: Any, specs: Sequence[ToolSpec], *, what: str = "call") -> Call:
    """Check a call against the offered tools and return it with arguments in schema order.

    Accepts ``{"name": ..., "arguments": {...}}`` (also ``"args"``, or arguments as a JSON
    string), an OpenAI ``{"function": {...}}`` call, or an object with ``name`` and
    ``arguments``/``args`` attributes.

    Raises:
        InvalidCallError: Malformed call, unknown tool, or arguments that fail the schema.
    """
    if isinstance(call, Call):
        name: Any = call.name
        arguments: Any = call.arguments
    elif isinstance(call, Mapping):
        function = call.get("function")
        body: Mapping[str, Any] = function if isinstance(function, Mapping) else call
        name = body.get("name")
        arguments = body.get("arguments", body.get("args", {}))
    elif hasattr(call, "name"):
        name = call.name
        arguments = getattr(call, "arguments", getattr(call, "args", {}))
    else:
        raise InvalidCallError(
            f"{what} must be a dict with 'name' and 'arguments', got {type(call).__name__}"
        )
    if not isinstance(name, str) or not name:
        raise InvalidCallError(f"{what} needs a non-empty string 'name', got {name!r}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidCallError(f"{what} {name!r}: arguments are not valid JSON: {exc}") from exc
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise InvalidCallError(
            f"{what} {name!r}: arguments must be an object, got {type(arguments).__name__}"
        )
    by_name = {s.name: s for s in specs}
    spec = by_name.get(name)
    if spec is None:
        offered = ", ".join(sorted(by_name)) or "none"
        raise InvalidCallError(f"{what} names tool {name!r}, which was not offered ({offered})")
    try:
        json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidCallError(f"{what} {name!r}: arguments are not plain JSON: {exc}") from exc
    problem = validate_arguments(spec, dict(arguments))
    if problem is not None:
        raise InvalidCallError(f"{what} {name!r}: arguments fail the tool's schema: {problem}")
    ordered = order_arguments(copy.deepcopy(dict(arguments)), spec.parameters)
    source = call.source if isinstance(call, Call) else "given"
    return Call(name, ordered, source)


# -- schema helpers ------------------------------------------------------------------------------


def _properties(spec: ToolSpec) -> dict[str, Any]:
    props = spec.parameters.get("properties")
    return dict(props) if isinstance(props, Mapping) else {}


def is_choice(schema: Any) -> bool:
    """Whether an argument's schema is a choice: an enum or a boolean (a preference, not text)."""
    return isinstance(schema, Mapping) and (
        isinstance(schema.get("enum"), list) or schema.get("type") == "boolean"
    )


def _choice_values(schema: Mapping[str, Any]) -> list[Any]:
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    return [False, True]


def call_choices(call: Call, spec: ToolSpec) -> dict[str, Any]:
    """The call's values of enum and boolean arguments (its preferences, not copied text)."""
    props = _properties(spec)
    return {k: v for k, v in call.arguments.items() if is_choice(props.get(k))}


def contrasts_tool(chosen: Mapping[str, Any], rejected: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a rejected call names another tool than the chosen call.

    A trajectory whose rejected calls all use the chosen tool contrasts only argument values:
    its vector says nothing about which tool to call.

    Example:
        >>> contrasts_tool({"name": "a"}, [{"name": "a"}, {"name": "b"}])
        True
    """
    name = chosen.get("name")
    return any(r.get("name") != name for r in rejected)


def fill_arguments(
    spec: ToolSpec,
    source: Mapping[str, Any],
    text: str,
    *,
    choices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Arguments for ``spec`` borrowed from another call's arguments and the request.

    Each property takes, in order: the value of ``choices`` for it, the value of ``source`` for
    a property of the same name (when that value fits the property), a schema default for a
    required property (strings get the request text). Optional properties with nothing to
    borrow are left out.
    """
    props = _properties(spec)
    required = spec.parameters.get("required")
    required = list(required) if isinstance(required, list) else []
    picked = dict(choices or {})
    args: dict[str, Any] = {}
    for key, schema in props.items():
        if key in picked:
            args[key] = picked[key]
            continue
        if key in source:
            try:
                ok = schema_validator(schema, root=spec.parameters).is_valid(source[key])
            except Exception:  # an unresolvable reference: do not borrow
                ok = False
            if ok:
                args[key] = copy.deepcopy(source[key])
                continue
        if key in required:
            args[key] = example_value(schema, text, root=spec.parameters)
    return args


# -- negatives ----------------------------------------------------------------------------------


def _valid(name: str, args: dict[str, Any], spec: ToolSpec, source: str) -> Call | None:
    if validate_arguments(spec, args) is not None:
        return None
    return Call(name, order_arguments(args, spec.parameters), source)


def _from_others(
    chosen: Call,
    by_name: Mapping[str, ToolSpec],
    text: str,
    others: Iterable[tuple[str, Mapping[str, Any]]],
) -> Iterable[Call]:
    for name, choices in others:
        spec = by_name.get(name)
        if spec is None:
            continue
        if name == chosen.name:
            props = _properties(spec)
            args = {**chosen.arguments, **{k: v for k, v in choices.items() if k in props}}
        else:
            args = fill_arguments(spec, chosen.arguments, text, choices=choices)
        call = _valid(name, args, spec, "others")
        if call is not None:
            yield call


def _variants(chosen: Call, spec: ToolSpec) -> Iterable[Call]:
    # Round-robin over the choice arguments, so two negatives change two different choices.
    props = _properties(spec)
    options = [
        (key, [v for v in _choice_values(schema) if v != chosen.arguments[key]])
        for key, schema in props.items()
        if is_choice(schema) and key in chosen.arguments
    ]
    for i in range(max((len(values) for _, values in options), default=0)):
        for key, values in options:
            if i < len(values):
                call = _valid(chosen.name, {**chosen.arguments, key: values[i]}, spec, "variants")
                if call is not None:
                    yield call


def _other_tools(chosen: Call, specs: Sequence[ToolSpec], text: str) -> Iterable[Call]:
    for spec in specs:
        if spec.name == chosen.name:
            continue
        call = _valid(spec.name, fill_arguments(spec, chosen.arguments, text), spec, "tools")
        if call is not None:
            yield call


def _defaults(chosen: Call, spec: ToolSpec, text: str) -> Iterable[Call]:
    for args in (fill_arguments(spec, {}, ""), fill_arguments(spec, {}, text)):
        call = _valid(chosen.name, args, spec, "defaults")
        if call is not None:
            yield call


def build_negatives(
    chosen: Call,
    specs: Sequence[ToolSpec],
    text: str,
    *,
    n: int = 2,
    others: Iterable[tuple[str, Mapping[str, Any]]] = (),
    sources: Sequence[str] = NEGATIVE_SOURCES,
) -> list[Call]:
    """Up to ``n`` distinct valid calls that differ from ``chosen`` (see the module docstring).

    Args:
        chosen: The chosen call (already normalized).
        specs: The tools offered.
        text: The request text (fills string slots of other tools).
        n: How many negatives.
        others: ``(tool name, choices)`` of other users' calls for similar requests, most
            similar first.
        sources: Which sources to use, in order.

    Raises:
        ValueError: An unknown source name.
    """
    unknown = [s for s in sources if s not in NEGATIVE_SOURCES]
    if unknown:
        raise ValueError(f"unknown negative sources {unknown}; use {NEGATIVE_SOURCES}")
    by_name = {s.name: s for s in specs}
    spec = by_name[chosen.name]
    generators: dict[str, Iterable[Call]] = {
        "others": _from_others(chosen, by_name, text, others),
        "variants": _variants(chosen, spec),
        "tools": _other_tools(chosen, specs, text),
        "defaults": _defaults(chosen, spec, text),
    }
    seen = {chosen.key()}
    result: list[Call] = []
    for source in sources:
        for call in generators[source]:
            if len(result) >= n:
                return result
            if call.key() in seen:
                continue
            seen.add(call.key())
            result.append(call)
    return result[:n]
