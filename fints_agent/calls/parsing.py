"""Parsing finished text into calls: each call block of a generated text becomes a
:class:`ToolCall` (a known tool, valid arguments) or an :class:`InvalidToolCall` (why not).

The blocks are found by :func:`fints_agent.calls.tracker.call_blocks`, the same reading of the
markers that streaming and decoding use.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fints_agent.calls.specs import ToolSpec, validate_arguments
from fints_agent.calls.tracker import call_blocks

__all__ = ["InvalidToolCall", "ToolCall", "new_call_id", "parse_calls"]


def new_call_id() -> str:
    """Return a fresh call id of the form ``call_<24 hex digits>``."""
    return f"call_{uuid.uuid4().hex[:24]}"


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


def parse_calls(
    text: str, specs: Sequence[ToolSpec]
) -> tuple[list[ToolCall], list[InvalidToolCall], str]:
    """Read the call blocks of a generated text.

    Every ``<tool_call>...</tool_call>`` block (as :func:`~fints_agent.calls.tracker.call_blocks`
    finds them) becomes a valid call or an invalid one (unknown tool, text that is not a JSON
    object with ``name`` and ``arguments``, arguments that do not follow the schema, a block
    that is never closed). Each gets a fresh id.

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
    for block in call_blocks(text):
        pieces.append(text[position : block.start])
        position = block.end
        result = _parse_block(block.body, block.closed, by_name)
        if isinstance(result, ToolCall):
            calls.append(result)
        else:
            invalid.append(result)
    pieces.append(text[position:])
    return calls, invalid, "".join(pieces).strip()


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
