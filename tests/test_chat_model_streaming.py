"""Streamed tool calls: each call as tool-call chunks while it is generated (name first, then
its arguments' JSON text), adding up to the message ``invoke`` gives.

The chunking is checked on scripted turn texts (no model) and through the chat model on a tiny
random-config Llama with the real SmolLM2 tokenizer (sampled with fixed seeds, so that a stream
and an ``invoke`` generate the same text).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from langchain_tests.utils.stream_lifecycle import assert_valid_event_stream
from tiny import SHORT, bounded_tool, saved_tiny_smol

from fints_agent.calls import parse_calls, render_call, render_calls, to_tool_specs
from fints_agent.chat_model import FintsChatModel
from fints_agent.engine import TurnEngine
from fints_agent.messages import ai_message
from fints_agent.streaming import TurnChunks, unreadable_suffix
from fints_agent.turn import TurnRequest, TurnResult, TurnStream

TOOLS: list[dict[str, Any]] = [
    bounded_tool(
        "get_weather",
        {"city": SHORT, "units": {"enum": ["celsius", "fahrenheit"]}},
        ["city", "units"],
    ),
    bounded_tool(
        "book_ride",
        {"pickup": SHORT, "seats": {"type": "integer", "minimum": 1, "maximum": 6}},
        ["pickup", "seats"],
    ),
]
SPECS = to_tool_specs(TOOLS)


def _call(name: str, **arguments: Any) -> str:
    return render_call(name, arguments, next(s.parameters for s in SPECS if s.name == name))


def _result(text: str) -> TurnResult:
    calls, invalid, content = parse_calls(text, SPECS)
    return TurnResult(text, content, calls, invalid, 3, 5, "stop", {})


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] if size else [text]


def _stream(text: str, size: int, *, calls: bool = True) -> list[AIMessageChunk]:
    chunks = TurnChunks(calls=calls)
    out = [c for piece in _pieces(text, size) for c in chunks.feed(piece)]
    return [*out, *chunks.finish(_result(text), {"finish_reason": "stop"})]


def _total(chunks: Sequence[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def _assert_adds_up(total: AIMessageChunk, message: AIMessage) -> None:
    """The added-up chunks are the unstreamed message, up to call ids and the text LangChain
    keeps of invalid calls read from chunks."""
    assert total.content == message.content
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [
        (c["name"], c["args"]) for c in message.tool_calls
    ]
    assert [c["name"] for c in total.invalid_tool_calls] == [
        c["name"] for c in message.invalid_tool_calls
    ]
    ids = [c["id"] for c in [*total.tool_calls, *total.invalid_tool_calls]]
    assert all(isinstance(i, str) and i.startswith("call_") for i in ids)
    assert len(set(ids)) == len(ids)
    assert total.usage_metadata == message.usage_metadata


def _by_index(chunks: Sequence[AIMessageChunk]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        for piece in chunk.tool_call_chunks:
            assert isinstance(piece["index"], int)
            out.setdefault(piece["index"], []).append(dict(piece))
    return out


# -- scripted turns ---------------------------------------------------------------------------

SCRIPTS = {
    "one call": _call("get_weather", city="Oslo", units="celsius"),
    "two calls": _call("get_weather", city="Oslo", units="celsius")
    + "\n"
    + _call("book_ride", pickup="home", seats=2),
    "escapes": _call("get_weather", city='a"\\b\u00e9', units="celsius"),
    "invalid arguments": _call("book_ride", pickup="home", seats=9),
    "invalid first, valid second": _call("book_ride", pickup="far too long", seats=1)
    + "\n"
    + _call("get_weather", city="Oslo", units="celsius"),
    "unknown tool": _call("get_weather", city="Oslo", units="celsius").replace(
        "get_weather", "get_forecast"
    ),
    "unclosed": _call("get_weather", city="Oslo", units="celsius")[:-7],
    "cut in a string": _call("get_weather", city="Oslo", units="celsius")[:52],
    "cut after an escape": _call("get_weather", city='a"b', units="celsius").split('a\\"b')[0]
    + "a\\",
    "text around a call": "Sure. " + _call("get_weather", city="Oslo", units="celsius") + " ok ",
    "other spacing": '<tool_call>{"name":"get_weather","arguments":{"city":"Oslo",'
    '"units":"celsius"}}</tool_call>',
    "string arguments": '<tool_call>{"name": "get_weather", "arguments": '
    + json.dumps(json.dumps({"city": "Oslo", "units": "celsius"}))
    + "}</tool_call>",
    "not JSON": "<tool_call>{oops}</tool_call> after",
    "plain text": "  Hello there, how are you?  \n",
    "a marker in the middle": "a <tool_ca b",
    "a closing marker inside a string": _call("get_weather", city="</tool_call>", units="celsius"),
}


@pytest.mark.parametrize("size", [1, 3, 7, 0])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_scripted_turns_add_up_to_the_unstreamed_message(name: str, size: int) -> None:
    text = SCRIPTS[name]
    chunks = _stream(text, size)
    _assert_adds_up(_total(chunks), ai_message(_result(text), {}))
    assert chunks[-1].chunk_position == "last" and not chunks[-1].tool_call_chunks
    assert all(c.chunk_position is None and c.usage_metadata is None for c in chunks[:-1])
    # Tool-call chunks travel without text, so that LangChain reads them as content blocks.
    assert all(not (c.content and c.tool_call_chunks) for c in chunks)


@pytest.mark.parametrize("name", ["one call", "two calls", "escapes"])
def test_arguments_stream_as_pieces_of_their_json_text(name: str) -> None:
    text = SCRIPTS[name]
    chunks = _stream(text, 2)
    result = _result(text)
    calls = _by_index(chunks)
    assert sorted(calls) == list(range(len(result.calls)))
    for index, call in enumerate(result.calls):
        head, *rest = calls[index]
        assert (head["name"], head["index"]) == (call.name, index)
        assert head["id"].startswith("call_")
        assert len(rest) > 3  # the arguments come piece by piece
        assert all(p["name"] is None and p["id"] is None for p in rest)
        args = "".join(p["args"] for p in calls[index])
        assert json.loads(args) == call.arguments
        assert args in text  # the text as generated


def test_the_name_comes_as_soon_as_it_is_complete() -> None:
    text = SCRIPTS["one call"]
    chunks = TurnChunks()
    name_end = text.index("get_weather") + len("get_weather")
    assert chunks.feed(text[: name_end - 1]) == []
    [head] = chunks.feed(text[name_end - 1 : name_end + 1])
    assert [(c["name"], c["args"], c["index"]) for c in head.tool_call_chunks] == [
        ("get_weather", "", 0)
    ]
    assert head.content == ""


def test_an_invalid_call_streams_then_reads_as_invalid() -> None:
    text = SCRIPTS["invalid arguments"]
    chunks = _stream(text, 4)
    before_end = _total(chunks[:-2])
    assert [c["args"] for c in before_end.tool_calls] == [{"pickup": "home", "seats": 9}]
    total = _total(chunks)
    assert total.tool_calls == []
    [invalid] = total.invalid_tool_calls
    assert invalid["name"] == "book_ride"
    assert invalid["args"].startswith('{"pickup": "home", "seats": 9}')
    assert "<invalid: invalid arguments" in invalid["args"]


def test_text_before_a_call_streams_before_it() -> None:
    chunks = _stream(SCRIPTS["text around a call"], 1)
    first_call = next(i for i, c in enumerate(chunks) if c.tool_call_chunks)
    assert "".join(str(c.content) for c in chunks[:first_call]) == "Sure."


def test_a_json_answer_is_all_content() -> None:
    text = '{"note": "<tool_call>{\\"name\\": \\"x\\"}</tool_call>"}'
    chunks = TurnChunks(calls=False)
    streamed = [c for piece in _pieces(text, 5) for c in chunks.feed(piece)]
    result = TurnResult(text, text, [], [], 1, 1, "stop", {})
    total = _total([*streamed, *chunks.finish(result, {})])
    assert total.content == text
    assert total.tool_calls == total.invalid_tool_calls == []
    assert len(streamed) == len(_pieces(text, 5))


@pytest.mark.parametrize(
    "args",
    [
        '{"city": "Oslo", "tags": ["a", {"b": [1, 2]}], "q": "say \\"hi\\" \\\\ [x] {y}"}',
        '[{"a": 1}]',
        '"just a string \\u00e9"',
        "",
        "12",
        "{]",
        "}",
    ],
)
def test_an_unreadable_suffix_makes_every_prefix_invalid(args: str) -> None:
    for end in range(len(args) + 1):
        prefix = args[:end]
        suffix = unreadable_suffix(prefix, "bad")
        message = AIMessageChunk(
            content="",
            tool_call_chunks=[tool_call_chunk(name="f", args=prefix + suffix, id="c", index=0)],
        )
        assert message.tool_calls == [], prefix
        assert len(message.invalid_tool_calls) == 1
        assert suffix.endswith("<invalid: bad>")


# -- through the chat model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from saved_tiny_smol(tmp_path_factory, "tiny-smol-streaming")


def _llm(tiny_dir: Path, **kw: Any) -> FintsChatModel:
    kw.setdefault("max_tokens", 160)
    return FintsChatModel(model=str(tiny_dir), temperature=1.0, **kw)


def test_a_streamed_call_adds_up_to_the_invoked_one(tiny_dir: Path) -> None:
    bound = _llm(tiny_dir).bind_tools(TOOLS, tool_choice="any")
    for seed in (1, 3):
        message = bound.invoke("hi", seed=seed)
        chunks = list(bound.stream("hi", seed=seed))
        total = _total(chunks)
        _assert_adds_up(total, message)
        [call] = message.tool_calls
        [head, *rest] = _by_index(chunks)[0]
        assert (head["name"], head["index"]) == (call["name"], 0)
        assert head["id"] == total.tool_calls[0]["id"]
        assert rest and all(p["name"] is None and p["id"] is None for p in rest)
        assert sum(1 for c in chunks if c.tool_call_chunks) >= 3
        assert json.loads("".join(p["args"] for p in [head, *rest])) == call["args"]


def test_parallel_streamed_calls_add_up_to_the_invoked_ones(tiny_dir: Path) -> None:
    bound = _llm(tiny_dir).bind_tools(TOOLS, tool_choice="any", parallel_tool_calls=True)
    most = 0
    for seed in (0, 2):
        message = bound.invoke("hi", seed=seed)
        chunks = list(bound.stream("hi", seed=seed))
        _assert_adds_up(_total(chunks), message)
        calls = _by_index(chunks)
        assert list(calls) == list(range(len(message.tool_calls)))  # in order
        for index, call in enumerate(message.tool_calls):
            assert calls[index][0]["name"] == call["name"]
            assert json.loads("".join(p["args"] for p in calls[index])) == call["args"]
        most = max(most, len(message.tool_calls))
    assert most >= 2


def test_the_chat_model_streams_what_the_engine_writes(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invalid calls, text and calls the grammar would not write, through ``stream``,
    ``astream``, ``stream_events(version="v3")`` and ``invoke`` (the engine's text is
    scripted)."""
    script: list[str] = []

    def run(self: TurnEngine, req: TurnRequest) -> TurnStream:
        text = script[0]
        stream = TurnStream(iter(()))

        def steps() -> Iterator[str]:
            yield from _pieces(text, 3)
            stream.result = _result(text)

        stream._steps = steps()
        return stream

    monkeypatch.setattr(TurnEngine, "run", run)
    bound = _llm(tiny_dir).bind_tools(TOOLS, tool_choice="any", parallel_tool_calls=True)
    for name in ("invalid first, valid second", "unclosed", "text around a call", "not JSON"):
        script[:] = [SCRIPTS[name]]
        message = bound.invoke("hi")
        _assert_adds_up(_total(list(bound.stream("hi"))), message)

        async def collect() -> list[AIMessageChunk]:
            return [c async for c in bound.astream("hi")]

        _assert_adds_up(_total(asyncio.run(collect())), message)
        events = bound.stream_events("hi", version="v3")
        assert_valid_event_stream(list(events))
        assembled = events.output
        assert [(c["name"], c["args"]) for c in assembled.tool_calls] == [
            (c["name"], c["args"]) for c in message.tool_calls
        ]
        assert [c["name"] for c in assembled.invalid_tool_calls] == [
            c["name"] for c in message.invalid_tool_calls
        ]
    script[:] = [render_calls([("get_weather", {"city": "Oslo", "units": "celsius"})], SPECS)]
    assert bound.invoke("hi").tool_calls[0]["args"] == {"city": "Oslo", "units": "celsius"}
