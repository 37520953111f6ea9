"""The main demo: two users, the same requests, different tool calls.

A LangChain agent (``langchain.agents.create_agent``) runs on :class:`FintsChatModel` with a few
web-API tools (local implementations, no network). Two users with different histories send the
same requests; each user's calls follow their own history, and the trajectories and weights that
steered each call are printed beside it. Run it with ``fints-agent demo`` (or ``make demo``).
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

if TYPE_CHECKING:
    from fints_agent.config import Preset
    from fints_agent.turn import Personalization

__all__ = ["HISTORIES", "REQUESTS", "TOOLS", "run_demo"]


@tool
def get_transit_directions(origin: str, destination: str) -> str:
    """Public transport directions (bus, metro, train) between two places."""
    return f"Take the metro from {origin} to {destination}: 24 min, 1 change."


@tool
def book_ride(pickup: str, dropoff: str, ride_type: Literal["standard", "premium"]) -> str:
    """Book a taxi ride from a pickup place to a drop-off place."""
    return f"A {ride_type} ride from {pickup} to {dropoff} arrives in 6 min."


@tool
def get_weather(city: str, units: Literal["celsius", "fahrenheit"]) -> str:
    """Weather forecast for a city in the given units."""
    return f"{city}: 18 degrees {units}, light wind."


@tool
def search_product_by_query(query: str) -> str:
    """Search the shop's catalogue for products matching a query."""
    return f"3 products match {query!r}."


@tool
def get_recommendations_by_history(category: str) -> str:
    """Recommend products in a category from the user's purchase history."""
    return f"Recommended for you in {category}: 3 items."


TOOLS = [
    get_transit_directions,
    book_ride,
    get_weather,
    search_product_by_query,
    get_recommendations_by_history,
]

Call = dict[str, Any]

_TRIPS = [
    ("library", "stadium", "How do I get from the library to the stadium?"),
    ("hotel", "museum", "I need to get from my hotel to the museum."),
    ("office", "train station", "Get me from the office to the train station."),
    ("harbour", "old town", "What's the best way from the harbour to the old town?"),
    ("university", "concert hall", "I have to go from the university to the concert hall."),
]
_CITIES = [
    ("Berlin", "What's the weather like in Berlin?"),
    ("Rome", "Will it be warm in Rome this weekend?"),
    ("Madrid", "How hot is it in Madrid today?"),
    ("Dublin", "Do I need a jacket in Dublin tomorrow?"),
]
_SHOPPING = [
    ("running shoes", "shoes", "I'm looking for running shoes."),
    ("coffee grinder", "kitchen", "Find me a good coffee grinder."),
    ("desk lamp", "home", "I need a new desk lamp."),
    ("hiking backpack", "outdoor", "Show me hiking backpacks."),
]


def _history(transit: bool, units: str, search: bool) -> list[tuple[str, Call]]:
    trips: list[tuple[str, Call]] = [
        (
            request,
            {"name": "get_transit_directions", "arguments": {"origin": a, "destination": b}}
            if transit
            else {
                "name": "book_ride",
                "arguments": {"pickup": a, "dropoff": b, "ride_type": "standard"},
            },
        )
        for a, b, request in _TRIPS
    ]
    weather: list[tuple[str, Call]] = [
        (request, {"name": "get_weather", "arguments": {"city": city, "units": units}})
        for city, request in _CITIES
    ]
    shopping: list[tuple[str, Call]] = [
        (
            request,
            {"name": "search_product_by_query", "arguments": {"query": query}}
            if search
            else {"name": "get_recommendations_by_history", "arguments": {"category": category}},
        )
        for query, category, request in _SHOPPING
    ]
    return trips + weather + shopping


HISTORIES: dict[str, list[tuple[str, Call]]] = {
    "alice": _history(transit=True, units="celsius", search=True),
    "bob": _history(transit=False, units="fahrenheit", search=False),
}
"""Each user's past requests and the calls that served them: the same requests, other calls."""

REQUESTS = [
    "Get me from the airport to the city center.",
    "What's the weather in Oslo tomorrow?",
    "I want a new pair of headphones.",
]


def demo_preset() -> Preset:
    """The demo's options: contrastive vectors of the top-3 past calls, coefficient 2 on
    every non-free-text token of a call."""
    from fints_agent.config import Preset, RetrievalConfig, SteeringConfig

    # Top-3: the demo's histories hold 4-5 past requests per domain, so the examples shown and
    # mixed for a request come from its own domain.
    return Preset(
        retrieval=RetrievalConfig(k=3),
        steering=SteeringConfig(coefficient=2.0, steer_prompt=False, gate="choices"),
        vector_kind="contrast",
    )


def _first_call(messages: list[Any]) -> tuple[AIMessage | None, dict[str, Any]]:
    for m in messages:
        if isinstance(m, AIMessage) and (m.tool_calls or m.invalid_tool_calls):
            return m, m.response_metadata.get("fints", {})
    return None, {}


def _describe(message: AIMessage | None) -> str:
    if message is None:
        return "(no call)"
    if message.tool_calls:
        c = message.tool_calls[0]
        args = ", ".join(f"{k}={v!r}" for k, v in c["args"].items())
        return f"{c['name']}({args})"
    return f"(invalid call: {message.invalid_tool_calls[0].get('error')})"


def run_demo(
    store: str | None = None,
    *,
    fresh: bool = True,
    verbose: bool = True,
    preset: Preset | None = None,
    personalization: Personalization = "rag+steer",
) -> dict[str, Any]:
    """Run the demo; returns each user's calls and steering explanations.

    Args:
        store: Memory directory (default: a temporary directory, removed afterwards).
        fresh: Start from an empty memory.
        verbose: Print the side-by-side table.
        preset: Retrieval, steering and decoding options (default: :func:`demo_preset`; see
            the README for what the demo shows on the default model).
        personalization: How the history is used.

    Raises:
        MissingPackageError: ``langchain`` is not installed (the ``agents`` extra).
    """
    from fints_agent.install import require_extra

    require_extra("langchain", "agents", "the demo (a LangChain agent)")
    from langchain.agents import create_agent
    from langchain.agents.middleware import ModelCallLimitMiddleware

    from fints_agent.chat_model import FintsChatModel

    preset = preset or demo_preset()
    tmp = None
    if store is None:
        tmp = tempfile.mkdtemp(prefix="fints-demo-")
        store = tmp
    elif fresh:
        shutil.rmtree(store, ignore_errors=True)
    try:
        llm = FintsChatModel(
            memory=store,
            max_tokens=96,
            call_on_user_turn=True,
            copy_strings=True,
            personalization=personalization,
            retrieval=preset.retrieval,
            steering=preset.steering,
            vector_kind=preset.vector_kind,
            canonical_choices=preset.canonical_choices,
        )
        start = time.perf_counter()
        lm = llm.load()
        if verbose:
            print(
                f"model: {lm.name} ({type(lm.model).__name__}, {lm.num_layers} layers, "
                f"fingerprint {lm.fingerprint}), loaded in {time.perf_counter() - start:.1f} s"
            )
            print(f"memory: {store}")
        memory = llm.get_memory(lm)
        tools = [convert_to_openai_tool(t) for t in TOOLS]
        pairs = [(user, request, call) for user, h in HISTORIES.items() for request, call in h]
        items: list[dict[str, Any]] = [
            {
                "user_id": user,
                "messages": [{"role": "user", "content": request}],
                "tools": tools,
                "chosen": call,
            }
            for user, request, call in pairs
        ]
        tids = memory.record_many(items, progress=verbose)
        ids: dict[str, dict[str, str]] = {user: {} for user in HISTORIES}
        for (user, request, _), tid in zip(pairs, tids, strict=True):
            ids[user][tid] = request
        if verbose:
            print(f"recorded {len(items)} past trajectories for {', '.join(HISTORIES)}")
        # Two model calls per request: the tool call, then the answer after the tool's result.
        agent = create_agent(
            llm,
            tools=TOOLS,
            middleware=[ModelCallLimitMiddleware(run_limit=2, exit_behavior="end")],
        )
        results: dict[str, list[dict[str, Any]]] = {user: [] for user in HISTORIES}
        for request in REQUESTS:
            for user in HISTORIES:
                state = agent.invoke(
                    {"messages": [HumanMessage(request)]},
                    config={"configurable": {"user_id": user}},
                )
                message, info = _first_call(state["messages"])
                results[user].append({"request": request, "call": _describe(message), **info})
        if verbose:
            _print_table(results, ids)
        return results
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _print_table(results: dict[str, list[dict[str, Any]]], ids: dict[str, dict[str, str]]) -> None:
    users = list(results)
    width = 58
    print()
    print("  ".join(f"{u:<{width}}" for u in users))
    print("  ".join("-" * width for _ in users))
    for i, request in enumerate(REQUESTS):
        print(f"request: {request}")
        columns = []
        for user in users:
            r = results[user][i]
            lines = [f"call: {r['call']}"]
            lines.append("steered by:" if r.get("steered") else "not steered")
            for t in r.get("trajectories", [])[:3]:
                past = ids[user].get(t["id"], t["id"])
                lines.append(f"  {t['weight']:.2f}  {past}")
            wrapped = [w for line in lines for w in textwrap.wrap(line, width) or [""]]
            columns.append(wrapped)
        for row in range(max(len(c) for c in columns)):
            print("  ".join(f"{(c[row] if row < len(c) else ''):<{width}}" for c in columns))
        print()
