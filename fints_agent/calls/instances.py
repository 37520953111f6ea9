"""The smallest valid instance of a JSON schema, and a small example value, for recursive
schemas too.

A schema may refer to itself (``{"$ref": "#"}``): a tree, a linked list, nested filters. That is
legal JSON Schema, but some such schemas have no finite valid instance at all (every object
must hold another one) and others have only very large ones (each level doubles the size). The
call grammar would then force text without end: its jump-forward string grows until the host
runs out of memory. :func:`smallest_instance_chars` works out the length of the smallest valid
instance (a fixpoint over the schema's references, so it terminates on any schema), and
:func:`check_instance_size` refuses schemas whose smallest instance is infinite or longer than
:data:`MAX_INSTANCE_CHARS`.

:func:`example_value` builds a small valid value (for the token reserve that closes a call, and
for filling arguments); it follows references inside the schema and terminates on recursive
schemas: a reference is only followed towards values that end.

Lengths are of compact JSON (``,`` and ``:`` separators, no spaces), counted in characters. The
analysis reads ``type``, ``const``, ``enum``, ``properties``, ``required``,
``additionalProperties``, ``minProperties``, ``items``, ``prefixItems``, ``minItems``,
``minLength``, ``anyOf``, ``oneOf``, ``allOf`` and references; other keywords do not change
lengths, so the result is a lower bound where they matter.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Mapping
from typing import Any

from referencing.exceptions import Unresolvable

from fints_agent.calls.errors import ToolSchemaError
from fints_agent.calls.validators import REFERENCE_KEYWORDS, local_resolver, subschemas

__all__ = [
    "MAX_INSTANCE_CHARS",
    "check_instance_size",
    "example_value",
    "smallest_instance_chars",
]

MAX_INSTANCE_CHARS = 32768
"""The longest smallest-valid-instance a tool schema may have, in characters of compact JSON
(far beyond any token budget of a call; a larger minimum can never be generated)."""

_EXAMPLE_NODES = 100_000
"""The most schema nodes one example may visit (a guard: examples of accepted schemas stay far
below)."""
_CAP = 10**15
"""Finite lengths are capped here (exponential schemas would otherwise give huge integers)."""
_INF = math.inf
_ANY = 1
"""The smallest instance of an unconstrained schema (``0``)."""


def _dumps_len(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _kinds(node: Mapping[str, Any]) -> list[str] | None:
    """The node's JSON types (``None``: any; inferred from keywords when ``type`` is absent)."""
    kind = node.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    if any(k in node for k in ("properties", "required", "minProperties")):
        return ["object"]
    if any(k in node for k in ("items", "prefixItems", "minItems")):
        return ["array"]
    if "minLength" in node:
        return ["string"]
    return None


def _capped(size: float) -> float:
    """Finite sizes at most :data:`_CAP` (infinity stays infinite)."""
    return size if size == _INF else min(size, _CAP)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class _Analysis:
    """Smallest-instance lengths of one schema's reference targets (see the module docstring).

    ``size[id(target)]`` is the length of the target's smallest valid instance; ``height``
    the round of the fixpoint in which it became finite: a finite target has an instance that
    only uses targets of smaller height, which is how :meth:`example` terminates.
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        self.targets: dict[str, Any] = {}
        self._collect()
        self.size: dict[int, float] = {}
        self.height: dict[int, float] = {}
        self._fixpoint()

    # -- references -------------------------------------------------------------------------
    def _collect(self) -> None:
        resolver = None
        pending = [self.root]
        seen: set[int] = set()
        while pending:
            start = pending.pop()
            if id(start) in seen:
                continue
            seen.add(id(start))
            for node in subschemas(start):
                if not isinstance(node, Mapping):
                    continue
                for keyword in REFERENCE_KEYWORDS:
                    ref = node.get(keyword)
                    if not isinstance(ref, str) or ref in self.targets or not ref.startswith("#"):
                        continue
                    try:
                        resolver = resolver or local_resolver(self.root)
                        target = resolver.lookup(ref).contents
                    except (Unresolvable, TypeError, ValueError):
                        continue  # checked elsewhere; here it constrains nothing
                    self.targets[ref] = target
                    pending.append(target)

    def _target(self, node: Mapping[str, Any]) -> Any:
        """The target of the node's reference (``None``: none, or not resolvable)."""
        for keyword in REFERENCE_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and ref in self.targets:
                return self.targets[ref]
        return None

    def _fixpoint(self) -> None:
        unique = {id(t): t for t in self.targets.values()}
        for round_ in range(1, len(unique) + 3):
            new = {key: self.node_size(t) for key, t in unique.items()}
            if new == self.size:
                break
            for key, value in new.items():
                if value < _INF and key not in self.height:
                    self.height[key] = round_
            self.size = new

    # -- sizes ------------------------------------------------------------------------------
    def node_size(self, node: Any) -> float:
        """The smallest instance length of a node, with reference targets from the table."""
        if node is False:
            return _INF
        if not isinstance(node, Mapping):
            return _ANY
        if "const" in node:
            return _dumps_len(node["const"])
        enum = node.get("enum")
        if isinstance(enum, list):
            return min((_dumps_len(v) for v in enum), default=_INF)
        parts: list[float] = []
        target = self._target(node)
        if target is not None:
            parts.append(self.size.get(id(target), _INF))
        for sub in node.get("allOf") or []:
            parts.append(self.node_size(sub))
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list):
                parts.append(min((self.node_size(b) for b in branches), default=_INF))
        kinds = _kinds(node)
        if kinds is not None:
            parts.append(min((self._kind_size(node, k) for k in kinds), default=_INF))
        return _capped(max(parts, default=_ANY))

    def _kind_size(self, node: Mapping[str, Any], kind: str) -> float:
        if kind in ("null", "boolean"):
            return 4
        if kind in ("integer", "number"):
            return 1
        if kind == "string":
            return 2 + _count(node.get("minLength"))
        if kind == "array":
            return self._array_size(node)
        if kind == "object":
            return self._object_size(node)
        return _INF  # an unknown type name: nothing is valid

    def _array_size(self, node: Mapping[str, Any]) -> float:
        n = _count(node.get("minItems"))
        found = node.get("prefixItems")
        prefix: list[Any] = found if isinstance(found, list) else []
        items = node.get("items", True)
        total: float = 2 + max(0, n - 1)
        for sub in prefix[:n]:
            total += self.node_size(sub)
        rest = n - min(n, len(prefix))
        if rest:
            total += rest * self.node_size(items)
        return _capped(total)

    def _property_schema(self, node: Mapping[str, Any], key: str) -> Any:
        found = node.get("properties")
        props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        if key in props:
            return props[key]
        return node.get("additionalProperties", True)

    def _object_size(self, node: Mapping[str, Any]) -> float:
        need = node.get("required")
        required = (
            list(dict.fromkeys(k for k in need if isinstance(k, str)))
            if isinstance(need, list)
            else []
        )
        total: float = 2 + max(0, len(required) - 1)
        for key in required:
            total += _dumps_len(key) + 1 + self.node_size(self._property_schema(node, key))
        extra = _count(node.get("minProperties")) - len(required)
        if extra > 0:
            found = node.get("properties")
            props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            costs = sorted(
                _dumps_len(k) + 2 + self.node_size(s) for k, s in props.items() if k not in required
            )
            additional = node.get("additionalProperties", True)
            more = 5 + self.node_size(additional)  # a one-letter key
            for i in range(extra):
                total += min(costs[i] if i < len(costs) else _INF, more)
        return _capped(total)

    # -- examples ---------------------------------------------------------------------------
    def _usable(self, target: Any, bound: float) -> bool:
        return self.height.get(id(target), _INF) < bound

    def finite(self, node: Any, bound: float) -> bool:
        """Whether the node has an instance that only follows references of height < bound."""
        if node is False:
            return False
        if not isinstance(node, Mapping) or "const" in node:
            return True
        enum = node.get("enum")
        if isinstance(enum, list):
            return bool(enum)
        target = self._target(node)
        if target is not None:
            return self._usable(target, bound)
        if not all(self.finite(sub, bound) for sub in node.get("allOf") or []):
            return False
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and not any(self.finite(b, bound) for b in branches):
                return False
        kinds = _kinds(node)
        return kinds is None or any(self._kind_finite(node, k, bound) for k in kinds)

    def _kind_finite(self, node: Mapping[str, Any], kind: str, bound: float) -> bool:
        if kind in ("null", "boolean", "integer", "number", "string"):
            return True
        if kind == "array":
            n = _count(node.get("minItems"))
            found = node.get("prefixItems")
            prefix: list[Any] = found if isinstance(found, list) else []
            if not all(self.finite(sub, bound) for sub in prefix[:n]):
                return False
            return n <= len(prefix) or self.finite(node.get("items", True), bound)
        if kind == "object":
            need = node.get("required")
            required = need if isinstance(need, list) else []
            return all(
                self.finite(self._property_schema(node, k), bound)
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
        target = self._target(node)
        if target is not None and self._usable(target, bound):
            return self.example(target, text, self.height[id(target)], visited)
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and branches:
                pick = next((b for b in branches if self.finite(b, bound)), branches[0])
                return self.example(pick, text, bound, visited)
        parts = node.get("allOf")
        if isinstance(parts, list) and parts:
            merged, inner = self._merged(node, parts, bound)
            return self.example(merged, text, inner, visited)
        kinds = _kinds(node)
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
            target = self._target(part) if isinstance(part, Mapping) else None
            if target is not None and self._usable(target, bound):
                part = target
                inner = min(inner, self.height[id(target)])
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
            n = _count(node.get("minItems"))
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
                k: self.example(self._property_schema(node, k), text, bound, visited)
                for k in required
            }
        return None


@functools.lru_cache(maxsize=256)
def _analysis(root_json: str) -> _Analysis:
    return _Analysis(json.loads(root_json))


def _analyze(root: Any) -> _Analysis:
    try:
        return _analysis(json.dumps(root, sort_keys=True))
    except RecursionError as exc:
        raise ToolSchemaError("the schema nests too deeply") from exc


def smallest_instance_chars(schema: Any) -> float:
    """The length of the schema's smallest valid instance, in characters of compact JSON.

    Args:
        schema: A JSON schema (its references must point inside it).

    Returns:
        The length, or ``math.inf`` when no finite instance is valid (an object that must hold
        another one of its kind, at every level).

    Raises:
        ToolSchemaError: The schema nests too deeply to analyze.

    Example:
        >>> smallest_instance_chars({"type": "object", "properties": {"me": {"$ref": "#"}},
        ...                          "required": ["me"]})
        inf
    """
    analysis = _analyze(schema)
    try:
        return analysis.node_size(analysis.root)
    except RecursionError as exc:
        raise ToolSchemaError("the schema nests too deeply") from exc


def check_instance_size(schema: Any, *, limit: int = MAX_INSTANCE_CHARS) -> int:
    """Check that a schema's smallest valid instance exists and has at most ``limit`` characters.

    Args:
        schema: A JSON schema.
        limit: The most characters (compact JSON).

    Returns:
        The length of the smallest valid instance.

    Raises:
        ToolSchemaError: No finite instance is valid, or the smallest one is longer than
            ``limit`` (the message says which; the caller names the tool).
    """
    size = smallest_instance_chars(schema)
    if size == _INF:
        raise ToolSchemaError(
            "no finite value is valid against the schema: a required property refers back to "
            "the schema (or to a part of it) at every level, so no call could ever be complete"
        )
    if size > limit:
        shown = f"{int(size):,}" if size < _CAP else f"more than {_CAP:,}"
        raise ToolSchemaError(
            f"the smallest valid value of the schema takes {shown} characters, more than the "
            f"limit of {limit:,}: no call could fit in a token budget"
        )
    return int(size)


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
    analysis = _analyze(schema if root is None else root)
    try:
        if not analysis.finite(schema, _INF):
            raise ToolSchemaError("no finite value is valid against the schema")
        return analysis.example(schema, text, _INF, [0])
    except RecursionError as exc:
        raise ToolSchemaError("the schema nests too deeply") from exc
