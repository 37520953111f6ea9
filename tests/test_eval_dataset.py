"""Tests of the personalized dataset generator and the strict record loader."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

from fints_agent.calls.spans import request_span_pattern
from fints_agent.eval.dataset import (
    DatasetError,
    PersonalRecord,
    group_by_user,
    load_records,
    parse_record,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "data" / "personal_webapi.jsonl"
LIFESTYLE = ROOT / "examples" / "data" / "personal_lifestyle.jsonl"
LIFESTYLE_SEED = 1
SMALL_FILE = ROOT / "tests" / "data" / "personal_small.jsonl"


def _load_generator() -> ModuleType:
    path = ROOT / "tools" / "make_personal_dataset.py"
    spec = importlib.util.spec_from_file_location("make_personal_dataset", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(scope="module")
def default_records() -> list[dict[str, Any]]:
    return gen.generate(0)


@pytest.fixture(scope="module")
def lifestyle_records() -> list[dict[str, Any]]:
    return gen.generate(LIFESTYLE_SEED, domain_set="lifestyle")


@pytest.fixture(scope="module", params=["webapi", "lifestyle"])
def records(
    request: pytest.FixtureRequest,
    default_records: list[dict[str, Any]],
    lifestyle_records: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The records of each committed dataset (the quality tests run on both)."""
    return default_records if request.param == "webapi" else lifestyle_records


@pytest.fixture(scope="module")
def parsed(records: list[dict[str, Any]]) -> list[PersonalRecord]:
    return [parse_record(r, "generated", i + 1) for i, r in enumerate(records)]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _good_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "user_id": "u1",
        "turn": 0,
        "split": "history",
        "messages": [{"role": "user", "content": "What's the weather in Oslo?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "description": "Current weather.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string"},
                            "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        },
                        "required": ["location", "units"],
                    },
                },
            }
        ],
        "chosen": {
            "name": "get_current_weather",
            "arguments": {"location": "Oslo", "units": "celsius"},
        },
        "rejected": [
            {
                "name": "get_current_weather",
                "arguments": {"location": "Oslo", "units": "fahrenheit"},
            }
        ],
        "graded_args": ["location", "units"],
    }
    record.update(changes)
    return record


# ---------------------------------------------------------------------------- generator


def test_generator_is_deterministic_by_seed() -> None:
    first = gen.generate(7, gen.SMALL)
    assert first == gen.generate(7, gen.SMALL)
    assert first != gen.generate(8, gen.SMALL)


def test_committed_files_match_the_generator(default_records: list[dict[str, Any]]) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert lines == [gen.dumps(r) for r in default_records]
    small = SMALL_FILE.read_text(encoding="utf-8").splitlines()
    assert small == [gen.dumps(r) for r in gen.generate(0, gen.SMALL)]
    assert EXAMPLE.stat().st_size < 1_500_000


def test_committed_files_load() -> None:
    records = load_records(EXAMPLE)
    assert 600 <= len(records) <= 1000
    small = load_records(SMALL_FILE)
    assert 25 <= len(small) <= 45
    assert {r.meta["user_kind"] for r in small if r.meta} == {"sparse", "dense", "changed"}


def test_default_sizes(default_records: list[dict[str, Any]]) -> None:
    stats = gen.statistics(default_records)
    assert 24 <= stats["users"] <= 32
    assert 200 <= stats["records_by_split"]["test"] <= 260
    assert stats["records_by_split"]["history"] <= 800
    assert set(stats["records_by_domain"]) == set(gen.DOMAINS)
    for counts in stats["records_by_domain"].values():
        assert counts["test"] >= 20


def test_every_record_validates(parsed: list[PersonalRecord]) -> None:
    for record in parsed:
        assert record.meta is not None
        assert 2 <= len(record.tools) <= 4
        assert record.rejected, "every record needs a negative"
        assert record.graded_args
        names = {json.dumps(r.as_dict(), sort_keys=True) for r in record.rejected}
        assert len(names) == len(record.rejected)


def test_rejected_serialized_like_chosen(records: list[dict[str, Any]]) -> None:
    for record in records:
        for rejected in record["rejected"]:
            assert list(rejected) == list(record["chosen"]) == ["name", "arguments"]


def test_user_kinds(parsed: list[PersonalRecord]) -> None:
    per_domain: dict[tuple[str, str], int] = Counter()
    kinds = {}
    for record in parsed:
        assert record.meta is not None
        kinds[record.user_id] = record.meta["user_kind"]
        if record.split == "history":
            per_domain[(record.user_id, record.meta["domain"])] += 1
    assert set(kinds.values()) == {"sparse", "dense", "changed"}
    for user, kind in kinds.items():
        counts = [n for (u, _), n in per_domain.items() if u == user]
        if kind == "sparse":
            assert counts and all(1 <= n <= 3 for n in counts)
        if kind == "dense":
            assert max(counts) >= 20


def test_changed_users_change_preference(parsed: list[PersonalRecord]) -> None:
    changed = 0
    for user, split in group_by_user(parsed).items():
        by_domain: dict[str, list[PersonalRecord]] = defaultdict(list)
        for record in split.history:
            assert record.meta is not None
            by_domain[record.meta["domain"]].append(record)
        for domain, history in by_domain.items():
            phases = [r.meta["phase"] for r in history if r.meta]
            if "old" not in phases:
                continue
            changed += 1
            # Old turns first, then new ones; the preferences differ.
            assert phases == sorted(phases, key=lambda p: p != "old")
            assert "new" in phases
            metas = [r.meta for r in history if r.meta is not None]
            old = {json.dumps(m["preference"]) for m in metas if m["phase"] == "old"}
            new = {json.dumps(m["preference"]) for m in metas if m["phase"] == "new"}
            assert len(old) == 1 and len(new) == 1 and old != new
            dim = gen.MAIN_DIMENSION[domain]
            old_pref, new_pref = json.loads(old.pop()), json.loads(new.pop())
            assert old_pref[dim] != new_pref[dim]
            tests = [r for r in split.test if r.meta and r.meta["domain"] == domain]
            assert tests and all(r.meta["preference"] == new_pref for r in tests if r.meta)
            # The old preference's call for the same request is the first negative.
            for record in tests:
                assert record.rejected[0] != record.chosen
            assert split.history[0].meta is not None
            assert split.history[0].meta["user_kind"] == "changed", user
    assert changed >= 8


def test_requests_are_ambiguous_without_history(parsed: list[PersonalRecord]) -> None:
    """Users with different preferences answer the same kind of request differently."""
    by_family: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in parsed:
        assert record.meta is not None
        preferred = {a: record.chosen.arguments[a] for a in record.meta["preference_args"]}
        choice = json.dumps([record.chosen.name, preferred], sort_keys=True)
        by_family[(record.meta["domain"], record.meta["family"])].add(choice)
    for family, choices in by_family.items():
        assert len(choices) >= 2, family


def test_graded_args_are_copied_or_preferences(parsed: list[PersonalRecord]) -> None:
    for record in parsed:
        assert record.meta is not None
        copied, prefs = record.meta["copied_args"], record.meta["preference_args"]
        assert sorted(copied + prefs) == sorted(record.graded_args)
        text = record.request.lower()
        for name in copied:
            value = record.chosen.arguments[name]
            items = value if isinstance(value, list) else [value]
            for item in items:
                parts = item.values() if isinstance(item, dict) else [item]
                for part in parts:
                    assert str(part).lower() in text, (name, part, record.request)
        for name in prefs:
            value = record.chosen.arguments[name]
            assert isinstance(value, str) and value.lower() not in text


def test_history_before_test(parsed: list[PersonalRecord]) -> None:
    for split in group_by_user(parsed).values():
        assert split.history and split.test
        assert max(r.turn for r in split.history) < min(r.turn for r in split.test)
        turns = [r.turn for r in split.history + split.test]
        assert turns == list(range(len(turns)))


def _bow(text: str) -> Counter[str]:
    return Counter(re.findall(r"[a-z]+", text.lower()))


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(a[w] * b[w] for w in a)
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def test_same_domain_history_is_most_similar(parsed: list[PersonalRecord]) -> None:
    """By bag-of-words cosine, a test request is closest to the user's same-domain history."""
    nearest = closer_on_average = total = 0
    for split in group_by_user(parsed).values():
        history = [(r.meta["domain"], _bow(r.request)) for r in split.history if r.meta]
        for record in split.test:
            assert record.meta is not None
            domain, query = record.meta["domain"], _bow(record.request)
            scored = [(d, _cosine(query, bag)) for d, bag in history]
            nearest += max(scored, key=lambda item: item[1])[0] == domain
            same = [s for d, s in scored if d == domain]
            other = [s for d, s in scored if d != domain]
            assert same, "every test domain of a user has history"
            closer_on_average += not other or sum(same) / len(same) > sum(other) / len(other)
            total += 1
    assert nearest / total >= 0.85
    assert closer_on_average / total >= 0.9


def test_cli_writes_a_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.jsonl"
    assert gen.main(["--small", "--seed", "3", "--out", str(out), "--stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    records = load_records(out)
    assert stats["records"] == len(records)
    out2 = tmp_path / "sized.jsonl"
    gen.main(["--n-sparse", "2", "--n-dense", "0", "--n-changed", "1", "--out", str(out2)])
    kinds = {r.meta["user_kind"] for r in load_records(out2) if r.meta}
    assert kinds == {"sparse", "changed"}


# ---------------------------------------------------------------------------- lifestyle set


def _tool_names(domains: tuple[str, ...]) -> set[str]:
    return {tool["function"]["name"] for domain in domains for tool in gen.TOOLS[domain]}


def _enum_values(domains: tuple[str, ...]) -> set[str]:
    values: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            values.update(str(v) for v in node.get("enum", []))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for domain in domains:
        walk([tool["function"]["parameters"] for tool in gen.TOOLS[domain]])
    return values


def test_committed_lifestyle_file_matches_the_generator(
    lifestyle_records: list[dict[str, Any]],
) -> None:
    lines = LIFESTYLE.read_text(encoding="utf-8").splitlines()
    assert lines == [gen.dumps(r) for r in lifestyle_records]
    assert LIFESTYLE.stat().st_size < 2_000_000


def test_committed_lifestyle_file_loads() -> None:
    records = load_records(LIFESTYLE)
    assert 600 <= len(records) <= 1000
    assert {r.meta["user_kind"] for r in records if r.meta} == {"sparse", "dense", "changed"}
    assert {r.meta["domain"] for r in records if r.meta} == set(gen.LIFESTYLE_DOMAINS)


def test_domain_sets_are_disjoint() -> None:
    assert gen.DOMAIN_SETS["webapi"] == gen.DOMAINS
    webapi, lifestyle = gen.DOMAINS, gen.DOMAIN_SETS["lifestyle"]
    assert len(lifestyle) >= 5
    assert not set(webapi) & set(lifestyle)
    assert set(gen.TOOLS) == set(gen.REQUESTS) == set(gen.PREFERENCE_OPTIONS)
    assert set(gen.MAIN_DIMENSION) == set(webapi) | set(lifestyle)
    assert not _tool_names(webapi) & _tool_names(lifestyle)
    assert not _enum_values(webapi) & _enum_values(lifestyle)
    for domain in lifestyle:
        assert 2 <= len(gen.TOOLS[domain]) <= 3, domain


def test_committed_files_have_disjoint_domains_and_tools() -> None:
    def domains_and_tools(path: Path) -> tuple[set[str], set[str]]:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        domains = {r["meta"]["domain"] for r in records}
        tools = {t["function"]["name"] for r in records for t in r["tools"]}
        return domains, tools

    webapi_domains, webapi_tools = domains_and_tools(EXAMPLE)
    lifestyle_domains, lifestyle_tools = domains_and_tools(LIFESTYLE)
    assert webapi_domains == set(gen.DOMAINS)
    assert lifestyle_domains == set(gen.LIFESTYLE_DOMAINS)
    assert not webapi_domains & lifestyle_domains
    assert not webapi_tools & lifestyle_tools


def test_lifestyle_sizes_match_the_default(
    default_records: list[dict[str, Any]], lifestyle_records: list[dict[str, Any]]
) -> None:
    first, second = gen.statistics(default_records), gen.statistics(lifestyle_records)
    assert second["users_by_kind"] == first["users_by_kind"]
    for split in ("history", "test"):
        a, b = first["records_by_split"][split], second["records_by_split"][split]
        assert abs(a - b) <= 0.15 * a, (split, a, b)
    assert set(second["records_by_domain"]) == set(gen.LIFESTYLE_DOMAINS)
    for counts in second["records_by_domain"].values():
        assert counts["test"] >= 20


def test_calls_validate_against_their_tool_schemas(records: list[dict[str, Any]]) -> None:
    for record in records:
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in record["tools"]}
        for call in [record["chosen"], *record["rejected"]]:
            schema = schemas[call["name"]]
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.Draft202012Validator(schema).validate(call["arguments"])


def _is_old_preference_call(
    chosen: dict[str, Any], call: dict[str, Any], old: str, new: str, tools: set[str]
) -> bool:
    """Whether ``call`` is ``chosen`` under the old value of the changed dimension: a value
    naming a tool picks the tool, ``tool:value`` picks both, any other fills enum arguments."""
    tool, _, value = old.partition(":")
    if value:
        return call["name"] == tool and value in call["arguments"].values()
    if old in tools:
        return call["name"] == old != chosen["name"]
    expected = {k: old if v == new else v for k, v in chosen["arguments"].items()}
    return (
        call["name"] == chosen["name"]
        and call["arguments"] == expected
        and expected != chosen["arguments"]
    )


def test_changed_users_reject_the_old_preference(records: list[dict[str, Any]]) -> None:
    """In a changed domain, the new-phase history turns rank the old preference's call for the
    same request first among the rejected calls (where the request's call depends on it)."""
    streams: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["split"] == "history" and record["meta"]["user_kind"] == "changed":
            streams[(record["user_id"], record["meta"]["domain"])].append(record)
    pairs = hits = total = 0
    for (_, domain), history in streams.items():
        old = [r for r in history if r["meta"]["phase"] == "old"]
        new = [r for r in history if r["meta"]["phase"] == "new"]
        if not old:
            continue
        dim = gen.MAIN_DIMENSION[domain]
        old_value = old[0]["meta"]["preference"][dim]
        new_value = new[0]["meta"]["preference"][dim]
        found = 0
        for record in new:
            tools = {t["function"]["name"] for t in record["tools"]}
            chosen, rejected = record["chosen"], record["rejected"][0]
            found += _is_old_preference_call(chosen, rejected, old_value, new_value, tools)
        assert found >= 1, (domain, old_value, new_value)
        pairs += 1
        hits += found
        total += len(new)
    assert pairs >= 8
    assert hits / total >= 0.6


def test_graded_free_strings_are_request_spans(records: list[dict[str, Any]]) -> None:
    """Graded free-text arguments are copied from the request as whole words, case kept."""
    for record in records:
        request = record["messages"][-1]["content"]
        pattern = request_span_pattern(request)
        assert pattern is not None
        spans = re.compile(pattern)
        tool = next(t for t in record["tools"] if t["function"]["name"] == record["chosen"]["name"])
        properties = tool["function"]["parameters"]["properties"]
        for name in record["graded_args"]:
            schema, value = properties[name], record["chosen"]["arguments"][name]
            if schema.get("type") == "string" and "enum" not in schema:
                assert spans.fullmatch(value), (name, value, request)


def test_cli_domain_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert gen.main(["--small", "--seed", "2", "--domain-set", "lifestyle", "--stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    records = load_records(tmp_path / "examples" / "data" / "personal_lifestyle.jsonl")
    assert stats["records"] == len(records)
    assert {r.meta["domain"] for r in records if r.meta} <= set(gen.LIFESTYLE_DOMAINS)
    with pytest.raises(SystemExit):
        gen.main(["--domain-set", "nope", "--out", str(tmp_path / "x.jsonl")])
    with pytest.raises(ValueError, match="unknown domain set 'nope'"):
        gen.generate(0, gen.SMALL, domain_set="nope")


# ---------------------------------------------------------------------------- loader


def test_load_accepts_records_without_meta(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ok.jsonl",
        [
            json.dumps(_good_record()),
            "",
            json.dumps(_good_record(turn=1, split="test")),
        ],
    )
    records = load_records(path)
    assert [r.turn for r in records] == [0, 1]
    assert records[0].meta is None
    assert records[0].request == "What's the weather in Oslo?"
    assert records[0].openai_tools()[0]["function"]["name"] == "get_current_weather"
    assert json.loads(records[0].to_json()) == _good_record()


def test_group_by_user_sorts_by_turn(tmp_path: Path) -> None:
    lines = [
        json.dumps(_good_record(user_id="b", turn=3, split="test")),
        json.dumps(_good_record(user_id="a", turn=1)),
        json.dumps(_good_record(user_id="b", turn=1)),
        json.dumps(_good_record(user_id="a", turn=0)),
        json.dumps(_good_record(user_id="b", turn=2, split="test")),
    ]
    grouped = group_by_user(load_records(_write(tmp_path / "g.jsonl", lines)))
    assert list(grouped) == ["b", "a"]
    assert [r.turn for r in grouped["b"].history] == [1]
    assert [r.turn for r in grouped["b"].test] == [2, 3]
    assert [r.turn for r in grouped["a"].history] == [0, 1]
    assert grouped["a"].test == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"user_id": "u1", "turn": 0,', "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({k: v for k, v in _good_record().items() if k != "chosen"}), "'chosen'"),
        (json.dumps(_good_record(turn="0")), "field 'turn'"),
        (json.dumps(_good_record(split="train")), "field 'split'"),
        (json.dumps(_good_record(extra=1)), "unknown field 'extra'"),
        (
            json.dumps(_good_record(chosen={"name": "send_sms", "arguments": {}})),
            "chosen tool 'send_sms' is not among the record's tools",
        ),
        (
            json.dumps(
                _good_record(
                    chosen={
                        "name": "get_current_weather",
                        "arguments": {"location": "Oslo", "units": "kelvin"},
                    }
                )
            ),
            "chosen arguments are invalid for tool 'get_current_weather' at units",
        ),
        (
            json.dumps(
                _good_record(
                    chosen={"name": "get_current_weather", "arguments": {"location": "Oslo"}}
                )
            ),
            "'units' is a required property",
        ),
        (json.dumps(_good_record(graded_args=["city"])), "graded_args ['city'] are not"),
        (
            json.dumps(_good_record(rejected=[_good_record()["chosen"]])),
            "identical to the chosen call",
        ),
        (
            json.dumps(_good_record(rejected=[{"name": "nope", "arguments": {}}])),
            "rejected[0] tool 'nope'",
        ),
    ],
)
def test_loader_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [json.dumps(_good_record()), "", line])
    with pytest.raises(DatasetError) as info:
        load_records(path)
    text = str(info.value)
    assert text.startswith(f"{path}:3: "), text
    assert message in text, text
    assert info.value.line == 3


def test_loader_rejects_invalid_tool_schema(tmp_path: Path) -> None:
    record = _good_record()
    record["tools"][0]["function"]["parameters"]["properties"]["units"]["type"] = "celsius"
    with pytest.raises(DatasetError, match="invalid parameters schema"):
        load_records(_write(tmp_path / "schema.jsonl", [json.dumps(record)]))


def test_loader_rejects_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DatasetError, match=r"empty\.jsonl: no records"):
        load_records(path)


def test_loader_rejects_huge_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(_good_record()) + "\n" + "x" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"huge\.jsonl:2: line is longer than 1000 bytes"):
        load_records(path, max_line_bytes=1000)


def test_loader_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"user_id": "\xe9"}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl:1: line is not valid UTF-8"):
        load_records(path)


def test_loader_rejects_duplicate_turns(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.jsonl", [json.dumps(_good_record())] * 2)
    with pytest.raises(DatasetError, match=r"dup\.jsonl:2: user 'u1' turn 0 already appears"):
        load_records(path)


def test_loader_rejects_history_after_test(tmp_path: Path) -> None:
    lines = [
        json.dumps(_good_record(turn=0, split="test")),
        json.dumps(_good_record(turn=1, split="history")),
    ]
    with pytest.raises(DatasetError, match="history must precede test"):
        load_records(_write(tmp_path / "order.jsonl", lines))


def test_loader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.jsonl")
