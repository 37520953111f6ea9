"""FintsChatModel on a tiny random-config Llama with the real SmolLM2 tokenizer.

Random weights make random choices, which is what the grammar and the tool_choice tests need:
whatever the model prefers, every emitted call must be valid.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import jsonschema
import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from memory_fixtures import WEATHER_TOOL
from pydantic import BaseModel, Field
from tiny import SHORT, bounded_tool, saved_tiny_smol

from fints_agent.calls import ToolSchemaError, request_span_pattern
from fints_agent.chat_model import FintsChatModel
from fints_agent.config import RetrievalConfig, SteeringConfig
from fints_agent.memory import Memory, TrajectoryStore
from fints_agent.messages import UnsupportedContentError
from fints_agent.user_ids import resolve_user_id


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from saved_tiny_smol(tmp_path_factory, "tiny-smol")


@tool
def get_weather(city: str, units: Literal["celsius", "fahrenheit"], days: int = 1) -> str:
    """Weather forecast for a city."""
    return "sunny"


@tool
def book_ride(pickup: str, dropoff: str, seats: int) -> str:
    """Book a taxi ride."""
    return "booked"


class Address(BaseModel):
    street: str = Field(max_length=10)
    zip_code: str = Field(pattern=r"^[0-9]{5}$")


class ShipOrder(BaseModel):
    """Ship items to an address."""

    items: list[str] = Field(
        min_length=1, max_length=3, json_schema_extra={"items": {"type": "string", "maxLength": 8}}
    )
    address: Address
    express: bool = False
    weight_kg: float = Field(ge=0, le=50)
    priority: Literal["low", "normal", "high"] | None = None


MIXED_TOOLS: list[Any] = [
    bounded_tool(
        "get_weather",
        {
            "city": SHORT,
            "units": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        ["city", "units"],
    ),
    bounded_tool(
        "book_ride",
        {
            "pickup": SHORT,
            "dropoff": SHORT,
            "seats": {"type": "integer", "minimum": 1, "maximum": 6},
        },
        ["pickup", "dropoff", "seats"],
    ),
    ShipOrder,
]


def _llm(tiny_dir: Path, **kw: Any) -> FintsChatModel:
    kw.setdefault("max_tokens", 80)
    return FintsChatModel(model=str(tiny_dir), **kw)


def _schemas(llm: FintsChatModel) -> dict[str, dict[str, Any]]:
    from fints_agent.calls import to_tool_specs

    return {s.name: s.parameters for s in to_tool_specs(MIXED_TOOLS)}


def test_every_emitted_call_validates(tiny_dir: Path) -> None:
    """Many sampled generations across varied schemas: every call is schema-valid."""
    llm = _llm(tiny_dir, temperature=1.0)
    schemas = _schemas(llm)
    bound = llm.bind_tools(MIXED_TOOLS, tool_choice="any", max_tokens=100)
    seen: set[str] = set()
    n_calls = 0
    for seed in range(60):
        msg = bound.invoke("Do something for me.", seed=seed)
        assert isinstance(msg, AIMessage)
        for call in msg.tool_calls:
            jsonschema.validate(call["args"], schemas[call["name"]])
            seen.add(call["name"])
            n_calls += 1
        # Near the end of the budget open calls are closed: none is ever cut off.
        assert msg.invalid_tool_calls == [], msg.invalid_tool_calls
        assert msg.tool_calls, msg
    assert n_calls >= 60
    assert seen == set(schemas)


FREE_TEXT_TOOLS: list[Any] = [
    bounded_tool(
        "write_note",
        {
            "title": {"type": "string"},
            "body": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {
                "type": "object",
                "properties": {"author": {"type": "string"}, "stars": {"type": "integer"}},
                "required": ["author", "stars"],
            },
        },
        ["title", "body", "meta"],
    )
]


@pytest.mark.parametrize("budget", [60, 80, 120])
def test_calls_near_the_budget_are_closed_not_cut_off(tiny_dir: Path, budget: int) -> None:
    """Unbounded strings and a random model: without closing nearly every call is cut off.

    The smallest valid call of the tool is 43 tokens; every budget here leaves room for it."""
    llm = _llm(tiny_dir, temperature=1.0, max_tokens=budget)
    bound = llm.bind_tools(FREE_TEXT_TOOLS, tool_choice="any")
    schema = FREE_TEXT_TOOLS[0]["function"]["parameters"]
    closed = 0
    for seed in range(8):
        msg = bound.invoke("Write it down.", seed=seed)
        assert isinstance(msg, AIMessage)
        assert msg.invalid_tool_calls == [], msg.invalid_tool_calls
        assert len(msg.tool_calls) >= 1
        for call in msg.tool_calls:
            jsonschema.validate(call["args"], schema)
        usage = msg.usage_metadata
        assert usage is not None and usage["output_tokens"] <= budget
        closed += msg.response_metadata["finish_reason"] == "length"
    assert closed >= 6  # random weights rarely end a free string on their own


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_copy_strings_writes_only_spans_of_the_request(tiny_dir: Path) -> None:
    """With copying on (on the model or per call), every string a random model writes is a
    span of the latest user message, and every call still validates; off, they are not."""
    request = "Note that the Oslo trip starts on Friday at Central Station, with Maria."
    pattern = re.compile(request_span_pattern(request) or "")
    schema = FREE_TEXT_TOOLS[0]["function"]["parameters"]
    earlier = [HumanMessage("Something else entirely, please."), AIMessage("ok")]
    for llm, extra in (
        (_llm(tiny_dir, temperature=1.0, max_tokens=120, copy_strings=True), {}),
        (_llm(tiny_dir, temperature=1.0, max_tokens=120), {"copy_strings": True}),
    ):
        bound = llm.bind_tools(FREE_TEXT_TOOLS, tool_choice="any", **extra)
        strings = 0
        for seed in range(6):
            msg = bound.invoke([*earlier, HumanMessage(request)], seed=seed)
            assert msg.invalid_tool_calls == [], msg.invalid_tool_calls
            for call in msg.tool_calls:
                jsonschema.validate(call["args"], schema)
                for value in _strings(call["args"]):
                    strings += 1
                    assert pattern.fullmatch(value), value
        assert strings >= 12
    free = _llm(tiny_dir, temperature=1.0, max_tokens=120).bind_tools(
        FREE_TEXT_TOOLS, tool_choice="any"
    )
    values = [
        v
        for s in range(6)
        for c in free.invoke(request, seed=s).tool_calls
        for v in _strings(c["args"])
    ]
    assert values and not all(pattern.fullmatch(v) for v in values)


def test_structured_output_near_the_budget_is_valid(tiny_dir: Path) -> None:
    class Joke(BaseModel):
        setup: str
        punchline: str

    """Near the budget the answer still closes into a valid instance, but one cut short is
    never parsed: it comes back as a parsing error (``include_raw``)."""
    from langchain_core.exceptions import OutputParserException

    llm = _llm(tiny_dir, temperature=1.0, max_tokens=48)
    for schema in (Joke, Joke.model_json_schema()):
        for method in ("function_calling", "json_schema"):
            chat = llm.with_structured_output(schema, method=method, include_raw=True)  # type: ignore[arg-type]
            for seed in range(3):
                out = chat.invoke("Tell me a joke.", seed=seed)
                raw = out["raw"]
                if method == "function_calling":
                    [call] = raw.tool_calls
                    Joke.model_validate(call["args"])
                else:
                    Joke.model_validate_json(raw.content)
                if raw.response_metadata["finish_reason"] == "length":
                    assert out["parsed"] is None
                    assert isinstance(out["parsing_error"], OutputParserException)
                else:
                    assert out["parsing_error"] is None
                    Joke.model_validate(out["parsed"])


def test_tool_choice_semantics(tiny_dir: Path) -> None:
    llm = _llm(tiny_dir, temperature=1.0)
    forced = llm.bind_tools(MIXED_TOOLS, tool_choice="book_ride")
    for seed in range(5):
        msg = forced.invoke("hello", seed=seed)
        assert [c["name"] for c in msg.tool_calls] == ["book_ride"]
    by_dict = llm.bind_tools(
        MIXED_TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert by_dict.invoke("hello", seed=1).tool_calls[0]["name"] == "get_weather"
    for choice in ("any", "required", True):
        msg = llm.bind_tools(MIXED_TOOLS, tool_choice=choice).invoke("hi", seed=3)
        assert len(msg.tool_calls) + len(msg.invalid_tool_calls) == 1
    none = llm.bind_tools(MIXED_TOOLS, tool_choice="none")
    for seed in range(5):
        msg = none.invoke("hello", seed=seed)
        assert not msg.tool_calls and not msg.invalid_tool_calls
        assert "<tool_call>" not in str(msg.content)
    parallel = llm.bind_tools(MIXED_TOOLS, tool_choice="any", parallel_tool_calls=True)
    counts = {len(parallel.invoke("hi", seed=s, max_tokens=160).tool_calls) for s in range(8)}
    assert max(counts) >= 1


def test_bad_tools_fail_at_bind_time(tiny_dir: Path) -> None:
    llm = _llm(tiny_dir)
    with pytest.raises(ToolSchemaError, match="nope"):
        llm.bind_tools([get_weather], tool_choice="nope")
    bad = {
        "name": "broken",
        "description": "x",
        "parameters": {"type": "object", "properties": {"a": {"type": 7}}},
    }
    with pytest.raises(ToolSchemaError, match="broken"):
        llm.bind_tools([bad])
    with pytest.raises(ToolSchemaError):
        llm.bind_tools([{"name": "bad name!", "parameters": {"type": "object"}}])


def test_no_messages_is_a_clear_error(tiny_dir: Path) -> None:
    llm = _llm(tiny_dir, max_tokens=4)
    with pytest.raises(ValueError, match="at least one message"):
        llm.invoke([])
    with pytest.raises(ValueError, match="at least one message"):
        llm.bind_tools([get_weather]).invoke([])


def test_every_message_kind_renders_and_images_are_refused(tiny_dir: Path) -> None:
    llm = _llm(tiny_dir, max_tokens=4)
    conversation = [
        SystemMessage("You are terse."),
        HumanMessage("Weather in Oslo?"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Oslo", "units": "celsius"}, "id": "c1"}
            ],
        ),
        ToolMessage("sunny", tool_call_id="c1", name="get_weather"),
        ToolMessage([{"type": "text", "text": "rain later"}], tool_call_id="c1", status="error"),
        SystemMessage("Answer in one word."),
        HumanMessage([{"type": "text", "text": "And tomorrow?"}]),
    ]
    assert isinstance(llm.bind_tools([get_weather]).invoke(conversation), AIMessage)
    image = HumanMessage([{"type": "image", "base64": "AAAA", "mime_type": "image/png"}])
    with pytest.raises(UnsupportedContentError, match="image"):
        llm.invoke([image])


def test_context_overflow_drops_oldest_with_warning(tiny_dir: Path) -> None:
    llm = _llm(tiny_dir, max_tokens=8)
    long = [
        HumanMessage("weather " * 600),
        AIMessage("ok"),
        HumanMessage("weather " * 600),
        AIMessage("ok"),
        HumanMessage("Now: weather in Oslo?"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        msg = llm.invoke(long)
    assert isinstance(msg, AIMessage)
    assert any("context window" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="context window"):
        llm.invoke([HumanMessage("weather " * 1100)])


def test_memory_vectors_follow_config_and_store(tiny_dir: Path, tmp_path: Path) -> None:
    """A fresh memory computes the configuration's kind of vectors; a store keeps its kind."""
    llm = _llm(tiny_dir, memory=str(tmp_path / "fresh"), vector_kind="demonstration")
    assert llm.get_memory().layout.vectors == "demonstration"
    Memory(llm.load(), TrajectoryStore(tmp_path / "old"))  # binds a contrast store
    old = _llm(tiny_dir, memory=str(tmp_path / "old"), vector_kind="demonstration")
    with pytest.warns(UserWarning, match="holds 'contrast' vectors"):
        assert old.get_memory().vectors == "contrast"


def test_user_id_resolution_order() -> None:
    class RM:
        metadata: ClassVar[dict[str, str]] = {"user_id": "from-metadata"}

    assert resolve_user_id("explicit", RM(), "field") == "explicit"  # type: ignore[arg-type]
    assert resolve_user_id(None, RM(), "field") == "from-metadata"  # type: ignore[arg-type]
    assert resolve_user_id(None, None, "field") == "field"
    assert resolve_user_id(None, None, None) is None


def test_user_id_from_graph_config_and_metadata(tiny_dir: Path, tmp_path: Path) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph

    llm = _llm(tiny_dir, max_tokens=4, memory=str(tmp_path / "mem"), user_id="field-user")
    seen: list[Any] = []

    def call(state: MessagesState) -> dict[str, Any]:
        msg = llm.invoke(state["messages"])
        seen.append(msg.response_metadata["fints"]["user_id"])
        return {"messages": [msg]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    app = graph.compile()
    app.invoke({"messages": [HumanMessage("hi")]}, config={"configurable": {"user_id": "cfg"}})
    assert seen == ["cfg"]
    msg = llm.invoke("hi", config={"metadata": {"user_id": "meta"}})
    assert msg.response_metadata["fints"]["user_id"] == "meta"
    assert llm.invoke("hi").response_metadata["fints"]["user_id"] == "field-user"
    assert llm.invoke("hi", user_id="kw").response_metadata["fints"]["user_id"] == "kw"


def test_steering_only_with_relevant_history(tiny_dir: Path, tmp_path: Path) -> None:
    llm = _llm(
        tiny_dir,
        max_tokens=80,
        steering=SteeringConfig(coefficient=50.0, gate="all"),
        retrieval=RetrievalConfig(min_similarity=0.3),
    )
    memory = Memory(llm.load(), TrajectoryStore(str(tmp_path / "mem")))
    llm.use_memory(memory)
    for city in ("Oslo", "Paris", "Rome"):
        llm.record_feedback(
            "alice",
            [{"role": "user", "content": f"What's the weather in {city}?"}],
            [WEATHER_TOOL],
            {"name": "get_weather", "arguments": {"city": city, "units": "fahrenheit"}},
            [{"name": "get_weather", "arguments": {"city": city, "units": "celsius"}}],
        )
    bound = llm.bind_tools([WEATHER_TOOL], tool_choice="any")
    request = "What's the weather in Berlin?"
    plain = bound.invoke(request)
    steered = bound.invoke(request, user_id="alice")
    stranger = bound.invoke(request, user_id="bob")
    info = steered.response_metadata["fints"]
    assert info["steered"] and len(info["trajectories"]) == 3
    assert abs(sum(t["weight"] for t in info["trajectories"]) - 1) < 1e-3
    assert steered.tool_calls[0]["args"] != plain.tool_calls[0]["args"]
    assert not stranger.response_metadata["fints"]["steered"]
    assert stranger.tool_calls[0]["args"] == plain.tool_calls[0]["args"]
    unrelated = bound.invoke("Zebra quantum sandwich lullaby", user_id="alice")
    assert not unrelated.response_metadata["fints"]["steered"]


def test_streaming_matches_invoke(tiny_dir: Path) -> None:
    llm = _llm(tiny_dir)
    bound = llm.bind_tools(MIXED_TOOLS, tool_choice="any")
    msg = bound.invoke("hi", seed=7)
    full = None
    chunks = list(bound.stream("hi", seed=7))
    for c in chunks:
        full = c if full is None else full + c
    assert full is not None and chunks[-1].chunk_position == "last"
    assert [c["args"] for c in full.tool_calls] == [c["args"] for c in msg.tool_calls]
    assert all(c.usage_metadata is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].response_metadata["model_name"] == str(llm.model_name)


def test_split_memory_steers_values_with_its_value_vector(tiny_dir: Path, tmp_path: Path) -> None:
    """A ``vectors="split"`` memory gives the turn a value vector, scaled by
    ``value_coefficient``; a batch mixing such a row and an unsteered one gives each row the
    text it gets alone."""
    import torch
    from memory_fixtures import WEATHER_TOOLS, make_memory, user_msg

    from fints_agent.calls import to_tool_specs
    from fints_agent.config import Preset, SteeringConfig
    from fints_agent.engine import TurnEngine
    from fints_agent.models import load_model
    from fints_agent.steering import SteeringVector
    from fints_agent.turn import TurnRequest

    memory = make_memory(tmp_path / "store", vectors="split", lm=load_model(str(tiny_dir)))
    lay = memory.layout

    def const(x: float) -> SteeringVector:
        shape = (len(lay.layers), len(lay.sites), lay.d_model)
        return SteeringVector(torch.full(shape, x), lay.layers, lay.sites, lay.model_fingerprint)  # type: ignore[arg-type]

    msg = user_msg("weather in oslo")
    chosen = {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}}
    memory.record_vector("ann", msg, WEATHER_TOOLS, chosen, const(0.5), value_vector=const(2.0))
    specs = to_tool_specs(WEATHER_TOOLS)
    cfg = Preset(
        steering=SteeringConfig(gate="all", coefficient=4.0, value_coefficient=1.0, layers=[0, 1])
    )
    engine = TurnEngine(memory.lm, memory, cfg)
    ann = TurnRequest(msg, specs, tool_choice="any", user_id="ann", max_new_tokens=80)
    nobody = TurnRequest(msg, specs, tool_choice="any", user_id="zed", max_new_tokens=80)
    prepared = engine.prepare(ann)
    assert prepared.vector is not None and prepared.value_vector is not None
    assert prepared.gate == "all"  # value positions must be told apart even with gate "all"
    assert prepared.value_vector.layers == (0, 1)
    torch.testing.assert_close(
        prepared.value_vector.tensor, torch.full_like(prepared.vector.tensor, 0.5)
    )
    assert engine.prepare(nobody).value_vector is None
    together = engine.complete_batch([ann, nobody])
    alone = [engine.complete_batch([r])[0] for r in (ann, nobody)]
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(r.calls for r in together), [(r.text, r.invalid_calls) for r in together]
    engine.preset = cfg.replace(value_coefficient=None)
    torch.testing.assert_close(
        engine.prepare(ann).value_vector.tensor,  # type: ignore[union-attr]
        torch.full_like(prepared.vector.tensor, 2.0),
    )


def test_restrict_keeps_allowed_tokens_only_where_possible() -> None:
    from fints_agent.decoding import _restrict

    logits = torch.zeros(3, 6)
    logits[1, 2] = float("-inf")
    logits[2, :] = float("-inf")
    logits[2, 5] = 0.0
    _restrict(logits, [{1, 2}, {2}, {1}], [False, False, False])
    assert torch.isfinite(logits[0]).tolist() == [False, True, True, False, False, False]
    # Row 1: its only allowed token is masked by the grammar, so nothing is restricted.
    assert torch.isfinite(logits[1]).sum() == 5
    assert torch.isfinite(logits[2]).tolist() == [False] * 5 + [True]


def test_canonical_choices_keeps_calls_valid(tiny_dir: Path) -> None:
    """Sampled calls with canonical tool names and enum values: valid, and every tool used."""
    llm = _llm(tiny_dir, temperature=1.0, canonical_choices=True)
    schemas = _schemas(llm)
    bound = llm.bind_tools(MIXED_TOOLS, tool_choice="any", max_tokens=100)
    seen: set[str] = set()
    for seed in range(30):
        msg = bound.invoke("Do something for me.", seed=seed)
        assert isinstance(msg, AIMessage)
        assert msg.invalid_tool_calls == [] and msg.tool_calls, msg
        for call in msg.tool_calls:
            jsonschema.validate(call["args"], schemas[call["name"]])
            seen.add(call["name"])
    assert seen == set(schemas)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"temprature": 0.7}, "did you mean 'temperature'"),
        ({"max_token": 9}, "did you mean 'max_tokens'"),
        ({"device_map": "auto"}, "pass it in model_kwargs"),
        ({"zzz": 1}, "'zzz'"),
        ({"tokenizer": object()}, "goes with a model object"),
        ({"model": 42}, "got int"),
    ],
)
def test_unknown_or_misplaced_options_are_refused(options: dict[str, Any], says: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=says):
        FintsChatModel(**options)


def test_standard_langchain_options_that_mean_nothing_locally_are_accepted() -> None:
    llm = FintsChatModel(timeout=5, max_retries=2, streaming=True, api_key="x", temperature=0.0)
    assert llm.temperature == 0.0


def test_a_model_loaded_by_the_user_is_used_as_it_is(tiny_dir: Path) -> None:
    """A transformers model with its tokenizer, or a LoadedModel, serves the turns as given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fints_agent.models import load_model

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    with pytest.raises(ValueError, match="tokenizer="):
        FintsChatModel(model=model)
    llm = FintsChatModel(model=model, tokenizer=tokenizer, max_tokens=60)
    lm = llm.load()
    assert lm.model is model and llm.dtype == "float32" and llm.device == "cpu"
    assert lm.fingerprint == load_model(str(tiny_dir)).fingerprint  # the same weights
    msg = llm.bind_tools([get_weather], tool_choice="any").invoke("weather in Oslo")
    assert isinstance(msg, AIMessage) and msg.tool_calls and not msg.invalid_tool_calls
    again = FintsChatModel(model=lm)
    assert again.load() is lm and again.model_name == llm.model_name
