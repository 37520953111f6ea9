"""The request of a turn (:mod:`fints_agent.calls.request`): what request-span copying, the
worked examples of prompting and the memory read from a turn's messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from fints_agent.calls import request_text, retrieval_text
from fints_agent.calls.request import message_text

TURN: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": " weather in oslo "},
    {"role": "assistant", "content": "which units?"},
]


def test_request_text_is_the_latest_user_message_as_written() -> None:
    assert request_text(TURN) == " weather in oslo "
    assert request_text([*TURN, {"role": "human", "content": "celsius"}]) == "celsius"
    assert request_text([{"role": "assistant", "content": "hi"}]) == ""
    assert request_text([]) == ""
    assert request_text([{"role": "user", "content": None}, TURN[2]]) == ""


def test_content_blocks_give_their_text_parts() -> None:
    blocks = [
        {"type": "text", "text": "play"},
        {"type": "image_url", "image_url": {"url": "x"}},
        "jazz",
        {"type": "input_text", "text": "now"},
        7,
    ]
    assert message_text({"content": blocks}) == "play jazz now"
    assert message_text({"content": {"text": "a dict"}}) == ""
    assert message_text({}) == ""


def test_retrieval_text_strips_and_falls_back_to_the_last_message() -> None:
    assert retrieval_text(TURN) == "weather in oslo"
    assert retrieval_text(TURN[:1]) == "be brief"  # no user message: the last message
    assert retrieval_text([]) == ""
    # A blank user message is an empty request (no fall back to other messages).
    assert retrieval_text([{"role": "user", "content": "  "}, TURN[2]]) == ""


def _memory_reference(plain: list[dict[str, Any]]) -> str:
    """The memory's reading of a turn, written out (plain dicts)."""
    chosen = next((m for m in reversed(plain) if m.get("role") == "user"), None)
    if chosen is None and plain:
        chosen = plain[-1]
    if chosen is None:
        return ""
    content = chosen.get("content") or ""
    if isinstance(content, list):
        content = " ".join(
            str(b.get("text", "")) if isinstance(b, Mapping) else str(b) for b in content
        )
    return str(content).strip()


def _prompting_reference(messages: list[dict[str, Any]]) -> str:
    """The worked examples' reading of a turn, written out (string contents)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return ""


TURNS: list[list[dict[str, Any]]] = [
    TURN,
    TURN[:1],
    [],
    [{"role": "user", "content": "first"}, {"role": "tool", "content": "x"}],
    [{"role": "user", "content": [{"type": "text", "text": "play"}, "it"]}],
    [{"role": "user", "content": "  "}, {"role": "assistant", "content": "?"}],
    [{"role": "user", "content": None}],
    [{"role": "assistant", "content": " only me "}],
]


@pytest.mark.parametrize("turn", TURNS)
def test_each_reader_keeps_its_reading(turn: list[dict[str, Any]]) -> None:
    assert retrieval_text(turn) == _memory_reference(turn)
    if all(isinstance(m.get("content"), str | None) for m in turn):
        assert request_text(turn) == _prompting_reference(turn)
