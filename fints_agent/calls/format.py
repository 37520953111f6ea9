"""The text format of tool calls, and where in a call a generated token falls.

A tool call is written as one block::

    <tool_call>{"name": "NAME", "arguments": {...}}</tool_call>

The JSON inside a block is compact (one line, ``", "`` and ``": "`` separators, no other
whitespace), ``name`` comes before ``arguments``, and the keys of every object follow the order
of ``properties`` in the tool's JSON schema. Several calls (parallel calls) are written as blocks
separated by :data:`CALL_SEPARATOR`. The grammars in :mod:`fints_agent.calls.constrain` produce
exactly this text, and :func:`render_call` writes it for known arguments, so a call written by
hand and a call generated under the grammar are the same string.

:class:`CallTracker` follows a generated text character by character and says what the next
token belongs to (the tool name, an argument key, a free-text string value, an enum value, ...).
Steering can use it to act only where the model makes a choice.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fints_agent.calls.validators import schema_validator

if TYPE_CHECKING:
    from fints_agent.calls.schema import ToolSpec

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
    schema = _resolve(schema, root)
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


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref`` pointers (and single-element ``allOf``) to the schema they name."""
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


_WHITESPACE = " \t\r\n"
_NAME = object()  # marks the schema slot of the wrapper's "name" value


class _Frame:
    """An open JSON object or array while scanning."""

    __slots__ = ("expect", "index", "is_object", "key", "schema", "wrapper")

    def __init__(self, is_object: bool, schema: Any, wrapper: bool = False) -> None:
        self.is_object = is_object
        self.schema = schema
        self.wrapper = wrapper
        self.key: str | None = None
        self.index = 0
        self.expect = "key_or_end" if is_object else "value_or_end"


class CallTracker:
    """Follows generated text and says what the next token belongs to.

    Feed the text as it is generated (:meth:`feed`, any chunk size); :attr:`position` then
    classifies the next token. The tracker understands the block format of this module and
    descends into nested objects and arrays with the tool's schema (local ``$ref``, ``anyOf``,
    ``oneOf``, ``prefixItems`` included). Text it cannot parse as a call is treated as text
    outside calls until the next ``<tool_call>``.

    Args:
        specs: The tools that calls may name.
    """

    def __init__(self, specs: Sequence[ToolSpec]) -> None:
        self._params = {spec.name: spec.parameters for spec in specs}
        self._reset_outside()

    def _reset_outside(self) -> None:
        self._mode = "outside"  # outside | json | close
        self._tail = ""
        self._stack: list[_Frame] = []
        self._root: Mapping[str, Any] = {}
        self._string: str | None = None  # "key" | "value" while inside a string
        self._buffer: list[str] = []
        self._escape = False
        self._scalar: str | None = None  # "number" | "literal" while inside one
        self._name: str | None = None

    @property
    def tool_name(self) -> str | None:
        """The name of the call being generated, once its name string is complete."""
        return self._name if self._mode != "outside" else None

    def feed(self, text: str) -> CallPosition:
        """Consume generated text.

        Args:
            text: The next piece of the generated text.

        Returns:
            The position of the next token after ``text``.
        """
        for char in text:
            self._step(char)
        return self.position

    def _step(self, char: str) -> None:
        if self._mode == "outside":
            self._tail = (self._tail + char)[-len(CALL_OPEN) :]
            if self._tail == CALL_OPEN:
                self._mode = "json"
                self._tail = ""
            return
        if self._mode == "close":
            self._tail += char
            if self._tail == CALL_CLOSE:
                self._reset_outside()
            elif not CALL_CLOSE.startswith(self._tail):
                self._reset_outside()
                self._step(char)
            return
        if not self._json_step(char):
            self._reset_outside()
            self._step(char)

    def _json_step(self, char: str) -> bool:
        if self._string is not None:
            if self._escape:
                self._escape = False
                self._buffer.append(char)
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._end_string()
            else:
                self._buffer.append(char)
            return True
        if self._scalar is not None:
            if char.isalnum() or char in "+-.":
                return True
            self._scalar = None
            self._after_value()
        if char in _WHITESPACE:
            return True
        if not self._stack:
            if char == "{":  # the wrapper object opens
                self._stack.append(_Frame(True, None, wrapper=True))
                return True
            return False
        frame = self._stack[-1]
        if frame.expect == "key_or_end" or frame.expect == "key":
            if char == '"':
                self._string, self._buffer = "key", []
                return True
            if char == "}" and frame.expect == "key_or_end":
                self._close_container()
                return True
            return False
        if frame.expect == "colon":
            if char != ":":
                return False
            frame.expect = "value"
            return True
        if frame.expect in ("value", "value_or_end"):
            if char == "]" and frame.expect == "value_or_end":
                self._close_container()
                return True
            return self._start_value(char)
        if frame.expect == "comma_or_end":
            if char == ",":
                frame.expect = "key" if frame.is_object else "value"
                return True
            if char == ("}" if frame.is_object else "]"):
                self._close_container()
                return True
        return False

    def _start_value(self, char: str) -> bool:
        schema = self._value_schema()
        if char == '"':
            self._string, self._buffer = "value", []
        elif char == "{":
            self._stack.append(_Frame(True, schema))
        elif char == "[":
            self._stack.append(_Frame(False, schema))
        elif char == "-" or char.isdigit():
            self._scalar = "number"
        elif char in "tfn":
            self._scalar = "literal"
        else:
            return False
        if char in "{[" and self._stack[-2].wrapper and schema is not None:
            self._root = schema
        return True

    def _end_string(self) -> None:
        kind, text = self._string, "".join(self._buffer)
        self._string, self._buffer = None, []
        frame = self._stack[-1]
        if kind == "key":
            frame.key = text
            frame.expect = "colon"
            return
        if frame.wrapper and frame.key == "name":
            self._name = text
        self._after_value()

    def _after_value(self) -> None:
        frame = self._stack[-1]
        frame.expect = "comma_or_end"
        if not frame.is_object:
            frame.index += 1

    def _close_container(self) -> None:
        frame = self._stack.pop()
        if frame.wrapper:
            self._mode, self._tail = "close", ""
        else:
            self._after_value()

    def _value_schema(self) -> Any:
        """The schema of the value that starts at the current position (None when unknown)."""
        frame = self._stack[-1]
        if frame.wrapper:
            if frame.key == "name":
                return _NAME
            if frame.key == "arguments" and self._name is not None:
                return self._params.get(self._name)
            return None
        if not isinstance(frame.schema, Mapping):
            return None
        if frame.is_object:
            return _property_schema(frame.schema, frame.key or "", self._root)
        return _item_schema(frame.schema, frame.index, self._root)

    def open_choice(self) -> tuple[str, list[str]] | None:
        """Inside a tool name or a string enum value: ``(text so far, allowed values)``.

        ``None`` anywhere else (free text, numbers, structure, before the opening quote).
        """
        if self._mode != "json" or self._string != "value" or not self._stack:
            return None
        schema = self._value_schema()
        if schema is _NAME:
            return "".join(self._buffer), list(self._params)
        if self._stack[-1].wrapper or not isinstance(schema, Mapping):
            return None
        values = _resolve(schema, self._root).get("enum")
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            return "".join(self._buffer), list(values)
        return None

    @property
    def position(self) -> CallPosition:
        """What the next token belongs to."""
        if self._mode == "outside":
            return CallPosition.OUTSIDE
        if self._mode == "close" or not self._stack:
            return CallPosition.STRUCTURE
        frame = self._stack[-1]
        if self._string == "key" or (
            self._string is None and frame.expect in ("key", "key_or_end")
        ):
            return CallPosition.STRUCTURE if frame.wrapper else CallPosition.KEY
        if self._string == "value":
            started: str | None = "string"
        elif self._scalar is not None:
            started = self._scalar
        elif frame.expect in ("value", "value_or_end"):
            started = None
        else:
            return CallPosition.STRUCTURE
        schema = self._value_schema()
        if schema is _NAME:
            return CallPosition.NAME
        if frame.wrapper:
            return CallPosition.STRUCTURE
        return _classify(schema, started, self._root)


def _property_schema(schema: Mapping[str, Any], key: str, root: Mapping[str, Any]) -> Any:
    schema = _resolve(schema, root)
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and key in properties:
        return properties[key]
    for branch in _branches(schema):
        found = _property_schema(branch, key, root)
        if found is not None:
            return found
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def _item_schema(schema: Mapping[str, Any], index: int, root: Mapping[str, Any]) -> Any:
    schema = _resolve(schema, root)
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list) and index < len(prefix):
        return prefix[index]
    items = schema.get("items")
    if isinstance(items, Mapping):
        return items
    for branch in _branches(schema):
        found = _item_schema(branch, index, root)
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


def _classify(schema: Any, started: str | None, root: Mapping[str, Any]) -> CallPosition:
    """Classify a value by its schema and by how it started (string, number, literal, or not)."""
    fallback = {"string": CallPosition.FREE_TEXT, "number": CallPosition.NUMBER}
    if not isinstance(schema, Mapping):
        return fallback.get(started or "string", CallPosition.CHOICE)
    schema = _resolve(schema, root)
    if "enum" in schema or "const" in schema:
        return CallPosition.CHOICE
    kinds: set[CallPosition] = set()
    branches = [b for b in (schema.get("anyOf"), schema.get("oneOf")) if isinstance(b, list)]
    for branch_list in branches:
        kinds |= {_classify(b, started, root) for b in branch_list if _may_start(b, started, root)}
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
    schema = _resolve(schema, root)
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


def call_position(text: str, specs: Sequence[ToolSpec]) -> CallPosition:
    """Classify the token that comes after a generated text.

    Args:
        text: The text generated so far (may hold free text and earlier call blocks).
        specs: The tools that calls may name.

    Returns:
        What the next token belongs to.
    """
    return CallTracker(specs).feed(text)


def in_free_text_value(text: str, specs: Sequence[ToolSpec]) -> bool:
    """Tell whether the next token is part of a free-text string argument value.

    A free-text value is a string argument whose schema has no ``enum`` or ``const`` (when a
    value may be a string or something else, a value that has not started yet counts as free
    text). The tool name, enum values, numbers, booleans, keys and structure are not.

    Args:
        text: The text generated so far.
        specs: The tools that calls may name.

    Returns:
        True when the next token belongs to a free-text string value.
    """
    return call_position(text, specs) is CallPosition.FREE_TEXT
