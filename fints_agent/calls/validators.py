"""JSON-schema validators that never leave the schema they validate with.

Every JSON-schema validator of the package is built here. A reference (``$ref``,
``$dynamicRef``) must point inside the schema itself: a fragment such as ``#``,
``#/$defs/Address`` or ``#anchor``. A reference to anything else (``http://...``,
``other.json#/x``) is a :class:`~fints_agent.calls.errors.ToolSchemaError` when the schema is
checked, and the validators resolve references through a registry whose retrieval refuses every
URI, so nothing is ever fetched: jsonschema would otherwise download a remote reference while
validating (a request to any address a tool schema names, at run time).

- :func:`check_schema`: a schema is valid Draft 2020-12 and its references are local and resolve.
- :func:`schema_validator`: a cached Draft 2020-12 validator (optionally for a part of a larger
  schema, whose references resolve against the whole).
- :func:`resolve_reference`: the subschema a local reference names.
- :func:`follow_references`: the schema a node stands for once its local ``$ref`` pointers are
  followed, leniently (for reading a schema, not checking it).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from fints_agent.calls.errors import ToolSchemaError

__all__ = [
    "REFERENCE_KEYWORDS",
    "check_references",
    "check_schema",
    "follow_references",
    "local_references",
    "local_resolver",
    "resolve_reference",
    "schema_validator",
    "subschemas",
]

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
"""Keywords whose value is a reference to another schema."""


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retrieval: every URI outside the schema is refused (nothing is fetched)."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_OFFLINE: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]
"""A registry that knows no schema and retrieves none (jsonschema adds the meta-schemas)."""


def subschemas(schema: Any) -> Iterator[Any]:
    """The schema and all its subschemas (Draft 2020-12 keywords), depth first.

    Values of ``const``, ``enum``, ``default`` and ``examples`` are data, not schemas: their
    ``$ref`` keys are not references.
    """
    stack = [schema]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Mapping):
            stack.extend(reversed(list(DRAFT202012.subresources_of(node))))


def local_references(schema: Any) -> Iterator[tuple[str, str]]:
    """``(keyword, reference)`` of every reference in a schema.

    Raises:
        ToolSchemaError: A reference is not a string.
    """
    for node in subschemas(schema):
        if not isinstance(node, Mapping):
            continue
        for keyword in REFERENCE_KEYWORDS:
            if keyword in node:
                ref = node[keyword]
                if not isinstance(ref, str):
                    raise ToolSchemaError(f"{keyword} must be a string, got {ref!r}")
                yield keyword, ref


def local_resolver(schema: Any) -> Any:
    """A ``referencing`` resolver rooted at the schema, that retrieves nothing."""
    resource = DRAFT202012.create_resource(schema)
    registry = _OFFLINE.with_resource(resource.id() or "", resource).crawl()
    return registry.resolver_with_root(resource)


def _require_local(ref: str) -> None:
    if not ref.startswith("#"):
        raise ToolSchemaError(
            f"reference {ref!r} points outside the schema: only references inside it "
            "(starting with '#', such as '#/$defs/Name') are allowed, and nothing is fetched"
        )


def resolve_reference(root: Any, ref: str) -> Any:
    """The subschema of ``root`` that a local reference names.

    Args:
        root: The whole schema.
        ref: A reference starting with ``#`` (a JSON pointer or an anchor).

    Returns:
        The referenced subschema.

    Raises:
        ToolSchemaError: The reference points outside the schema or to nothing in it.
    """
    _require_local(ref)
    try:
        return local_resolver(root).lookup(ref).contents
    except Unresolvable as exc:
        raise ToolSchemaError(f"reference {ref!r} names nothing in the schema ({exc})") from exc


def follow_references(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref`` pointers (and single-element ``allOf``) to the schema they name.

    A JSON pointer that names nothing (or a reference that is not a JSON pointer) stops the walk:
    the schema reached so far is returned. Used where a schema is read rather than checked
    (ordering arguments, classifying generated text).

    Args:
        schema: A node of ``root``.
        root: The whole schema, that ``#/...`` pointers are resolved against.

    Returns:
        The schema the node stands for.
    """
    for _ in range(32):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target: Any = root
            for part in ref[1:].split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, Mapping) else None
            if not isinstance(target, Mapping):
                return schema
            schema = target
            continue
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
            schema = all_of[0]
            continue
        return schema
    return schema


def check_references(schema: Any) -> None:
    """Check that every reference of a schema points inside it and resolves.

    Args:
        schema: A JSON schema.

    Raises:
        ToolSchemaError: A reference points outside the schema (a URL, another file) or to
            nothing in it.
    """
    resolver = None
    for _keyword, ref in local_references(schema):
        _require_local(ref)
        resolver = resolver or local_resolver(schema)
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise ToolSchemaError(f"reference {ref!r} names nothing in the schema ({exc})") from exc


_checked: set[str] = set()
"""Schemas (as canonical JSON) that passed :func:`check_schema`: every turn and recording
checks its tools again, and the meta-schema check costs milliseconds."""


def check_schema(schema: Any) -> None:
    """Check a schema against the Draft 2020-12 meta-schema, and its references.

    Args:
        schema: A JSON schema.

    Raises:
        ToolSchemaError: The schema is invalid (the message gives where), nests too deeply, or
            a reference points outside it or to nothing in it.
    """
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        key = None  # not plain JSON: checked below, uncached
    if key is not None and key in _checked:
        return
    try:
        Draft202012Validator.check_schema(schema)
        check_references(schema)
        if key is not None:
            if len(_checked) >= 1024:
                _checked.clear()
            _checked.add(key)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "(root)"
        raise ToolSchemaError(f"invalid schema at {where}: {exc.message}") from exc
    except RecursionError as exc:
        raise ToolSchemaError("the schema nests too deeply") from exc


@functools.lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    check_references(schema)
    return Draft202012Validator(schema, registry=_OFFLINE)


def schema_validator(schema: Any, *, root: Any = None) -> Validator:
    """A Draft 2020-12 validator that resolves references only inside the schema.

    Validators are cached by the schema's content: treat the schema as read-only.

    Args:
        schema: The JSON schema to validate with.
        root: The whole schema when ``schema`` is a part of it: references (``#/$defs/...``)
            then resolve against the whole.

    Returns:
        The validator. It does not check the schema against the meta-schema (see
        :func:`check_schema`).

    Raises:
        ToolSchemaError: A reference points outside the schema or to nothing in it.
        TypeError: The schema is not JSON.
    """
    if root is None:
        return _validator(json.dumps(schema))
    base = _validator(json.dumps(root))
    if schema is root:
        return base
    for _keyword, ref in local_references(schema):
        _require_local(ref)
    return base.evolve(schema=schema)
