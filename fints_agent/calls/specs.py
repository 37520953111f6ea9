"""Tool specifications: tools of any shape turned into checked :class:`ToolSpec` objects, and
arguments validated against a tool's schema.

Tools come in many shapes (LangChain tools, Pydantic models, TypedDicts, functions, OpenAI tool
dicts, JSON schemas); :func:`to_tool_specs` turns them into :class:`ToolSpec` objects with a
checked JSON schema (valid Draft 2020-12, references inside it, a smallest valid instance of
bounded size). :func:`validate_arguments` checks a call's arguments against its tool.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import best_match
from langchain_core.utils.function_calling import convert_to_openai_tool

from fints_agent.calls.errors import ToolSchemaError
from fints_agent.calls.instances import check_instance_size
from fints_agent.calls.validators import check_schema, schema_validator

__all__ = [
    "TOOL_NAME_PATTERN",
    "ToolSpec",
    "to_tool_specs",
    "unique_specs",
    "validate_arguments",
]

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""Tool names the call format accepts (as in the OpenAI API)."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call.

    Treat ``parameters`` as read-only: validators and grammars are cached by its content.

    Attributes:
        name: The tool name (``^[A-Za-z0-9_.-]{1,64}$``).
        description: What the tool does, for the prompt.
        parameters: The JSON schema of the arguments object (``"type": "object"``).
    """

    name: str
    description: str
    parameters: dict[str, Any]

    @functools.cached_property
    def schema_json(self) -> str:
        """The parameters schema as JSON (key order kept: it is the order calls are written)."""
        return json.dumps(self.parameters, ensure_ascii=False)

    def __hash__(self) -> int:
        return hash((self.name, self.description))

    def to_openai(self) -> dict[str, Any]:
        """The tool as an OpenAI function-tool object."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def to_tool_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """Convert tools of any supported shape to checked tool specs.

    Accepted: :class:`ToolSpec`, LangChain ``BaseTool``, Pydantic model classes, TypedDicts,
    Python functions (typed, with a docstring), OpenAI tool dicts
    (``{"type": "function", "function": {...}}``), function dicts (``name``, ``description``,
    ``parameters``) and JSON-schema dicts with a ``title``.

    Args:
        tools: The tools, in order (an empty sequence gives an empty list).

    Returns:
        One spec per tool, in the same order.

    Raises:
        ToolSchemaError: If a tool cannot be converted, has a missing or invalid name, repeats
            another tool's name, or has an invalid parameters schema.
    """
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        spec = _to_spec(tool, index)
        if spec.name in seen:
            raise ToolSchemaError(f"tool {spec.name!r}: duplicate tool name")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def _describe(tool: Any, index: int) -> str:
    name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
    if isinstance(tool, dict):
        name = tool.get("name") or tool.get("title") or (tool.get("function") or {}).get("name")
    return f"tool #{index}" + (f" ({name!r})" if isinstance(name, str) else "")


def _to_spec(tool: Any, index: int) -> ToolSpec:
    name: Any
    description: Any
    parameters: Any
    if isinstance(tool, ToolSpec):
        name, description, parameters = tool.name, tool.description, tool.parameters
    else:
        try:
            converted = convert_to_openai_tool(tool)
        except Exception as exc:
            raise ToolSchemaError(f"{_describe(tool, index)}: cannot read the tool: {exc}") from exc
        function = converted.get("function") if isinstance(converted, dict) else None
        if converted.get("type") != "function" or not isinstance(function, dict):
            raise ToolSchemaError(f"{_describe(tool, index)}: not a function tool")
        name = function.get("name")
        description = function.get("description") or ""
        parameters = function.get("parameters")
    label = f"tool {name!r}" if isinstance(name, str) and name else _describe(tool, index)
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.fullmatch(name):
        raise ToolSchemaError(
            f"{label}: the name must match {TOOL_NAME_PATTERN.pattern} (got {name!r})"
        )
    if not isinstance(description, str):
        raise ToolSchemaError(f"{label}: the description must be a string")
    return ToolSpec(name, description, _check_parameters(parameters, label))


def _check_parameters(parameters: Any, label: str) -> dict[str, Any]:
    if parameters is None:
        return {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise ToolSchemaError(f"{label}: the parameters schema must be a JSON object")
    parameters = copy.deepcopy(parameters)
    parameters.setdefault("type", "object")
    if parameters["type"] != "object":
        raise ToolSchemaError(
            f"{label}: the parameters schema must have type 'object' (got {parameters['type']!r})"
        )
    try:
        check_schema(parameters)
    except ToolSchemaError as exc:
        raise ToolSchemaError(f"{label}: {_parameters_problem(exc)}") from exc
    try:
        json.dumps(parameters, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ToolSchemaError(f"{label}: the parameters schema is not plain JSON: {exc}") from exc
    try:
        check_instance_size(parameters)
    except ToolSchemaError as exc:
        raise ToolSchemaError(f"{label}: {_parameters_problem(exc)}") from exc
    return parameters


def _parameters_problem(exc: ToolSchemaError) -> str:
    """The message of a schema check, worded for a tool's parameters schema."""
    text = str(exc)
    if text.startswith("invalid schema at "):
        return "invalid parameters schema at " + text[len("invalid schema at ") :]
    return f"the parameters schema is not usable: {text}"


def validate_arguments(spec: ToolSpec, arguments: Any) -> str | None:
    """Check arguments against a tool's schema.

    Args:
        spec: The tool.
        arguments: The arguments to check.

    Returns:
        ``None`` when the arguments are valid, else a message naming the most relevant problem
        (prefixed with its path in the arguments).
    """
    error = best_match(schema_validator(spec.parameters).iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def unique_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """Tool specs; the same tool given twice (say, a model and its JSON schema) counts once."""
    specs: dict[str, ToolSpec] = {}
    for tool in tools:
        [spec] = to_tool_specs([tool])
        seen = specs.get(spec.name)
        if seen is not None and _schema_core(seen.parameters) != _schema_core(spec.parameters):
            raise ToolSchemaError(f"tool {spec.name!r}: bound twice with different schemas")
        specs.setdefault(spec.name, spec)
    return list(specs.values())


def _schema_core(schema: Any) -> Any:
    """A schema without its titles and descriptions (they differ between equivalent forms)."""
    if isinstance(schema, Mapping):
        return {k: _schema_core(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_schema_core(v) for v in schema]
    return schema
