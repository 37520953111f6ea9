"""Speed figures, printed as JSON: decode rates with and without steering, load times.

Ratios are measured in one run, alternating the variants, because shared machines are noisy.
Run with ``fints-agent bench`` (all sections) or ``fints-agent bench --only steering``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fints_agent.decoding import decode
from fints_agent.models import LoadedModel, load_model
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "SECTIONS",
    "bench_batch",
    "bench_constrained",
    "bench_load",
    "bench_memory",
    "bench_peer",
    "bench_personalization",
    "bench_recording",
    "bench_steering",
    "bench_turns",
    "run_bench",
    "timed_rate",
]

SECTIONS = (
    "load",
    "steering",
    "peer",
    "constrained",
    "recording",
    "turns",
    "batch",
    "personalization",
    "memory",
)

BENCH_PROMPT = [
    {"role": "user", "content": "Plan a weekend trip to Oslo: list what to pack and why."}
]


def timed_rate(run: Callable[[], int]) -> float:
    """Tokens per second of one call of ``run`` (which returns the tokens it generated)."""
    start = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - start)


def _alternate(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for run in variants.values():  # warm-up
        run()
    for _ in range(repeats):
        for k, run in variants.items():
            rates[k].append(timed_rate(run))
    return {k: statistics.median(v) for k, v in rates.items()}


def _greedy(lm: LoadedModel, prompt: str, n: int, **kwargs: Any) -> Callable[[], int]:
    def run() -> int:
        steps = 0
        for _ in decode(lm, [prompt], max_new_tokens=n, stop_at_eos=False, **kwargs):
            steps += 1
        return steps

    return run


def bench_steering(lm: LoadedModel, *, tokens: int = 48, repeats: int = 5) -> dict[str, Any]:
    """Greedy decode tokens/s unsteered vs steered on all layers and both sites."""
    prompt = str(
        lm.tokenizer.apply_chat_template(BENCH_PROMPT, tokenize=False, add_generation_prompt=True)
    )
    torch.manual_seed(0)
    layers = tuple(range(lm.num_layers))
    vector = SteeringVector(
        0.01 * torch.randn(len(layers), 2, lm.d_model), layers, ("attn", "mlp"), lm.fingerprint
    )
    rates = _alternate(
        {
            "unsteered": _greedy(lm, prompt, tokens),
            "steered": _greedy(lm, prompt, tokens, vectors=vector, coefficients=1.0),
        },
        repeats,
    )
    return {
        "decode_tokens_per_s_unsteered": round(rates["unsteered"], 2),
        "decode_tokens_per_s_steered": round(rates["steered"], 2),
        "steered_over_unsteered": round(rates["steered"] / rates["unsteered"], 3),
        "steered_layers": len(layers),
        "steered_sites": ["attn", "mlp"],
        "tokens_per_run": tokens,
        "repeats": repeats,
    }


def bench_peer(lm: LoadedModel, *, tokens: int = 48, repeats: int = 5) -> dict[str, Any]:
    """Greedy decode tokens/s of this project's loop against plain ``transformers``
    ``generate()`` on the same model and prompt (what ``ChatHuggingFace`` runs)."""
    prompt = str(
        lm.tokenizer.apply_chat_template(BENCH_PROMPT, tokenize=False, add_generation_prompt=True)
    )
    ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)

    def generate() -> int:
        with torch.inference_mode():
            out = lm.model.generate(  # type: ignore[operator]
                **ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        return int(out.shape[1] - ids["input_ids"].shape[1])

    rates = _alternate({"fints": _greedy(lm, prompt, tokens), "generate": generate}, repeats)
    return {
        "decode_tokens_per_s_fints": round(rates["fints"], 2),
        "decode_tokens_per_s_transformers_generate": round(rates["generate"], 2),
        "fints_over_generate": round(rates["fints"] / rates["generate"], 3),
        "tokens_per_run": tokens,
        "repeats": repeats,
    }


_WEATHER = {
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
_RIDE = {
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


def bench_constrained(lm: LoadedModel, *, repeats: int = 5) -> dict[str, Any]:
    """Decode tokens/s of a tool call: grammar-constrained (with jump-forward) vs free."""
    from fints_agent.calls import CallGrammar, ConstrainedDecoder, get_compiler, to_tool_specs
    from fints_agent.decoding import DecodeStats, stop_token_ids
    from fints_agent.prompting import PromptRenderer

    specs = to_tool_specs([_WEATHER, _RIDE])
    renderer = PromptRenderer(lm.tokenizer)
    prompt = renderer.render_prompt(
        [{"role": "user", "content": "Weather in Oslo for the next 3 days, in celsius?"}],
        [_WEATHER, _RIDE],
    )
    compiler = get_compiler(
        lm.tokenizer, int(lm.model.config.vocab_size), stop_token_ids=sorted(stop_token_ids(lm))
    )
    grammar = CallGrammar.build(compiler, specs, "required", parallel=False)
    assert grammar is not None
    counts: dict[str, int] = {}

    def constrained(jump: bool) -> Callable[[], int]:
        def run() -> int:
            stats = DecodeStats()
            decoder = ConstrainedDecoder(grammar, 1)
            steps = decode(
                lm, [prompt], max_new_tokens=64, constraint=decoder, jump_forward=jump, stats=stats
            )
            for _ in steps:
                pass
            counts["call_tokens"] = stats.generated_tokens[0]
            return stats.generated_tokens[0]

        return run

    rates = _alternate(
        {
            "free": _greedy(lm, prompt, 40),
            "constrained": constrained(False),
            "constrained_jump": constrained(True),
        },
        repeats,
    )
    return {
        "decode_tokens_per_s_free": round(rates["free"], 2),
        "decode_tokens_per_s_constrained": round(rates["constrained"], 2),
        "decode_tokens_per_s_constrained_jump_forward": round(rates["constrained_jump"], 2),
        "constrained_over_free": round(rates["constrained"] / rates["free"], 3),
        "constrained_jump_forward_over_free": round(rates["constrained_jump"] / rates["free"], 3),
        "call_tokens": counts.get("call_tokens"),
        "repeats": repeats,
    }


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
                    "tools": [_WEATHER, _RIDE],
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
        specs = to_tool_specs([_WEATHER, _RIDE])
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


def _dataset_records(split: str, users: int) -> list[dict[str, Any]]:
    """Records of the first users of the personal web-API dataset (source checkout), else of
    a small built-in weather/ride set."""
    path = Path(__file__).resolve().parent.parent / "examples" / "data" / "personal_webapi.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = [
            {
                "user_id": f"u{i % 4}",
                "split": "history" if i < 24 else "test",
                "messages": [{"role": "user", "content": f"Weather in {c} for {d} days?"}],
                "tools": [_WEATHER, _RIDE],
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

    rows = _dataset_records("history", 12)[:trajectories]
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
    tests = _dataset_records("test", users)[:turns]
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
        memory.record_many(_dataset_records("history", users), progress=False)
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

    rows = _dataset_records("test", 64)
    firsts = list({r["user_id"]: r for r in reversed(rows)}.values())[:users]
    llm = FintsChatModel(model=lm.name, personalization="none", max_batch_size=users)
    shared = llm.bind_tools([_WEATHER, _RIDE], tool_choice="any")
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


def bench_memory() -> dict[str, Any]:
    """The memory benchmark (``tools/bench_memory.py``) when run from a source checkout."""
    script = Path(__file__).resolve().parent.parent / "tools" / "bench_memory.py"
    if not script.is_file():
        return {"skipped": "tools/bench_memory.py not found (run from a source checkout)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        subprocess.run(
            [sys.executable, str(script), "--only", "latency,ingestion", "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data: dict[str, Any] = json.loads(out.read_text())
    return data


_LOAD_SNIPPET = (
    "import time,json;t=time.perf_counter();from fints_agent.models import load_model;"
    "lm=load_model();print(json.dumps({'seconds':lm.load_seconds,'source':lm.source}))"
)


def bench_load() -> dict[str, Any]:
    """Cold (GGUF de-quantization) and cached load times, each in a fresh process."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "FINTS_AGENT_CACHE": cache, "TQDM_DISABLE": "1"}
        for label in ("cold", "cached"):
            proc = subprocess.run(
                [sys.executable, "-c", _LOAD_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            out[f"load_seconds_{label}"] = round(result["seconds"], 2)
            out[f"load_source_{label}"] = result["source"]
    return out


def run_bench(sections: list[str]) -> dict[str, Any]:
    """All requested sections, as one JSON-able dict."""
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    if "load" in sections:
        result["load"] = bench_load()
    lm = load_model()
    result["model"] = {"name": lm.name, "fingerprint": lm.fingerprint}
    if "steering" in sections:
        result["steering"] = bench_steering(lm)
    if "peer" in sections:
        result["peer"] = bench_peer(lm)
    if "constrained" in sections:
        result["constrained"] = bench_constrained(lm)
    if "recording" in sections:
        result["recording"] = bench_recording(lm)
    if "turns" in sections:
        result["turns"] = bench_turns(lm)
    if "batch" in sections:
        result["batch"] = bench_batch(lm)
    if "personalization" in sections:
        result["personalization"] = bench_personalization(lm)
    if "memory" in sections:
        result["memory"] = bench_memory()
    return result
