"""BFCL function docs as OpenAI tools: JSON-schema parameters and legal tool names.

BFCL function docs use types like ``dict``, ``float``, ``tuple`` and ``any``, and names with
dots; :func:`bfcl_tools` turns them into valid JSON-schema OpenAI tools with legal names, and
:func:`tool_name_map` gives the way back to the BFCL names.

Example:
    >>> legal_tool_name("math.factorial")
    'math_factorial'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fints_agent.calls.validators import schema_validator as local_validator

__all__ = ["bfcl_tools", "convert_parameters", "legal_tool_name", "tool_name_map"]

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_TYPE_MAP = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "string": "string",
    "str": "string",
    "char": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
}
"""BFCL type names to JSON-schema types; ``any`` and unknown types get no type constraint."""

_COPIED_KEYWORDS = {
    "minimum": (int, float),
    "maximum": (int, float),
    "exclusiveMinimum": (int, float),
    "exclusiveMaximum": (int, float),
    "minItems": (int,),
    "maxItems": (int,),
    "minLength": (int,),
    "maxLength": (int,),
    "pattern": (str,),
    "format": (str,),
}


def legal_tool_name(name: str) -> str:
    """Maps a BFCL function name to a legal tool name (``^[a-zA-Z0-9_-]{1,64}$``).

    Dots and other characters become ``_``; names are cut to 64 characters.

    Args:
        name: The BFCL function name, e.g. ``math.factorial``.

    Returns:
        The tool name, e.g. ``math_factorial``.
    """
    legal = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]
    return legal or "function"


def _tool_names(functions: Sequence[Mapping[str, Any]]) -> list[str]:
    originals = [str(function["name"]) for function in functions]
    names: list[str | None] = [None] * len(originals)
    taken: set[str] = set()
    # Names that are already legal keep themselves; the others are mapped around them.
    for index, original in enumerate(originals):
        if _TOOL_NAME.fullmatch(original) and original not in taken:
            names[index] = original
            taken.add(original)
    for index, original in enumerate(originals):
        if names[index] is not None:
            continue
        base = legal_tool_name(original)
        name, counter = base, 2
        while name in taken:
            suffix = f"_{counter}"
            name = base[: 64 - len(suffix)] + suffix
            counter += 1
        taken.add(name)
        names[index] = name
    return [name for name in names if name is not None]


def tool_name_map(functions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Returns ``{tool name: original BFCL name}`` for the tools of :func:`bfcl_tools`.

    Args:
        functions: BFCL function docs.

    Returns:
        The map from legal tool names back to BFCL names (collisions get ``_2``, ``_3``...).
    """
    return {
        legal: str(function["name"])
        for legal, function in zip(_tool_names(functions), functions, strict=True)
    }


def _json_type_ok(value: Any, json_type: str | None) -> bool:
    if json_type is None:
        return True
    if json_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if json_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "object":
        return isinstance(value, dict)
    return True


def _coerce(value: Any, json_type: str | None) -> Any:
    """Coerces a string enum value to ``json_type`` (``"true"`` -> True, ``"3"`` -> 3)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if json_type == "boolean" and text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if json_type == "integer" and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if json_type == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return value


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    seen: set[str] = set()
    for value in values:
        key = json.dumps(value, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _convert_schema(node: Any) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {}
    out: dict[str, Any] = {}
    raw_type = node.get("type")
    json_type = _TYPE_MAP.get(raw_type) if isinstance(raw_type, str) else None
    if json_type is None and isinstance(raw_type, str) and raw_type != "any":
        json_type = _gorilla_type(raw_type)
    if json_type is not None:
        out["type"] = json_type
    if isinstance(node.get("description"), str):
        out["description"] = node["description"]

    properties = node.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {str(k): _convert_schema(v) for k, v in properties.items()}
        if json_type is None:
            out["type"] = json_type = "object"
    required = node.get("required")
    if json_type == "object" and isinstance(required, list):
        names = _unique(r for r in required if isinstance(r, str))
        if names:
            props = out.setdefault("properties", {})
            for name in names:
                props.setdefault(name, {})
            out["required"] = names
    if json_type == "array" and isinstance(node.get("items"), Mapping):
        out["items"] = _convert_schema(node["items"])

    for keyword, kinds in _COPIED_KEYWORDS.items():
        value = node.get(keyword)
        if isinstance(value, kinds) and not isinstance(value, bool):
            out[keyword] = value

    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        _set_enum(out, enum, json_type)

    if "default" in node:
        default = node["default"]
        if default is None and json_type is not None:
            # BFCL documents "defaults to None" this way; null is then an accepted value.
            out["type"] = [json_type, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if local_validator(out).is_valid(default):
            out["default"] = default
    return out


def _set_enum(out: dict[str, Any], enum: list[Any], json_type: str | None) -> None:
    if all(_json_type_ok(v, json_type) for v in enum):
        out["enum"] = _unique(enum)
        return
    coerced = [_coerce(v, json_type) for v in enum]
    if all(_json_type_ok(v, json_type) for v in coerced):
        out["enum"] = _unique(coerced)
        return
    items = out.get("items")
    if json_type == "array" and isinstance(items, dict):
        item_type = items.get("type")
        if all(_json_type_ok(v, item_type) for v in enum):
            items["enum"] = _unique(enum)
            return
    allowed = ", ".join(json.dumps(v) for v in enum)
    out["description"] = (out.get("description", "") + f" Allowed values: {allowed}.").strip()


def _gorilla_type(raw_type: str) -> str | None:
    try:
        from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    except ImportError:  # pragma: no cover - only without bfcl-eval
        return None
    mapped = GORILLA_TO_OPENAPI.get(raw_type)
    return mapped if mapped in _TYPE_MAP.values() else None


def convert_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Converts a BFCL ``parameters`` doc into a JSON schema (Draft 2020-12).

    ``dict`` becomes ``object``, ``float`` ``number``, ``tuple`` ``array``; ``any`` gets no type
    constraint; a property documented with ``default: None`` also accepts null; ``optional`` flags
    are dropped; enum values of the wrong type are coerced
    (``"true"`` for a boolean) or moved to the items (an enum on an array of strings) or else
    listed in the description; defaults that do not fit the schema are dropped; nested required
    names without a property get an unconstrained property. The top level is an object with
    ``additionalProperties: false`` and only the required names that are properties.

    Args:
        parameters: The BFCL ``parameters`` object of a function doc.

    Returns:
        The JSON schema.
    """
    schema = _convert_schema({**parameters, "required": []})
    schema["type"] = "object"
    properties = schema.setdefault("properties", {})
    required = parameters.get("required")
    names = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    schema["required"] = _unique(r for r in names if r in properties)
    schema["additionalProperties"] = False
    return schema


def bfcl_tools(functions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Converts BFCL function docs into OpenAI function tools with JSON-schema parameters.

    Args:
        functions: BFCL function docs (``name``, ``description``, ``parameters``).

    Returns:
        ``[{"type": "function", "function": {"name", "description", "parameters"}}]`` with
        legal names (see :func:`tool_name_map` for the way back).
    """
    tools = []
    for name, function in zip(_tool_names(functions), functions, strict=True):
        parameters = function.get("parameters")
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": str(function.get("description", "")),
                    "parameters": convert_parameters(
                        parameters if isinstance(parameters, Mapping) else {}
                    ),
                },
            }
        )
    return tools
