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
    from fints_agent.turn import TurnResult

__all__ = [
    "UnsupportedContentError",
    "ai_message",
    "call_dict",
    "dumps_args",
    "feedback_chat",
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
    survive), except that the ``tool_calls`` of an assistant dict are written in the renderer's
    form ``{"name", "arguments": {...}, "id"}``, whether given in that form, in OpenAI's
    (``{"id", "function": {"name", "arguments": "<json>"}}``) or in LangChain's (``args``).

    Raises:
        UnsupportedContentError: Image, audio or file content, or an unknown message type.
        ValueError: A message LangChain cannot read (a value that is not a message at all
            included), or a tool call without a name or with arguments that are not a JSON
            object.
    """
    if isinstance(messages, (str, BaseMessage, Mapping)):
        messages = [messages]  # one message given alone
    try:
        items = list(messages)
    except TypeError:
        raise ValueError(
            f"messages must be a sequence of messages (or one message), not {messages!r}"
        ) from None
    out: list[dict[str, Any]] = []
    for i, m in enumerate(items):
        if (
            isinstance(m, Mapping)
            and isinstance(m.get("content", ""), str)
            and m.get("role") in _ROLES
        ):
            entry = dict(m)
            if entry["role"] == "assistant" and entry.get("tool_calls"):
                entry["tool_calls"] = [
                    _renderer_call(call, f"message {i}") for call in entry["tool_calls"]
                ]
            out.append(entry)
            continue
        try:
            converted = convert_to_messages([m])
        except (NotImplementedError, TypeError, ValueError, KeyError) as exc:
            raise ValueError(
                f"message {i}: {m!r} is not a message LangChain can read: {exc}"
            ) from exc
        out += to_chat_dicts(converted)
    return out


_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _renderer_call(call: Any, where: str) -> dict[str, Any]:
    """A tool call of an assistant dict in the renderer's form ``{"name", "arguments", "id"}``
    (a call already in that form is kept as it is; ``id`` only when the call has one).

    Raises:
        ValueError: No name, or arguments that are not a JSON object.
    """
    if not isinstance(call, Mapping):
        raise ValueError(f"{where}: a tool call must be a dict, not {call!r}")
    if isinstance(call.get("name"), str) and isinstance(call.get("arguments"), Mapping):
        return dict(call)
    function = call.get("function")
    source = function if isinstance(function, Mapping) else call
    name = source.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: tool call {call!r} has no name")
    arguments = source.get("arguments", source.get("args", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}: the arguments of tool call {name!r} are not valid JSON: {exc}"
            ) from exc
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise ValueError(
            f"{where}: the arguments of tool call {name!r} must be a JSON object, not {arguments!r}"
        )
    out = {"name": name, "arguments": dict(arguments)}
    if "id" in call:
        out["id"] = call["id"]
    return out


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
