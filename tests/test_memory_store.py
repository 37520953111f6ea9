"""Memory and store behaviour, on an embedded store and on a real ``chroma run`` server."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from memory_fixtures import (
    TRAVEL_TOOLS,
    WEATHER_TOOLS,
    HashEmbedder,
    make_memory,
    new_prefix,
    user_msg,
    weather_item,
)
from tiny import tiny_lm

from fints_agent.calls import to_tool_specs
from fints_agent.memory import (
    InvalidCallError,
    Memory,
    MemoryInputError,
    StoreLayoutError,
    TrajectoryRecord,
    TrajectoryStore,
    UnknownTrajectoryError,
)
from fints_agent.prompting import format_examples
from fints_agent.steering import (
    SteeringVector,
    VectorMismatchError,
    contrastive_vectors,
    demonstration_vectors,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_vector(memory: Memory, seed: int) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    lay = memory.layout
    t = torch.randn(len(lay.layers), len(lay.sites), lay.d_model, generator=g)
    return SteeringVector(t, lay.layers, lay.sites, lay.model_fingerprint)  # type: ignore[arg-type]


def test_record_retrieve_round_trip(store_location: str) -> None:
    memory = make_memory(store_location)
    ids = memory.record_many([weather_item("alice", i) for i in range(4)], progress=False)
    assert len(set(ids)) == 4
    assert [t.id for t in memory.list_trajectories("alice")] == ids
    rec = memory.store.get("alice", [ids[0]], with_payload=True)[0]
    assert rec.chosen == {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}}
    assert rec.rejected and all(r != rec.chosen for r in rec.rejected)
    assert rec.tools[0]["function"]["name"] == "get_weather"
    assert rec.messages == user_msg("what is the weather in oslo now")
    assert memory.store.get("alice", [], with_payload=True) == []  # no ids: nothing, no error
    assert memory.store.get_vectors("alice", []) == {}

    r = memory.retrieve("alice", user_msg("what is the weather in oslo today"), WEATHER_TOOLS)
    assert r.reason == "steered" and r.vector is not None
    assert set(r.trajectory_ids) <= set(ids) and r.trajectory_ids[0] == ids[0]
    assert sum(r.weights) == pytest.approx(1.0)
    assert r.similarities == sorted(r.similarities, reverse=True)
    assert r.examples[0] == (user_msg("what is the weather in oslo now"), rec.chosen)
    assert r.vector.tensor.shape == (3, 2, 32)
    assert r.vector.model_fingerprint == memory.lm.fingerprint
    assert r.explain()["trajectories"][0]["id"] == ids[0]


def test_aggregate_is_the_softmax_weighted_sum_of_stored_vectors(store_location: str) -> None:
    memory = make_memory(store_location, k=3, temperature=0.1)
    ids = [
        memory.record_vector(
            "alice",
            user_msg(f"what is the weather in {c} now"),
            WEATHER_TOOLS,
            {"name": "get_weather", "arguments": {"city": c, "units": "celsius"}},
            _random_vector(memory, seed),
        )
        for seed, c in enumerate(["oslo", "paris", "rome", "lima"])
    ]
    r = memory.retrieve("alice", user_msg("what is the weather in oslo today"))
    assert len(r.trajectory_ids) == 3 and set(r.trajectory_ids) <= set(ids)
    e = [math.exp(s / 0.1) for s in r.similarities]
    assert r.weights == pytest.approx([x / sum(e) for x in e], rel=1e-9)
    expected = sum(
        w * _random_vector(memory, ids.index(t)).tensor.double()
        for w, t in zip(r.weights, r.trajectory_ids, strict=True)
    )
    assert r.vector is not None
    assert torch.allclose(r.vector.tensor.double(), expected, atol=1e-6)


def test_vectors_come_back_bit_exact(store_location: str) -> None:
    memory = make_memory(store_location)
    v = _random_vector(memory, 7)
    # Values that a lossy round trip would change.
    v.tensor.view(-1)[:6] = torch.tensor([1e-45, -0.0, 3.4e38, 0.1, 1 / 3, -1.17549435e-38])
    tid = memory.record_vector(
        "alice",
        user_msg("weather in oslo"),
        WEATHER_TOOLS,
        {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}},
        v,
    )
    back = memory.get_vector("alice", tid)
    assert back == v
    assert torch.equal(back.tensor.view(torch.int32), v.tensor.view(torch.int32))
    with pytest.raises(UnknownTrajectoryError):
        memory.get_vector("alice", "nope")


def test_isolation_between_users(store_location: str) -> None:
    memory = make_memory(store_location, k=10, min_similarity=-1.0)
    users = [f"user-{i}" for i in range(6)]
    owned: dict[str, set[str]] = {}
    # Every user records the same requests: only the collection can keep them apart.
    items = [weather_item(u, i) for u in users for i in range(4)]
    ids = memory.record_many(items, batch_size=12, progress=False)
    for item, tid in zip(items, ids, strict=True):
        owned.setdefault(item["user_id"], set()).add(tid)
    for u in users:
        for text in ["what is the weather in oslo now", "cairo", "take me home"]:
            r = memory.retrieve(u, user_msg(text), include_superseded=True)
            assert r.trajectory_ids and set(r.trajectory_ids) <= owned[u]
        assert {t.id for t in memory.list_trajectories(u)} == owned[u]
        assert memory.store.count(u) == 4
    assert memory.retrieve("user-99", user_msg("what is the weather in oslo now")).vector is None
    assert memory.store.users() == sorted(users)


def test_forget_user_leaves_nothing(store_location: str) -> None:
    memory = make_memory(store_location)
    memory.record_many([weather_item("alice", i) for i in range(3)], progress=False)
    bob = memory.record_many([weather_item("bob", i) for i in range(2)], progress=False)
    path_ids = {t.id for t in memory.list_trajectories("alice")}
    assert memory.forget_user("alice") == 3
    assert memory.list_trajectories("alice") == []
    assert memory.store.count("alice") == 0
    assert "alice" not in memory.store.users()
    r = memory.retrieve("alice", user_msg("what is the weather in oslo now"))
    assert r.vector is None and r.reason == "no_history"
    # Nothing of alice in any collection of the store: no collection and no record.
    client = memory.store.client
    for col in client.list_collections():
        if not col.name.startswith(memory.store.prefix + "-"):
            continue
        assert (col.metadata or {}).get("user_id") != "alice"
        got = col.get(include=["metadatas", "documents"])
        assert not path_ids & set(got["ids"])
        assert all((m or {}).get("user_id") != "alice" for m in got["metadatas"])
    assert [t.id for t in memory.list_trajectories("bob")] == bob
    assert memory.forget_user("alice") == 0


def test_unknown_user_empty_request_threshold_and_fallback(store_location: str) -> None:
    memory = make_memory(store_location)
    memory.record_many([weather_item("alice", i) for i in range(2)], progress=False)
    r = memory.retrieve("nobody", user_msg("weather in oslo"))
    assert (r.vector, r.reason, r.trajectory_ids) == (None, "no_history", [])
    r = memory.retrieve("alice", [])
    assert (r.vector, r.reason) == (None, "empty_request")
    r = memory.retrieve("alice", user_msg("   "))
    assert r.reason == "empty_request"
    r = memory.retrieve("alice", user_msg("what is the weather in oslo now"), min_similarity=1.1)
    assert r.vector is None and r.reason == "below_threshold" and r.similarities
    r = memory.retrieve("alice", user_msg("take me home"), TRAVEL_TOOLS)
    assert r.vector is None and r.reason == "no_matching_tools"
    mean = memory.population_mean()
    assert mean is not None and mean.layers == memory.layers
    r = memory.retrieve("nobody", user_msg("weather in oslo"), fallback=mean)
    assert r.vector is mean and r.fallback and r.reason == "no_history"
    with pytest.raises(MemoryInputError):
        memory.retrieve("", user_msg("weather"))
    with pytest.raises(MemoryInputError):
        memory.retrieve(None, user_msg("weather"))  # type: ignore[arg-type]


def test_bad_input_is_refused_and_writes_nothing(store_location: str) -> None:
    memory = make_memory(store_location)
    memory.record_many([weather_item("alice", 0)], progress=False)
    msg = user_msg("weather in oslo")
    ok = {"name": "get_weather", "arguments": {"city": "Oslo", "units": "celsius"}}
    cases = [
        (InvalidCallError, dict(chosen={"name": "book_flight", "arguments": {}})),
        (InvalidCallError, dict(chosen={"name": "get_weather", "arguments": {"city": 3}})),
        (InvalidCallError, dict(chosen={"name": "get_weather"})),
        (InvalidCallError, dict(chosen="get_weather(city='Oslo')")),
        (InvalidCallError, dict(chosen=ok, rejected=[ok])),
        (InvalidCallError, dict(chosen=ok, rejected=[{"name": "x"}])),
        (MemoryInputError, dict(chosen=ok, messages=user_msg(""))),
        (MemoryInputError, dict(chosen=ok, tools=[])),
        (MemoryInputError, dict(chosen=ok, user_id="")),
        (MemoryInputError, dict(chosen=ok, supersedes="no-such-id")),
    ]
    for error, kwargs in cases:
        args = {"user_id": "alice", "messages": msg, "tools": WEATHER_TOOLS, **kwargs}
        with pytest.raises(error):
            memory.record(**args)  # type: ignore[arg-type]
    good = [weather_item("alice", i) for i in range(3)]
    bad = {**weather_item("alice", 9), "chosen": {"name": "get_weather", "arguments": {}}}
    with pytest.raises(InvalidCallError, match="schema"):
        memory.record_many([*good, bad], batch_size=1, progress=False)
    assert memory.store.count("alice") == 1
    assert memory.store.count() == 1


def test_demonstration_memory_stores_demonstration_vectors(tmp_path: Path) -> None:
    """``vectors="demonstration"``: the stored vector is the chosen call shown as a worked
    example minus the rejected one shown, on the prompt the model sees; a store keeps one kind."""
    prefix = new_prefix()
    memory = make_memory(tmp_path, prefix, vectors="demonstration")
    item = weather_item("alice", 0)
    rejected = {
        "name": "get_weather",
        "arguments": {**item["chosen"]["arguments"], "units": "fahrenheit"},
    }
    [tid] = memory.record_many([{**item, "rejected": [rejected]}], progress=False)
    [stored] = memory.store.get("alice", [tid], with_vectors=True)
    specs = to_tool_specs(WEATHER_TOOLS)
    schema = specs[0].parameters

    def shown(call: dict) -> str:
        examples = format_examples([(item["messages"], call)], specs)
        return memory.renderer.render_prompt(item["messages"], WEATHER_TOOLS, examples=examples)

    [expected] = demonstration_vectors(
        memory.lm,
        [shown(item["chosen"])],
        [[shown(rejected)]],
        [memory.renderer.render_call("get_weather", item["chosen"]["arguments"], schema)],
        [[memory.renderer.render_call("get_weather", rejected["arguments"], schema)]],
    )
    np.testing.assert_allclose(stored.vector, expected.tensor.numpy().reshape(-1), atol=1e-6)
    assert memory.layout.vectors == "demonstration"
    with pytest.raises(StoreLayoutError, match="vectors"):
        make_memory(tmp_path, prefix)  # a contrast memory on a demonstration store
    with pytest.raises(ValueError, match="unknown vectors"):
        make_memory(tmp_path, new_prefix(), vectors="mean")


def test_split_memory_keeps_both_vectors_and_retrieves_them_apart(tmp_path: Path) -> None:
    """``vectors="split"``: each trajectory keeps its contrastive and its demonstration vector;
    a retrieval mixes both with the same weights and returns them as vector and value vector."""
    prefix = new_prefix()
    split = make_memory(tmp_path, prefix, vectors="split")
    contrast = make_memory(tmp_path, new_prefix())
    demo = make_memory(tmp_path, new_prefix(), vectors="demonstration")
    items = []
    for i, (units, other) in enumerate((("celsius", "fahrenheit"), ("fahrenheit", "celsius"))):
        item = weather_item("alice", i, units)
        rejected = {
            "name": "get_weather",
            "arguments": {**item["chosen"]["arguments"], "units": other},
        }
        items.append({**item, "rejected": [rejected]})
    for memory in (split, contrast, demo):
        memory.record_many(items, progress=False)
    assert split.layout.parts == 2
    assert split.layout.vector_dim == 2 * contrast.layout.vector_dim
    msg = user_msg("weather in Oslo please")
    got, c, d = (m.retrieve("alice", msg, WEATHER_TOOLS) for m in (split, contrast, demo))
    assert got.weights == pytest.approx(c.weights)
    assert got.vector is not None and got.value_vector is not None
    assert c.vector is not None and d.vector is not None and c.value_vector is None
    torch.testing.assert_close(got.vector.tensor, c.vector.tensor, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.value_vector.tensor, d.vector.tensor, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got.vector.tensor, got.value_vector.tensor)
    # Population means: of the first vectors, or of the value vectors (split memories only).
    means = [split.population_mean(), split.population_mean(value=True)]
    assert all(m is not None for m in means)
    torch.testing.assert_close(
        means[0].tensor,  # type: ignore[union-attr]
        contrast.population_mean().tensor,  # type: ignore[union-attr]
        atol=1e-5,
        rtol=1e-4,
    )
    assert not torch.allclose(means[0].tensor, means[1].tensor)  # type: ignore[union-attr]
    assert contrast.population_mean(value=True) is None
    # A vector recorded from elsewhere needs its value vector on a split store, only there.
    item = weather_item("bob", 0)
    args = ("bob", item["messages"], WEATHER_TOOLS, item["chosen"], c.vector)
    with pytest.raises(VectorMismatchError, match="2 vector"):
        split.record_vector(*args)
    with pytest.raises(VectorMismatchError, match="1 vector"):
        contrast.record_vector(*args, value_vector=d.vector)
    tid = split.record_vector(*args, value_vector=d.vector)
    torch.testing.assert_close(split.get_vector("bob", tid).tensor, c.vector.tensor)
    with pytest.raises(StoreLayoutError, match="vectors"):
        make_memory(tmp_path, prefix)  # a contrast memory on a split store


def test_split_memory_contrasts_the_tool_name_against_other_tools_only(tmp_path: Path) -> None:
    """A split store's first vector steers the tool name: where some rejected calls name another
    tool, it contrasts the chosen call with those only (a same-tool variant differs in a value,
    which the demonstration vector carries); otherwise with every rejected call."""
    memory = make_memory(tmp_path, new_prefix(), vectors="split")
    item = weather_item("alice", 0)
    args = item["chosen"]["arguments"]
    variant = {"name": "get_weather", "arguments": {**args, "units": "fahrenheit"}}
    forecast = {"name": "get_forecast", "arguments": {**args, "days": 3}}
    both, only_variant = memory.record_many(
        [{**item, "rejected": [variant, forecast]}, {**item, "rejected": [variant]}],
        progress=False,
    )
    specs = {s.name: s.parameters for s in to_tool_specs(WEATHER_TOOLS)}
    render = memory.renderer.render_call
    prompt = memory.renderer.render_prompt(item["messages"], WEATHER_TOOLS)
    chosen = render("get_weather", args, specs["get_weather"])
    v_variant = render("get_weather", variant["arguments"], specs["get_weather"])
    v_forecast = render("get_forecast", forecast["arguments"], specs["get_forecast"])
    expected = contrastive_vectors(
        memory.lm,
        [prompt, prompt, prompt],
        [chosen] * 3,
        [[v_forecast], [v_variant], [v_variant, v_forecast]],
    )
    got = {
        tid: memory.store.get("alice", [tid], with_vectors=True)[0].vector
        for tid in (both, only_variant)
    }
    width = memory.layout.vector_dim // 2
    for tid, want in ((both, expected[0]), (only_variant, expected[1])):
        np.testing.assert_allclose(got[tid][:width], want.tensor.numpy().reshape(-1), atol=1e-5)
    mixed = expected[2].tensor.numpy().reshape(-1)
    assert not np.allclose(got[both][:width], mixed, atol=1e-5)


def test_other_model_and_other_embedder_are_refused(store_location: str) -> None:
    prefix = new_prefix()
    memory = make_memory(store_location, prefix)
    memory.record_many([weather_item("alice", 0)], progress=False)
    other = tiny_lm("llama", seed=1)
    assert other.fingerprint != memory.lm.fingerprint
    with pytest.raises(StoreLayoutError, match="model_fingerprint"):
        make_memory(store_location, prefix, lm=other)

    class Other(HashEmbedder):
        name = "other"

    with pytest.raises(StoreLayoutError, match="embedder"):
        make_memory(store_location, prefix, embedder=Other())
    foreign = SteeringVector(torch.zeros(3, 2, 32), (0, 1, 2), ("attn", "mlp"), other.fingerprint)
    with pytest.raises(VectorMismatchError, match="computed on model"):
        memory.record_vector(
            "alice", user_msg("weather"), WEATHER_TOOLS, weather_item("alice", 0)["chosen"], foreign
        )
    with pytest.raises(StoreLayoutError, match="values"):
        memory.store.add(
            [
                TrajectoryRecord(
                    "x",
                    "alice",
                    "r",
                    {},
                    embedding=np.zeros(64, np.float32),
                    vector=np.zeros(10, np.float32),
                )
            ]
        )
    # A subset of the stored layers and sites is served by selection.
    sub = make_memory(store_location, prefix, layers=[0, 2], sites=("mlp",))
    r = sub.retrieve("alice", user_msg("what is the weather in oslo now"))
    assert r.vector is not None and r.vector.layers == (0, 2) and r.vector.sites == ("mlp",)
    assert memory.store.count("alice") == 1


def test_supersede_explicit_and_automatic(store_location: str) -> None:
    memory = make_memory(store_location, auto_supersede=0.9)
    old = memory.record(**_weather("alice", "celsius"))
    new = memory.record(**_weather("alice", "fahrenheit"), supersedes=old)
    r = memory.retrieve("alice", user_msg("what is the weather in oslo now"))
    assert r.trajectory_ids == [new]
    listed = {t.id: t for t in memory.list_trajectories("alice")}
    assert listed[old].superseded_by == new and listed[new].supersedes == old
    # A very similar request with another preference supersedes automatically...
    newest = memory.record(**_weather("alice", "celsius"))
    assert memory.retrieve("alice", user_msg("what is the weather in oslo now")).trajectory_ids == [
        newest
    ]
    # ...the same preference does not.
    again = memory.record(**_weather("alice", "celsius"))
    r = memory.retrieve("alice", user_msg("what is the weather in oslo now"))
    assert set(r.trajectory_ids) == {newest, again}
    r = memory.retrieve("alice", user_msg("weather in oslo"), include_superseded=True)
    assert len(r.trajectory_ids) == 4


def _weather(user: str, units: str) -> dict[str, object]:
    item = weather_item(user, 0, units)
    return {
        "user_id": user,
        "messages": item["messages"],
        "tools": item["tools"],
        "chosen": item["chosen"],
    }


def test_recency_weighting_in_turns(store_location: str) -> None:
    memory = make_memory(store_location, k=3)
    ids = [
        memory.record_vector(
            "alice",
            user_msg("weather in oslo"),
            WEATHER_TOOLS,
            weather_item("alice", 0)["chosen"],
            _random_vector(memory, i),
        )
        for i in range(3)
    ]
    plain = memory.retrieve("alice", user_msg("weather in oslo"))
    assert plain.weights == pytest.approx([1 / 3] * 3)
    r = memory.retrieve("alice", user_msg("weather in oslo"), recency_half_life=1.0)
    assert r.trajectory_ids == ids[::-1]
    assert r.ages == [0.0, 1.0, 2.0]
    assert r.weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_a_store_with_metadata_of_an_older_version_still_opens(store_location: str) -> None:
    """Trajectories an older version wrote with a ``contrasts_tool`` flag read, retrieve and
    export as before: the key is ignored."""
    prefix = new_prefix()
    memory = make_memory(store_location, prefix)
    ids = memory.record_many([weather_item("alice", i) for i in range(2)], progress=False)
    t = memory.store.collections.trajectories("alice")
    metas = t.get(ids=ids)["metadatas"]
    t.update(ids=ids, metadatas=[{**m, "contrasts_tool": i == 0} for i, m in enumerate(metas)])
    reopened = make_memory(store_location, prefix)
    assert [r.id for r in reopened.store.get("alice", with_payload=True)] == ids
    r = reopened.retrieve("alice", user_msg("what is the weather in oslo now"))
    assert r.reason == "steered" and set(r.trajectory_ids) <= set(ids)
    assert "contrasts_tool" not in str(r.explain())


def test_export_import_round_trip(store_location: str, tmp_path: Path) -> None:
    memory = make_memory(store_location)
    ids = memory.record_many([weather_item("alice", i) for i in range(3)], progress=False)
    memory.record(**_weather("alice", "fahrenheit"), supersedes=ids[0])
    path = tmp_path / "alice.jsonl"
    assert memory.export_user("alice", path) == 4
    before = {t.id: memory.get_vector("alice", t.id) for t in memory.list_trajectories("alice")}

    # Into a fresh store (same model): same ids, bit-exact vectors, supersession kept.
    fresh = make_memory(tmp_path / "other-store")
    assert fresh.import_user(path) == 4
    assert fresh.import_user(path) == 0  # already there
    for tid, v in before.items():
        assert fresh.get_vector("alice", tid) == v
    listed = {t.id: t for t in fresh.list_trajectories("alice")}
    assert listed[ids[0]].superseded
    assert ids[0] not in fresh.retrieve("alice", user_msg("weather in oslo now")).trajectory_ids

    # Under another user id in the same store: new ids, same vectors.
    assert memory.import_user(path, as_user="carol") == 4
    carol = memory.list_trajectories("carol")
    assert not {t.id for t in carol} & set(before)
    assert sorted(memory.get_vector("carol", t.id).tensor.sum().item() for t in carol) == sorted(
        v.tensor.sum().item() for v in before.values()
    )
    # Another model's store refuses the file.
    other = make_memory(tmp_path / "third", lm=tiny_lm("llama", seed=1))
    other.record(**_weather("zed", "celsius"))
    with pytest.raises(StoreLayoutError):
        other.import_user(path)


def test_store_location_errors(tmp_path: Path) -> None:
    from fints_agent.memory import StoreError

    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        TrajectoryStore(tmp_path / "file")
    with pytest.raises(StoreError, match="unsupported store URL"):
        TrajectoryStore("ftp://host/x")
    with pytest.raises(StoreError, match="prefix"):
        TrajectoryStore(tmp_path / "s", collection_prefix="bad prefix!")
