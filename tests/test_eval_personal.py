"""Tests of the personalized benchmark protocol, the knn baseline, tuning, BFCL driving and plots.

The language model is not what these tests check: turns are answered by a stand-in engine
(LM-free) on a memory built with the tiny random model and a bag-of-words embedder. Tests
marked ``model`` run the real embedded model end to end on a few turns.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from tiny import tiny_lm

from fints_agent.calls import ToolCall as EngineCall
from fints_agent.config import Preset
from fints_agent.eval.dataset import (
    PersonalRecord,
    ToolSpec,
    group_by_user,
    load_records,
    parse_record,
)
from fints_agent.eval.dev_split import pick_users, tuning_split
from fints_agent.eval.personal import (
    METHODS,
    decided_by,
    follow_label,
    knn_call,
    old_preference_call,
    run_personal,
    select_test_records,
    temporary_memory,
)
from fints_agent.eval.plots import (
    accuracy_by_history,
    changed_preference_rates,
    plot_accuracy_by_history,
    plot_changed_preference,
)
from fints_agent.eval.tune import layer_bands, tune
from fints_agent.turn import TurnRequest, TurnResult

DATA = Path(__file__).resolve().parent / "data" / "personal_small.jsonl"


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class HashEmbedder:
    """Deterministic bag-of-words embedding (hashed word counts, unit length)."""

    name = "hash64-eval"
    dim = 64

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
                out[row, h % self.dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out


class FakeEngine:
    """An LM-free engine: answers with the call of the user's best retrieved trajectory.

    It records every request and, per request, how many trajectories the user had in memory
    when it was answered.
    """

    instances: ClassVar[list[FakeEngine]] = []

    def __init__(self, lm: Any, memory: Any, preset: Preset) -> None:
        self.lm = lm
        self.memory = memory
        self.preset = preset
        self.requests: list[TurnRequest] = []
        self.memory_sizes: list[int] = []
        self.batches: list[int] = []
        FakeEngine.instances.append(self)

    def complete_batch(self, requests: Sequence[TurnRequest]) -> list[TurnResult]:
        self.batches.append(len(requests))
        results = []
        for req in requests:
            self.requests.append(req)
            call = None
            if self.memory is not None and req.user_id is not None:
                self.memory_sizes.append(self.memory.store.count(req.user_id))
            if req.personalization != "none" and self.memory is not None:
                retrieval = self.memory.retrieve(
                    req.user_id, req.messages, [_tool(s) for s in req.tools], k=1
                )
                if retrieval.calls:
                    call = retrieval.calls[0]
            if call is None:
                call = {"name": req.tools[0].name, "arguments": {}}
            results.append(
                TurnResult(
                    text="",
                    content="",
                    calls=[EngineCall(call["name"], dict(call.get("arguments", {})))],
                    invalid_calls=[],
                    prompt_tokens=100 if "rag" not in req.personalization else 150,
                    completion_tokens=10,
                    finish_reason="stop",
                    steering={"steered": "steer" in req.personalization, "trajectories": []},
                )
            )
        return results


def _tool(spec: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


@pytest.fixture(scope="module")
def records() -> list[PersonalRecord]:
    return load_records(DATA)


def _run(records: list[PersonalRecord], method: str, **kwargs: Any) -> Any:
    FakeEngine.instances.clear()
    kwargs.setdefault("embedder", HashEmbedder())
    return run_personal(
        tiny_lm("llama"),
        records,
        method,
        engine_factory=FakeEngine,
        progress=False,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# Test-turn selection
# --------------------------------------------------------------------------------------------


def test_select_spreads_over_users_and_keeps_turn_order(records: list[PersonalRecord]) -> None:
    grouped = group_by_user(records)
    picked = select_test_records(grouped, 5)
    assert {u: [r.turn for r in v] for u, v in picked.items()} == {
        "u01": [grouped["u01"].test[0].turn, grouped["u01"].test[1].turn],
        "u02": [grouped["u02"].test[0].turn, grouped["u02"].test[1].turn],
        "u03": [grouped["u03"].test[0].turn],
    }
    assert select_test_records(grouped, 5) == picked
    everything = select_test_records(grouped)
    assert sum(len(v) for v in everything.values()) == sum(len(g.test) for g in grouped.values())
    assert select_test_records(grouped, 0) == {}
    with pytest.raises(ValueError, match="limit"):
        select_test_records(grouped, -1)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zero-shot", "rag", "steer", "rag+steer"])
def test_protocol_lm_methods(records: list[PersonalRecord], method: str) -> None:
    run = _run(records, method, batch_size=3)
    tests = [r for r in records if r.split == "test"]
    s = run.summary
    assert s["method"] == method and s["n"] == len(tests) == 8
    for key in ("function_acc", "arg_acc", "call_acc", "valid_rate", "mean_prompt_tokens"):
        assert s[key] is not None
    assert s["p50_latency_ms"] is not None and s["p95_latency_ms"] >= s["p50_latency_ms"]
    assert "batch wall time" in s["latency_basis"]
    assert s["fingerprint"] == tiny_lm("llama").fingerprint and s["machine"]["cpu_count"]
    deciders = {k: v["n"] for k, v in s["by_decider"].items()}
    assert deciders == dict(Counter(decided_by(r) for r in tests)) and sum(deciders.values()) == 8
    (engine,) = FakeEngine.instances
    expected = {"zero-shot": "none", "rag": "rag", "steer": "steer", "rag+steer": "rag+steer"}
    assert {r.personalization for r in engine.requests} == {expected[method]}
    assert all(r.tool_choice == "any" for r in engine.requests)
    assert max(engine.batches) <= 3 and sum(engine.batches) == len(tests)
    # Every test turn answered once, by its own user, with its own tools.
    seen = sorted((r.user_id, r.messages[-1]["content"]) for r in engine.requests)
    assert seen == sorted((r.user_id, r.request) for r in tests)
    if method != "zero-shot":
        history = {u: len(g.history) for u, g in group_by_user(records).items()}
        by_user = [r.user_id for r in engine.requests]
        # Offline: the memory holds exactly the user's history while answering.
        assert engine.memory_sizes == [history[u] for u in by_user]
    rows = run.rows()
    assert len(rows) == len(tests)
    for row in rows:
        assert {"user_kind", "domain", "n_history_domain", "phase", "call", "latency_s"} <= set(row)
    u02 = [r for r in rows if r["user_id"] == "u02"]
    assert all(r["n_history_domain"] >= 10 and r["user_kind"] == "dense" for r in u02)


def test_decided_by_preference_or_request(records: list[PersonalRecord]) -> None:
    kinds = {decided_by(r) for r in records}
    assert kinds == {"preference", "request"}  # the fixture has both kinds
    record = next(r for r in records if decided_by(r) == "preference")
    other = next(c for c in record.rejected if c.name != record.chosen.name)
    assert other.name in {t["function"]["name"] for t in record.openai_tools()}
    same_tool = record.model_copy(
        update={"rejected": [c for c in record.rejected if c.name == record.chosen.name]}
    )
    assert decided_by(same_tool) == "request"


def test_protocol_online_records_feedback_after_each_turn(records: list[PersonalRecord]) -> None:
    run = _run(records, "rag", online=True, batch_size=8)
    (engine,) = FakeEngine.instances
    grouped = group_by_user(records)
    answered: dict[str, int] = {}
    for req, size in zip(engine.requests, engine.memory_sizes, strict=True):
        user = req.user_id
        assert user is not None
        # History plus the gold calls of the user's earlier test turns, nothing more.
        assert size == len(grouped[user].history) + answered.get(user, 0)
        answered[user] = answered.get(user, 0) + 1
    # Turn by turn: a batch never holds two turns of one user.
    start = 0
    for size in engine.batches:
        users = [r.user_id for r in engine.requests[start : start + size]]
        assert len(users) == len(set(users))
        start += size
    assert run.summary["online"] is True and run.summary["n"] == 8


def test_protocol_limit_and_output_file(records: list[PersonalRecord], tmp_path: Path) -> None:
    run = _run(records, "steer", limit=4)
    out = tmp_path / "rows.jsonl"
    run.write_rows(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 == run.summary["n"]
    assert {r["user_id"] for r in rows} == {"u01", "u02", "u03"}
    (engine,) = FakeEngine.instances
    # Only the answered users' history is ingested (users are isolated).
    assert engine.memory.store.count() == sum(
        len(g.history) for u, g in group_by_user(records).items() if u in {"u01", "u02", "u03"}
    )


def test_protocol_rejects_bad_input(records: list[PersonalRecord]) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        _run(records, "magic")
    with pytest.raises(ValueError, match="batch size"):
        _run(records, "rag", batch_size=0)
    with pytest.raises(ValueError, match="no test records"):
        _run([r for r in records if r.split == "history"], "rag")
    with pytest.raises(ValueError, match="online"):
        _run(records, "zero-shot", online=True)
    assert METHODS == ("zero-shot", "rag", "steer", "rag+steer", "knn")


# --------------------------------------------------------------------------------------------
# knn baseline
# --------------------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather.",
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
}
MUSIC = {
    "type": "function",
    "function": {
        "name": "play_music",
        "description": "Play music.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "service": {"type": "string", "enum": ["spotify", "youtube"]},
            },
            "required": ["query", "service"],
            "additionalProperties": False,
        },
    },
}


def _record(
    user: str, turn: int, split: str, text: str, chosen: dict[str, Any], graded: list[str]
) -> PersonalRecord:
    other = dict(chosen["arguments"])
    key = "units" if "units" in other else "service"
    other[key] = {"celsius": "fahrenheit", "fahrenheit": "celsius"}.get(
        other[key], "youtube" if other[key] == "spotify" else "spotify"
    )
    return parse_record(
        {
            "user_id": user,
            "turn": turn,
            "split": split,
            "messages": [{"role": "user", "content": text}],
            "tools": [WEATHER if key == "units" else MUSIC],
            "chosen": chosen,
            "rejected": [{"name": chosen["name"], "arguments": other}],
            "graded_args": graded,
            "meta": {"domain": "weather" if key == "units" else "music", "user_kind": "sparse"},
        }
    )


def _weather(city: str, units: str) -> dict[str, Any]:
    return {"name": "get_weather", "arguments": {"city": city, "units": units}}


def _music(query: str, service: str) -> dict[str, Any]:
    return {"name": "play_music", "arguments": {"query": query, "service": service}}


def test_knn_copies_the_most_similar_past_call_of_the_same_user() -> None:
    weather, music = "what is the weather in", "play some jazz music for me"
    data = [
        _record("ann", 0, "history", f"{weather} oslo today", _weather("Oslo", "fahrenheit"), []),
        _record("ann", 1, "history", music, _music("jazz", "youtube"), ["service"]),
        _record("bob", 0, "history", f"{weather} paris today", _weather("Paris", "celsius"), []),
        _record(
            "ann", 2, "test", f"{weather} paris today", _weather("Paris", "fahrenheit"), ["city"]
        ),
        _record("ann", 3, "test", "play some rock music", _music("rock", "youtube"), ["service"]),
        _record("bob", 1, "test", music, _music("jazz", "spotify"), ["service"]),
    ]
    with temporary_memory(tiny_lm("llama"), embedder=HashEmbedder()) as memory:
        from fints_agent.eval.personal import ingest_history

        assert ingest_history(memory, data, progress=False) == 3
        call, tid = knn_call(memory, data[3])
        # Ann's Oslo call, copied exactly (not Bob's Paris call, though Bob's is more similar).
        assert call == _weather("Oslo", "fahrenheit") and tid
        assert knn_call(memory, data[4])[0] == _music("jazz", "youtube")
        # Bob has no music history: no past call of his uses an offered tool.
        assert knn_call(memory, data[5]) == (None, None)
        run = run_personal(None, data, "knn", memory=memory, progress=False)
    s = run.summary
    assert s["n"] == 3 and s["mean_prompt_tokens"] is None and s["batch_size"] == 1
    by_turn = {(o.record.user_id, o.record.turn): o for o in run.outcomes}
    assert by_turn[("ann", 2)].score.function and not by_turn[("ann", 2)].score.args
    assert by_turn[("ann", 3)].score.call
    assert by_turn[("bob", 1)].call is None and not by_turn[("bob", 1)].score.valid
    assert s["function_acc"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["call_acc"] == pytest.approx(1 / 3, abs=1e-4)


# --------------------------------------------------------------------------------------------
# Changed preferences
# --------------------------------------------------------------------------------------------


def test_old_preference_call_and_follow_label(records: list[PersonalRecord]) -> None:
    grouped = group_by_user(records)
    user = grouped["u03"]
    old = next(r.meta["preference"] for r in user.history if r.meta["phase"] == "old")
    labelled = 0
    for record in user.test:
        old_call = old_preference_call(record, old)
        if old_call is None:
            continue
        labelled += 1
        chosen = record.chosen.as_dict()
        assert old_call == record.rejected[0].as_dict()
        assert follow_label(chosen, chosen, old_call) == "new"
        assert follow_label(old_call, chosen, old_call) == "old"
        assert follow_label(None, chosen, old_call) == "neither"
        assert follow_label({"name": "nope", "arguments": {}}, chosen, old_call) == "neither"
    assert labelled >= 1
    # Stable records and records of users without an old phase get no label.
    assert all(old_preference_call(r, None) is None for r in grouped["u01"].test)
    run = _run(records, "rag")
    assert run.summary["changed_preference"]["n"] == labelled
    assert {r["follows"] for r in run.rows() if r["user_id"] != "u03"} == {None}


def test_follow_label_compares_only_what_differs() -> None:
    new = {"name": "search_news", "arguments": {"query": "rain", "source": "bbc"}}
    old = {"name": "search_news", "arguments": {"query": "rain", "source": "cnn"}}
    other_query = {"name": "search_news", "arguments": {"query": "sun", "source": "cnn"}}
    assert follow_label(other_query, new, old) == "old"
    ride = {"name": "request_ride", "arguments": {"pickup": "a", "dropoff": "b"}}
    walk = {"name": "get_directions", "arguments": {"origin": "a", "destination": "b"}}
    assert follow_label(walk, ride, walk) == "old"
    assert follow_label(ride, ride, walk) == "new"


def test_follow_label_with_tools_compares_the_choices_not_copied_strings() -> None:
    def tool(name: str, properties: dict[str, Any]) -> ToolSpec:
        parameters = {"type": "object", "properties": properties}
        return ToolSpec.model_validate(
            {"type": "function", "function": {"name": name, "parameters": parameters}}
        )

    tools = [
        tool("add_review", {"asin": {"type": "string"}, "review": {"type": "string"}}),
        tool("search", {"query": {"type": "string"}, "sort": {"enum": ["price", "rating"]}}),
    ]
    new = {"name": "add_review", "arguments": {"asin": "B01", "review": "it broke"}}
    old = {"name": "search", "arguments": {"query": "charger", "sort": "price"}}
    miscopied = {"name": "add_review", "arguments": {"asin": "B01", "review": "I bought it"}}
    # The right tool with a miscopied review follows the new preference (the copy is an
    # argument error); without the tools every differing argument counts.
    assert follow_label(miscopied, new, old, tools) == "new"
    assert follow_label(miscopied, new, old) == "neither"
    # The old tool with its old choice follows the old preference whatever its query says.
    assert follow_label({**old, "arguments": {"query": "x", "sort": "price"}}, new, old, tools) == (
        "old"
    )
    # An enum value still decides between two calls of one tool.
    rated = {"name": "search", "arguments": {"query": "charger", "sort": "rating"}}
    assert follow_label(rated, rated, old, tools) == "new"
    assert follow_label(old, rated, old, tools) == "old"
    assert follow_label({"name": "add_review", "arguments": {}}, rated, old, tools) == "neither"


# --------------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------------


class _Poisoned(PersonalRecord):
    """A test record whose every field but ``split`` fails when read."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name in ("split", "model_fields", "model_config"):
            return super().__getattribute__(name)
        raise AssertionError(f"tuning read field {name!r} of a test record")


def _poison(record: PersonalRecord) -> PersonalRecord:
    if record.split != "test":
        return record
    return _Poisoned.model_validate(record.model_dump())


def test_poisoned_record_really_fails_when_read(records: list[PersonalRecord]) -> None:
    test = next(r for r in records if r.split == "test")
    poisoned = _poison(test)
    assert poisoned.split == "test"
    with pytest.raises(AssertionError, match="messages"):
        _ = poisoned.messages


def test_tuning_never_reads_test_records(
    records: list[PersonalRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))
    poisoned = [_poison(r) for r in records]
    history_texts = {r.request for r in records if r.split == "history"}
    from fints_agent.memory import Memory

    recorded: list[str] = []
    real_record_many = Memory.record_many

    def spy(self: Memory, items: Any, **kwargs: Any) -> list[str]:
        items = list(items)
        recorded.extend(i["messages"][-1]["content"] for i in items)
        return real_record_many(self, items, **kwargs)

    monkeypatch.setattr(Memory, "record_many", spy)
    FakeEngine.instances.clear()
    lm = tiny_lm("llama")
    result = tune(
        lm,
        poisoned,
        users=None,
        dev_per_user=1,
        embedder=HashEmbedder(),
        budget_minutes=10,
        engine_factory=FakeEngine,
        progress=False,
    )
    (engine,) = FakeEngine.instances
    asked = {r.messages[-1]["content"] for r in engine.requests}
    assert asked and asked <= history_texts
    assert set(recorded) <= history_texts
    # Dev turns are never recorded; every request answered is a held-out history turn.
    ingest, dev = tuning_split(records, 1)
    assert asked == {r.request for r in dev}
    assert len(recorded) == len(ingest)
    assert result["dev_turns"] == len(dev) == 2 and result["ingest_turns"] == len(ingest)
    assert result["complete"] is True and len(result["table"]) >= 10
    assert result["saved_to"] and Path(result["saved_to"]).is_file()
    assert Preset.for_model(lm.fingerprint) == Preset.model_validate(result["best"])
    row = result["table"][0]
    assert {"steer", "rag+steer", "score", "layers", "sites", "coefficient"} <= set(row)
    assert {"k", "softmax_temperature", "recency_half_life"} <= set(row)
    assert "temperature" not in row
    assert {r["step"] for r in result["table"]} >= {"start", "softmax_temperature"}


def test_tuning_split_holds_out_latest_history(records: list[PersonalRecord]) -> None:
    ingest, dev = tuning_split(records, 2)
    assert all(r.split == "history" for r in ingest + dev)

    def tools(r: PersonalRecord) -> tuple[str, ...]:
        return tuple(sorted(t.function.name for t in r.tools))

    for user in group_by_user(records):
        mine = [r for r in dev if r.user_id == user]
        kept = [r for r in ingest if r.user_id == user]
        assert len(kept) >= 2
        for r in mine:  # later than what is ingested of its kind, which is never nothing
            same = [k.turn for k in kept if tools(k) == tools(r)]
            assert same and r.turn > max(same)
    assert dev, "the fixture has users to hold out"
    # u01 has only 2 history records: nothing held out.
    assert not [r for r in dev if r.user_id == "u01"]
    assert pick_users(records, 2) == ["u03", "u02"]
    assert layer_bands(30)["middle"] == list(range(10, 20)) and layer_bands(30)["all"] is None


def test_tuning_split_keeps_every_dev_turns_kind_in_the_memory() -> None:
    """A user's only turn of a kind stays ingested; an earlier turn is held out instead."""

    def rec(turn: int, tool: str) -> PersonalRecord:
        return PersonalRecord.model_validate(
            {
                "user_id": "u",
                "turn": turn,
                "split": "history",
                "messages": [{"role": "user", "content": f"request {turn}"}],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": tool, "parameters": {"type": "object"}},
                    }
                ],
                "chosen": {"name": tool, "arguments": {}},
                "rejected": [],
                "graded_args": [],
            }
        )

    rows = [rec(0, "a"), rec(1, "a"), rec(2, "a"), rec(3, "b"), rec(4, "a"), rec(5, "c")]
    ingest, dev = tuning_split(rows, 2)
    assert [r.turn for r in dev] == [2, 4]  # 5 (only "c") and 3 (only "b") stay ingested
    assert [r.turn for r in ingest] == [0, 1, 3, 5]
    assert tuning_split(rows, 9)[1] == [rows[1], rows[2], rows[4]]  # one "a" and two more kept


def _fake_tune(records: list[PersonalRecord], **options: Any) -> dict[str, Any]:
    """:func:`tune` with the LM-free engine and hash embeddings, one dev turn per user, unsaved."""
    FakeEngine.instances.clear()
    return tune(
        tiny_lm("llama"),
        records,
        users=None,
        dev_per_user=1,
        embedder=HashEmbedder(),
        engine_factory=FakeEngine,
        save=False,
        progress=False,
        **options,
    )


def test_tune_budget_stops_the_search(records: list[PersonalRecord]) -> None:
    result = _fake_tune(records, budget_minutes=1e-6)
    assert result["complete"] is False and result["table"] == [] and result["saved_to"] is None


def test_tune_answers_dev_turns_with_copying_when_asked(records: list[PersonalRecord]) -> None:
    for copy in (True, False):
        result = _fake_tune(records, copy_strings=copy, steps=["k"])
        (engine,) = FakeEngine.instances
        assert result["copy_strings"] is copy and result["table"]
        assert engine.requests and {r.copy_strings for r in engine.requests} == {copy}


def test_tune_scales_the_value_vector_of_split_memories_only(
    records: list[PersonalRecord],
) -> None:
    from fints_agent.eval.tune import search_steps

    step = dict(search_steps(30))["value_coefficient"]
    assert step(Preset()) == []
    assert [u["value_coefficient"] for u in step(Preset(vector_kind="split"))] == [
        0.25,
        0.5,
        1.0,
        2.0,
    ]
    result = _fake_tune(records, start=Preset(vector_kind="split"), steps=["value_coefficient"])
    assert [row["value_coefficient"] for row in result["table"]] == [None, 0.25, 0.5, 1.0, 2.0]
    assert result["best"]["vector_kind"] == "split"
    best = Preset.model_validate(result["best"])
    assert best.steering.value_coefficient == result["best"]["steering"]["value_coefficient"]


# --------------------------------------------------------------------------------------------
# BFCL driving
# --------------------------------------------------------------------------------------------


def test_bfcl_requests_and_batched_prediction() -> None:
    pytest.importorskip("bfcl_eval")
    from fints_agent.eval.bfcl import gold_calls, load_bfcl
    from fints_agent.eval.run_bfcl import FixedVectorMemory, _grade, bfcl_request, predict_bfcl

    simple = load_bfcl("simple_python", 5)
    irrelevant = load_bfcl("irrelevance", 3)
    parallel = load_bfcl("parallel", 2)
    assert bfcl_request(simple[0]).tool_choice == "any"
    assert not bfcl_request(simple[0]).parallel
    assert bfcl_request(irrelevant[0]).tool_choice == "auto"
    assert bfcl_request(parallel[0]).parallel
    steered = bfcl_request(simple[0], steer=True)
    assert steered.personalization == "steer" and steered.user_id

    by_question = {c.question: c for c in simple}

    class GoldEngine:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def complete_batch(self, reqs: Sequence[TurnRequest]) -> list[TurnResult]:
            self.batches.append(len(reqs))
            out = []
            for r in reqs:
                case = by_question[r.messages[-1]["content"]]
                calls = [EngineCall(c["name"], c["arguments"]) for c in gold_calls(case)]
                out.append(TurnResult("", "", calls, [], 50, 20, "stop", {}))
            return out

    engine = GoldEngine()
    calls, latency, tokens = predict_bfcl(engine, simple, batch_size=2, progress=False)
    assert engine.batches == [2, 2, 1] and set(calls) == {c.id for c in simple}
    report = _grade("simple_python", simple, calls, latency, tokens)
    assert report["accuracy"] == 1.0 and report["valid_rate"] == 1.0
    assert report["mean_prompt_tokens"] == 50.0

    vector = _zero_vector()
    retrieval = FixedVectorMemory(vector, "mean:u01").retrieve("x", [], None)
    assert retrieval.vector is vector and retrieval.trajectory_ids == ["mean:u01"]
    assert retrieval.value_vector is None
    split = FixedVectorMemory(vector, "mean:u01", value_vector=vector * 2.0)
    assert split.retrieve("x", [], None).value_vector is split.value_vector


def _zero_vector() -> Any:
    from fints_agent.steering.vector import SteeringVector

    lm = tiny_lm("llama")
    return SteeringVector.zeros(lm.fingerprint, [0, 1, 2], ["attn", "mlp"], lm.d_model)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def test_plots_write_pngs(records: list[PersonalRecord], tmp_path: Path) -> None:
    rows = _run(records, "rag").rows()
    points = accuracy_by_history(rows)
    assert sum(p["n"] for p in points) == len(rows)
    assert changed_preference_rates(rows)["n"] >= 1
    a = plot_accuracy_by_history({"rag": rows, "copy": rows}, tmp_path / "a.png")
    b = plot_changed_preference({"rag": rows}, tmp_path / "b.png")
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# End to end with the real model (slow)
# --------------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_real_model_personal_run_is_valid(records: list[PersonalRecord]) -> None:
    from fints_agent.models import load_model

    few = [r for r in records if r.user_id in ("u01", "u03")]
    run = run_personal(
        load_model(),
        few,
        "rag+steer",
        limit=2,
        batch_size=2,
        embedder=HashEmbedder(),
        config=Preset(),
        progress=False,
    )
    assert run.summary["n"] == 2 and run.summary["valid_rate"] == 1.0
    assert run.summary["mean_prompt_tokens"] > 100


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_real_model_bfcl_is_valid() -> None:
    pytest.importorskip("bfcl_eval")
    from fints_agent.eval.run_bfcl import run_bfcl
    from fints_agent.models import load_model

    report = run_bfcl(load_model(), "simple_python", limit=2, batch_size=2, progress=False)
    assert report["n"] == 2 and report["valid_rate"] == 1.0


def test_history_memory_store_is_reused_only_when_it_matches(
    records: list[PersonalRecord], tmp_path: Path
) -> None:
    from fints_agent.eval.personal import history_memory

    lm = tiny_lm("llama")
    store = tmp_path / "store"
    few = [r for r in records if r.user_id in ("u01", "u03")]
    with history_memory(lm, few, store=store, embedder=HashEmbedder(), progress=False) as (
        memory,
        seconds,
    ):
        assert seconds > 0 and memory.store.count() == 7
    with history_memory(lm, few, store=store, embedder=HashEmbedder(), progress=False) as (
        memory,
        seconds,
    ):
        assert seconds == 0.0 and memory.store.count() == 7
    with history_memory(
        lm, few, store=store, fresh=True, embedder=HashEmbedder(), progress=False
    ) as kept:
        assert kept.recorded == 7 and kept.memory.store.count() == 7
        assert kept.location == str(store)
    with (
        pytest.raises(ValueError, match="holds other trajectories"),
        history_memory(lm, records, store=store, embedder=HashEmbedder(), progress=False),
    ):
        pass


# --------------------------------------------------------------------------------------------
# Kept history stores (the user cache)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user cache in a temporary directory; returns where kept history stores go."""
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path / "cache"))
    from fints_agent.eval.personal import history_cache_dir

    return history_cache_dir()


@pytest.fixture
def recordings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many trajectories each ``Memory.record_many`` call recorded, in call order."""
    from fints_agent.memory import Memory

    calls: list[int] = []
    real = Memory.record_many

    def spy(self: Memory, items: Any, **kwargs: Any) -> list[str]:
        ids = real(self, items, **kwargs)
        calls.append(len(ids))
        return ids

    monkeypatch.setattr(Memory, "record_many", spy)
    return calls


def _comparable(run: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "latency_s"} for row in run.rows()]


def _kept(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_kept_history_is_reused_with_identical_results(
    records: list[PersonalRecord], cache: Path, recordings: list[int]
) -> None:
    n_history = sum(1 for r in records if r.split == "history")
    first = _run(records, "steer", cache=True)
    assert recordings == [n_history]
    assert first.summary["recorded_trajectories"] == n_history
    assert first.summary["ingest_seconds"] > 0
    store = first.summary["history_store"]
    assert _kept(cache) == [Path(store).name] and (Path(store) / "complete.json").is_file()

    second = _run(records, "steer", cache=True)
    assert recordings == [n_history]  # nothing recorded
    assert second.summary["recorded_trajectories"] == 0
    assert second.summary["ingest_seconds"] == 0.0
    assert second.summary["history_store"] == store
    assert _comparable(second) == _comparable(first)
    for key in ("function_acc", "arg_acc", "call_acc", "valid_rate", "by_decider"):
        assert second.summary[key] == first.summary[key]
    # Another method on the same history reuses the same store.
    assert _run(records, "rag", cache=True).summary["recorded_trajectories"] == 0

    again = _run(records, "steer", cache=True, fresh=True)
    assert recordings == [n_history, n_history]
    assert again.summary["recorded_trajectories"] == n_history
    assert again.summary["history_store"] == store and _kept(cache) == [Path(store).name]
    assert _comparable(again) == _comparable(first)


def test_online_feedback_leaves_the_kept_history_as_recorded(
    records: list[PersonalRecord], cache: Path, recordings: list[int]
) -> None:
    history = {u: len(g.history) for u, g in group_by_user(records).items()}
    _run(records, "rag", cache=True)
    online = _run(records, "rag", cache=True, online=True)
    assert online.summary["recorded_trajectories"] == 0
    assert sum(recordings[1:]) == 8  # only the test turns' feedback, into a copy
    offline = _run(records, "rag", cache=True)
    (engine,) = FakeEngine.instances
    assert offline.summary["recorded_trajectories"] == 0
    assert engine.memory_sizes == [history[r.user_id] for r in engine.requests]


def test_kept_history_key_covers_what_the_vectors_depend_on(
    records: list[PersonalRecord],
) -> None:
    from fints_agent.eval.personal import history_store_key

    lm = tiny_lm("llama")
    embedder = HashEmbedder()

    def key(recs: Sequence[PersonalRecord] = records, **options: Any) -> str:
        return history_store_key(lm, recs, embedder=embedder, options=options)[0]

    base = key(vectors="contrast")
    differing = {
        "dataset": key([r for r in records if r.user_id != "u01"], vectors="contrast"),
        "vectors": key(vectors="demonstration"),
        "layers": key(vectors="contrast", layers=[0, 1]),
        "sites": key(vectors="contrast", sites=("attn",)),
        "negatives": key(vectors="contrast", n_negatives=3),
        "supersede": key(vectors="contrast", auto_supersede=0.9),
        "embedder": history_store_key(lm, records, embedder="lm")[0],
    }
    assert base not in differing.values()
    assert len(set(differing.values())) == len(differing)
    # Defaults filled in; retrieval-only options, test records and metadata do not count.
    assert key() == base == key(vectors="contrast", layers=[0, 1, 2], k=3, temperature=0.5)
    assert key([r for r in records if r.split == "history"]) == base
    edited = [r.model_copy(update={"meta": {"note": "x"}}) for r in records]
    assert key(edited) == base
    changed = records[0].model_copy(update={"chosen": records[0].rejected[0]})
    assert key([changed, *records[1:]]) != base
    _, about = history_store_key(lm, records, embedder=embedder, options={"vectors": "split"})
    assert about["vectors"] == "split" and about["model_fingerprint"] == lm.fingerprint
    assert about["history"]["trajectories"] == sum(r.split == "history" for r in records)
    with pytest.raises(ValueError, match="negative_fn"):
        key(negative_fn=lambda *_: [])


def test_kept_history_stores_differ_by_vectors_and_layers(
    records: list[PersonalRecord], cache: Path, recordings: list[int]
) -> None:
    from fints_agent.eval.personal import history_memory

    lm = tiny_lm("llama")
    few = [r for r in records if r.user_id == "u01"]
    seen = []
    for options in ({"vectors": "contrast"}, {"vectors": "demonstration"}, {"layers": [1, 2]}):
        for _ in range(2):
            with history_memory(
                lm, few, cache=True, embedder=HashEmbedder(), progress=False, options=options
            ) as kept:
                seen.append((kept.location, kept.recorded))
                assert kept.memory.store.count() == 2
                assert kept.memory.layout.vectors == options.get("vectors", "contrast")
                assert kept.memory.layout.layers == tuple(options.get("layers", [0, 1, 2]))
    assert [n for _, n in seen] == [2, 0, 2, 0, 2, 0]
    assert len({where for where, _ in seen}) == 3 == len(_kept(cache))


def test_an_interrupted_kept_history_is_never_reused(
    records: list[PersonalRecord],
    cache: Path,
    recordings: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import subprocess
    import sys

    from fints_agent.eval.personal import history_memory, history_store_key
    from fints_agent.memory import TrajectoryStore

    lm = tiny_lm("llama")
    few = [r for r in records if r.user_id in ("u01", "u03")]
    key, _ = history_store_key(lm, few, embedder=HashEmbedder())

    def open_kept(**kwargs: Any) -> Any:
        return history_memory(
            lm, few, cache=True, embedder=HashEmbedder(), progress=False, **kwargs
        )

    # 1. Recording dies after part of the history is written: nothing is kept.
    real_add = TrajectoryStore.add

    def dying_add(self: TrajectoryStore, batch: Any) -> None:
        real_add(self, list(batch)[:1])
        raise KeyboardInterrupt

    monkeypatch.setattr(TrajectoryStore, "add", dying_add)
    with pytest.raises(KeyboardInterrupt), open_kept():
        pass
    assert _kept(cache) == []
    monkeypatch.setattr(TrajectoryStore, "add", real_add)

    # 2. What a killed run leaves (its temporary directory, even with a completion marker, and
    # a store directory without one) is neither reused nor kept.
    with open_kept() as kept:
        assert kept.recorded == 7
        where = Path(str(kept.location))
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)
    leftover = cache / f".tmp-{key}-{dead}-0badc0de"
    (leftover / "store").mkdir(parents=True)
    (leftover / "complete.json").write_text((where / "complete.json").read_text())
    (where / "complete.json").unlink()  # as if the directory were never completed
    with open_kept() as kept:
        assert kept.recorded == 7 and kept.memory.store.count() == 7
    assert _kept(cache) == [key] and (where / "complete.json").is_file()
    with open_kept() as kept:
        assert kept.recorded == 0
    assert recordings[-2:] == [7, 7] and os.getpid() != dead
