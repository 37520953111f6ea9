"""LangChain messages to the OpenAI-style dicts the prompt renderer takes, and a turn's
result back to LangChain's forms (usage metadata).

Every message kind renders: system (several, anywhere), human, AI (text and tool calls),
tool results (string or list content, error status), chat and function messages. Content
blocks that a text-only model cannot read (images, audio, files) raise
:class:`UnsupportedContentError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from langchain_core.messages import AIMessageChunk

    from fints_agent.turn import TurnResult

__all__ = [
    "UnsupportedContentError",
    "ai_message",
    "call_dict",
    "dumps_args",
    "feedback_chat",
    "last_chunk",
    "to_chat_dicts",
    "usage_metadata",
]


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


def call_dict(call: Mapping[str, Any]) -> dict[str, Any]:
    """A call in any of the forms feedback takes (``arguments`` or ``args``) as
    ``{"name", "arguments"}``."""
    args = call.get("arguments", call.get("args", {}))
    return {"name": call.get("name"), "arguments": dict(args) if args else {}}


def usage_metadata(result: TurnResult) -> Any:
    """The token counts of a turn as LangChain usage metadata."""
    from langchain_core.messages.ai import UsageMetadata

    return UsageMetadata(
        input_tokens=result.prompt_tokens,
        output_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def ai_message(result: TurnResult, metadata: dict[str, Any]) -> AIMessage:
    """A turn's answer: its text (outside call blocks when it called), valid calls as
    ``tool_calls``, the others as ``invalid_tool_calls``, usage and response metadata."""
    from langchain_core.messages.tool import invalid_tool_call, tool_call

    return AIMessage(
        content=result.content if (result.calls or result.invalid_calls) else result.text,
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in result.calls],
        invalid_tool_calls=[
            invalid_tool_call(name=c.name, args=c.args, id=c.id, error=c.error)
            for c in result.invalid_calls
        ],
        usage_metadata=usage_metadata(result),
        response_metadata=metadata,
    )


def last_chunk(result: TurnResult, content: str, metadata: dict[str, Any]) -> AIMessageChunk:
    """The last chunk of a streamed turn: text not shown yet, every call as a tool-call chunk
    (an invalid call's arguments carry its error first, so that they never parse into
    ``tool_calls``), usage and response metadata."""
    from langchain_core.messages import AIMessageChunk
    from langchain_core.messages.tool import tool_call_chunk

    chunks = [
        tool_call_chunk(name=c.name, args=dumps_args(c.arguments), id=c.id, index=i)
        for i, c in enumerate(result.calls)
    ]
    chunks += [
        tool_call_chunk(
            name=c.name,
            args=f"<invalid: {c.error}> {c.args}",
            id=c.id,
            index=len(result.calls) + i,
        )
        for i, c in enumerate(result.invalid_calls)
    ]
    return AIMessageChunk(
        content=content,
        tool_call_chunks=chunks,
        usage_metadata=usage_metadata(result),
        response_metadata=metadata,
        chunk_position="last",
    )
