"""What the benchmarks run on: tools, prompts and records of the personal web-API dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["BENCH_PROMPT", "RIDE_TOOL", "WEATHER_TOOL", "dataset_records"]


BENCH_PROMPT = [
    {"role": "user", "content": "Plan a weekend trip to Oslo: list what to pack and why."}
]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "units", "days"],
        },
    },
}
RIDE_TOOL = {
    "type": "function",
    "function": {
        "name": "book_ride",
        "description": "Book a taxi ride.",
        "parameters": {
            "type": "object",
            "properties": {"pickup": {"type": "string"}, "dropoff": {"type": "string"}},
            "required": ["pickup", "dropoff"],
        },
    },
}


def dataset_records(split: str, users: int) -> list[dict[str, Any]]:
    """Records of the first users of the personal web-API dataset (source checkout), else of
    a small built-in weather/ride set."""
    path = Path(__file__).resolve().parents[2] / "examples" / "data" / "personal_webapi.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = [
            {
                "user_id": f"u{i % 4}",
                "split": "history" if i < 24 else "test",
                "messages": [{"role": "user", "content": f"Weather in {c} for {d} days?"}],
                "tools": [WEATHER_TOOL, RIDE_TOOL],
                "chosen": {
                    "name": "get_weather",
                    "arguments": {"city": c, "units": ("celsius", "fahrenheit")[i % 2], "days": d},
                },
            }
            for i, (c, d) in enumerate(
                (c, d) for d in (2, 3, 4, 5) for c in ("Oslo", "Paris", "Rome", "Lima", "Kyiv")
            )
        ]
    keep = list(dict.fromkeys(r["user_id"] for r in rows))[:users]
    return [r for r in rows if r["user_id"] in keep and r.get("split", "history") == split]
