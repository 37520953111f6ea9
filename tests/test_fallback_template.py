"""A tokenizer without a chat template (a base model such as Gemma 3 270M): prompts use the
plain-text fallback template, an info message says so once, and tool calls still come out in the
format the decoder reads.

The model is a tiny random-config Llama with the real SmolLM2 tokenizer, its chat template
removed (random weights: whatever they prefer, every emitted call must validate).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import jsonschema
import pytest
from langchain_core.messages import AIMessage
from tiny import (
    SHORT,
    bounded_tool,
    random_llama,
    smollm2_tokenizer_or_skip,
    tiny_tokenizer,
)

from fints_agent.chat_model import FintsChatModel
from fints_agent.models import LoadedModel, wrap_model
from fints_agent.prompting import FALLBACK_CHAT_TEMPLATE, PromptRenderer

pytestmark = pytest.mark.usefixtures("one_thread")

LOGGER = "fints_agent.prompting"

WEATHER = bounded_tool(
    "get_weather",
    {"city": SHORT, "units": {"enum": ["celsius", "fahrenheit"]}},
    ["city", "units"],
)
RIDE = bounded_tool("book_ride", {"pickup": SHORT, "dropoff": SHORT}, ["pickup", "dropoff"])
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, RIDE)}


def _no_template(tokenizer: Any) -> Any:
    """A copy of the tokenizer without a chat template (the shared one is never changed)."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def _plain_lm() -> LoadedModel:
    tok = _no_template(smollm2_tokenizer_or_skip())
    model = random_llama(tok, hidden_size=32, layers=2, max_positions=1024)
    return wrap_model(model, tok, name="tiny-plain")


@pytest.fixture(scope="module")
def plain_lm() -> LoadedModel:
    return _plain_lm()


# -- the template -------------------------------------------------------------------------


def test_every_turn_kind_renders_as_plain_text() -> None:
    renderer = PromptRenderer(_no_template(tiny_tokenizer()))
    assert renderer.uses_fallback and not renderer.template_tools
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather in oslo"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "get_weather", "args": {"city": "oslo", "units": "celsius"}}],
        },
        {"role": "tool", "name": "get_weather", "content": "sunny"},
        {"role": "user", "content": "and paris?"},
    ]
    text = renderer.render_prompt(messages, [WEATHER])
    tools = text[text.index("# Tools") : text.index("\n\nUser:")]
    assert '{"name": "get_weather"' in tools and "<tool_call>" in tools  # tools + call format
    assert text.startswith("System:\nBe brief.\n\n# Tools\n")  # no BOS: the tokenizer adds none
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "oslo", "units": "celsius"}}'
    assert text.endswith(
        "\n\nUser:\nweather in oslo\n\n"
        f"Assistant:\n{call}</tool_call><|im_end|>\n\n"
        "Tool result (get_weather):\nsunny\n\n"
        "User:\nand paris?\n\n"
        "Assistant:\n"
    )


def test_the_prompt_starts_with_bos_when_the_tokenizer_adds_one() -> None:
    from tokenizers import processors

    tok = _no_template(tiny_tokenizer())
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", tok.bos_token_id)]
    )
    assert tok("hello")["input_ids"][0] == tok.bos_token_id
    text = PromptRenderer(tok).render_prompt([{"role": "user", "content": "hello"}])
    assert text == "<|im_start|>User:\nhello\n\nAssistant:\n"


def test_the_prefix_is_a_prefix_of_the_prompt() -> None:
    renderer = PromptRenderer(_no_template(tiny_tokenizer()))
    system = [{"role": "system", "content": "Be brief."}]
    prefix = renderer.render_prefix(system, [WEATHER])
    prompt = renderer.render_prompt([*system, {"role": "user", "content": "hello"}], [WEATHER])
    shared = prefix.removesuffix("Assistant:\n")
    assert shared.endswith("\n\n") and prompt.startswith(shared)


def test_the_log_says_so_once_per_tokenizer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    tok = _no_template(tiny_tokenizer())
    PromptRenderer(tok)
    PromptRenderer(tok)
    said = [r for r in caplog.records if r.name == LOGGER and "no chat template" in r.message]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "FALLBACK_CHAT_TEMPLATE" in said[0].message


def test_a_template_set_on_the_tokenizer_is_used_instead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    tok = _no_template(tiny_tokenizer())
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    renderer = PromptRenderer(tok)
    assert not renderer.uses_fallback
    assert renderer.render_prompt([{"role": "user", "content": "hi"}]) == "[user] hi\n"
    assert not [r for r in caplog.records if "no chat template" in r.message]


def test_the_fallback_set_explicitly_renders_the_same() -> None:
    tok = _no_template(tiny_tokenizer())
    explicit = copy.deepcopy(tok)
    explicit.chat_template = FALLBACK_CHAT_TEMPLATE
    messages = [
        {"role": "user", "content": "weather in oslo"},
        {"role": "tool", "name": "get_weather", "content": "sunny"},
    ]
    assert not PromptRenderer(explicit).uses_fallback
    assert PromptRenderer(explicit).render_prompt(messages) == PromptRenderer(tok).render_prompt(
        messages
    )


# -- turns on a model whose tokenizer has no chat template ---------------------------------


def test_a_text_turn_runs(plain_lm: LoadedModel) -> None:
    msg = FintsChatModel(model=plain_lm, max_tokens=6).invoke("hello")
    assert isinstance(msg, AIMessage) and isinstance(msg.content, str)
    assert msg.usage_metadata and msg.usage_metadata["output_tokens"] <= 6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_forced_tool_call_is_produced_and_validates(plain_lm: LoadedModel, seed: int) -> None:
    llm = FintsChatModel(model=plain_lm, max_tokens=80, temperature=1.0, seed=seed)
    msg = llm.bind_tools([WEATHER, RIDE], tool_choice="any").invoke("weather in oslo")
    assert msg.tool_calls and not msg.invalid_tool_calls
    for call in msg.tool_calls:
        jsonschema.validate(call["args"], SCHEMAS[call["name"]])


def test_a_turn_after_a_tool_result_runs(plain_lm: LoadedModel) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = FintsChatModel(model=plain_lm, max_tokens=80)
    first = llm.bind_tools([WEATHER], tool_choice="any").invoke("weather in oslo")
    (call,) = first.tool_calls
    history = [
        HumanMessage("weather in oslo"),
        first,
        ToolMessage("sunny", tool_call_id=call["id"], name=call["name"]),
    ]
    again = llm.bind_tools([WEATHER], tool_choice="get_weather").invoke(history)
    assert again.tool_calls and not again.invalid_tool_calls
    jsonschema.validate(again.tool_calls[0]["args"], SCHEMAS["get_weather"])


def test_the_chat_model_logs_the_fallback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    lm = _plain_lm()  # a tokenizer no renderer has seen yet
    msg = (
        FintsChatModel(model=lm, max_tokens=80)
        .bind_tools([RIDE], tool_choice="any")
        .invoke("take me from home to the airport")
    )
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "book_ride"
    said = [r for r in caplog.records if r.name == LOGGER and "no chat template" in r.message]
    assert len(said) == 1
