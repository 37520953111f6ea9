"""The request of a turn: the text of its latest user message.

Every part that needs a turn's request reads it here: request-span copying restricts free string
arguments to spans of it (:mod:`fints_agent.calls.spans`), the worked examples of
retrieval-augmented prompting show it, and the memory stores and retrieves a trajectory by it.

- :func:`request_text`: the text of the latest user message, as written.
- :func:`retrieval_text`: what the memory keys a turn by: the request without surrounding
  whitespace, or, for a turn without a user message, the text of its last message.

Both read OpenAI-style message dicts (``{"role": ..., "content": ...}``); the user role is
``"user"`` (or LangChain's ``"human"``). Content is a string or a list of content blocks, whose
text parts (strings, and blocks with a string ``"text"``) are joined by a space; other blocks
(images, tool use) carry no text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["USER_ROLES", "message_text", "request_text", "retrieval_text"]

USER_ROLES = frozenset({"user", "human"})
"""The roles of a user message."""


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message's content: a string as it is, the text parts of a list of content
    blocks joined by a space, ``""`` for anything else (no content, ``None``)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part if isinstance(part, str) else part.get("text")
            for part in content
            if isinstance(part, str | Mapping)
        ]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _latest_user_message(messages: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((m for m in reversed(messages) if m.get("role") in USER_ROLES), None)


def request_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The request of a turn: the text of its latest user message, as written.

    Args:
        messages: The turn's messages, oldest first.

    Returns:
        The text (see :func:`message_text`), or ``""`` when no message is a user message.
    """
    message = _latest_user_message(messages)
    return message_text(message) if message is not None else ""


def retrieval_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the memory stores and retrieves a turn by.

    The request (:func:`request_text`) without surrounding whitespace; a turn without a user
    message is keyed by the text of its last message instead.

    Args:
        messages: The turn's messages, oldest first.

    Returns:
        The text, ``""`` when there are no messages (or the chosen one has no text).
    """
    message = _latest_user_message(messages)
    if message is None and messages:
        message = messages[-1]
    return message_text(message).strip() if message is not None else ""
