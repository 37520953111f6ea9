"""FintsChatModel as LangChain code uses it: message forms, user ids on every path, token
counting and structured output, on a tiny random-config Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from tiny import saved_tiny_smol

from fints_agent.chat_model import FintsChatModel
from fints_agent.messages import feedback_chat


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from saved_tiny_smol(tmp_path_factory, "tiny-smol-lc")


@tool(return_direct=True)
def get_weather(city: str) -> str:
    """Weather forecast for a city."""
    return "sunny"


# -- feedback in every message form ---------------------------------------------------------


class _Recorder:
    """A memory that keeps what it is asked to record."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def record(self, *args: Any) -> str:
        self.calls.append(args)
        return "t1"


@pytest.mark.parametrize(
    "messages",
    [
        [("user", "Weather in Oslo?")],
        [("human", "Weather in Oslo?")],
        ["Weather in Oslo?"],
        [HumanMessage("Weather in Oslo?")],
        [{"role": "user", "content": "Weather in Oslo?"}],
        [{"type": "human", "content": "Weather in Oslo?"}],
    ],
)
def test_record_feedback_takes_every_message_form(messages: Any) -> None:
    memory = _Recorder()
    llm = FintsChatModel(model="unused").use_memory(memory)
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert llm.record_feedback("alice", messages, [get_weather], call) == "t1"
    [(user, chat, tools, accepted, rejected)] = memory.calls
    assert (user, chat, accepted, rejected) == (
        "alice",
        [{"role": "user", "content": "Weather in Oslo?"}],
        call,
        None,
    )
    assert [t["function"]["name"] for t in tools] == ["get_weather"]


def test_feedback_chat_keeps_dicts_and_converts_the_rest() -> None:
    past = {"role": "assistant", "content": "", "tool_calls": [{"name": "x", "arguments": {}}]}
    chat = feedback_chat(
        [
            ("system", "Be brief."),
            past,
            AIMessage("", tool_calls=[{"name": "x", "args": {"a": 1}, "id": "c1"}]),
            ToolMessage("done", tool_call_id="c1", name="x"),
            "thanks",
        ]
    )
    assert chat[0] == {"role": "system", "content": "Be brief."}
    assert chat[1] == past
    assert chat[2]["tool_calls"] == [{"name": "x", "arguments": {"a": 1}, "id": "c1"}]
    assert chat[3]["role"] == "tool" and chat[4] == {"role": "user", "content": "thanks"}
    with pytest.raises(ValueError):
        feedback_chat([("nobody", "hi")])


# -- the user id on every path --------------------------------------------------------------

SOURCES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "kwarg": ({}, {"user_id": "kw"}),
    "configurable": ({"configurable": {"user_id": "cfg"}}, {}),
    "metadata": ({"metadata": {"user_id": "meta"}}, {}),
    "field": ({}, {}),
}
"""Each documented user-id source: (config, call kwargs)."""
EXPECTED = {"kwarg": "kw", "configurable": "cfg", "metadata": "meta", "field": "field-user"}


def _user(message: Any) -> str:
    assert isinstance(message, AIMessage), message
    return str(message.response_metadata["fints"]["user_id"])


@pytest.fixture(scope="module")
def llm(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FintsChatModel:
    memory = tmp_path_factory.mktemp("lc-memory") / "store"
    return FintsChatModel(
        model=str(tiny_dir), max_tokens=4, memory=str(memory), user_id="field-user"
    )


@pytest.mark.parametrize("source", list(SOURCES))
def test_user_id_on_bare_bound_and_chained_models(llm: FintsChatModel, source: str) -> None:
    config, kwargs = SOURCES[source]
    bound = llm.bind_tools([get_weather], tool_choice="none")
    chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | llm.bind(**kwargs)
    assert _user(llm.invoke("hi", config, **kwargs)) == EXPECTED[source]  # type: ignore[arg-type]
    assert _user(bound.invoke("hi", config, **kwargs)) == EXPECTED[source]  # type: ignore[arg-type]
    assert _user(chain.invoke({"question": "hi"}, config)) == EXPECTED[source]  # type: ignore[arg-type]


def test_user_id_in_batch_with_a_config_per_input(llm: FintsChatModel) -> None:
    configs = [SOURCES[s][0] for s in ("configurable", "metadata", "field")]
    for runnable in (llm, llm.bind_tools([get_weather], tool_choice="none")):
        out = runnable.batch(["hi", "hi", "hi"], configs)  # type: ignore[arg-type]
        assert [_user(m) for m in out] == ["cfg", "meta", "field-user"]
    assert [_user(m) for m in llm.batch(["hi", "hi"], user_id="kw")] == ["kw", "kw"]


@pytest.mark.parametrize("source", ["configurable", "metadata", "field"])
def test_user_id_in_create_agent(llm: FintsChatModel, source: str) -> None:
    """In an agent (the tool returns directly, so one model turn): the turn's call is steered
    for the config's user; the model's default call_on_user_turn makes it a call."""
    from langchain.agents import create_agent

    agent = create_agent(llm.model_copy(update={"max_tokens": 40}), tools=[get_weather])
    state = agent.invoke({"messages": [("user", "Weather in Oslo?")]}, SOURCES[source][0])  # type: ignore[arg-type]
    ai = state["messages"][1]
    assert _user(ai) == EXPECTED[source]
    assert [c["name"] for c in ai.tool_calls] == ["get_weather"]


# -- token counting -------------------------------------------------------------------------


def test_token_counting_uses_the_models_tokenizer_and_template(tiny_dir: Path) -> None:
    llm = FintsChatModel(model=str(tiny_dir), max_tokens=2, personalization="none")
    tok = llm.load().tokenizer
    text = "What's the weather in Oslo tomorrow?"
    assert llm.get_token_ids(text) == tok(text, add_special_tokens=False)["input_ids"]
    assert llm.get_num_tokens(text) == len(llm.get_token_ids(text)) > 5
    messages = [SystemMessage("Be brief."), HumanMessage(text)]
    n = llm.get_num_tokens_from_messages(messages)
    usage = llm.invoke(messages).usage_metadata
    assert usage is not None and n == usage["input_tokens"]
    with_tools = llm.get_num_tokens_from_messages(messages, tools=[get_weather])
    bound = llm.bind_tools([get_weather]).invoke(messages).usage_metadata
    assert bound is not None and with_tools == bound["input_tokens"] > n
    assert llm.get_num_tokens_from_messages([]) == 0


def test_trim_messages_with_the_model_as_counter(tiny_dir: Path) -> None:
    llm = FintsChatModel(model=str(tiny_dir))
    history: list[Any] = [SystemMessage("You plan trips.")]
    for i in range(6):
        history += [HumanMessage(f"Weather in city number {i}?"), AIMessage(f"Sunny in {i}.")]
    history.append(HumanMessage("And tomorrow?"))
    total = llm.get_num_tokens_from_messages(history)
    trimmed = trim_messages(
        history,
        max_tokens=total // 2,
        token_counter=llm,
        strategy="last",
        include_system=True,
        start_on="human",
    )
    assert 2 < len(trimmed) < len(history)
    assert trimmed[0] == history[0] and trimmed[-1] == history[-1]
    assert llm.get_num_tokens_from_messages(trimmed) <= total // 2


# -- structured output ----------------------------------------------------------------------


class Person(BaseModel):
    name: str
    age: int


class Named(BaseModel):
    """A schema whose every instance is short (so answers end before any budget)."""

    name: str = Field(max_length=6)
    age: int = Field(ge=0, le=99)


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_cut_short_is_not_a_value(tiny_dir: Path, method: str) -> None:
    """A free string that runs into the budget is closed (valid JSON) but never parsed."""
    llm = FintsChatModel(model=str(tiny_dir), temperature=1.0, max_tokens=12)
    chat = llm.with_structured_output(Person, method=method)  # type: ignore[arg-type]
    with pytest.raises(OutputParserException, match="max_tokens"):
        chat.invoke("Ann is 31.", seed=0)
    raw_chat = llm.with_structured_output(Person, method=method, include_raw=True)  # type: ignore[arg-type]
    out = raw_chat.invoke("Ann is 31.", seed=0)
    assert out["parsed"] is None and isinstance(out["parsing_error"], OutputParserException)
    assert out["raw"].response_metadata["finish_reason"] == "length"


def test_structured_output_honours_the_method(tiny_dir: Path) -> None:
    llm = FintsChatModel(model=str(tiny_dir), max_tokens=80)
    by_call = llm.with_structured_output(Named, include_raw=True).invoke("Ann is 31.")
    assert [c["name"] for c in by_call["raw"].tool_calls] == ["Named"]
    assert by_call["parsed"] == Named.model_validate(by_call["raw"].tool_calls[0]["args"])
    by_schema = llm.with_structured_output(Named, method="json_schema", include_raw=True)
    out = by_schema.invoke("Ann is 31.")
    assert not out["raw"].tool_calls and out["raw"].response_metadata["finish_reason"] == "stop"
    assert out["parsed"] == Named.model_validate_json(out["raw"].content)
    as_dict = llm.with_structured_output(Named.model_json_schema(), method="json_schema")
    assert set(as_dict.invoke("Ann is 31.")) == {"name", "age"}  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        llm.with_structured_output(Named, method="xml")  # type: ignore[arg-type]
