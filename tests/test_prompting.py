"""Prompt rendering (``PromptRenderer``) and past calls as prompt text (``format_examples``).

Most tests use the tiny ChatML-like tokenizer of ``tests/tiny.py`` (no model, no tool support in
its template, so tools are listed in the system section); the token-prefix test also runs on a
byte-level BPE tokenizer (as real models have: merges cross word and line boundaries) trained in
a few milliseconds on rendered prompts.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
from tiny import CHAT_TEMPLATE, tiny_tokenizer

from fints_agent.calls import render_call, render_tools_prompt, to_tool_specs
from fints_agent.prefix_cache import common_prefix
from fints_agent.prompting import PromptRenderer, format_examples

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "units"],
        },
    },
}

MUSIC: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "play_song",
        "description": "Play a song.",
        "parameters": {
            "type": "object",
            "properties": {"song": {"type": "string"}},
            "required": ["song"],
        },
    },
}

START, END = "<|im_start|>", "<|im_end|>\n"
SYSTEM = {"role": "system", "content": "Be brief."}


def _turn(role: str, content: str) -> str:
    """One message as the tiny ChatML template writes it."""
    return f"{START}{role}\n{content}{END}"


GENERATION = f"{START}assistant\n"
"""What the tiny template writes to open the assistant's answer."""


def _renderer(template: str = CHAT_TEMPLATE) -> PromptRenderer:
    tokenizer = tiny_tokenizer()
    if template != CHAT_TEMPLATE:
        tokenizer = copy.deepcopy(tokenizer)  # tiny_tokenizer is shared: never change it
        tokenizer.chat_template = template
    return PromptRenderer(tokenizer)


def _tools_section(*tools: dict[str, Any]) -> str:
    return render_tools_prompt(to_tool_specs(list(tools)))


@cache
def _bpe_tokenizer() -> Any:
    """A byte-level BPE tokenizer with the tiny chat template, trained on rendered prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    renderer = _renderer()
    corpus = [
        renderer.render_prompt(
            [SYSTEM, {"role": "user", "content": f"weather in oslo {i}"}], [WEATHER, MUSIC]
        )
        for i in range(4)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[START, END.strip()],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END.strip())
    fast.chat_template = CHAT_TEMPLATE
    return fast


# -- render_prompt --------------------------------------------------------------------------


def test_a_conversation_renders_through_the_chat_template() -> None:
    text = _renderer().render_prompt(
        [
            {"role": "user", "content": "hello world"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "weather in oslo"},
        ]
    )
    assert text == (
        _turn("user", "hello world")
        + _turn("assistant", "hello")
        + _turn("user", "weather in oslo")
        + GENERATION
    )


def test_system_messages_anywhere_are_merged_in_order_into_one_first_section() -> None:
    text = _renderer().render_prompt(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "system", "content": ""},  # empty: left out
            {"role": "system", "content": "Answer in celsius."},
            {"role": "user", "content": "weather in oslo"},
        ]
    )
    assert text == (
        _turn("system", "Be brief.\n\nAnswer in celsius.")
        + _turn("user", "hello")
        + _turn("user", "weather in oslo")
        + GENERATION
    )
    assert text.count(f"{START}system") == 1


def test_tools_and_examples_follow_the_system_messages() -> None:
    examples = "# Past calls\nRequest: weather in oslo"
    text = _renderer().render_prompt(
        [{"role": "user", "content": "hi"}, {"role": "system", "content": "Be brief."}],
        [WEATHER, MUSIC],
        examples=examples,
    )
    tools = _tools_section(WEATHER, MUSIC)
    assert tools and "get_weather" in tools and "play_song" in tools
    assert text == (
        _turn("system", f"Be brief.\n\n{tools}\n\n{examples}") + _turn("user", "hi") + GENERATION
    )


def test_tool_specs_and_tool_dicts_render_alike() -> None:
    renderer = _renderer()
    chat = [{"role": "user", "content": "hi"}]
    assert renderer.render_prompt(chat, to_tool_specs([WEATHER])) == renderer.render_prompt(
        chat, [WEATHER]
    )


def test_without_tools_or_system_messages_there_is_no_system_section() -> None:
    text = _renderer().render_prompt([{"role": "user", "content": "hi"}], [])
    assert f"{START}system" not in text


def test_tool_calls_and_results_are_written_in_the_call_format() -> None:
    text = _renderer().render_prompt(
        [
            {"role": "user", "content": "weather in oslo"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    # the renderer's own form, and LangChain's ("args")
                    {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}},
                    {"name": "play_song", "args": {"song": "Ja vi elsker"}, "id": "c2"},
                ],
            },
            {"role": "tool", "name": "get_weather", "content": "sunny", "tool_call_id": "c1"},
            {"role": "tool", "content": {"temp": 3}},  # no name; not a string
        ]
    )
    calls = render_call("get_weather", {"city": "Oslo", "units": "celsius"}) + render_call(
        "play_song", {"song": "Ja vi elsker"}
    )
    assert calls.startswith('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"')
    assert text == (
        _turn("user", "weather in oslo")
        + _turn("assistant", calls)
        + _turn("user", "<tool_response name=get_weather>\nsunny\n</tool_response>")
        + _turn("user", '<tool_response name=tool>\n{"temp": 3}\n</tool_response>')
        + GENERATION
    )


def test_text_before_a_tool_call_is_kept() -> None:
    text = _renderer().render_prompt(
        [
            {"role": "user", "content": "weather in oslo"},
            {
                "role": "assistant",
                "content": "let me see",
                "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            },
        ]
    )
    call = render_call("get_weather", {"city": "Oslo"})
    assert _turn("assistant", "let me see" + call) in text


def test_roles_the_template_does_not_know_become_user_turns() -> None:
    text = _renderer().render_prompt([{"role": "critic", "content": "too long"}])
    assert text == _turn("user", "too long") + GENERATION


def test_render_call_orders_keys_as_the_schema_does() -> None:
    renderer = _renderer()
    params = WEATHER["function"]["parameters"]
    args = {"units": "celsius", "city": "Oslo"}
    assert renderer.render_call("get_weather", args, params) == (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}}'
        "</tool_call>"
    )
    assert renderer.render_call("get_weather", args) == (
        '<tool_call>{"name": "get_weather", "arguments": {"units": "celsius", "city": "Oslo"}}'
        "</tool_call>"
    )


def test_count_tokens_counts_the_tokenizers_ids() -> None:
    renderer = _renderer()
    assert renderer.count_tokens("hello world") == 2
    text = renderer.render_prompt([{"role": "user", "content": "hello world"}])
    ids = tiny_tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert renderer.count_tokens(text) == len(ids) > 2


# -- render_prefix --------------------------------------------------------------------------


def test_prefix_is_the_system_section_alone() -> None:
    renderer = _renderer()
    turn_a = [SYSTEM, {"role": "user", "content": "weather in oslo"}]
    turn_b = [{"role": "user", "content": "play a song"}, SYSTEM]
    prefix = renderer.render_prefix(turn_a, [WEATHER])
    assert prefix == _turn("system", f"Be brief.\n\n{_tools_section(WEATHER)}") + GENERATION
    assert renderer.render_prefix(turn_b, [WEATHER]) == prefix  # the conversation is not in it
    assert renderer.render_prefix(turn_a, [MUSIC]) != prefix
    assert renderer.render_prefix([{**SYSTEM, "content": "Be kind."}], [WEATHER]) != prefix


def test_prefix_with_tools_alone_or_system_messages_alone() -> None:
    renderer = _renderer()
    user = {"role": "user", "content": "hi"}
    assert renderer.render_prefix([user], [WEATHER]) == (
        _turn("system", _tools_section(WEATHER)) + GENERATION
    )
    assert renderer.render_prefix([SYSTEM, user]) == _turn("system", "Be brief.") + GENERATION


def test_no_prefix_without_system_messages_and_tools() -> None:
    assert _renderer().render_prefix([{"role": "user", "content": "hi"}]) == ""
    assert _renderer().render_prefix([]) == ""


def test_no_prefix_when_the_template_refuses_a_system_turn_alone() -> None:
    picky = (
        "{% if messages[-1]['role'] != 'user' %}{{ raise_exception('end on a user turn') }}"
        "{% endif %}" + CHAT_TEMPLATE
    )
    renderer = _renderer(picky)
    turn = [SYSTEM, {"role": "user", "content": "hi"}]
    assert renderer.render_prefix(turn, [WEATHER]) == ""
    assert renderer.render_prompt(turn, [WEATHER]).startswith(f"{START}system\nBe brief.")


@pytest.mark.parametrize("which", ["tiny", "bpe"])
def test_prefix_ids_are_a_prefix_of_the_prompt_ids(which: str) -> None:
    """The prefix's tokens, up to the generation prompt that closes it, start every prompt of
    a turn with these system messages and tools (what the prefix cache reuses)."""
    tokenizer = tiny_tokenizer() if which == "tiny" else _bpe_tokenizer()
    renderer = PromptRenderer(tokenizer)

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    turn = [
        SYSTEM,
        {"role": "user", "content": "weather in oslo"},
        {"role": "system", "content": "Answer in celsius."},
    ]
    prefix = renderer.render_prefix(turn, [WEATHER, MUSIC])
    hi = [{"role": "user", "content": "hi"}]
    closed = tokenizer.apply_chat_template(hi, tokenize=False, add_generation_prompt=False)
    generation = renderer.render_prompt(hi)[len(closed) :]  # what opens the answer
    assert generation and prefix.endswith(generation)
    section = prefix[: -len(generation)]
    prompt = renderer.render_prompt(turn, [WEATHER, MUSIC])
    assert prompt.startswith(section)
    prompt_ids = ids(prompt)
    assert prompt_ids[: len(ids(section))] == ids(section)
    assert common_prefix(prompt_ids, ids(prefix)) >= len(ids(section))

    # With examples the prompt still shares the system messages and every tool.
    examples = format_examples(
        [([{"role": "user", "content": "play a song"}], {"name": "play_song", "arguments": {}})],
        to_tool_specs([MUSIC]),
    )
    with_examples = renderer.render_prompt(turn, [WEATHER, MUSIC], examples=examples)
    body = section[: section.rindex("<|im_end|>")]  # system messages and tools, unclosed
    assert "Be brief.\n\nAnswer in celsius." in body and _tools_section(WEATHER, MUSIC) in body
    assert with_examples.startswith(body) and examples in with_examples[len(body) :]
    shared = common_prefix(ids(with_examples), ids(prefix))
    assert len(ids(body)) <= shared < len(ids(section))


# -- format_examples ------------------------------------------------------------------------


def test_format_examples_lists_requests_and_calls_in_the_call_format() -> None:
    specs = to_tool_specs([WEATHER, MUSIC])
    text = format_examples(
        [
            (
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "weather in oslo"},
                ],
                {"name": "get_weather", "arguments": {"units": "celsius", "city": "Oslo"}},
            ),
            ([{"role": "user", "content": "play a song"}], {"name": "play_song", "arguments": {}}),
        ],
        specs,
    )
    header, *lines = text.split("\n")
    assert header.startswith("# ")
    assert lines == [
        "Request: weather in oslo",  # the last user message
        "Call: "
        + render_call("get_weather", {"city": "Oslo", "units": "celsius"}),  # schema key order
        "Request: play a song",
        "Call: " + render_call("play_song", {}),
    ]
    assert '{"city": "Oslo", "units": "celsius"}' in lines[1]


def test_format_examples_writes_a_call_as_the_renderer_does() -> None:
    params = WEATHER["function"]["parameters"]
    args = {"units": "fahrenheit", "city": "Paris"}
    text = format_examples(
        [
            (
                [{"role": "user", "content": "weather in paris"}],
                {"name": "get_weather", "arguments": args},
            )
        ],
        to_tool_specs([WEATHER]),
    )
    assert text.endswith("Call: " + _renderer().render_call("get_weather", args, params))


def test_format_examples_of_an_unknown_tool_or_without_a_request() -> None:
    text = format_examples(
        [
            (
                [{"role": "assistant", "content": "hi"}],
                {"name": "other", "arguments": {"b": 1, "a": 2}},
            )
        ],
        to_tool_specs([WEATHER]),
    )
    assert text.split("\n")[1:] == [
        "Request: ",
        'Call: <tool_call>{"name": "other", "arguments": {"b": 1, "a": 2}}</tool_call>',
    ]


def test_no_examples_no_text() -> None:
    assert format_examples([], to_tool_specs([WEATHER])) == ""
