"""Reading call text as it is generated: where call blocks open and close, and where in a call
the next token falls.

This module is the one reader of the block markers of :mod:`fints_agent.calls.format`:

- :func:`call_blocks`: the call blocks of a text (where each starts and ends, its body, whether
  it is closed); :func:`~fints_agent.calls.parsing.parse_calls` reads calls from them.
- :func:`text_before_calls`: the free text before the first block, and whether one has opened
  (what a stream may show).
- :func:`in_open_call`: whether a text ends inside a block that is not closed yet (where a call
  may be brought to an end).
- :class:`CallTracker` follows a generated text character by character and says what the next
  token belongs to (the tool name, an argument key, a free-text string value, an enum value,
  ...). Steering can use it to act only where the model makes a choice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fints_agent.calls.format import CALL_CLOSE, CALL_OPEN
from fints_agent.calls.positions import CallPosition, classify, item_schema, property_schema
from fints_agent.calls.validators import follow_references

if TYPE_CHECKING:
    from fints_agent.calls.specs import ToolSpec

__all__ = [
    "CallBlock",
    "CallTracker",
    "call_blocks",
    "call_position",
    "in_free_text_value",
    "in_open_call",
    "text_before_calls",
]


@dataclass(frozen=True)
class CallBlock:
    """One call block of a text.

    Attributes:
        start: Where its opening marker starts.
        end: Where it ends: after its closing marker, or at the end of the text when unclosed.
        body: The text between the markers (to the end of the text when unclosed).
        closed: Whether its closing marker was found.
    """

    start: int
    end: int
    body: str
    closed: bool


_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)
_DECODER = json.JSONDecoder(strict=False)
_WHITESPACE = " \t\r\n"


def call_blocks(text: str) -> list[CallBlock]:
    """The call blocks of a text, in order.

    A block opens at an opening marker. Its body is read as JSON first, so a string value that
    contains the closing marker does not end the block; a body that does not parse ends at the
    first closing marker (or the end of the text, unclosed). The next block is looked for after
    the end of the one before.

    Args:
        text: A generated text (free text and call blocks).

    Returns:
        The blocks; only the last one can be unclosed.
    """
    blocks: list[CallBlock] = []
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
            blocks.append(CallBlock(start, end, text[body_start:close_at], True))
        else:
            match = _BLOCK.match(text, start)
            assert match is not None  # the pattern matches from any CALL_OPEN
            end = match.end()
            blocks.append(CallBlock(start, end, match.group(1), bool(match.group(2))))
        position = end
    return blocks


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def in_open_call(text: str) -> bool:
    """Tell whether a text ends inside a call block that is not closed yet.

    The answer of :func:`call_blocks` (its last block is unclosed), found in one pass: a closed
    block ends with its closing marker and an unclosed one has no closing marker after its
    start, so the text is inside an unclosed block exactly when its last opening marker comes
    after its last closing marker.

    Args:
        text: The text generated so far.

    Returns:
        True when a call block is open at the end of ``text``.
    """
    return text.rfind(CALL_OPEN) > text.rfind(CALL_CLOSE)


def text_before_calls(text: str) -> tuple[str, bool]:
    """The free text before the first call block, and whether a block has opened.

    For showing text while it is generated: once a block has opened, the text before it is all
    there is to show. While none has, a tail of ``text`` that may be the start of an opening
    marker (``<tool_ca``) is left out, until more text shows whether it is one.

    Args:
        text: The text generated so far (or the part of it not shown yet).

    Returns:
        ``(the text before the first block, True)`` once an opening marker is complete, else
        ``(the text without a tail that may begin a marker, False)``.
    """
    start = text.find(CALL_OPEN)
    if start >= 0:
        return text[:start], True
    for k in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-k:]):
            return text[:-k], False
    return text, False


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
    classifies the next token. The tracker understands the block format of
    :mod:`fints_agent.calls.format` and descends into nested objects and arrays with the tool's
    schema (local ``$ref``, ``anyOf``, ``oneOf``, ``prefixItems`` included). Text it cannot
    parse as a call is treated as text outside calls until the next ``<tool_call>``.

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
            return property_schema(frame.schema, frame.key or "", self._root)
        return item_schema(frame.schema, frame.index, self._root)

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
        values = follow_references(schema, self._root).get("enum")
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
        return classify(schema, started, self._root)


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
