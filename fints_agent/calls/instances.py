"""The smallest valid instance of a JSON schema, for recursive schemas too.

A schema may refer to itself (``{"$ref": "#"}``): a tree, a linked list, nested filters. That is
legal JSON Schema, but some such schemas have no finite valid instance at all (every object
must hold another one) and others have only very large ones (each level doubles the size). The
call grammar would then force text without end: its jump-forward string grows until the host
runs out of memory. :func:`smallest_instance_chars` works out the length of the smallest valid
instance (a fixpoint over the schema's references, so it terminates on any schema), and
:func:`check_instance_size` refuses schemas whose smallest instance is infinite or longer than
:data:`MAX_INSTANCE_CHARS`. The same analysis (:class:`SchemaAnalysis`) lets
:mod:`fints_agent.calls.examples` build a small example value that terminates.

Lengths are of compact JSON (``,`` and ``:`` separators, no spaces), counted in characters. The
analysis reads ``type``, ``const``, ``enum``, ``properties``, ``required``,
``additionalProperties``, ``minProperties``, ``items``, ``prefixItems``, ``minItems``,
``minLength``, ``anyOf``, ``oneOf``, ``allOf`` and references; other keywords do not change
lengths, so the result is a lower bound where they matter.
"""

from __future__ import annotations

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
    "SchemaAnalysis",
    "analyze",
    "check_instance_size",
    "json_kinds",
    "positive_count",
    "smallest_instance_chars",
]

MAX_INSTANCE_CHARS = 32768
"""The longest smallest-valid-instance a tool schema may have, in characters of compact JSON
(far beyond any token budget of a call; a larger minimum can never be generated)."""

_CAP = 10**15
"""Finite lengths are capped here (exponential schemas would otherwise give huge integers)."""
INF = math.inf
"""An infinite length: no finite instance is valid."""
_ANY = 1
"""The smallest instance of an unconstrained schema (``0``)."""


def _dumps_len(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def json_kinds(node: Mapping[str, Any]) -> list[str] | None:
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
    return size if size == INF else min(size, _CAP)


def positive_count(value: Any) -> int:
    """A count keyword's value (``minItems``, ``minLength``...), 0 when it is not a positive
    integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class SchemaAnalysis:
    """Smallest-instance lengths of one schema's reference targets (see the module docstring).

    ``size[id(target)]`` is the length of the target's smallest valid instance; ``height``
    the round of the fixpoint in which it became finite: a finite target has an instance that
    only uses targets of smaller height, which is how
    :func:`~fints_agent.calls.examples.example_value` terminates.
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

    def target(self, node: Mapping[str, Any]) -> Any:
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
                if value < INF and key not in self.height:
                    self.height[key] = round_
            self.size = new

    # -- sizes ------------------------------------------------------------------------------
    def node_size(self, node: Any) -> float:
        """The smallest instance length of a node, with reference targets from the table."""
        if node is False:
            return INF
        if not isinstance(node, Mapping):
            return _ANY
        if "const" in node:
            return _dumps_len(node["const"])
        enum = node.get("enum")
        if isinstance(enum, list):
            return min((_dumps_len(v) for v in enum), default=INF)
        parts: list[float] = []
        target = self.target(node)
        if target is not None:
            parts.append(self.size.get(id(target), INF))
        for sub in node.get("allOf") or []:
            parts.append(self.node_size(sub))
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list):
                parts.append(min((self.node_size(b) for b in branches), default=INF))
        kinds = json_kinds(node)
        if kinds is not None:
            parts.append(min((self._kind_size(node, k) for k in kinds), default=INF))
        return _capped(max(parts, default=_ANY))

    def _kind_size(self, node: Mapping[str, Any], kind: str) -> float:
        if kind in ("null", "boolean"):
            return 4
        if kind in ("integer", "number"):
            return 1
        if kind == "string":
            return 2 + positive_count(node.get("minLength"))
        if kind == "array":
            return self._array_size(node)
        if kind == "object":
            return self._object_size(node)
        return INF  # an unknown type name: nothing is valid

    def _array_size(self, node: Mapping[str, Any]) -> float:
        n = positive_count(node.get("minItems"))
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

    def property_schema(self, node: Mapping[str, Any], key: str) -> Any:
        """The schema of property ``key`` of an object node (``additionalProperties`` when it
        is not listed)."""
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
            total += _dumps_len(key) + 1 + self.node_size(self.property_schema(node, key))
        extra = positive_count(node.get("minProperties")) - len(required)
        if extra > 0:
            found = node.get("properties")
            props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            costs = sorted(
                _dumps_len(k) + 2 + self.node_size(s) for k, s in props.items() if k not in required
            )
            additional = node.get("additionalProperties", True)
            more = 5 + self.node_size(additional)  # a one-letter key
            for i in range(extra):
                total += min(costs[i] if i < len(costs) else INF, more)
        return _capped(total)


@functools.lru_cache(maxsize=256)
def _analysis(root_json: str) -> SchemaAnalysis:
    return SchemaAnalysis(json.loads(root_json))


def analyze(root: Any) -> SchemaAnalysis:
    """The (cached) analysis of a whole schema.

    Raises:
        ToolSchemaError: The schema nests too deeply to analyze.
    """
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
    analysis = analyze(schema)
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
    if size == INF:
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
