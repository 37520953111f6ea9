"""The turn engine: what it asks the memory, what it shows the model, what it steers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from tiny import SHORT, bounded_tool, random_llama, smollm2_tokenizer_or_skip

from fints_agent.calls import ToolSpec, to_tool_specs
from fints_agent.config import Preset, RetrievalConfig, SteeringConfig
from fints_agent.engine import TurnEngine
from fints_agent.models import LoadedModel, wrap_model
from fints_agent.steering import SteeringVector
from fints_agent.turn import TurnRequest

TOOLS = to_tool_specs(
    [
        bounded_tool(
            "get_weather",
            {"city": SHORT, "units": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            ["city", "units"],
        ),
        bounded_tool("book_ride", {"to": SHORT}, ["to"]),
    ]
)
MESSAGES = [{"role": "user", "content": "weather in Oslo"}]
PAST_REQUEST = "what is the weather in Lima"


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    tok = smollm2_tokenizer_or_skip()
    model = random_llama(tok, hidden_size=32, layers=2, max_positions=1024)
    return wrap_model(model, tok, name="tiny-smol-engine")


@dataclass
class _Retrieval:
    vector: SteeringVector | None
    value_vector: SteeringVector | None = None
    trajectory_ids: list[str] = field(default_factory=lambda: ["t1"])
    weights: list[float] = field(default_factory=lambda: [1.0])
    similarities: list[float] = field(default_factory=lambda: [0.9])
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]] = field(
        default_factory=lambda: [
            (
                [{"role": "user", "content": PAST_REQUEST}],
                {"name": "get_weather", "arguments": {"city": "Lima", "units": "fahrenheit"}},
            )
        ]
    )


class _Memory:
    """Retrieves one fixed vector for every user, and remembers how it was asked."""

    def __init__(self, lm: LoadedModel) -> None:
        g = torch.Generator().manual_seed(0)
        self.vector = SteeringVector(
            torch.randn(lm.num_layers, 2, lm.d_model, generator=g),
            tuple(range(lm.num_layers)),
            ("attn", "mlp"),
            lm.fingerprint,
        )
        self.asked: list[dict[str, Any]] = []

    def retrieve(self, user_id: str, messages: Any, tools: Any = None, **options: Any) -> Any:
        self.asked.append({"user_id": user_id, "tools": tools, **options})
        return _Retrieval(self.vector)


def _request(**kw: Any) -> TurnRequest:
    kw.setdefault("tool_choice", "any")
    kw.setdefault("user_id", "alice")
    kw.setdefault("max_new_tokens", 24)
    return TurnRequest(messages=list(MESSAGES), tools=list(TOOLS), **kw)


def test_retrieval_options_come_from_the_preset(lm: LoadedModel) -> None:
    memory = _Memory(lm)
    retrieval = RetrievalConfig(
        k=3, softmax_temperature=0.2, min_similarity=0.1, recency_half_life=4
    )
    engine = TurnEngine(lm, memory, Preset(retrieval=retrieval))
    engine.prepare(_request())
    [asked] = memory.asked
    assert asked == {
        "user_id": "alice",
        "tools": TOOLS,
        "k": 3,
        "temperature": 0.2,
        "min_similarity": 0.1,
        "recency_half_life": 4,
    }
    assert all(isinstance(t, ToolSpec) for t in asked["tools"])  # specs end to end


def test_no_user_or_no_personalization_asks_nothing(lm: LoadedModel) -> None:
    memory = _Memory(lm)
    engine = TurnEngine(lm, memory, Preset())
    for req in (_request(user_id=None), _request(personalization="none")):
        prepared = engine.prepare(req)
        assert prepared.vector is None and prepared.info["steered"] is False
    assert memory.asked == []


def test_tool_choice_decides_what_is_shown_and_allowed(lm: LoadedModel) -> None:
    engine = TurnEngine(lm, None, Preset())
    none = engine.prepare(_request(tool_choice="none"))
    assert none.allowed == [] and none.constraint is None
    assert "get_weather" not in none.prompt
    named = engine.prepare(_request(tool_choice="book_ride"))
    assert [s.name for s in named.allowed] == ["book_ride"]
    assert "get_weather" in named.prompt and "book_ride" in named.prompt  # every tool is shown
    assert named.constraint is not None
    with pytest.raises(Exception, match="nope"):
        engine.prepare(_request(tool_choice="nope"))


def test_personalization_modes_use_history_as_asked(lm: LoadedModel) -> None:
    engine = TurnEngine(lm, _Memory(lm), Preset(steering=SteeringConfig(gate="decisions")))
    rag = engine.prepare(_request(personalization="rag"))
    assert PAST_REQUEST in rag.prompt and rag.vector is None and rag.gate is None
    steer = engine.prepare(_request(personalization="steer"))
    assert PAST_REQUEST not in steer.prompt and steer.vector is not None
    assert steer.gate == "decisions"  # a gated row: its tracker decides what is steered
    both = engine.prepare(_request(personalization="rag+steer"))
    assert PAST_REQUEST in both.prompt and both.vector is not None
    assert both.info["trajectories"] == [{"id": "t1", "weight": 1.0, "similarity": 0.9}]
    everywhere = TurnEngine(lm, _Memory(lm), Preset(steering=SteeringConfig(gate="all")))
    assert everywhere.prepare(_request()).gate is None  # steered at every token, no tracker


def test_layers_and_sites_restrict_the_vector(lm: LoadedModel) -> None:
    one = SteeringConfig(layers=[1], sites=["mlp"])
    prepared = TurnEngine(lm, _Memory(lm), Preset(steering=one)).prepare(_request())
    assert prepared.vector is not None
    assert prepared.vector.layers == (1,) and prepared.vector.sites == ("mlp",)
    missing = SteeringConfig(layers=[7])  # a layer the vector does not have: nothing to steer
    prepared = TurnEngine(lm, _Memory(lm), Preset(steering=missing)).prepare(_request())
    assert prepared.vector is None and prepared.info["steered"] is False


def test_a_single_turn_is_a_batch_of_one(lm: LoadedModel) -> None:
    engine = TurnEngine(lm, _Memory(lm), Preset(steering=SteeringConfig(coefficient=4.0)))
    steered = _request(max_new_tokens=64)
    plain = _request(user_id=None, tool_choice="get_weather", max_new_tokens=64)
    stream = engine.run(steered)
    deltas = list(stream)
    assert stream.result is not None and "".join(deltas) == stream.result.text
    together = engine.complete_batch([steered, plain])
    assert [r.text for r in together] == [engine.complete(r).text for r in (steered, plain)]
    assert together[0].text == stream.result.text
    assert all(r.calls and not r.invalid_calls for r in together), together


def test_stop_sequences_cut_a_text_turn(lm: LoadedModel) -> None:
    engine = TurnEngine(lm, None, Preset())
    free = dict(tool_choice="none", user_id=None, max_new_tokens=16, no_repeat_ngram=0)
    text = engine.complete(_request(**free)).text
    assert len(text) >= 6, text
    stop = text[3:6]
    cut = engine.complete(_request(stop=[stop], **free))
    assert cut.text == text[: text.find(stop)] and cut.finish_reason == "stop"


def test_a_turn_without_messages_is_refused(lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="at least one message"):
        TurnEngine(lm, None, Preset()).prepare(TurnRequest(messages=[], tools=list(TOOLS)))
