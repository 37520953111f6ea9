"""The turn engine at its limits: a conversation far over the context window, and token
budgets too small for the opening marker of a call."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from tiny import SHORT, bounded_tool, random_llama, smollm2_tokenizer_or_skip, tiny_lm

from fints_agent import FintsChatModel
from fints_agent.calls import CALL_CLOSE, CALL_OPEN, to_tool_specs
from fints_agent.engine import TurnEngine
from fints_agent.models import LoadedModel, wrap_model
from fints_agent.turn import TurnRequest

OPENAI_TOOLS = [
    bounded_tool("get_weather", {"city": SHORT}, ["city"]),
    bounded_tool("book_ride", {"to": SHORT}, ["to"]),
]
TOOLS = to_tool_specs(OPENAI_TOOLS)


def _conversation(n: int) -> list[dict[str, Any]]:
    """A system message, then ``n`` user and assistant messages (the last a user's), each
    tagged ``[i]``, with a second system message in the middle."""
    out: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
    for i in range(n):
        role = "user" if (n - 1 - i) % 2 == 0 else "assistant"
        out.append({"role": role, "content": f"[{i}] get me the weather in oslo today"})
        if i == n // 2:
            out.append({"role": "system", "content": "answer in celsius"})
    return out


def _kept(prompt: str, n: int) -> list[int]:
    return [i for i in range(n) if f"[{i}]" in prompt]


def _index(message: dict[str, Any]) -> int:
    """The ``i`` of a non-system message's ``[i]`` tag."""
    content = str(message["content"])
    return int(content[1 : content.index("]")])


class _CountingRenderer:
    """Counts the engine renderer's ``render_prompt`` calls."""

    def __init__(self, engine: TurnEngine) -> None:
        self.calls = 0
        inner = engine.renderer.render_prompt

        def render_prompt(*args: Any, **kwargs: Any) -> str:
            self.calls += 1
            return inner(*args, **kwargs)

        engine.renderer.render_prompt = render_prompt  # type: ignore[method-assign]


def test_trimming_drops_the_oldest_in_one_pass() -> None:
    """2,001 messages over the window: one warning naming how many were dropped, O(log n)
    renders, and the newest messages that fit are kept (system messages too)."""
    engine = TurnEngine(tiny_lm("llama"))
    n = 2001
    messages = _conversation(n)
    req = TurnRequest(messages=messages, max_new_tokens=16)
    budget = engine.max_context - req.max_new_tokens
    counter = _CountingRenderer(engine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prompt, _ = engine.render(req, None)
    renders = counter.calls
    trims = [w for w in caught if "context window" in str(w.message)]
    assert len(trims) == 1, [str(w.message) for w in caught]
    kept = _kept(prompt, n)
    assert kept and kept == list(range(kept[0], n))  # the newest, in order
    assert f"dropped the {kept[0]} oldest of {n} messages" in str(trims[0].message)
    assert "be brief" in prompt and "answer in celsius" in prompt
    assert engine.renderer.count_tokens(prompt) <= budget
    one_more = [m for m in messages if m["role"] == "system" or _index(m) >= kept[0] - 1]
    longer = engine.renderer.render_prompt(one_more)
    assert engine.renderer.count_tokens(longer) > budget  # one more would not fit
    assert renders <= 2 * math.ceil(math.log2(n)) + 3, renders


def test_trimming_nothing_when_it_fits() -> None:
    engine = TurnEngine(tiny_lm("llama"))
    counter = _CountingRenderer(engine)
    req = TurnRequest(messages=_conversation(3), max_new_tokens=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompt, _ = engine.render(req, None)
    assert _kept(prompt, 3) == [0, 1, 2]
    assert counter.calls <= 2  # the prompt and its cacheable prefix


def test_trimming_keeps_the_latest_message_or_says_it_cannot() -> None:
    engine = TurnEngine(tiny_lm("llama"))
    huge = {"role": "user", "content": "weather " * 400}
    req = TurnRequest(messages=[*_conversation(40), huge], max_new_tokens=16)
    with pytest.raises(ValueError, match=r"the last message alone needs .* context window"):
        engine.render(req, None)


@pytest.fixture(scope="module")
def smol() -> LoadedModel:
    tok = smollm2_tokenizer_or_skip()
    model = random_llama(tok, hidden_size=32, layers=2, max_positions=1024)
    return wrap_model(model, tok, name="tiny-smol-limits")


def _no_wrapper(content: Any) -> None:
    """No piece of a call's markers: each starts with ``<``."""
    assert isinstance(content, str)
    assert CALL_OPEN[0] == CALL_CLOSE[0] == "<"
    assert "<" not in content and "tool_call" not in content, content


@pytest.mark.parametrize("choice", ["any", "get_weather"])
@pytest.mark.parametrize("budget", [1, 2, 3])
def test_tiny_budget_call_is_invalid_not_text(smol: LoadedModel, budget: int, choice: str) -> None:
    """A forced call cut inside its opening marker is an invalid call saying that the token
    budget ended it; the content holds no piece of the marker."""
    engine = TurnEngine(smol)
    messages = [{"role": "user", "content": "weather in Oslo"}]
    result = engine.complete(
        TurnRequest(messages=messages, tools=list(TOOLS), tool_choice=choice, max_new_tokens=budget)
    )
    assert result.finish_reason == "length"
    assert result.calls == []
    _no_wrapper(result.content)
    [bad] = result.invalid_calls
    assert "token budget" in bad.error and "max_tokens" in bad.error


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_tiny_budget_chat_model_message(smol: LoadedModel, budget: int) -> None:
    """The same through the chat model: invoked and streamed, no fragment of the wrapper in
    the content, the call in ``invalid_tool_calls``."""
    llm = FintsChatModel(model=smol, max_tokens=budget)
    bound = llm.bind_tools(OPENAI_TOOLS, tool_choice="any")
    msg = bound.invoke("weather in Oslo")
    assert isinstance(msg, AIMessage)
    _no_wrapper(msg.content)
    assert msg.tool_calls == []
    [bad] = msg.invalid_tool_calls
    assert "token budget" in (bad["error"] or "")
    chunks = list(bound.stream("weather in Oslo"))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert isinstance(whole, AIMessageChunk)
    _no_wrapper(whole.content)
    assert whole.tool_calls == []
    assert len(whole.invalid_tool_calls) == 1
