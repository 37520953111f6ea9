"""A memory on a Chroma server that goes away mid-session, comes back, or comes back empty.

Each test starts its own ``chroma run`` server on loopback and stops and restarts it: a turn
during an outage runs unsteered (``"reason": "memory unavailable"``) and raises nothing;
recording raises :class:`StoreUnavailableError` and loses nothing stored; after a restart the
same model is steered again, and after a restart on a wiped directory it records again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chroma_servers import ChromaServer
from conftest import _free_port
from memory_fixtures import WEATHER_TOOL
from tiny import saved_tiny_smol

from fints_agent.chat_model import FintsChatModel
from fints_agent.config import RetrievalConfig, SteeringConfig
from fints_agent.memory import StoreError, StoreUnavailableError

REQUEST = "What's the weather in Berlin?"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from saved_tiny_smol(tmp_path_factory, "tiny-outage")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChromaServer]:
    """A ``chroma run`` server of the test's own, stopped at its end."""
    srv = ChromaServer.rust(tmp_path).start()
    yield srv
    srv.stop()


def _llm(tiny_dir: Path, url: str) -> FintsChatModel:
    return FintsChatModel(
        model=str(tiny_dir),
        memory=url,
        max_tokens=80,
        steering=SteeringConfig(coefficient=50.0, gate="all"),
        retrieval=RetrievalConfig(min_similarity=0.3),
    )


def _feedback(llm: FintsChatModel, city: str) -> Any:
    return llm.record_feedback(
        "alice",
        [{"role": "user", "content": f"What's the weather in {city}?"}],
        [WEATHER_TOOL],
        {"name": "get_weather", "arguments": {"city": city, "units": "fahrenheit"}},
        [{"name": "get_weather", "arguments": {"city": city, "units": "celsius"}}],
    )


def _turn(llm: FintsChatModel) -> dict[str, Any]:
    msg = llm.bind_tools([WEATHER_TOOL], tool_choice="any").invoke(REQUEST, user_id="alice")
    assert msg.tool_calls  # answered either way
    info: dict[str, Any] = msg.response_metadata["fints"]
    return info


def test_a_turn_during_an_outage_runs_unsteered(
    tiny_dir: Path, server: ChromaServer, caplog: pytest.LogCaptureFixture
) -> None:
    llm = _llm(tiny_dir, server.url)
    for city in ("Oslo", "Paris", "Rome"):
        _feedback(llm, city)
    before = _turn(llm)
    assert before["steered"] and len(before["trajectories"]) == 3 and "reason" not in before

    server.stop()
    with caplog.at_level(logging.WARNING, logger="fints_agent.engine"):
        during = _turn(llm)
    assert during["steered"] is False and during["reason"] == "memory unavailable"
    assert during["trajectories"] == []
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "unsteered" in warned[0].getMessage()
    assert server.url in warned[0].getMessage()
    with pytest.raises(StoreUnavailableError, match="cannot be reached") as err:
        _feedback(llm, "Lima")
    assert isinstance(err.value, StoreError)

    server.start()  # the same directory: nothing was lost, and the same model steers again
    after = _turn(llm)
    assert after["steered"] and "reason" not in after
    assert [t["id"] for t in after["trajectories"]] == [t["id"] for t in before["trajectories"]]
    assert llm.get_memory().store.count("alice") == 3


def test_recording_after_a_restart_on_a_wiped_directory(
    tiny_dir: Path, server: ChromaServer
) -> None:
    """Cached collection handles of the old server are re-resolved: recording works at once."""
    llm = _llm(tiny_dir, server.url)
    _feedback(llm, "Oslo")
    _feedback(llm, "Paris")
    store = llm.get_memory().store
    assert store.count("alice") == 2

    server.restart(wipe=True)
    assert store.count("alice") == 0
    assert _turn(llm)["steered"] is False  # no history any more, and no error
    tid = _feedback(llm, "Rome")
    assert [r.id for r in store.get("alice")] == [tid]
    assert store.recover(full=True).orphan_vectors == 0
    info = _turn(llm)
    assert info["steered"] and [t["id"] for t in info["trajectories"]] == [tid]


def test_a_memory_that_cannot_be_opened_does_not_fail_the_turn(tiny_dir: Path) -> None:
    """No server at all when the first turn comes: the turn runs unsteered; recording raises."""
    llm = _llm(tiny_dir, f"http://127.0.0.1:{_free_port()}")
    info = _turn(llm)
    assert info["steered"] is False and info["reason"] == "memory unavailable"
    with pytest.raises(StoreUnavailableError):
        _feedback(llm, "Oslo")
