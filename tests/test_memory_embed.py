"""Retrieval embedders: all-MiniLM-L6-v2 through plain transformers, and the LM's own states."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from memory_fixtures import WEATHER_TOOLS, HashEmbedder, make_memory, tiny, user_msg, weather_item

from fints_agent.memory import Memory, TrajectoryStore
from fints_agent.memory.embed import (
    EmbedderError,
    LMEmbedder,
    MiniLMEmbedder,
    make_embedder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "What's the weather in Oslo tomorrow?",
    "Will it rain in Paris tomorrow?",
    "Order me a large pizza with extra cheese.",
]


def test_minilm_rows_are_unit_length_and_meaningful() -> None:
    emb = MiniLMEmbedder()
    assert emb.name == "minilm" and emb.dim == 384
    rows = emb.embed(TEXTS)
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    assert np.linalg.norm(rows, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    sims = rows @ rows.T
    assert sims[0, 1] > 0.4 > sims[0, 2]
    # Batched and single embeddings agree (padding does not leak into the mean).
    single = emb.embed([TEXTS[2]])[0]
    assert float(single @ rows[2]) == pytest.approx(1.0, abs=1e-5)
    assert emb.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        emb.embed([3])  # type: ignore[list-item]


def test_minilm_is_safe_from_several_threads() -> None:
    emb = MiniLMEmbedder()
    expected = emb.embed(TEXTS)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(3):
                assert np.allclose(emb.embed(TEXTS), expected, atol=1e-5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_lm_embedder_on_a_tiny_model() -> None:
    lm = tiny()
    emb = make_embedder("lm", lm)
    assert isinstance(emb, LMEmbedder)
    assert emb.name == f"lm:{lm.fingerprint}" and emb.dim == lm.d_model
    rows = emb.embed(["weather in oslo", "weather in oslo please", "play a song"])
    assert rows.shape == (3, lm.d_model)
    assert np.linalg.norm(rows, axis=1) == pytest.approx([1.0] * 3, abs=1e-5)
    assert float(rows[0] @ emb.embed(["weather in oslo"])[0]) == pytest.approx(1.0, abs=1e-5)


def test_make_embedder_errors() -> None:
    with pytest.raises(EmbedderError, match="unknown embedder"):
        make_embedder("bert")
    with pytest.raises(EmbedderError, match="needs a model"):
        make_embedder("lm")
    with pytest.raises(EmbedderError, match="not an embedder"):
        make_embedder(object())  # type: ignore[arg-type]


def test_memory_with_the_real_minilm_embedder(tmp_path: Path) -> None:
    memory = Memory(tiny(), TrajectoryStore(tmp_path / "s"), embedder="minilm")
    assert memory.layout.embedder == "minilm" and memory.layout.embed_dim == 384
    oslo = memory.record(
        "alice",
        user_msg("What's the weather in Oslo?"),
        WEATHER_TOOLS,
        {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}},
    )
    week = memory.record(
        "alice",
        user_msg("Forecast for Lima for the next five days"),
        WEATHER_TOOLS,
        {"name": "get_forecast", "arguments": {"city": "Lima", "days": 5, "units": "celsius"}},
    )
    r = memory.retrieve("alice", user_msg("How warm is it in Rome right now?"), k=1)
    assert r.trajectory_ids == [oslo]
    r = memory.retrieve("alice", user_msg("Give me the 3-day forecast for Cairo"), k=1)
    assert r.trajectory_ids == [week]


def test_request_embeddings_are_cached(tmp_path: Path) -> None:
    calls: list[int] = []

    class Counting(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            calls.append(len(texts))
            return super().embed(texts)

    memory = make_memory(tmp_path / "s", embedder=Counting())
    memory.record_many([weather_item("alice", i) for i in range(2)], progress=False)
    calls.clear()
    first = memory.retrieve("alice", user_msg("what is the weather in oslo now"))
    again = memory.retrieve("alice", user_msg("what is the weather in oslo now"))
    assert calls == [1] and first.trajectory_ids == again.trajectory_ids
