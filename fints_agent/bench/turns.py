"""Turn and recording speed: personalization overhead, recording with and without prefix
sharing, turn latency with and without the prefix cache, batched turns."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from fints_agent.bench.data import RIDE_TOOL, WEATHER_TOOL, dataset_records
from fints_agent.models import LoadedModel

__all__ = ["bench_batch", "bench_personalization", "bench_recording", "bench_turns"]


def bench_personalization(lm: LoadedModel, *, turns: int = 6) -> dict[str, Any]:
    """Per-turn overhead of personalization (retrieve + aggregate + hooks) in a whole turn, on
    the model's configuration (all layers of the memory steered)."""
    from fints_agent.calls import to_tool_specs
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine
    from fints_agent.memory import Memory, TrajectoryStore
    from fints_agent.turn import TurnRequest

    with tempfile.TemporaryDirectory() as store:
        memory = Memory(lm, TrajectoryStore(store))
        cities = ["Oslo", "Paris", "Rome", "Berlin", "Madrid", "Lisbon"]
        memory.record_many(
            [
                {
                    "user_id": "u",
                    "messages": [{"role": "user", "content": f"Weather in {c} for 2 days?"}],
                    "tools": [WEATHER_TOOL, RIDE_TOOL],
                    "chosen": {
                        "name": "get_weather",
                        "arguments": {"city": c, "units": "fahrenheit", "days": 2},
                    },
                }
                for c in cities
            ],
            progress=False,
        )
        # The model's configuration, every turn steered; with a configuration that steers the
        # prompt (``steer_prompt``), a steered turn also loses the prefix cache.
        preset = Preset.for_model(lm.fingerprint).replace(min_similarity=0.0, layers=None)
        engine = TurnEngine(lm, memory, preset)
        specs = to_tool_specs([WEATHER_TOOL, RIDE_TOOL])
        steered: list[tuple[float, int]] = []
        plain: list[tuple[float, int]] = []
        retrieval: list[float] = []
        for i in range(turns):  # alternate the variants, so load changes hit both alike
            text = f"Weather in {cities[i % 6]}ville for 3 days?"
            for mode, out in (("steer", steered), ("none", plain)):
                req = TurnRequest(
                    [{"role": "user", "content": text}],
                    specs,
                    tool_choice="any",
                    user_id="u",
                    personalization=mode,  # type: ignore[arg-type]
                )
                t0 = time.perf_counter()
                if mode == "steer":
                    engine.retrieve(req)
                    retrieval.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                result = engine.complete(req)  # retrieves again, as a real turn does
                out.append((time.perf_counter() - t0, result.completion_tokens))
    turn = statistics.median(t for t, _ in steered)
    base = statistics.median(t for t, _ in plain)
    per_token = statistics.median(t / max(1, n) for t, n in steered)
    per_token_base = statistics.median(t / max(1, n) for t, n in plain)
    return {
        "turn_seconds_personalized_p50": round(turn, 3),
        "turn_seconds_unpersonalized_p50": round(base, 3),
        "tokens_personalized_p50": statistics.median(n for _, n in steered),
        "tokens_unpersonalized_p50": statistics.median(n for _, n in plain),
        "retrieve_aggregate_ms_p50": round(1000 * statistics.median(retrieval), 1),
        "retrieve_aggregate_share_of_turn": round(statistics.median(retrieval) / turn, 3),
        # Per generated token, so that calls of different lengths compare fairly.
        "personalization_share_of_turn": round(max(0.0, per_token - per_token_base) / per_token, 3),
        "turns": turns,
    }


@contextmanager
def _recording_as_before(lm: LoadedModel) -> Iterator[None]:
    """Recording as it ran before prefix sharing, the baseline of :func:`bench_recording`:
    no prefix cache, and pairs grouped only by identical prompt (each prompt encoded whole
    once, its answers fed from its cache), not by what a trajectory's sequences share."""
    from fints_agent.prefix_cache import PrefixCache
    from fints_agent.steering.capture import CapturePlan, capture_answer_means

    def by_prompt(plan: CapturePlan) -> torch.Tensor:
        return capture_answer_means(
            plan.lm,
            plan.prompts,
            plan.answers,
            plan.layers,
            plan.sites,
            batch_size=plan.batch_size,
            answer_offsets=plan.offsets,
            answer_tails=plan.tails,
        )

    saved = lm.prefix_cache, CapturePlan.run
    lm.prefix_cache = PrefixCache(max_bytes=0)
    CapturePlan.run = by_prompt  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        lm.prefix_cache, CapturePlan.run = saved  # type: ignore[method-assign]


def bench_recording(lm: LoadedModel, *, trajectories: int = 8) -> dict[str, Any]:
    """Seconds to record one trajectory (``Memory.record``: vectors, embedding, write), per
    vector kind, against recording as before prefix sharing, alternated in one run; the
    vectors of both paths are compared.

    The first recording of a set of tools also encodes their prefix (``..._first_of_tools``);
    later ones, what a user's feedback costs in a running agent, take it from the cache.
    """
    from fints_agent.config import VectorKind
    from fints_agent.memory import Memory, TrajectoryStore
    from fints_agent.prefix_cache import PrefixCache

    rows = dataset_records("history", 12)[:trajectories]
    out: dict[str, Any] = {"trajectories": len(rows)}
    saved = lm.prefix_cache
    kinds: tuple[VectorKind, ...] = ("split", "contrast")
    try:
        for kind in kinds:
            lm.prefix_cache = PrefixCache()
            with tempfile.TemporaryDirectory() as store:
                memory = Memory(lm, TrajectoryStore(store), vectors=kind)
                first: list[float] = []
                tools: set[str] = set()
                for row in rows:  # each row once, with the cache as a new deployment has it
                    key = json.dumps(row["tools"], sort_keys=True)
                    t0 = time.perf_counter()
                    memory.record_many([row], progress=False)
                    if key not in tools:
                        first.append(time.perf_counter() - t0)
                    tools.add(key)
                fast: list[float] = []
                before: list[float] = []
                worst = 0.0
                for row in rows:
                    t0 = time.perf_counter()
                    [new] = memory.record_many([row], progress=False)
                    fast.append(time.perf_counter() - t0)
                    with _recording_as_before(lm):
                        t0 = time.perf_counter()
                        [old] = memory.record_many([row], progress=False)
                        before.append(time.perf_counter() - t0)
                    got = memory.store.get_vectors(row["user_id"], [new, old])
                    scale = float(abs(got[old]).max())
                    worst = max(worst, float(abs(got[new] - got[old]).max()) / scale)
                t0 = time.perf_counter()
                memory.record_many(rows, progress=False)
                batched = (time.perf_counter() - t0) / len(rows)
            p50, p50_before = statistics.median(fast), statistics.median(before)
            out[kind] = {
                "seconds_per_trajectory_p50": round(p50, 3),
                "seconds_per_trajectory_before_p50": round(p50_before, 3),
                "speedup": round(p50_before / p50, 2),
                "seconds_per_trajectory_first_of_tools_p50": round(statistics.median(first), 3),
                "seconds_per_trajectory_record_many": round(batched, 3),
                "vectors_max_relative_difference": float(f"{worst:.2e}"),
            }
    finally:
        lm.prefix_cache = saved
    return out


def bench_turns(
    lm: LoadedModel, *, turns: int = 12, users: int = 6, preset: Any = None
) -> dict[str, Any]:
    """Turn latency (steer, batch 1, the model's preset unless ``preset`` is given)
    with the prefix cache and without it, alternated on the same test turns; the calls of
    both are compared. A configuration that steers the prompt (``steer_prompt``) encodes
    steered turns' prompts whole."""
    from fints_agent.calls import to_tool_specs
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine
    from fints_agent.memory import Memory, TrajectoryStore
    from fints_agent.prefix_cache import PrefixCache
    from fints_agent.turn import TurnRequest

    preset = preset or Preset.for_model(lm.fingerprint)
    tests = dataset_records("test", users)[:turns]
    saved = lm.prefix_cache
    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    tokens: dict[str, list[int]] = {"cached": [], "uncached": []}
    same = 0
    with tempfile.TemporaryDirectory() as store:
        memory = Memory(
            lm,
            TrajectoryStore(store),
            layers=preset.steering.layers,
            vectors=preset.vector_kind,
        )
        memory.record_many(dataset_records("history", users), progress=False)
        engine = TurnEngine(lm, memory, preset)
        caches = {"cached": saved, "uncached": PrefixCache(max_bytes=0)}
        try:
            for row in tests:
                req = TurnRequest(
                    row["messages"],
                    to_tool_specs(row["tools"]),
                    tool_choice="any",
                    user_id=row["user_id"],
                    personalization="steer",
                )
                calls = []
                for mode, cache in caches.items():
                    lm.prefix_cache = cache
                    t0 = time.perf_counter()
                    result = engine.complete(req)
                    times[mode].append(time.perf_counter() - t0)
                    tokens[mode].append(result.prompt_tokens)
                    calls.append([(c.name, c.arguments) for c in result.calls])
                same += calls[0] == calls[1]
        finally:
            lm.prefix_cache = saved
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {
        "turn_seconds_p50_prefix_cache": round(p50["cached"], 3),
        "turn_seconds_p50_no_prefix_cache": round(p50["uncached"], 3),
        "speedup": round(p50["uncached"] / p50["cached"], 3),
        "prompt_tokens_p50": statistics.median(tokens["cached"]),
        "prefix_cache": saved.stats(),
        "identical_calls": f"{same}/{len(tests)}",
        "turns": len(tests),
    }


def bench_batch(lm: LoadedModel, *, users: int = 8, repeats: int = 3) -> dict[str, Any]:
    """Throughput of several users' turns through the chat model: ``batch`` against a loop of
    ``invoke`` (one set of tools), and gathered ``ainvoke`` calls (each user's own tools,
    grouped by the micro-batcher) against a loop of ``invoke``; alternated, calls compared."""
    import asyncio

    from fints_agent.chat_model import FintsChatModel

    rows = dataset_records("test", 64)
    firsts = list({r["user_id"]: r for r in reversed(rows)}.values())[:users]
    llm = FintsChatModel(model=lm.name, personalization="none", max_batch_size=users)
    shared = llm.bind_tools([WEATHER_TOOL, RIDE_TOOL], tool_choice="any")
    requests = [r["messages"][-1]["content"] for r in firsts]
    configs: list[Any] = [{"configurable": {"user_id": r["user_id"]}} for r in firsts]
    own = [llm.bind_tools(r["tools"], tool_choice="any") for r in firsts]

    def calls(messages: Sequence[Any]) -> list[Any]:
        return [[(c["name"], c["args"]) for c in m.tool_calls] for m in messages]

    async def gathered() -> list[Any]:
        return list(
            await asyncio.gather(
                *(m.ainvoke(x, c) for m, x, c in zip(own, requests, configs, strict=True))
            )
        )

    runs: dict[str, Callable[[], list[Any]]] = {
        "invoke_loop": lambda: [
            shared.invoke(x, c) for x, c in zip(requests, configs, strict=True)
        ],
        "batch": lambda: shared.batch(requests, configs),
        "invoke_loop_own_tools": lambda: [
            m.invoke(x, c) for m, x, c in zip(own, requests, configs, strict=True)
        ],
        "ainvoke_gathered_own_tools": lambda: asyncio.run(gathered()),
    }
    out = {k: calls(run()) for k, run in runs.items()}  # warm-up, and the calls compared
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {
        "users": len(requests),
        "seconds_invoke_loop": round(p50["invoke_loop"], 3),
        "seconds_batch": round(p50["batch"], 3),
        "batch_over_invoke_throughput": round(p50["invoke_loop"] / p50["batch"], 2),
        "seconds_invoke_loop_own_tools": round(p50["invoke_loop_own_tools"], 3),
        "seconds_ainvoke_gathered_own_tools": round(p50["ainvoke_gathered_own_tools"], 3),
        "ainvoke_over_invoke_throughput": round(
            p50["invoke_loop_own_tools"] / p50["ainvoke_gathered_own_tools"], 2
        ),
        "identical_calls_batch": out["batch"] == out["invoke_loop"],
        "identical_calls_ainvoke": out["ainvoke_gathered_own_tools"]
        == out["invoke_loop_own_tools"],
        "repeats": repeats,
    }
