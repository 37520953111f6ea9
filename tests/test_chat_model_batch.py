"""Batched generation: ``batch``/``abatch``, native async calls and the micro-batcher.

The chat model runs on a tiny random-weight Llama with the real SmolLM2 tokenizer; users'
histories live in a real memory, so that rows of one batch are steered by different vectors.
Random weights tokenize text a grammar forces in their own odd ways, which is what shows that a
batched row writes the tokens its turn alone writes.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from memory_fixtures import make_memory
from tiny import SHORT, bounded_tool, saved_tiny_smol

from fints_agent.batching import MicroBatcher
from fints_agent.chat_model import FintsChatModel
from fints_agent.config import RetrievalConfig, SteeringConfig
from fints_agent.engine import TurnEngine
from fints_agent.messages import UnsupportedContentError

WEATHER = bounded_tool(
    "get_weather",
    {"city": SHORT, "units": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    ["city", "units"],
)
RIDE = bounded_tool(
    "book_ride",
    {"pickup": SHORT, "dropoff": SHORT, "shared": {"type": "boolean"}},
    ["pickup", "dropoff", "shared"],
)

TURNS: list[tuple[str | None, str]] = [
    ("alice", "What's the weather in Berlin?"),
    (None, "What's the weather in Berlin?"),
    ("bob", "Get me a taxi from Rome to the station"),
    (None, "Get me a taxi from Rome to the station"),
    ("alice", "Weather in Lima?"),
    ("bob", "taxi to Lima"),
    ("carl", "weather in Oslo"),
    ("bob", "What's the weather in Rome?"),
]
"""(user, request): users with histories, a user without one and no user at all."""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from saved_tiny_smol(tmp_path_factory, "tiny-smol-batch")


@pytest.fixture(scope="module")
def memory(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Histories: alice wants fahrenheit, bob rides rather than asks for the weather."""
    lm = FintsChatModel(model=str(tiny_dir)).load()
    memory = make_memory(tmp_path_factory.mktemp("batch-memory") / "store", lm=lm)
    for city in ("Oslo", "Paris", "Rome"):
        memory.record(
            "alice",
            [{"role": "user", "content": f"What's the weather in {city}?"}],
            [WEATHER, RIDE],
            {"name": "get_weather", "arguments": {"city": city, "units": "fahrenheit"}},
            [{"name": "get_weather", "arguments": {"city": city, "units": "celsius"}}],
        )
        memory.record(
            "bob",
            [{"role": "user", "content": f"Get me a taxi from {city} to the airport"}],
            [WEATHER, RIDE],
            {
                "name": "book_ride",
                "arguments": {"pickup": city, "dropoff": "airport", "shared": True},
            },
            [{"name": "get_weather", "arguments": {"city": city, "units": "celsius"}}],
        )
    return memory


STEERING = {"all": 50.0, "choices": 20.0}
"""Gate and coefficient: ``choices`` gates each token by where it is in a call, so a row inside
a forced run must be gated as a row decoded alone is (over the run's single forward pass)."""


def _llm(tiny_dir: Path, memory: Any, gate: str = "all", **kw: Any) -> FintsChatModel:
    steering = SteeringConfig(gate=gate, coefficient=STEERING[gate])  # type: ignore[arg-type]
    kw.setdefault("max_tokens", 80)
    return FintsChatModel(
        model=str(tiny_dir),
        steering=steering,
        retrieval=RetrievalConfig(min_similarity=0.0),
        **kw,
    ).use_memory(memory)


def _config(i: int, user: str | None) -> dict[str, Any]:
    """Users alternately in ``configurable`` and in ``metadata``."""
    if user is None:
        return {}
    return {"configurable": {"user_id": user}} if i % 2 == 0 else {"metadata": {"user_id": user}}


def _view(message: Any) -> dict[str, Any]:
    """What a message says, without the ids that differ between any two runs."""
    assert isinstance(message, AIMessage), message
    return {
        "content": message.content,
        "tool_calls": [(c["name"], c["args"]) for c in message.tool_calls],
        "invalid": [(c["name"], c["args"], c["error"]) for c in message.invalid_tool_calls],
        "usage": message.usage_metadata,
        "metadata": message.response_metadata,
    }


class _BatchSpy:
    """Records the size of every ``TurnEngine.complete_batch`` call (and runs it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        original = TurnEngine.complete_batch

        def spy(engine: TurnEngine, requests: Any) -> Any:
            self.sizes.append(len(requests))
            return original(engine, requests)

        monkeypatch.setattr(TurnEngine, "complete_batch", spy)


@pytest.mark.parametrize("gate", list(STEERING))
def test_batch_gives_each_input_its_invoke_message(
    tiny_dir: Path, memory: Any, gate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight turns of four users (and of nobody), steered by different vectors, decoded in one
    batch: each input gets the message ``invoke`` gives it, user ids from its own config."""
    bound = _llm(tiny_dir, memory, gate).bind_tools([WEATHER, RIDE], tool_choice="any")
    inputs = [request for _, request in TURNS]
    configs = [_config(i, user) for i, (user, _) in enumerate(TURNS)]
    alone = [_view(bound.invoke(x, c)) for x, c in zip(inputs, configs, strict=True)]
    spy = _BatchSpy(monkeypatch)
    together = [_view(m) for m in bound.batch(inputs, configs)]  # type: ignore[arg-type]
    assert spy.sizes == [len(inputs)]
    assert together == alone
    users = [v["metadata"]["fints"]["user_id"] for v in together]
    assert users == [user for user, _ in TURNS]
    steered = [v["metadata"]["fints"]["steered"] for v in together]
    assert steered == [user in ("alice", "bob") for user, _ in TURNS]
    assert all(v["tool_calls"] and not v["invalid"] for v in together), together
    if gate == "all":  # the steering shows: alice's and nobody's Berlin calls differ
        assert together[0]["tool_calls"] != together[1]["tool_calls"]


def test_abatch_and_max_batch_size(
    tiny_dir: Path, memory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``abatch`` gives ``batch``'s messages; inputs are decoded ``max_batch_size`` at a time,
    fewer with ``max_concurrency``."""
    llm = _llm(tiny_dir, memory, max_batch_size=3)
    bound = llm.bind_tools([WEATHER, RIDE], tool_choice="any")
    inputs = [request for _, request in TURNS[:5]]
    configs = [_config(i, user) for i, (user, _) in enumerate(TURNS[:5])]
    spy = _BatchSpy(monkeypatch)
    sync = [_view(m) for m in bound.batch(inputs, configs)]  # type: ignore[arg-type]
    assert sorted(spy.sizes) == [2, 3]
    spy.sizes.clear()
    concurrent = asyncio.run(bound.abatch(inputs, configs))  # type: ignore[arg-type]
    assert [_view(m) for m in concurrent] == sync
    assert sorted(spy.sizes) == [2, 3]
    spy.sizes.clear()
    limited = [{**c, "max_concurrency": 2} for c in configs]
    assert [_view(m) for m in bound.batch(inputs, limited)] == sync  # type: ignore[arg-type]
    assert sorted(spy.sizes) == [1, 2, 2]


def test_bad_inputs_fail_alone(tiny_dir: Path, memory: Any) -> None:
    """An input refused while its request is built (an image) and one refused while its batch
    is prepared (longer than the context window) each get their own error; the others their
    messages."""
    bound = _llm(tiny_dir, memory, max_tokens=40).bind_tools([WEATHER, RIDE], tool_choice="any")
    image = [HumanMessage([{"type": "image", "base64": "AAAA", "mime_type": "image/png"}])]
    too_long = "weather " * 1100
    good = ["weather in Oslo", "taxi to Lima"]
    inputs: list[Any] = [good[0], image, too_long, good[1]]
    out = bound.batch(inputs, return_exceptions=True)
    assert isinstance(out[1], UnsupportedContentError) and "image" in str(out[1])
    assert isinstance(out[2], ValueError) and "context window" in str(out[2])
    assert [_view(out[0]), _view(out[3])] == [_view(bound.invoke(x)) for x in good]
    with pytest.raises(ValueError, match="context window"):
        bound.batch([good[0], too_long])
    out = asyncio.run(bound.abatch(inputs, return_exceptions=True))
    assert isinstance(out[1], UnsupportedContentError) and isinstance(out[2], ValueError)
    assert [_view(out[0]), _view(out[3])] == [_view(bound.invoke(x)) for x in good]


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.started: dict[Any, str] = {}
        self.ended: dict[Any, str] = {}
        self.lock = threading.Lock()

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: Any, **kw: Any
    ) -> None:
        with self.lock:
            self.started[run_id] = messages[0][-1].content

    def on_llm_end(self, response: Any, *, run_id: Any, **kw: Any) -> None:
        with self.lock:
            self.ended[run_id] = response.generations[0][0].message.tool_calls[0]["name"]


def test_callbacks_fire_per_input(tiny_dir: Path, memory: Any) -> None:
    bound = _llm(tiny_dir, memory).bind_tools([WEATHER, RIDE], tool_choice="any")
    inputs = ["weather in Oslo", "taxi to Lima", "weather in Rome"]
    recorder = _Recorder()
    out = bound.batch(inputs, {"callbacks": [recorder]})
    assert sorted(recorder.started.values()) == sorted(inputs)
    assert recorder.ended.keys() == recorder.started.keys()
    by_request = {recorder.started[r]: name for r, name in recorder.ended.items()}
    assert [by_request[x] for x in inputs] == [m.tool_calls[0]["name"] for m in out]


def test_streamed_and_sampled_turns_in_a_batch(tiny_dir: Path, memory: Any) -> None:
    """``stream=True`` turns stream alone; seeded sampled turns are decoded alone (their seed
    reproduces them); both still give ``invoke``'s messages."""
    bound = _llm(tiny_dir, memory, temperature=1.0).bind_tools([WEATHER, RIDE], tool_choice="any")
    inputs = ["weather in Oslo", "taxi to Lima", "weather in Rome"]
    assert [_view(m) for m in bound.batch(inputs, seed=3)] == [
        _view(bound.invoke(x, seed=3)) for x in inputs
    ]
    streamed = bound.batch(inputs, seed=3, stream=True)
    assert [m.tool_calls[0]["args"] for m in streamed] == [  # type: ignore[attr-defined]
        bound.invoke(x, seed=3).tool_calls[0]["args"] for x in inputs
    ]


def test_concurrent_ainvokes_share_one_batch(
    tiny_dir: Path, memory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight users' concurrent ``ainvoke`` calls, each with its own tools, are decoded in
    shared batches and give what eight ``invoke`` calls give."""
    llm = _llm(tiny_dir, memory, gate="choices", batch_wait_ms=200.0)
    tools = [[WEATHER, RIDE], [WEATHER], [RIDE, WEATHER], [RIDE]]
    calls = [
        (llm.bind_tools(tools[i % 4], tool_choice="any"), request, _config(i, user))
        for i, (user, request) in enumerate(TURNS)
    ]
    sequential = [_view(bound.invoke(request, config)) for bound, request, config in calls]
    spy = _BatchSpy(monkeypatch)

    async def run() -> list[Any]:
        return await asyncio.gather(*(bound.ainvoke(x, c) for bound, x, c in calls))

    assert [_view(m) for m in asyncio.run(run())] == sequential
    assert sum(spy.sizes) == len(calls) and max(spy.sizes) > 1, spy.sizes


def test_async_calls_leave_the_event_loop_free(tiny_dir: Path, memory: Any) -> None:
    """While a turn decodes (``ainvoke``, ``astream``) the event loop keeps running: a task
    ticking every millisecond is never held up for long. Streamed chunks are those of the sync
    API."""
    llm = _llm(tiny_dir, memory, max_tokens=120)
    bound = llm.bind_tools([WEATHER, RIDE], tool_choice="none")  # text to the end of the budget

    async def longest_stall(work: Any) -> tuple[Any, float, float]:
        """The work's result, its duration and the longest time the loop did not tick."""
        ticks = [time.monotonic()]
        done = asyncio.Event()

        async def tick() -> None:
            while not done.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        try:
            result = await work
        finally:
            done.set()
            await ticker
        ticks.append(time.monotonic())
        return result, ticks[-1] - ticks[0], max(b - a for a, b in itertools.pairwise(ticks))

    async def collect() -> list[Any]:
        return [c async for c in bound.astream("weather in Oslo")]

    message, took, stall = asyncio.run(longest_stall(bound.ainvoke("weather in Oslo")))
    assert stall < took / 3, (stall, took)  # blocked, the loop would stall for the decode
    assert _view(message) == _view(bound.invoke("weather in Oslo"))
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == 120
    chunks, took, stall = asyncio.run(longest_stall(collect()))
    assert stall < took / 3, (stall, took)
    streamed = list(bound.stream("weather in Oslo"))
    assert len(chunks) > 2 and [c.content for c in chunks] == [c.content for c in streamed]
    assert chunks[-1].response_metadata["fints"] == streamed[-1].response_metadata["fints"]


def test_stream_reads_the_user_from_the_config(tiny_dir: Path, memory: Any) -> None:
    llm = _llm(tiny_dir, memory, max_tokens=8)
    for config in ({"configurable": {"user_id": "alice"}}, {"metadata": {"user_id": "alice"}}):
        last = list(llm.stream("weather in Oslo", config))[-1]  # type: ignore[arg-type]
        assert last.response_metadata["fints"]["user_id"] == "alice"
        assert llm.invoke("weather", config).response_metadata["fints"]["user_id"] == "alice"  # type: ignore[arg-type]


# -- the micro-batcher alone ---------------------------------------------------------------------


class _Doubler:
    """A batch function that records its groups; odd items fail (their own error)."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.groups.append(list(items))
        return [ValueError(f"odd {x}") if x % 2 else 2 * x for x in items]


def test_batcher_groups_a_window_and_keeps_errors_apart() -> None:
    run = _Doubler()
    batcher = MicroBatcher(run, max_size=3, wait_s=0.2)

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(batcher.asubmit("k", x) for x in [0, 1, 2, 4, 6]), return_exceptions=True
        )

    out = asyncio.run(main())
    assert out[0] == 0 and out[2:] == [4, 8, 12]
    assert isinstance(out[1], ValueError) and str(out[1]) == "odd 1"
    assert run.groups == [[0, 1, 2], [4, 6]]  # full at three; the rest after the window
    with pytest.raises(ValueError):
        MicroBatcher(run, max_size=0)


def test_batcher_keys_threads_and_event_loops() -> None:
    """Submissions from several threads, each with its own event loop, share groups by key."""
    run = _Doubler()
    batcher = MicroBatcher(run, max_size=8, wait_s=0.3)
    results: dict[int, Any] = {}
    barrier = threading.Barrier(4)

    def worker(x: int) -> None:
        barrier.wait()
        results[x] = asyncio.run(batcher.asubmit(x % 2 == 0, 2 * x))

    threads = [threading.Thread(target=worker, args=(x,)) for x in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {x: 4 * x for x in range(4)}
    assert sorted(sorted(g) for g in run.groups) == [[0, 4], [2, 6]]


def test_batcher_cohort_does_not_wait_for_the_window() -> None:
    """A cohort's group runs once every member has submitted or left, not after the window;
    a cancelled submission is skipped."""
    run = _Doubler()
    batcher = MicroBatcher(run, max_size=8, wait_s=30.0)
    cohort = batcher.cohort(3)

    async def member(x: int | None) -> Any:
        with cohort.member():
            assert batcher.joined()
            if x is None:
                return None  # leaves without submitting
            return await batcher.asubmit("k", x)

    async def main() -> list[Any]:
        return await asyncio.gather(member(2), member(None), member(4))

    start = time.monotonic()
    assert asyncio.run(main()) == [4, None, 8]
    assert time.monotonic() - start < 10 and run.groups == [[2, 4]]
    assert not batcher.joined()

    quick = MicroBatcher(run, max_size=8, wait_s=0.3)

    async def cancelled() -> None:
        task = asyncio.ensure_future(quick.asubmit("c", 8))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run.groups.clear()
    asyncio.run(cancelled())
    assert quick.submit("c", 10).result(timeout=10) == 20  # joins the cancelled one's group
    assert run.groups == [[10]]
