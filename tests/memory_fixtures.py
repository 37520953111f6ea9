"""Plain helpers of the memory tests: tools, trajectories and memories on the tiny model.

- ``HashEmbedder``: a deterministic bag-of-words embedder (no model), for tests where the
  embedder is not what is tested.
- ``make_memory``: a memory on the tiny model with that embedder.

The fixtures these tests use (``chroma_server``, ``store_location``, ``one_thread``) live in
``conftest.py``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
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

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 8},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "units"],
        },
    },
}
"""One weather tool whose city is short (calls stay within small token budgets)."""

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
