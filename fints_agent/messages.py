"""LangChain messages to the OpenAI-style dicts the prompt renderer takes.

Every message kind renders: system (several, anywhere), human, AI (text and tool calls),
tool results (string or list content, error status), chat and function messages. Content
blocks that a text-only model cannot read (images, audio, files) raise
:class:`UnsupportedContentError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    MessageLikeRepresentation,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)

__all__ = ["UnsupportedContentError", "feedback_chat", "to_chat_dicts"]


class UnsupportedContentError(ValueError):
    """A message carries content the text-only model cannot read."""


_TEXT_TYPES = {"text", "text-plain", "output_text", "input_text"}


def content_text(content: str | list[Any], where: str = "message") -> str:
    """The text of a message's content (a string or a list of content blocks).

    Raises:
        UnsupportedContentError: A block is an image, audio, file or unknown kind.
    """
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        if not isinstance(block, dict):
            raise UnsupportedContentError(f"{where}: unsupported content block {block!r}")
        kind = block.get("type")
        if kind in _TEXT_TYPES:
            parts.append(str(block.get("text", "")))
        elif kind in ("tool_use", "tool_call", "reasoning", "thinking"):
            continue  # carried by tool_calls, or not shown to the model again
        else:
            raise UnsupportedContentError(
                f"{where}: content of type {kind!r} is not supported by this text-only model"
            )
    return "".join(parts)


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert LangChain messages to ``{"role", "content", ...}`` dicts.

    Raises:
        UnsupportedContentError: Image, audio or file content, or an unknown message type.
    """
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"message {i} ({m.type})"
        text = content_text(m.content, where)
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": text})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": text})
        elif isinstance(m, AIMessage):
            entry: dict[str, Any] = {"role": "assistant", "content": text}
            if m.tool_calls:
                entry["tool_calls"] = [
                    {"name": tc["name"], "arguments": tc["args"], "id": tc.get("id")}
                    for tc in m.tool_calls
                ]
            out.append(entry)
        elif isinstance(m, ToolMessage):
            status = getattr(m, "status", "success")
            body = text if status != "error" else f"Error: {text}"
            out.append(
                {"role": "tool", "content": body, "name": m.name, "tool_call_id": m.tool_call_id}
            )
        elif isinstance(m, FunctionMessage):
            out.append({"role": "tool", "content": text, "name": m.name})
        elif isinstance(m, ChatMessage):
            out.append({"role": m.role, "content": text})
        else:
            raise UnsupportedContentError(f"{where}: unsupported message type {type(m).__name__}")
    return out


def feedback_chat(messages: Sequence[MessageLikeRepresentation]) -> list[dict[str, Any]]:
    """The chat dicts of a turn's messages given in any form LangChain accepts.

    LangChain messages, ``(role, content)`` tuples, strings (user messages) and OpenAI-style
    dicts go through :func:`langchain_core.messages.convert_to_messages`; a plain
    ``{"role", "content"}`` dict of a role this module renders is kept as it is (so extra keys
    such as ``tool_calls`` in the renderer's own form survive).

    Raises:
        UnsupportedContentError: Image, audio or file content, or an unknown message type.
        ValueError: A message LangChain cannot read.
    """
    if isinstance(messages, (str, BaseMessage, Mapping)):
        messages = [messages]  # one message given alone
    out: list[dict[str, Any]] = []
    for m in messages:
        if (
            isinstance(m, Mapping)
            and isinstance(m.get("content", ""), str)
            and m.get("role") in _ROLES
        ):
            out.append(dict(m))
        else:
            out += to_chat_dicts(convert_to_messages([m]))
    return out


_ROLES = frozenset({"system", "user", "assistant", "tool"})


def dumps_args(arguments: dict[str, Any]) -> str:
    """Arguments as compact JSON (as streamed in ``tool_call_chunks``)."""
    return json.dumps(arguments, ensure_ascii=False)
