"""A changed preference on the real embedded model: the user's latest correction decides the
next turn, through ``FintsChatModel.record_feedback`` alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool

from fints_agent import FintsChatModel
from fints_agent.demo import TOOLS

TRIPS = [
    ("library", "stadium", "How do I get from the library to the stadium?"),
    ("hotel", "museum", "I need to get from my hotel to the museum."),
    ("office", "train station", "Get me from the office to the train station."),
    ("harbour", "old town", "What's the best way from the harbour to the old town?"),
    ("university", "concert hall", "I have to go from the university to the concert hall."),
]


def _transit(a: str, b: str) -> dict[str, object]:
    return {"name": "get_transit_directions", "arguments": {"origin": a, "destination": b}}


def _ride(a: str, b: str) -> dict[str, object]:
    return {"name": "book_ride", "arguments": {"pickup": a, "dropoff": b, "ride_type": "standard"}}


@pytest.mark.model
@pytest.mark.timeout(900)
def test_one_correction_outweighs_a_longer_habit(tmp_path: Path) -> None:
    llm = FintsChatModel(memory=str(tmp_path / "memory"), max_tokens=48, copy_strings=True)
    tools = [convert_to_openai_tool(t) for t in TOOLS]
    bound = llm.bind_tools(tools, tool_choice="any")
    # Five trips by public transport, each chosen over a ride.
    for a, b, request in TRIPS:
        llm.record_feedback("alice", [("user", request)], tools, _transit(a, b), [_ride(a, b)])
    request = "Get me from the airport to the city center."
    before = bound.invoke(request, user_id="alice")
    assert before.tool_calls[0]["name"] == "get_transit_directions"

    # The user changes their mind once: a ride, with the transit call the model made rejected.
    (call,) = before.tool_calls
    rejected = {"name": call["name"], "arguments": call["args"]}
    correction = llm.record_feedback(
        "alice",
        [("user", request)],
        tools,
        _ride("airport", "city center"),
        [rejected],
    )
    after = bound.invoke("I need to get from the station to the beach.", user_id="alice")
    assert after.tool_calls[0]["name"] == "book_ride"
    info = after.response_metadata["fints"]
    assert info["steered"]
    assert [t["id"] for t in info["trajectories"]] == [correction]
    # Another user with the same habit and no correction keeps it.
    for a, b, request in TRIPS:
        llm.record_feedback("bob", [("user", request)], tools, _transit(a, b), [_ride(a, b)])
    other = bound.invoke("I need to get from the station to the beach.", user_id="bob")
    assert other.tool_calls[0]["name"] == "get_transit_directions"
