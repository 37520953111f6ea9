"""Tool specifications, argument validation and parsing of generated calls.

Tools come in many shapes (LangChain tools, Pydantic models, TypedDicts, functions, OpenAI tool
dicts, JSON schemas); :func:`to_tool_specs` turns them into :class:`ToolSpec` objects with a
checked JSON schema. :func:`parse_calls` reads the call blocks of a generated text (the format of
:mod:`fints_agent.calls.format`) back into :class:`ToolCall` and :class:`InvalidToolCall` objects.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import best_match
from langchain_core.utils.function_calling import convert_to_openai_tool

from fints_agent.calls.errors import ToolSchemaError
from fints_agent.calls.format import CALL_CLOSE, CALL_OPEN
from fints_agent.calls.instances import check_instance_size, example_value
from fints_agent.calls.validators import check_schema, schema_validator

__all__ = [
    "TOOL_NAME_PATTERN",
    "InvalidToolCall",
    "ToolCall",
    "ToolSchemaError",
    "ToolSpec",
    "example_value",
    "new_call_id",
    "parse_calls",
    "to_tool_specs",
    "validate_arguments",
]

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""Tool names the call format accepts (as in the OpenAI API)."""


def new_call_id() -> str:
    """Return a fresh call id of the form ``call_<24 hex digits>``."""
    return f"call_{uuid.uuid4().hex[:24]}"


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


@dataclass
class ToolCall:
    """A call that names a known tool with arguments valid against its schema.

    Attributes:
        name: The tool name.
        arguments: The parsed arguments.
        id: A unique call id (``call_<hex>``).
    """

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)


@dataclass
class InvalidToolCall:
    """A call block that cannot be run.

    Attributes:
        name: The tool name when one could be read, else ``None``.
        args: The raw arguments text (or the whole block when it is not valid JSON).
        id: A unique call id (``call_<hex>``).
        error: Why the call is invalid.
    """

    name: str | None
    args: str
    id: str
    error: str


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


_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)


def parse_calls(
    text: str, specs: Sequence[ToolSpec]
) -> tuple[list[ToolCall], list[InvalidToolCall], str]:
    """Read the call blocks of a generated text.

    Every ``<tool_call>...</tool_call>`` block becomes a valid call or an invalid one (unknown
    tool, text that is not a JSON object with ``name`` and ``arguments``, arguments that do not
    follow the schema, a block that is never closed). Each gets a fresh id.

    Args:
        text: The generated text.
        specs: The tools the model may call.

    Returns:
        ``(calls, invalid_calls, content)``, where ``content`` is the text outside the blocks
        with surrounding whitespace removed.
    """
    by_name = {spec.name: spec for spec in specs}
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    pieces: list[str] = []
    position = 0
    for start, end, body, closed in _blocks(text):
        pieces.append(text[position:start])
        position = end
        result = _parse_block(body, closed, by_name)
        if isinstance(result, ToolCall):
            calls.append(result)
        else:
            invalid.append(result)
    pieces.append(text[position:])
    return calls, invalid, "".join(pieces).strip()


_DECODER = json.JSONDecoder(strict=False)


def _blocks(text: str) -> Iterator[tuple[int, int, str, bool]]:
    """``(start, end, body, closed)`` of each call block.

    A block's body is read as JSON first, so a string value that contains the closing tag does
    not end the block; a body that does not parse ends at the first closing tag (or the end of
    the text, unclosed).
    """
    position = 0
    while (start := text.find(CALL_OPEN, position)) >= 0:
        body_start = start + len(CALL_OPEN)
        try:
            _, json_end = _DECODER.raw_decode(text, _skip_space(text, body_start))
        except json.JSONDecodeError:
            json_end = -1
        close_at = _skip_space(text, json_end) if json_end >= 0 else -1
        if close_at >= 0 and text.startswith(CALL_CLOSE, close_at):
            end = close_at + len(CALL_CLOSE)
            yield start, end, text[body_start:close_at], True
        else:
            match = _BLOCK.match(text, start)
            assert match is not None  # the pattern matches from any CALL_OPEN
            end = match.end()
            yield start, end, match.group(1), bool(match.group(2))
        position = end


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _parse_block(
    body: str, closed: bool, by_name: dict[str, ToolSpec]
) -> ToolCall | InvalidToolCall:
    call_id = new_call_id()
    raw = body.strip()
    try:
        data = json.loads(raw, strict=False)  # raw control characters in strings are kept
    except json.JSONDecodeError as exc:
        error = f"not valid JSON: {exc}" if closed else f"unterminated tool call: {exc}"
        return InvalidToolCall(_guess_name(raw), raw, call_id, error)
    if not closed:
        found = data.get("name") if isinstance(data, dict) else None
        return InvalidToolCall(
            found if isinstance(found, str) else None, raw, call_id, "unterminated tool call"
        )
    if not isinstance(data, dict):
        return InvalidToolCall(None, raw, call_id, "a tool call must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str):
        return InvalidToolCall(None, raw, call_id, "a tool call needs a string 'name'")
    arguments = data.get("arguments", {})
    args_text = (
        arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    )
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, strict=False)
        except json.JSONDecodeError as exc:
            return InvalidToolCall(name, args_text, call_id, f"arguments are not valid JSON: {exc}")
    spec = by_name.get(name)
    if spec is None:
        known = ", ".join(sorted(by_name)) or "none"
        return InvalidToolCall(name, args_text, call_id, f"unknown tool {name!r} (known: {known})")
    if not isinstance(arguments, dict):
        return InvalidToolCall(name, args_text, call_id, "arguments must be a JSON object")
    problem = validate_arguments(spec, arguments)
    if problem is not None:
        return InvalidToolCall(name, args_text, call_id, f"invalid arguments: {problem}")
    return ToolCall(name, arguments, call_id)


_NAME_IN_TEXT = re.compile(r'"name"\s*:\s*"([^"\\]*)"')


def _guess_name(raw: str) -> str | None:
    match = _NAME_IN_TEXT.search(raw)
    return match.group(1) if match else None
