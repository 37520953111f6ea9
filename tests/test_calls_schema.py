"""Tests for tool specs, the call text format, parsing and the call position tracker."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import pytest
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from fints_agent.calls import (
    CALL_SEPARATOR,
    CallPosition,
    CallTracker,
    InvalidToolCall,
    ToolCall,
    ToolSchemaError,
    ToolSpec,
    call_position,
    in_free_text_value,
    order_arguments,
    parse_calls,
    render_call,
    render_calls,
    render_tools_prompt,
    to_tool_specs,
    validate_arguments,
)

CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")


class Address(BaseModel):
    street: str
    zip_code: str | None = None


class SendMoney(BaseModel):
    """Send money to someone."""

    recipient: str = Field(description="Who gets the money.")
    amount: float = Field(gt=0)
    currency: Literal["EUR", "USD"] = "EUR"
    address: Address | None = None


class Lookup(TypedDict):
    """Look something up."""

    query: Annotated[str, ..., "What to look up."]
    limit: int


def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> str:
    """Get the weather forecast.

    Args:
        city: The city.
        unit: Temperature unit.
        days: How many days.
    """
    return city


@tool
def search_notes(text: str, tags: list[str] | None = None) -> str:
    """Search the user's notes."""
    return text


OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "set_alarm",
        "description": "Set an alarm.",
        "parameters": {
            "type": "object",
            "properties": {"time": {"type": "string"}, "repeat": {"type": "boolean"}},
            "required": ["time"],
        },
    },
}
BARE_FUNCTION = {
    "name": "play.music",
    "description": "Play a song.",
    "parameters": {"type": "object", "properties": {"song": {"type": "string"}}},
}
JSON_SCHEMA_TOOL = {
    "title": "rate-item",
    "description": "Rate an item.",
    "type": "object",
    "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["stars"],
}


@pytest.fixture(scope="module")
def specs() -> list[ToolSpec]:
    return to_tool_specs(
        [SendMoney, Lookup, get_weather, search_notes, OPENAI_TOOL, BARE_FUNCTION, JSON_SCHEMA_TOOL]
    )


def by_name(specs: list[ToolSpec], name: str) -> ToolSpec:
    return next(spec for spec in specs if spec.name == name)


# --- to_tool_specs ----------------------------------------------------------------------------


def test_every_input_shape_converts(specs: list[ToolSpec]) -> None:
    names = [spec.name for spec in specs]
    assert names == [
        "SendMoney",
        "Lookup",
        "get_weather",
        "search_notes",
        "set_alarm",
        "play.music",
        "rate-item",
    ]
    for spec in specs:
        assert spec.parameters["type"] == "object"
        assert isinstance(spec.description, str)
    assert by_name(specs, "SendMoney").description == "Send money to someone."
    assert by_name(specs, "get_weather").parameters["properties"]["unit"]["enum"] == ["c", "f"]
    assert by_name(specs, "get_weather").parameters["required"] == ["city"]
    assert by_name(specs, "Lookup").parameters["required"] == ["query", "limit"]
    assert by_name(specs, "rate-item").parameters["properties"]["stars"]["maximum"] == 5


def test_empty_tool_list() -> None:
    assert to_tool_specs([]) == []


def test_toolspec_passes_through_and_is_hashable(specs: list[ToolSpec]) -> None:
    again = to_tool_specs(specs)
    assert again == specs
    assert len({*specs, *again}) == len(specs)


def test_function_without_parameters_gets_empty_object() -> None:
    (spec,) = to_tool_specs([{"name": "ping", "description": "Ping."}])
    assert spec.parameters == {"type": "object", "properties": {}}


def test_parameters_are_copied() -> None:
    params: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
    (spec,) = to_tool_specs([{"name": "t", "description": "", "parameters": params}])
    params["properties"]["a"]["type"] = "integer"
    assert spec.parameters["properties"]["a"]["type"] == "string"


@pytest.mark.parametrize(
    ("tool_input", "message"),
    [
        ({"name": "bad name", "parameters": {"type": "object"}}, "must match"),
        ({"name": "", "parameters": {"type": "object"}}, "must match"),
        ({"name": "x" * 65, "parameters": {"type": "object"}}, "must match"),
        ({"name": "t", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}},
         "invalid parameters schema at properties/a/type"),
        ({"name": "t", "parameters": {"type": "array", "items": {}}}, "type 'object'"),
        ({"name": "t", "parameters": ["not", "a", "schema"]}, "must be a JSON object"),
        ({"name": "t", "parameters": {"type": "object", "required": "a"}}, "invalid parameters"),
        ({"foo": 1}, "cannot read the tool"),
        (42, "cannot read the tool"),
        ({"type": "function"}, "not a function tool"),
        ({"name": "t", "description": 3, "parameters": {"type": "object"}}, "description"),
    ],
)  # fmt: skip
def test_bad_tools_raise(tool_input: Any, message: str) -> None:
    with pytest.raises(ToolSchemaError, match=re.escape(message)):
        to_tool_specs([tool_input])


def test_error_names_the_tool() -> None:
    bad = {"name": "broken_tool", "parameters": {"type": "object", "properties": {"a": 5}}}
    with pytest.raises(ToolSchemaError, match="broken_tool"):
        to_tool_specs([OPENAI_TOOL, bad])


def test_duplicate_names_raise() -> None:
    with pytest.raises(ToolSchemaError, match="duplicate tool name"):
        to_tool_specs([OPENAI_TOOL, OPENAI_TOOL])


def test_schema_error_is_value_error() -> None:
    assert issubclass(ToolSchemaError, ValueError)


# --- validate_arguments -----------------------------------------------------------------------


def test_validate_arguments(specs: list[ToolSpec]) -> None:
    send = by_name(specs, "SendMoney")
    assert validate_arguments(send, {"recipient": "Dana", "amount": 5}) is None
    assert "required" in (validate_arguments(send, {"amount": 5}) or "")
    error = validate_arguments(send, {"recipient": "Dana", "amount": 5, "currency": "GBP"})
    assert error is not None and error.startswith("currency:")
    nested = {"recipient": "D", "amount": 1, "address": {"zip_code": "1"}}
    assert "street" in (validate_arguments(send, nested) or "")
    assert validate_arguments(send, {"recipient": "D", "amount": 0}) is not None
    assert validate_arguments(send, ["not", "an", "object"]) is not None


# --- rendering --------------------------------------------------------------------------------


def test_render_call_is_compact_and_ordered(specs: list[ToolSpec]) -> None:
    send = by_name(specs, "SendMoney")
    args = {"amount": 20, "address": {"zip_code": "1", "street": "Main St"}, "recipient": "Dana"}
    text = render_call("SendMoney", args, send.parameters)
    assert text == (
        '<tool_call>{"name": "SendMoney", "arguments": {"recipient": "Dana", "amount": 20, '
        '"address": {"street": "Main St", "zip_code": "1"}}}</tool_call>'
    )
    unordered = render_call("SendMoney", args)
    assert unordered.index('"amount"') < unordered.index('"recipient"')


def test_render_call_keeps_unicode_and_escapes() -> None:
    text = render_call("t", {"s": 'Zoë says "hi"\n'})
    assert '"Zoë says \\"hi\\"\\n"' in text
    with pytest.raises(ValueError):
        render_call("t", {"x": float("nan")})


def test_order_arguments_follows_refs_and_any_of() -> None:
    schema = {
        "type": "object",
        "$defs": {"P": {"type": "object", "properties": {"b": {}, "a": {}}}},
        "properties": {
            "p": {"$ref": "#/$defs/P"},
            "u": {
                "anyOf": [{"type": "null"}, {"type": "object", "properties": {"y": {}, "x": {}}}]
            },
            "list": {"type": "array", "items": {"$ref": "#/$defs/P"}},
        },
    }
    value = {"list": [{"a": 1, "b": 2}], "u": {"x": 1, "y": 2}, "p": {"a": 1, "b": 2, "z": 0}}
    ordered = order_arguments(value, schema)
    assert list(ordered) == ["p", "u", "list"]
    assert list(ordered["p"]) == ["b", "a", "z"]
    assert list(ordered["u"]) == ["y", "x"]
    assert list(ordered["list"][0]) == ["b", "a"]
    assert order_arguments(value, None) is value


def test_render_calls_joins_blocks(specs: list[ToolSpec]) -> None:
    text = render_calls([("get_weather", {"city": "Oslo"}), ("rate-item", {"stars": 3})], specs)
    first, second = text.split(CALL_SEPARATOR)
    assert first == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert second == '<tool_call>{"name": "rate-item", "arguments": {"stars": 3}}</tool_call>'


def test_render_tools_prompt(specs: list[ToolSpec]) -> None:
    prompt = render_tools_prompt(specs)
    assert prompt.startswith("# Tools")
    assert "<tool_call>" in prompt and "</tool_call>" in prompt
    listed = [json.loads(line) for line in prompt.splitlines() if line.startswith('{"name"')]
    assert [entry["name"] for entry in listed] == [spec.name for spec in specs]
    assert listed[2]["parameters"] == by_name(specs, "get_weather").parameters
    assert render_tools_prompt([]) == ""


# --- parse_calls ------------------------------------------------------------------------------


def test_parse_round_trip(specs: list[ToolSpec]) -> None:
    calls_in = [
        ("SendMoney", {"recipient": "Dana", "amount": 12.5, "currency": "USD"}),
        ("get_weather", {"city": "Zürich", "days": 3}),
    ]
    calls, invalid, content = parse_calls(render_calls(calls_in, specs), specs)
    assert invalid == [] and content == ""
    assert [(c.name, c.arguments) for c in calls] == calls_in
    assert all(CALL_ID.match(c.id) for c in calls)
    assert len({c.id for c in calls}) == 2


def test_parse_plain_text(specs: list[ToolSpec]) -> None:
    assert parse_calls("  Hello there!  ", specs) == ([], [], "Hello there!")


def test_parse_keeps_text_around_calls(specs: list[ToolSpec]) -> None:
    block = render_call("get_weather", {"city": "Rome"})
    calls, invalid, content = parse_calls(f"Let me check.\n{block}\nDone.", specs)
    assert [c.arguments for c in calls] == [{"city": "Rome"}]
    assert invalid == []
    assert content == "Let me check.\n\nDone."


@pytest.mark.parametrize(
    ("block", "name", "error"),
    [
        ('{"name": "nope", "arguments": {}}', "nope", "unknown tool 'nope'"),
        ('{"name": "get_weather", "arguments": {"city": 3}}', "get_weather", "invalid arguments"),
        ('{"name": "get_weather", "arguments": {}}', "get_weather", "required"),
        ('{"name": "get_weather", "arguments": {"city": "x"', "get_weather", "not valid JSON"),
        ('{"name": "get_weather", "arguments": [1]}', "get_weather", "must be a JSON object"),
        ('{"name": "get_weather", "arguments": "{bad"}', "get_weather", "not valid JSON"),
        ('{"arguments": {}}', None, "string 'name'"),
        ("[1, 2]", None, "must be a JSON object"),
        ("", None, "not valid JSON"),
    ],
)
def test_parse_invalid_blocks(
    specs: list[ToolSpec], block: str, name: str | None, error: str
) -> None:
    good = render_call("rate-item", {"stars": 4})
    calls, invalid, content = parse_calls(f"{good}\n<tool_call>{block}</tool_call>", specs)
    assert [c.name for c in calls] == ["rate-item"]
    assert len(invalid) == 1
    bad = invalid[0]
    assert isinstance(bad, InvalidToolCall)
    assert bad.name == name
    assert error in bad.error
    assert CALL_ID.match(bad.id)
    assert content == ""


def test_parse_tags_inside_string_values(specs: list[ToolSpec]) -> None:
    """A string value may hold the call tags: the grammar allows it, so the parser must too."""
    tricky = {"city": 'a</tool_call>b<tool_call>{"name": "x"}', "days": 2}
    text = render_calls([("get_weather", tricky), ("rate-item", {"stars": 1})], specs)
    calls, invalid, content = parse_calls("Ok. " + text + " Bye.", specs)
    assert invalid == []
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", tricky),
        ("rate-item", {"stars": 1}),
    ]
    assert content == "Ok. \n Bye."
    # The same text cut inside the tricky value is one unterminated call, not a valid one.
    cut = text[: text.index("b<tool_call>")]
    calls, invalid, _ = parse_calls(cut, specs)
    assert calls == [] and len(invalid) == 1


def test_parse_arguments_given_as_json_string(specs: list[ToolSpec]) -> None:
    text = '<tool_call>{"name": "rate-item", "arguments": "{\\"stars\\": 2}"}</tool_call>'
    calls, invalid, _ = parse_calls(text, specs)
    assert invalid == [] and calls[0].arguments == {"stars": 2}


def test_parse_unterminated_block(specs: list[ToolSpec]) -> None:
    text = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Ro'
    calls, invalid, content = parse_calls(text, specs)
    assert calls == []
    assert invalid[0].name == "get_weather"
    assert "unterminated" in invalid[0].error
    assert content == "Sure."
    complete_json = '<tool_call>{"name": "rate-item", "arguments": {"stars": 2}}'
    _, invalid, _ = parse_calls(complete_json, specs)
    assert invalid[0].name == "rate-item" and "unterminated" in invalid[0].error


def test_toolcall_defaults() -> None:
    call = ToolCall("t", {})
    assert CALL_ID.match(call.id)


# --- position tracker -------------------------------------------------------------------------


def positions(text: str, specs: list[ToolSpec]) -> list[tuple[str, CallPosition]]:
    """The position before each character of the text."""
    tracker = CallTracker(specs)
    result = []
    for char in text:
        result.append((char, tracker.position))
        tracker.feed(char)
    return result


def spans(text: str, specs: list[ToolSpec]) -> list[tuple[CallPosition, str]]:
    """Group the characters of the text by the position before them."""
    grouped: list[tuple[CallPosition, str]] = []
    for char, pos in positions(text, specs):
        if grouped and grouped[-1][0] is pos:
            grouped[-1] = (pos, grouped[-1][1] + char)
        else:
            grouped.append((pos, char))
    return grouped


def test_tracker_classifies_a_call(specs: list[ToolSpec]) -> None:
    send = by_name(specs, "SendMoney")
    args = {"recipient": "Dana", "amount": 20, "currency": "EUR", "address": {"street": "Main"}}
    text = "Ok " + render_call("SendMoney", args, send.parameters) + " bye"
    P = CallPosition
    assert spans(text, specs) == [
        (P.OUTSIDE, "Ok <tool_call>"),
        (P.STRUCTURE, '{"name":'),
        (P.NAME, ' "SendMoney"'),
        (P.STRUCTURE, ', "arguments": {'),
        (P.KEY, '"recipient"'),
        (P.STRUCTURE, ":"),
        (P.FREE_TEXT, ' "Dana"'),
        (P.STRUCTURE, ","),
        (P.KEY, ' "amount"'),
        (P.STRUCTURE, ":"),
        (P.NUMBER, " 20,"),
        (P.KEY, ' "currency"'),
        (P.STRUCTURE, ":"),
        (P.CHOICE, ' "EUR"'),
        (P.STRUCTURE, ","),
        (P.KEY, ' "address"'),
        (P.STRUCTURE, ":"),
        (P.CHOICE, " {"),  # an object or null
        (P.KEY, '"street"'),
        (P.STRUCTURE, ":"),
        (P.FREE_TEXT, ' "Main"'),
        (P.STRUCTURE, "}}}</tool_call>"),
        (P.OUTSIDE, " bye"),
    ]


def test_tracker_values_of_other_types(specs: list[ToolSpec]) -> None:
    text = '<tool_call>{"name": "set_alarm", "arguments": {"time": "7", "repeat": tr'
    assert call_position(text, specs) is CallPosition.CHOICE
    text = '<tool_call>{"name": "search_notes", "arguments": {"text": "a", "tags": ["x", "'
    assert call_position(text, specs) is CallPosition.FREE_TEXT
    text = '<tool_call>{"name": "search_notes", "arguments": {"text": "a", "tags": '
    assert call_position(text, specs) is CallPosition.CHOICE  # an array or null
    text = '<tool_call>{"name": "rate-item", "arguments": {"stars": '
    assert call_position(text, specs) is CallPosition.NUMBER
    text = '<tool_call>{"name": "unknown", "arguments": {"x": "ab'
    assert call_position(text, specs) is CallPosition.FREE_TEXT


def test_tracker_escapes_and_incremental_feed(specs: list[ToolSpec]) -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "a\\"b'
    assert in_free_text_value(text, specs)
    tracker = CallTracker(specs)
    for piece in ('<tool_call>{"na', 'me": "get_w', "eather", '", "argum'):
        tracker.feed(piece)
    assert tracker.tool_name == "get_weather"
    assert tracker.feed('ents": {"unit": "') is CallPosition.CHOICE
    assert tracker.feed('c"}}</tool_call>') is CallPosition.OUTSIDE
    assert tracker.tool_name is None


def test_tracker_recovers_from_broken_text(specs: list[ToolSpec]) -> None:
    text = "<tool_call>not json <tool_call>" + '{"name": "get_weather", "arguments": {"city": "'
    assert in_free_text_value(text, specs)
    assert not in_free_text_value('<tool_call>{"name": "get_', specs)
    assert not in_free_text_value("just text", specs)


def test_tracker_refs_and_any_of() -> None:
    spec = ToolSpec(
        "t",
        "",
        {
            "type": "object",
            "$defs": {"Mode": {"enum": ["a", "b"]}},
            "properties": {
                "mode": {"$ref": "#/$defs/Mode"},
                "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
            },
        },
    )
    head = '<tool_call>{"name": "t", "arguments": {'
    assert call_position(head + '"mode": "', [spec]) is CallPosition.CHOICE
    assert call_position(head + '"n": ', [spec]) is CallPosition.NUMBER
    assert call_position(head + '"n": n', [spec]) is CallPosition.CHOICE
    assert call_position(head + '"pair": ["x', [spec]) is CallPosition.FREE_TEXT
    assert call_position(head + '"pair": ["x", ', [spec]) is CallPosition.CHOICE


def test_tracker_open_choice(specs: list[ToolSpec]) -> None:
    """Inside a tool name or a string enum value: the text so far and the allowed values."""
    send = by_name(specs, "SendMoney")
    args = {"recipient": "Dana", "amount": 20, "currency": "EUR"}
    text = render_call("SendMoney", args, send.parameters)
    names = [s.name for s in specs]

    def at(marker: str) -> tuple[str, list[str]] | None:
        tracker = CallTracker(specs)
        tracker.feed(text[: text.index(marker) + len(marker)])
        return tracker.open_choice()

    assert at('"name": "Se') == ("Se", names)
    assert at('"name": "') == ("", names)
    assert at('"currency": "E') == ("E", send.parameters["properties"]["currency"]["enum"])
    assert at('"currency":') is None  # before the opening quote
    assert at('"recipient": "Da') is None  # free text
    assert at('"amount": 2') is None
    assert CallTracker(specs).open_choice() is None
