"""LangChain messages to the chat dicts the prompt renderer takes (no model)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from tiny import tiny_tokenizer

from fints_agent.calls import render_call
from fints_agent.messages import (
    UnsupportedContentError,
    dumps_args,
    feedback_chat,
    to_chat_dicts,
)
from fints_agent.prompting import PromptRenderer

CALL: dict[str, Any] = {
    "name": "get_weather",
    "args": {"city": "Oslo", "units": "celsius"},
    "id": "c1",
}
"""A LangChain tool call."""


# -- to_chat_dicts --------------------------------------------------------------------------


def test_every_message_kind_converts() -> None:
    chat = to_chat_dicts(
        [
            SystemMessage("Be brief."),
            HumanMessage("Weather in Oslo?"),
            AIMessage("Let me look.", tool_calls=[CALL]),
            ToolMessage("sunny", tool_call_id="c1", name="get_weather"),
            AIMessage("It is sunny."),
            FunctionMessage(content="42", name="answer"),
            ChatMessage(content="Too long.", role="critic"),
            SystemMessage("Answer in one word."),
        ]
    )
    assert chat == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "name": "get_weather",
                    "arguments": {"city": "Oslo", "units": "celsius"},
                    "id": "c1",
                }
            ],
        },
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "tool", "content": "42", "name": "answer"},
        {"role": "critic", "content": "Too long."},
        {"role": "system", "content": "Answer in one word."},
    ]


def test_a_failed_tool_result_says_so() -> None:
    [ok, failed] = to_chat_dicts(
        [
            ToolMessage("sunny", tool_call_id="c1"),
            ToolMessage("city not found", tool_call_id="c2", status="error"),
        ]
    )
    assert ok["content"] == "sunny"
    assert failed["content"] == "Error: city not found"
    assert failed["tool_call_id"] == "c2"


def test_content_blocks_give_their_text() -> None:
    [human, ai, tool] = to_chat_dicts(
        [
            HumanMessage(
                [{"type": "text", "text": "Weather "}, "in ", {"type": "text", "text": "Oslo?"}]
            ),
            AIMessage(
                [
                    {"type": "reasoning", "reasoning": "they want weather"},
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_call", "name": "get_weather", "args": {}, "id": "c1"},
                ]
            ),
            ToolMessage([{"type": "text", "text": "rain later"}], tool_call_id="c1"),
        ]
    )
    assert human["content"] == "Weather in Oslo?"
    assert ai["content"] == "Looking."
    assert tool["content"] == "rain later"


def test_message_chunks_convert_as_their_messages() -> None:
    chunk = AIMessageChunk(
        content="",
        tool_call_chunks=[
            {"name": "get_weather", "args": '{"city": "Oslo"}', "id": "c1", "index": 0}
        ],
    )
    [entry] = to_chat_dicts([chunk])
    assert entry["role"] == "assistant"
    assert entry["tool_calls"] == [
        {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "c1"}
    ]


@pytest.mark.parametrize(
    ("block", "kind"),
    [
        ({"type": "image", "base64": "AAAA", "mime_type": "image/png"}, "image"),
        ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, "image_url"),
        ({"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}, "audio"),
        ({"type": "file", "base64": "AAAA", "mime_type": "application/pdf"}, "file"),
    ],
)
def test_content_a_text_model_cannot_read_is_refused(block: dict[str, Any], kind: str) -> None:
    with pytest.raises(UnsupportedContentError, match=f"message 1 .*'{kind}'"):
        to_chat_dicts(
            [SystemMessage("Be brief."), HumanMessage([{"type": "text", "text": "see"}, block])]
        )


def test_an_unknown_block_or_message_type_is_refused() -> None:
    with pytest.raises(UnsupportedContentError, match="'widget' is not supported"):
        to_chat_dicts([HumanMessage([{"type": "widget", "text": "hi"}])])
    with pytest.raises(UnsupportedContentError, match="unsupported message type RemoveMessage"):
        to_chat_dicts([RemoveMessage(id="m1")])
    assert issubclass(UnsupportedContentError, ValueError)


# -- tool calls round-trip ------------------------------------------------------------------


def test_tool_calls_round_trip_through_feedback_and_the_prompt() -> None:
    ai = AIMessage("", tool_calls=[CALL, {"name": "play_song", "args": {"song": "x"}, "id": "c2"}])
    [entry] = to_chat_dicts([ai])
    assert [(c["name"], c["arguments"], c["id"]) for c in entry["tool_calls"]] == [
        (c["name"], c["args"], c["id"]) for c in ai.tool_calls
    ]
    assert feedback_chat([entry]) == [entry]  # the renderer's own form is kept as it is
    assert feedback_chat([ai]) == [entry]
    prompt = PromptRenderer(tiny_tokenizer()).render_prompt(
        [{"role": "user", "content": "hi"}, entry]
    )
    assert (
        render_call("get_weather", CALL["args"]) + render_call("play_song", {"song": "x"}) in prompt
    )
    # Streamed arguments read back to the same call.
    assert [json.loads(dumps_args(c["arguments"])) for c in entry["tool_calls"]] == [
        CALL["args"],
        {"song": "x"},
    ]


def test_openai_style_tool_calls_become_the_renderers_form() -> None:
    openai = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    }
    chat = feedback_chat([("user", "Weather in Oslo?"), openai])
    assert chat[1]["tool_calls"] == [
        {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "c1"}
    ]
    prompt = PromptRenderer(tiny_tokenizer()).render_prompt(chat)
    assert render_call("get_weather", {"city": "Oslo"}) in prompt


# -- dumps_args -----------------------------------------------------------------------------


def test_dumps_args_is_one_line_of_json_that_reads_back() -> None:
    args = {"city": "Zürich", "days": 3, "tags": ["a", "b"], "nested": {"ok": True, "x": None}}
    text = dumps_args(args)
    assert json.loads(text) == args
    assert "\n" not in text
    assert "Zürich" in text  # not escaped
    assert list(json.loads(text)) == list(args)  # key order kept
    assert dumps_args({}) == "{}"


# -- feedback_chat --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Weather in Oslo?",
        ("user", "Weather in Oslo?"),
        ("human", "Weather in Oslo?"),
        HumanMessage("Weather in Oslo?"),
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "human", "content": "Weather in Oslo?"},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
    ],
)
def test_feedback_chat_takes_every_message_form(message: Any) -> None:
    expected = [{"role": "user", "content": "Weather in Oslo?"}]
    assert feedback_chat([message]) == expected
    if not isinstance(message, tuple):
        assert feedback_chat(message) == expected  # one message given alone


def test_feedback_chat_converts_a_whole_conversation() -> None:
    chat = feedback_chat(
        [
            ("system", "Be brief."),
            {"role": "developer", "content": "Use celsius."},
            ("user", "Weather in Oslo?"),
            AIMessage("", tool_calls=[CALL]),
            ToolMessage("sunny", tool_call_id="c1", name="get_weather"),
            {"role": "assistant", "content": "Sunny.", "extra": 1},  # extra keys survive
            "thanks",
        ]
    )
    assert [m["role"] for m in chat] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert chat[1]["content"] == "Use celsius."
    assert chat[3]["tool_calls"] == [{"name": "get_weather", "arguments": CALL["args"], "id": "c1"}]
    assert chat[4]["content"] == "sunny"
    assert chat[5] == {"role": "assistant", "content": "Sunny.", "extra": 1}


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (("nobody", "hi"), "nobody"),
        ({"role": "wizard", "content": "hi"}, "wizard"),
        ({"content": "hi"}, "role"),
    ],
)
def test_feedback_chat_refuses_a_malformed_message_clearly(message: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        feedback_chat([message])


def test_feedback_chat_refuses_content_a_text_model_cannot_read() -> None:
    image = {"type": "image", "base64": "AAAA", "mime_type": "image/png"}
    with pytest.raises(UnsupportedContentError, match="image"):
        feedback_chat([HumanMessage([image])])


@pytest.mark.parametrize("message", [[7], [None], [("user",)], 7, None])
def test_feedback_chat_refuses_what_is_not_a_message_with_a_value_error(message: Any) -> None:
    with pytest.raises(ValueError, match=r"not a message|sequence of messages") as caught:
        feedback_chat(message)
    assert not isinstance(caught.value, UnsupportedContentError)


@pytest.mark.parametrize(
    "call",
    [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{"}},
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "[1]"}},
        {"id": "c1", "args": {"city": "Oslo"}},
        "get_weather",
    ],
)
def test_feedback_chat_refuses_a_malformed_tool_call_clearly(call: Any) -> None:
    with pytest.raises(ValueError, match=r"message 0: .*tool call"):
        feedback_chat([{"role": "assistant", "content": "", "tool_calls": [call]}])


def test_langchain_style_tool_calls_in_a_dict_become_the_renderers_form() -> None:
    [entry] = feedback_chat([{"role": "assistant", "content": "", "tool_calls": [CALL]}])
    assert entry["tool_calls"] == [{"name": "get_weather", "arguments": CALL["args"], "id": "c1"}]
