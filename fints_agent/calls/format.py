"""The text format of tool calls: the markers of a call block, and writing calls as text.

A tool call is written as one block::

    <tool_call>{"name": "NAME", "arguments": {...}}</tool_call>

The JSON inside a block is compact (one line, ``", "`` and ``": "`` separators, no other
whitespace), ``name`` comes before ``arguments``, and the keys of every object follow the order
of ``properties`` in the tool's JSON schema. Several calls (parallel calls) are written as blocks
separated by :data:`CALL_SEPARATOR`. The grammars in :mod:`fints_agent.calls.grammar` produce
exactly this text, and :func:`render_call` writes it for known arguments, so a call written by
hand and a call generated under the grammar are the same string.

Reading the format back is :mod:`fints_agent.calls.tracker` (where a block opens and closes,
where the next token falls inside one) and :mod:`fints_agent.calls.parsing` (finished text into
calls).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fints_agent.calls.validators import follow_references, schema_validator

if TYPE_CHECKING:
    from fints_agent.calls.specs import ToolSpec

CALL_OPEN = "<tool_call>"
"""Opens a call block."""
CALL_CLOSE = "</tool_call>"
"""Closes a call block."""
CALL_SEPARATOR = "\n"
"""Written between two call blocks of one answer."""
JSON_SEPARATORS = (", ", ": ")
"""Item and key separators of the JSON inside a call block (as in :func:`json.dumps`)."""
NAME_PREFIX = CALL_OPEN + '{"name": "'
"""The text of a call block before the first character of the tool name."""
ARGUMENTS_INFIX = '", "arguments": '
"""The text between the tool name and the arguments object."""
CALL_SUFFIX = "}" + CALL_CLOSE
"""The text after the arguments object."""


def dump_json(value: Any) -> str:
    """Serialize a value the way the grammars write JSON.

    Args:
        value: A JSON-compatible value.

    Returns:
        Compact one-line JSON with ``", "`` / ``": "`` separators, non-ASCII kept as is.

    Raises:
        ValueError: If the value holds NaN or infinity.
        TypeError: If the value is not JSON-serializable.
    """
    return json.dumps(value, ensure_ascii=False, separators=JSON_SEPARATORS, allow_nan=False)


def order_arguments(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """Reorder the keys of every object in a value to follow its JSON schema.

    The grammars write object keys in the order of the schema's ``properties``. Keys the schema
    does not list keep their relative order after the listed ones. Local ``$ref`` pointers and
    ``anyOf``/``oneOf`` branches (the first branch the value validates against) are followed.

    Args:
        value: A JSON-compatible value (usually a call's arguments).
        schema: The JSON schema of the value, or ``None`` to leave the value as it is.

    Returns:
        A copy of ``value`` with reordered object keys.
    """
    if schema is None:
        return value
    return _order(value, schema, schema)


def _order(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    schema = follow_references(schema, root)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list):
        for branch in branches:
            if isinstance(branch, Mapping) and _validates(value, branch, root):
                return _order(value, branch, root)
    if isinstance(value, Mapping):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        extra = schema.get("additionalProperties")
        ordered: dict[str, Any] = {}
        for key in [k for k in properties if k in value] + [
            k for k in value if k not in properties
        ]:
            sub = properties.get(key, extra)
            ordered[key] = _order(value[key], sub, root) if isinstance(sub, Mapping) else value[key]
        return ordered
    if isinstance(value, list):
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items")
        result = []
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else items
            result.append(_order(item, sub, root) if isinstance(sub, Mapping) else item)
        return result
    return value


def _validates(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> bool:
    try:
        return bool(schema_validator(schema, root=root).is_valid(value))
    except Exception:  # an unresolvable or outside reference: treat as no match
        return False


def render_call(
    name: str, arguments: Mapping[str, Any], parameters: Mapping[str, Any] | None = None
) -> str:
    """Write one call block exactly as the call grammar produces it.

    Args:
        name: The tool name.
        arguments: The call's arguments.
        parameters: The tool's parameters schema. When given, object keys are put in the order
            the grammar enforces; pass it whenever the text must match generated text.

    Returns:
        ``<tool_call>{"name": "NAME", "arguments": {...}}</tool_call>``.
    """
    args = order_arguments(dict(arguments), parameters)
    return f"{NAME_PREFIX}{dump_json(name)[1:-1]}{ARGUMENTS_INFIX}{dump_json(args)}{CALL_SUFFIX}"


def render_calls(
    calls: Iterable[tuple[str, Mapping[str, Any]]], specs: Sequence[ToolSpec] = ()
) -> str:
    """Write several calls (parallel calls) as the grammar produces them.

    Args:
        calls: ``(name, arguments)`` pairs, in order.
        specs: Tool specs used to order the keys of each call's arguments.

    Returns:
        The call blocks joined by :data:`CALL_SEPARATOR`.
    """
    by_name = {spec.name: spec.parameters for spec in specs}
    return CALL_SEPARATOR.join(render_call(n, a, by_name.get(n)) for n, a in calls)


def render_tools_prompt(specs: Sequence[ToolSpec]) -> str:
    """Write a system-prompt section that lists the tools and explains the call format.

    For chat templates without tool support: append the result to the system message. Each tool
    is one line of JSON with its name, description and the JSON schema of its arguments.

    Args:
        specs: The tools the model may call.

    Returns:
        The prompt section, or an empty string when there are no tools.
    """
    if not specs:
        return ""
    lines = [
        "# Tools",
        "",
        "You may call one or more of these tools. Each line describes one tool:",
    ]
    for spec in specs:
        entry = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
        lines.append(dump_json(entry))
    lines += [
        "",
        "To call a tool, answer with one block per call:",
        f'{CALL_OPEN}{{"name": "TOOL_NAME", "arguments": {{"ARGUMENT": "VALUE"}}}}{CALL_CLOSE}',
        "The arguments must follow the tool's parameters schema.",
    ]
    return "\n".join(lines)
