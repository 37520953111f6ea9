"""Corrections: a trajectory recorded with rejected calls supersedes the older habits it
rejects, for that user only and only for the decision it rejects."""

from __future__ import annotations

from typing import Any

import pytest
from memory_fixtures import (
    TRAVEL_TOOLS,
    WEATHER_TOOLS,
    make_memory,
    travel_item,
    user_msg,
    weather_item,
)

from fints_agent.calls.specs import to_tool_specs
from fints_agent.memory.corrections import (
    ANY_TOOL,
    contradicted,
    decision_of,
    makes_decision,
    rejected_decisions,
)
from fints_agent.memory.negatives import Call
from fints_agent.memory.records import TrajectoryRecord

WEATHER = {s.name: s for s in to_tool_specs(WEATHER_TOOLS)}
TRAVEL = {s.name: s for s in to_tool_specs(TRAVEL_TOOLS)}


def test_decision_of_names_the_rejected_tool_or_the_differing_choices() -> None:
    chosen = Call("get_weather", {"city": "Oslo", "units": "fahrenheit"})
    rejected = Call("get_weather", {"city": "Oslo", "units": "celsius"})
    assert decision_of(chosen, rejected, WEATHER["get_weather"]) == (
        "get_weather",
        {"units": "celsius"},
    )
    ride = Call("book_ride", {"pickup": "a", "dropoff": "b"})
    transit = Call("get_directions", {"origin": "a", "destination": "b", "mode": "transit"})
    assert decision_of(ride, transit, TRAVEL["get_directions"]) == ("get_directions", {})
    # Only free text differs: no habit is rejected.
    other_city = Call("get_weather", {"city": "Rome", "units": "fahrenheit"})
    assert decision_of(chosen, other_city, WEATHER["get_weather"]) is None
    # A choice the chosen call sets and the rejected one leaves out is rejected as missing.
    bare = Call("book_ride", {"pickup": "a", "dropoff": "b"})
    shared = Call("book_ride", {"pickup": "a", "dropoff": "b", "shared": True})
    assert decision_of(shared, bare, TRAVEL["book_ride"]) == ("book_ride", {"shared": None})
    assert makes_decision({"name": "book_ride", "arguments": {}}, ("book_ride", {"shared": None}))
    assert not makes_decision(
        {"name": "book_ride", "arguments": {"shared": True}}, ("book_ride", {"shared": None})
    )


def _old(tid: str, name: str, over: str | None = None, **arguments: Any) -> TrajectoryRecord:
    rejected = [{"name": over or name, "arguments": {}}]
    return TrajectoryRecord(
        tid, "u", "r", {"name": name, "arguments": arguments}, rejected=rejected
    )


def test_contradicted_picks_only_older_calls_making_a_rejected_decision() -> None:
    older = [
        _old("c1", "get_weather", city="Oslo", units="celsius"),
        _old("c2", "get_forecast", "get_weather", city="Oslo", days=3, units="celsius"),
        _old("asked", "get_forecast", city="Oslo", days=3, units="celsius"),
        _old("f1", "get_weather", city="Rome", units="fahrenheit"),
        _old("bad", "get_weather", city="Rome", units=["not", "a", "choice"]),
    ]
    chosen = Call("get_weather", {"city": "Lima", "units": "fahrenheit"})
    rejected = [Call("get_weather", {"city": "Lima", "units": "celsius"})]
    # Rejected units are rejected in every tool that has them: the forecasts in celsius too.
    assert contradicted(chosen, rejected_decisions(chosen, rejected, WEATHER.values()), older) == [
        "c1",
        "c2",
        "asked",
    ]
    assert contradicted(chosen, rejected_decisions(chosen, [], WEATHER.values()), older) == []
    # A rejected tool retires an older use of it only where that turn chose it over the tool
    # chosen now ("c2"), not where the request asked for it ("asked" rejected only values).
    whole_tool = [Call("get_forecast", {"city": "Lima", "days": 1, "units": "fahrenheit"})]
    assert contradicted(
        chosen, rejected_decisions(chosen, whole_tool, WEATHER.values()), older
    ) == ["c2"]
    # ... and its units, where the chosen call sets them differently, as above.
    other_units = [Call("get_forecast", {"city": "Lima", "days": 1, "units": "celsius"})]
    assert rejected_decisions(chosen, other_units, WEATHER.values()) == [
        ("get_forecast", {}),
        (ANY_TOOL, {"units": "celsius"}),
    ]
    assert contradicted(
        chosen, rejected_decisions(chosen, other_units, WEATHER.values()), older
    ) == ["c1", "c2", "asked"]


FOOD = {
    s.name: s
    for s in to_tool_specs(
        [
            {
                "type": "function",
                "function": {
                    "name": "search_restaurants",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "cuisine": {"enum": ["thai", "italian", "indian"]},
                            "service": {"enum": ["ubereats", "deliveroo"]},
                        },
                    },
                },
            }
        ]
    )
}


def test_each_rejected_value_counts_on_its_own() -> None:
    # The model's wrong call has the old cuisine and a service the user never used: the old
    # cuisine is rejected whatever the service of the older calls.
    chosen = Call("search_restaurants", {"cuisine": "italian", "service": "ubereats"})
    wrong = Call("search_restaurants", {"cuisine": "thai", "service": "deliveroo"})
    decisions = rejected_decisions(chosen, [wrong], FOOD.values())
    assert decisions == [
        ("search_restaurants", {"cuisine": "thai"}),
        (ANY_TOOL, {"cuisine": "thai"}),
        ("search_restaurants", {"service": "deliveroo"}),
        (ANY_TOOL, {"service": "deliveroo"}),
    ]
    older = [
        _old("thai", "search_restaurants", cuisine="thai", service="ubereats"),
        _old("indian", "search_restaurants", cuisine="indian", service="ubereats"),
    ]
    assert contradicted(chosen, decisions, older) == ["thai"]
    # Choices the rejected call only leaves out stay one decision, of that tool.
    bare = Call("search_restaurants", {})
    assert rejected_decisions(chosen, [bare], FOOD.values()) == [
        ("search_restaurants", {"cuisine": None, "service": None})
    ]
    assert makes_decision(
        {"name": "get_forecast", "arguments": {"units": "celsius"}},
        (ANY_TOOL, {"units": "celsius"}),
    )
    assert not makes_decision(
        {"name": "get_forecast", "arguments": {}}, (ANY_TOOL, {"units": None})
    )


def _feedback(memory: Any, user: str, i: int, units: str, rejected_units: str | None) -> str:
    item = weather_item(user, i, units)
    rejected = None
    if rejected_units is not None:
        wrong = weather_item(user, i, rejected_units)["chosen"]
        rejected = [wrong]
    return str(memory.record(**item, rejected=rejected))


def test_a_correction_supersedes_the_older_habit_for_that_user_only(store_location: str) -> None:
    memory = make_memory(store_location, k=5)
    old = [_feedback(memory, "alice", i, "celsius", "fahrenheit") for i in range(3)]
    bob = _feedback(memory, "bob", 0, "celsius", "fahrenheit")
    trip = memory.record(**travel_item("alice", 0, "transit"))
    query = user_msg("what is the weather in paris now")
    assert set(memory.retrieve("alice", query, WEATHER_TOOLS).trajectory_ids) == set(old)

    new = _feedback(memory, "alice", 4, "fahrenheit", "celsius")
    r = memory.retrieve("alice", query, WEATHER_TOOLS)
    assert r.trajectory_ids == [new]
    assert [c["arguments"]["units"] for c in r.calls] == ["fahrenheit"]
    listed = {t.id: t for t in memory.list_trajectories("alice")}
    assert all(listed[t].superseded_by == new for t in old)
    assert listed[trip].superseded_by is None  # another tool, another decision
    # Another user's habit is untouched.
    assert memory.retrieve("bob", query, WEATHER_TOOLS).trajectory_ids == [bob]
    # Superseded trajectories stay listed and can still be mixed on request.
    r = memory.retrieve("alice", query, WEATHER_TOOLS, include_superseded=True)
    assert set(r.trajectory_ids) == {*old, new}


def test_only_given_rejected_calls_supersede(store_location: str) -> None:
    memory = make_memory(store_location, k=5)
    old = _feedback(memory, "alice", 0, "celsius", None)
    # Recorded without rejected calls: its built negatives are not the user's word.
    new = _feedback(memory, "alice", 1, "fahrenheit", None)
    r = memory.retrieve("alice", user_msg("what is the weather in paris now"))
    assert set(r.trajectory_ids) == {old, new}
    # A correction that differs only in free text rejects no habit.
    item = weather_item("alice", 2, "fahrenheit")
    other_city = {"name": "get_weather", "arguments": {"city": "Nowhere", "units": "fahrenheit"}}
    third = memory.record(**item, rejected=[other_city])
    r = memory.retrieve("alice", user_msg("what is the weather in paris now"))
    assert set(r.trajectory_ids) == {old, new, third}


@pytest.mark.parametrize("batched", [False, True])
def test_corrections_within_one_batch_and_when_turned_off(
    store_location: str, batched: bool
) -> None:
    items = []
    habits = [("celsius", "fahrenheit")] * 2 + [("fahrenheit", "celsius")]
    for i, (units, wrong) in enumerate(habits):
        item = weather_item("alice", i, units)
        item["rejected"] = [weather_item("alice", i, wrong)["chosen"]]
        items.append(item)
    memory = make_memory(store_location, k=5)
    if batched:
        ids = memory.record_many(items, batch_size=8, progress=False)
    else:
        ids = [memory.record(**item) for item in items]
    r = memory.retrieve("alice", user_msg("what is the weather in paris now"))
    assert r.trajectory_ids == [ids[2]]

    off = make_memory(store_location, k=5, supersede_corrected=False)
    ids = off.record_many([{**x, "user_id": "carol"} for x in items], progress=False)
    r = off.retrieve("carol", user_msg("what is the weather in paris now"))
    assert set(r.trajectory_ids) == set(ids)


def test_a_units_correction_supersedes_the_old_units_of_another_tool(
    store_location: str,
) -> None:
    memory = make_memory(store_location, k=5)
    forecasts = []
    for i in range(2):
        city = ["Oslo", "Rome"][i]
        forecasts.append(
            memory.record(
                user_id="alice",
                messages=user_msg(f"weather in {city} for the next days"),
                tools=WEATHER_TOOLS,
                chosen={
                    "name": "get_forecast",
                    "arguments": {"city": city, "days": 3, "units": "celsius"},
                },
            )
        )
    trip = memory.record(**travel_item("alice", 0, "transit"))
    # "Fahrenheit, not celsius" on the current weather.
    correction = _feedback(memory, "alice", 4, "fahrenheit", "celsius")
    listed = {t.id: t for t in memory.list_trajectories("alice")}
    assert all(listed[f].superseded_by == correction for f in forecasts)
    assert listed[trip].superseded_by is None
    r = memory.retrieve("alice", user_msg("weather in Lima for the next days"), WEATHER_TOOLS)
    assert r.trajectory_ids == [correction]
