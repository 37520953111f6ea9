"""Where in a call a generated token falls: :class:`CallPosition`, and how a value's schema
classifies the value.

:class:`~fints_agent.calls.tracker.CallTracker` follows the text of a call; this module says,
for the value that starts (or goes on) at the tracker's position, which kind of choice the next
token makes: free text, an enum value, a number, structure. The schema is read leniently (local
``$ref``, ``anyOf``, ``oneOf``, ``allOf``, ``prefixItems``); a value whose schema says nothing
is classified by how it started.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from fints_agent.calls.validators import follow_references

__all__ = ["CallPosition", "classify", "item_schema", "property_schema"]


class CallPosition(enum.Enum):
    """What the next generated token belongs to."""

    OUTSIDE = "outside"
    """Not inside a call block: free text, or between blocks."""
    STRUCTURE = "structure"
    """Fixed parts of a block: tags, braces, separators, the ``name``/``arguments`` keys."""
    NAME = "name"
    """The tool name."""
    KEY = "key"
    """An argument key (which optional argument comes next is a choice)."""
    FREE_TEXT = "free_text"
    """A string argument value without ``enum``/``const``: usually copied from the request."""
    CHOICE = "choice"
    """An ``enum``/``const`` value, a boolean or null."""
    NUMBER = "number"
    """A number or integer value."""


def property_schema(schema: Mapping[str, Any], key: str, root: Mapping[str, Any]) -> Any:
    """The schema of property ``key`` of an object schema (branches and references followed;
    ``None`` when the schema says nothing about it)."""
    schema = follow_references(schema, root)
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and key in properties:
        return properties[key]
    for branch in _branches(schema):
        found = property_schema(branch, key, root)
        if found is not None:
            return found
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def item_schema(schema: Mapping[str, Any], index: int, root: Mapping[str, Any]) -> Any:
    """The schema of item ``index`` of an array schema (``prefixItems``, then ``items``;
    branches and references followed; ``None`` when the schema says nothing about it)."""
    schema = follow_references(schema, root)
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list) and index < len(prefix):
        return prefix[index]
    items = schema.get("items")
    if isinstance(items, Mapping):
        return items
    for branch in _branches(schema):
        found = item_schema(branch, index, root)
        if found is not None:
            return found
    return None


def _branches(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    branches: list[Mapping[str, Any]] = []
    for key in ("anyOf", "oneOf", "allOf"):
        value = schema.get(key)
        if isinstance(value, list):
            branches += [b for b in value if isinstance(b, Mapping)]
    return branches


_PRIORITY = (
    CallPosition.FREE_TEXT,
    CallPosition.NUMBER,
    CallPosition.CHOICE,
    CallPosition.STRUCTURE,
)


def classify(schema: Any, started: str | None, root: Mapping[str, Any]) -> CallPosition:
    """Classify a value by its schema and by how it started (string, number, literal, or not)."""
    fallback = {"string": CallPosition.FREE_TEXT, "number": CallPosition.NUMBER}
    if not isinstance(schema, Mapping):
        return fallback.get(started or "string", CallPosition.CHOICE)
    schema = follow_references(schema, root)
    if "enum" in schema or "const" in schema:
        return CallPosition.CHOICE
    kinds: set[CallPosition] = set()
    branches = [b for b in (schema.get("anyOf"), schema.get("oneOf")) if isinstance(b, list)]
    for branch_list in branches:
        kinds |= {classify(b, started, root) for b in branch_list if _may_start(b, started, root)}
    types = schema.get("type")
    type_list = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    for name in type_list:
        kind = {
            "string": CallPosition.FREE_TEXT,
            "number": CallPosition.NUMBER,
            "integer": CallPosition.NUMBER,
            "boolean": CallPosition.CHOICE,
            "null": CallPosition.CHOICE,
            "object": CallPosition.STRUCTURE,
            "array": CallPosition.STRUCTURE,
        }.get(name)
        if kind is not None and _type_fits(name, started):
            kinds.add(kind)
    if not kinds:
        return fallback.get(started or "string", CallPosition.CHOICE)
    return next(kind for kind in _PRIORITY if kind in kinds)


def _type_fits(name: str, started: str | None) -> bool:
    if started is None:
        return True
    if started == "string":
        return name == "string"
    if started == "number":
        return name in ("number", "integer")
    return name in ("boolean", "null")


def _may_start(schema: Any, started: str | None, root: Mapping[str, Any]) -> bool:
    if started is None or not isinstance(schema, Mapping):
        return True
    schema = follow_references(schema, root)
    for key in ("enum", "const"):
        if key in schema:
            values = schema[key] if key == "enum" else [schema[key]]
            if isinstance(values, list):
                return any(_value_fits(v, started) for v in values)
    types = schema.get("type")
    if types is None:
        return True
    type_list = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    return any(_type_fits(name, started) for name in type_list)


def _value_fits(value: Any, started: str) -> bool:
    if started == "string":
        return isinstance(value, str)
    if started == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return value is None or isinstance(value, bool)
