"""Call validation and negatives built when no rejected calls are given."""

from __future__ import annotations

import pytest
from memory_fixtures import TRAVEL_TOOLS, WEATHER_TOOLS

from fints_agent.calls.request import retrieval_text
from fints_agent.calls.specs import validate_arguments
from fints_agent.memory.negatives import (
    Call,
    InvalidCallError,
    MemoryInputError,
    build_negatives,
    normalize_call,
    plain_messages,
    tool_specs,
)

SPECS = tool_specs(WEATHER_TOOLS)
TRAVEL = tool_specs(TRAVEL_TOOLS)


def test_normalize_accepts_common_shapes_and_orders_keys() -> None:
    a = normalize_call(
        {"name": "get_weather", "arguments": {"units": "celsius", "city": "Oslo"}}, SPECS
    )
    assert list(a.arguments) == ["city", "units"]
    b = normalize_call(
        {"name": "get_weather", "args": '{"city": "Oslo", "units": "celsius"}'}, SPECS
    )
    c = normalize_call(
        {
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}},
        },
        SPECS,
    )
    assert a.key() == b.key() == c.key()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ("get_weather", "must be a dict"),
        ({"arguments": {}}, "non-empty string 'name'"),
        ({"name": "book_flight", "arguments": {}}, "not offered"),
        ({"name": "get_weather", "arguments": {"city": "Oslo"}}, "schema"),
        ({"name": "get_weather", "arguments": {"city": "Oslo", "units": "kelvin"}}, "schema"),
        ({"name": "get_weather", "arguments": "{not json"}, "not valid JSON"),
        ({"name": "get_weather", "arguments": [1, 2]}, "must be an object"),
    ],
)
def test_malformed_calls_are_refused(call: object, match: str) -> None:
    with pytest.raises(InvalidCallError, match=match):
        normalize_call(call, SPECS)


def test_request_text() -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": " weather in oslo "},
        {"role": "assistant", "content": "which units?"},
    ]
    assert retrieval_text(plain_messages(msgs)) == "weather in oslo"
    assert retrieval_text(plain_messages([])) == ""
    with pytest.raises(MemoryInputError):
        plain_messages("weather")


def test_negatives_are_valid_distinct_and_differ_from_chosen() -> None:
    chosen = normalize_call(
        {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}}, SPECS
    )
    negs = build_negatives(chosen, SPECS, "weather in oslo", n=3)
    assert len(negs) == 3
    keys = {n.key() for n in negs}
    assert len(keys) == 3 and chosen.key() not in keys
    by_name = {s.name: s for s in SPECS}
    for n in negs:
        assert validate_arguments(by_name[n.name], n.arguments) is None
    # First a preference variant (same tool, other units), then the other tool, city copied.
    assert negs[0] == Call("get_weather", {"city": "Oslo", "units": "fahrenheit"}, "variants")
    assert negs[1].name == "get_forecast" and negs[1].arguments["city"] == "Oslo"


def test_negatives_from_other_users_keep_copied_arguments() -> None:
    chosen = normalize_call(
        {
            "name": "get_directions",
            "arguments": {"origin": "a", "destination": "b", "mode": "transit"},
        },
        TRAVEL,
    )
    others = [("get_directions", {"mode": "driving"}), ("book_ride", {"shared": True})]
    negs = build_negatives(chosen, TRAVEL, "from a to b", n=2, others=others)
    assert negs[0].arguments == {"origin": "a", "destination": "b", "mode": "driving"}
    assert negs[0].source == "others"
    # Another tool: no argument of the same name to copy, so strings get the request text.
    assert negs[1].name == "book_ride" and negs[1].arguments["shared"] is True


def test_no_possible_negative_gives_empty_list() -> None:
    only = tool_specs(
        [
            {
                "type": "function",
                "function": {
                    "name": "ping",
                    "description": "",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ]
    )
    chosen = normalize_call({"name": "ping", "arguments": {}}, only)
    assert build_negatives(chosen, only, "ping", n=2) == []
    with pytest.raises(ValueError, match="unknown negative sources"):
        build_negatives(chosen, only, "ping", sources=["random"])
