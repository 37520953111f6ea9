"""Shared fixtures and helpers of the memory tests (import the fixtures into a test module).

- ``HashEmbedder``: a deterministic bag-of-words embedder (no model), for tests where the
  embedder is not what is tested.
- ``chroma_server``: a real ``chroma run`` server on a free loopback port, for the whole test run.
- ``store_location``: parametrized over an embedded store and that server.
- ``one_thread``: run torch on one thread (faster on a busy 2-core machine).

Test modules import the helpers and register the fixtures with
``pytest_plugins = ("memory_fixtures",)`` (PYTEST_DONT_REWRITE: imported before registration).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny import tiny_lm

from fints_agent.memory import Memory, TrajectoryStore
from fints_agent.models import LoadedModel

TESTS_DIR = Path(__file__).resolve().parent

WEATHER_TOOLS: list[dict[str, Any]] = [
    {
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
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_forecast",
            "description": "Daily forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 10},
                    "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "days", "units"],
                "additionalProperties": False,
            },
        },
    },
]

TRAVEL_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_directions",
            "description": "Directions between two places.",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "destination": {"type": "string"},
                    "mode": {"type": "string", "enum": ["driving", "walking", "transit"]},
                },
                "required": ["origin", "destination", "mode"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_ride",
            "description": "Book a taxi.",
            "parameters": {
                "type": "object",
                "properties": {
                    "pickup": {"type": "string"},
                    "dropoff": {"type": "string"},
                    "shared": {"type": "boolean"},
                },
                "required": ["pickup", "dropoff"],
            },
        },
    },
]

CITIES = ["oslo", "paris", "rome", "tokyo", "lima", "cairo", "delhi", "quito"]


def user_msg(text: str) -> list[dict[str, Any]]:
    """One user message."""
    return [{"role": "user", "content": text}]


def weather_item(user: str, i: int, units: str = "celsius") -> dict[str, Any]:
    """A weather trajectory dict (as ``record_many`` takes)."""
    city = CITIES[i % len(CITIES)]
    return {
        "user_id": user,
        "messages": user_msg(f"what is the weather in {city} now"),
        "tools": WEATHER_TOOLS,
        "chosen": {"name": "get_weather", "arguments": {"city": city.title(), "units": units}},
    }


def travel_item(user: str, i: int, mode: str = "transit") -> dict[str, Any]:
    """A directions trajectory dict."""
    a, b = CITIES[i % len(CITIES)], CITIES[(i + 3) % len(CITIES)]
    return {
        "user_id": user,
        "messages": user_msg(f"take me from {a} to {b} please"),
        "tools": TRAVEL_TOOLS,
        "chosen": {
            "name": "get_directions",
            "arguments": {"origin": a, "destination": b, "mode": mode},
        },
    }


class HashEmbedder:
    """Deterministic bag-of-words embedding: hashed word counts, L2-normalized."""

    name = "hash64"
    dim = 64

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
                out[row, h % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm > 0 else out[row]
            if norm == 0:
                out[row, 0] = 1.0
        return out


def tiny() -> LoadedModel:
    """The tiny random Llama of ``tests/tiny.py`` (3 layers, d_model 32)."""
    return tiny_lm("llama")


def make_memory(location: str | Path, prefix: str | None = None, **kwargs: Any) -> Memory:
    """A memory on the tiny model with the hash embedder."""
    store = TrajectoryStore(location, collection_prefix=prefix or new_prefix())
    kwargs.setdefault("embedder", HashEmbedder())
    return Memory(kwargs.pop("lm", None) or tiny(), store, **kwargs)


def new_prefix() -> str:
    """A unique collection prefix (tests sharing one server do not see each other)."""
    return "t" + uuid.uuid4().hex[:10]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chroma_cli() -> str | None:
    local = Path(sys.executable).with_name("chroma")
    return str(local) if local.exists() else shutil.which("chroma")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a ``chroma run`` server on a free loopback port (stopped after the test run)."""
    cli = _chroma_cli()
    if cli is None:
        pytest.skip("the chroma CLI is not installed")
    path = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = (path / "server.log").open("wb")
    proc = subprocess.Popen(
        [cli, "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma server exited: {(path / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chroma server did not answer its heartbeat within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(params=["embedded", "server"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An embedded store directory, or the URL of the test run's Chroma server."""
    if request.param == "server":
        yield request.getfixturevalue("chroma_server")
    else:
        yield str(tmp_path / "store")


@pytest.fixture(autouse=False)
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
