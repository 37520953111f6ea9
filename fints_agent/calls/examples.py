"""A small valid value of a JSON schema, for recursive schemas too.

:func:`example_value` builds a small valid value (for the token reserve that closes a call, and
for filling arguments); it follows references inside the schema and terminates on recursive
schemas: a reference is only followed towards values that end (the heights of
:class:`~fints_agent.calls.instances.SchemaAnalysis`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fints_agent.calls.errors import ToolSchemaError
from fints_agent.calls.instances import (
    INF,
    SchemaAnalysis,
    analyze,
    json_kinds,
    positive_count,
)
from fints_agent.calls.validators import REFERENCE_KEYWORDS

__all__ = ["example_value"]

_EXAMPLE_NODES = 100_000
"""The most schema nodes one example may visit (a guard: examples of accepted schemas stay far
below)."""


class _Examples:
    """Example values of one analyzed schema."""

    def __init__(self, analysis: SchemaAnalysis) -> None:
        self.analysis = analysis

    def _usable(self, target: Any, bound: float) -> bool:
        return self.analysis.height.get(id(target), INF) < bound

    def finite(self, node: Any, bound: float) -> bool:
        """Whether the node has an instance that only follows references of height < bound."""
        if node is False:
            return False
        if not isinstance(node, Mapping) or "const" in node:
            return True
        enum = node.get("enum")
        if isinstance(enum, list):
            return bool(enum)
        target = self.analysis.target(node)
        if target is not None:
            return self._usable(target, bound)
        if not all(self.finite(sub, bound) for sub in node.get("allOf") or []):
            return False
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and not any(self.finite(b, bound) for b in branches):
                return False
        kinds = json_kinds(node)
        return kinds is None or any(self._kind_finite(node, k, bound) for k in kinds)

    def _kind_finite(self, node: Mapping[str, Any], kind: str, bound: float) -> bool:
        if kind in ("null", "boolean", "integer", "number", "string"):
            return True
        if kind == "array":
            n = positive_count(node.get("minItems"))
            found = node.get("prefixItems")
            prefix: list[Any] = found if isinstance(found, list) else []
            if not all(self.finite(sub, bound) for sub in prefix[:n]):
                return False
            return n <= len(prefix) or self.finite(node.get("items", True), bound)
        if kind == "object":
            need = node.get("required")
            required = need if isinstance(need, list) else []
            return all(
                self.finite(self.analysis.property_schema(node, k), bound)
                for k in required
                if isinstance(k, str)
            )
        return False

    def example(self, node: Any, text: str, bound: float, visited: list[int]) -> Any:
        """A small valid value for the node (only references of height < bound followed);
        ``visited[0]`` counts the nodes visited."""
        visited[0] += 1
        if visited[0] > _EXAMPLE_NODES:
            raise ToolSchemaError(
                f"the schema's example value takes more than {_EXAMPLE_NODES} schema nodes"
            )
        if not isinstance(node, Mapping):
            return None
        if "const" in node:
            return copy.deepcopy(node["const"])
        if "default" in node:
            return copy.deepcopy(node["default"])
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return copy.deepcopy(enum[0])
        target = self.analysis.target(node)
        if target is not None and self._usable(target, bound):
            return self.example(target, text, self.analysis.height[id(target)], visited)
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and branches:
                pick = next((b for b in branches if self.finite(b, bound)), branches[0])
                return self.example(pick, text, bound, visited)
        parts = node.get("allOf")
        if isinstance(parts, list) and parts:
            merged, inner = self._merged(node, parts, bound)
            return self.example(merged, text, inner, visited)
        kinds = json_kinds(node)
        if kinds is not None:
            usable = [k for k in kinds if self._kind_finite(node, k, bound)] or kinds
            kind = next((k for k in usable if k != "null"), usable[0] if usable else None)
            return self._kind_example(node, kind, text, bound, visited)
        return text or "unknown"

    def _merged(
        self, node: Mapping[str, Any], parts: list[Any], bound: float
    ) -> tuple[dict[str, Any], float]:
        """The node and its ``allOf`` parts as one schema (properties and required joined), and
        the bound to build it under (lowered by each reference followed, so it terminates)."""
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        inner = bound
        for part in parts:
            target = self.analysis.target(part) if isinstance(part, Mapping) else None
            if target is not None and self._usable(target, bound):
                part = target
                inner = min(inner, self.analysis.height[id(target)])
            if not isinstance(part, Mapping):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged["properties"] = {**value, **(merged.get("properties") or {})}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(
                        dict.fromkeys([*(merged.get("required") or []), *value])
                    )
                elif key not in REFERENCE_KEYWORDS and key != "allOf":
                    merged.setdefault(key, value)
        return merged, inner

    def _kind_example(
        self, node: Mapping[str, Any], kind: str | None, text: str, bound: float, visited: list[int]
    ) -> Any:
        if kind == "string":
            limit = node.get("maxLength")
            string = text or "unknown"
            return string[: int(limit)] if isinstance(limit, int) else string
        if kind in ("integer", "number"):
            low = node.get("minimum", node.get("exclusiveMinimum"))
            number = 1 if low is None else low + (1 if "exclusiveMinimum" in node else 0)
            high = node.get("maximum")
            if high is not None and number > high:
                number = high
            return int(number) if kind == "integer" else number
        if kind == "boolean":
            return False
        if kind == "array":
            n = positive_count(node.get("minItems"))
            found = node.get("prefixItems")
            prefix: list[Any] = found if isinstance(found, list) else []
            items = node.get("items")
            return [
                self.example(prefix[i] if i < len(prefix) else items, text, bound, visited)
                for i in range(n)
            ]
        if kind == "object":
            need = node.get("required")
            required = [k for k in need if isinstance(k, str)] if isinstance(need, list) else []
            return {
                k: self.example(self.analysis.property_schema(node, k), text, bound, visited)
                for k in required
            }
        return None


def example_value(schema: Any, text: str = "", *, root: Any = None) -> Any:
    """A small value valid against ``schema``: const, default, first enum value, first
    ``anyOf``/``oneOf`` branch that has a finite value, the referenced schema; strings take
    ``text`` (else ``"unknown"``), numbers the minimum or 1, arrays ``minItems`` examples,
    objects their required properties.

    It terminates on recursive schemas: a reference is followed only towards values that end.

    Args:
        schema: A JSON schema (or a part of ``root``).
        text: The value of free strings.
        root: The whole schema when ``schema`` is a part of it (its references resolve against
            the whole); default: ``schema`` itself.

    Returns:
        The value (``None`` for a schema that is not a JSON object).

    Raises:
        ToolSchemaError: No finite value is valid against the schema, or it nests too deeply.
    """
    if not isinstance(schema, Mapping):
        return None
    examples = _Examples(analyze(schema if root is None else root))
    try:
        if not examples.finite(schema, INF):
            raise ToolSchemaError("no finite value is valid against the schema")
        return examples.example(schema, text, INF, [0])
    except RecursionError as exc:
        raise ToolSchemaError("the schema nests too deeply") from exc
