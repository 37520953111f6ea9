"""Tests of ``fints-agent eval {personal,bfcl}`` and ``fints-agent tune``: arguments and wiring.

The model is replaced by the tiny random one and the engine by an LM-free stand-in: what is
tested is the command line, not the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from tiny import tiny_lm

from fints_agent import cli
from fints_agent.calls import ToolCall
from fints_agent.eval.commands import set_threads
from fints_agent.turn import TurnRequest, TurnResult

DATA = Path(__file__).resolve().parent / "data" / "personal_small.jsonl"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Cache in a temp dir, one torch thread, and no real model load."""
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)

    def fake_load(name: str | None = None, **_: Any) -> Any:
        return tiny_lm("llama")

    monkeypatch.setattr("fints_agent.models.load_model", fake_load)
    yield
    torch.set_num_threads(before)


class EchoEngine:
    """Answers every turn with the first offered tool and no arguments."""

    seen: ClassVar[list[TurnRequest]] = []

    memories: ClassVar[list[Any]] = []

    last: ClassVar[EchoEngine | None] = None

    def __init__(self, lm: Any, memory: Any = None, preset: Any = None) -> None:
        self.memory = memory
        self.preset = preset
        self.memories.append(memory)
        EchoEngine.last = self

    def complete_batch(self, requests: Sequence[TurnRequest]) -> list[TurnResult]:
        self.seen.extend(requests)
        return [
            TurnResult("", "", [ToolCall(r.tools[0].name, {})], [], 42, 3, "stop", {})
            for r in requests
        ]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the model must not load before the arguments are checked")

    monkeypatch.setattr("fints_agent.models.load_model", refuse)


# --------------------------------------------------------------------------------------------
# Argument errors: a clear message and exit code 2, before any model loads
# --------------------------------------------------------------------------------------------


def test_unknown_method(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_model(monkeypatch)
    code, _, err = _run(["eval", "personal", "--data", str(DATA), "--method", "magic"], capsys)
    assert code == 2
    assert "invalid choice: 'magic'" in err and "rag+steer" in err


def test_missing_data_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_model(monkeypatch)
    missing = tmp_path / "nope.jsonl"
    bfcl = ["eval", "bfcl", "--category", "simple_python", "--steer-from-user", "u1"]
    for argv in (
        ["eval", "personal", "--data", str(missing), "--method", "rag"],
        ["tune", "--data", str(missing)],
        [*bfcl, "--data", str(missing)],
    ):
        code, _, err = _run(argv, capsys)
        assert code == 2, argv
        assert f"no such file: {missing}" in err


def test_malformed_data_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_model(monkeypatch)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u1", "turn": 0\n')
    code, _, err = _run(["eval", "personal", "--data", str(bad), "--method", "rag"], capsys)
    assert code == 2
    assert f"fints-agent: error: {bad}:1: malformed JSON" in err


PERSONAL_RAG = ["eval", "personal", "--data", str(DATA), "--method", "rag"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "personal", "--data", str(DATA)], "--method"),
        (["eval", "personal", "--method", "rag"], "--data"),
        (["eval", "personal", "--data", str(DATA), "--method", "rag", "--limit", "0"], "positive"),
        (["eval", "personal", "--data", str(DATA), "--method", "rag", "--k", "x"], "positive"),
        ([*PERSONAL_RAG, "--batch-size", "0"], "positive"),
        (["eval", "bfcl", "--category", "nope"], "invalid choice"),
        (["eval", "bfcl"], "--category"),
        (["eval"], "eval_command"),
        (["tune", "--data", str(DATA), "--budget", "0"], "positive"),
    ],
)
def test_argument_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_model(monkeypatch)
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err


def test_bfcl_steer_options_go_together(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_model(monkeypatch)
    code, _, err = _run(
        ["eval", "bfcl", "--category", "simple_python", "--steer-from-user", "u01"], capsys
    )
    assert code == 2 and "--steer-from-user and --data go together" in err
    code, _, err = _run(
        ["eval", "bfcl", "--category", "simple_python", "--data", str(DATA)], capsys
    )
    assert code == 2 and "go together" in err


def test_bfcl_unknown_steer_user(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bfcl_eval")
    _no_model(monkeypatch)
    argv = ["eval", "bfcl", "--category", "simple_python", "--data", str(DATA)]
    code, _, err = _run([*argv, "--steer-from-user", "nobody"], capsys)
    assert code == 2 and "user 'nobody' has no history records" in err


def test_commands_are_registered() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["eval", "personal", "--data", str(DATA), "--method", "knn"])
    assert args.method == "knn" and args.k is None and not args.online and args.batch_size == 8
    assert not args.copy_strings and args.vectors is None
    args = parser.parse_args(["eval", "bfcl", "--category", "irrelevance", "--limit", "5"])
    assert args.category == "irrelevance" and args.limit == 5
    args = parser.parse_args(["tune", "--data", str(DATA)])
    assert args.budget == 25.0 and args.users == 12 and args.dev_per_user == 3


# --------------------------------------------------------------------------------------------
# Wiring, with the tiny model and a stand-in engine
# --------------------------------------------------------------------------------------------


def test_personal_command_prints_json_and_writes_rows(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("fints_agent.engine.TurnEngine", EchoEngine)
    out = tmp_path / "rows.jsonl"
    argv = ["eval", "personal", "--data", str(DATA), "--method", "steer", "--limit", "3"]
    argv += ["--embedder", "lm", "--out", str(out), "--quiet", "--recency-half-life", "4", "--json"]
    EchoEngine.seen.clear()
    EchoEngine.memories.clear()
    code, stdout, _ = _run([*argv, "--copy-strings", "--vectors", "demonstration"], capsys)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["copy_strings"] is True
    assert summary["config"]["vector_kind"] == "demonstration"
    assert set(summary["config"]) >= {"retrieval", "steering", "vector_kind"}
    assert [m.layout.vectors for m in EchoEngine.memories] == ["demonstration"]
    assert len(EchoEngine.seen) == 3 and all(r.copy_strings for r in EchoEngine.seen)
    assert summary["method"] == "steer" and summary["n"] == 3
    assert summary["valid_rate"] is not None and summary["mean_prompt_tokens"] == 42.0
    assert summary["config"]["retrieval"]["recency_half_life"] == 4.0
    assert summary["k"] == summary["config"]["retrieval"]["k"]
    assert EchoEngine.last is not None
    assert EchoEngine.last.preset.model_dump() == summary["config"]
    assert summary["rows_file"] == str(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and {"domain", "user_kind", "n_history_domain"} <= set(rows[0])


def test_knn_command_runs_without_the_engine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("knn must not build a turn engine")

    monkeypatch.setattr("fints_agent.engine.TurnEngine", refuse)
    argv = ["eval", "personal", "--data", str(DATA), "--method", "knn", "--embedder", "lm"]
    code, stdout, _ = _run([*argv, "--quiet", "--online", "--json"], capsys)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["method"] == "knn" and summary["n"] == 8 and summary["online"] is True
    assert summary["mean_prompt_tokens"] is None


def test_bfcl_no_harm_command_reports_the_preset(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bfcl_eval")
    from fints_agent.config import Preset

    monkeypatch.setattr("fints_agent.engine.TurnEngine", EchoEngine)
    EchoEngine.memories.clear()
    argv = ["eval", "bfcl", "--category", "simple_python", "--limit", "2", "--data", str(DATA)]
    code, stdout, err = _run(
        [*argv, "--steer-from-user", "u01", "--embedder", "lm", "--quiet"], capsys
    )
    assert code == 0, err
    result = json.loads(stdout)
    preset = Preset.for_model(tiny_lm("llama").fingerprint)
    assert result["config"] == preset.model_dump()
    assert result["config"]["vector_kind"] == preset.vector_kind
    assert result["steer_user"] == "u01" and result["n"] == 2
    assert {"unsteered", "steered", "accuracy_delta", "no_harm"} <= set(result)
    # Unsteered without a memory, steered with the user's fixed mean vector.
    plain, steered = EchoEngine.memories
    assert plain is None and steered.label == "mean:u01"


def test_set_threads() -> None:
    assert set_threads(1) == 1
    assert set_threads(None) >= 1


def test_personal_and_tune_reuse_the_recorded_history(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("fints_agent.engine.TurnEngine", EchoEngine)
    personal = ["eval", "personal", "--data", str(DATA), "--method", "steer", "--limit", "3"]
    personal += ["--embedder", "lm", "--json"]
    recorded = []
    for extra in ([], [], ["--fresh"]):
        code, stdout, err = _run([*personal, *extra], capsys)
        assert code == 0, err
        summary = json.loads(stdout)
        recorded.append(summary["recorded_trajectories"])
        assert summary["n"] == 3
        assert Path(summary["history_store"]).parent == tmp_path / "cache" / "eval-history"
        assert f"recorded {recorded[-1]} trajectories" in err
    assert recorded[0] > 0 and recorded == [recorded[0], 0, recorded[0]]
    code, stdout, err = _run([*personal, "--quiet"], capsys)
    assert json.loads(stdout)["ingest_seconds"] == 0.0 and err == ""

    tune = ["tune", "--data", str(DATA), "--embedder", "lm", "--steps", "k", "--no-save"]
    tune += ["--users", "2", "--dev-per-user", "1", "--quiet"]
    results = []
    for extra in ([], [], ["--fresh"]):
        code, stdout, err = _run([*tune, *extra], capsys)
        assert code == 0, err
        results.append(json.loads(stdout))
    counts = [r["recorded_trajectories"] for r in results]
    assert counts[0] == results[0]["ingest_turns"] > 0 and counts == [counts[0], 0, counts[0]]
    assert results[1]["ingest_seconds"] == 0.0
    assert results[0]["history_store"] == results[1]["history_store"] == results[2]["history_store"]
    assert [r["table"][0]["score"] for r in results] == [results[0]["table"][0]["score"]] * 3


def test_fresh_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["eval", "personal", "--help"], ["tune", "--help"]):
        code, out, _ = _run(argv, capsys)
        assert code == 0 and "--fresh" in out and "user cache" in " ".join(out.split())


# --------------------------------------------------------------------------------------------
# What eval personal prints: a table by default, JSON with --json, baselines with --compare
# --------------------------------------------------------------------------------------------


def test_personal_prints_a_table_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fints_agent.engine.TurnEngine", EchoEngine)
    argv = ["eval", "personal", "--data", str(DATA), "--method", "steer", "--limit", "3"]
    code, stdout, _ = _run([*argv, "--embedder", "lm", "--quiet"], capsys)
    assert code == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(stdout)
    lines = stdout.splitlines()
    assert len(lines) == 4, stdout  # heading, header, one method, the --json hint
    assert lines[0].startswith("personal_small.jsonl") and "3 test turns of" in lines[0]
    header = "method function acc call acc valid turns seconds"
    assert lines[1].split() == header.split()
    row = lines[2].split()
    assert row[0] == "steer" and row[-2] == "3"
    assert row[2].endswith("/3)") and row[4].endswith("/3)")
    assert "--json" in lines[3]


def test_personal_compare_runs_the_baselines_on_the_same_memory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("fints_agent.engine.TurnEngine", EchoEngine)
    EchoEngine.memories.clear()
    out = tmp_path / "rows.jsonl"
    argv = ["eval", "personal", "--data", str(DATA), "--method", "steer", "--limit", "3"]
    argv += ["--embedder", "lm", "--quiet", "--compare", "--out", str(out)]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0
    methods = [line.split()[0] for line in stdout.splitlines()[2:-1]]
    assert methods == ["zero-shot", "rag", "steer"]
    # zero-shot has no memory; rag and steer read the same recorded store.
    assert EchoEngine.memories[0] is None
    rag_memory, steer_memory = EchoEngine.memories[1:]
    assert rag_memory.store.location == steer_memory.store.location
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["zero-shot"] * 3 + ["rag"] * 3 + ["steer"] * 3

    code, stdout, _ = _run([*argv, "--json"], capsys)
    summaries = json.loads(stdout)
    assert [s["method"] for s in summaries] == ["zero-shot", "rag", "steer"]
    assert [s["recorded_trajectories"] for s in summaries] == [0, 0, 0]  # the kept store
    assert all(s["n"] == 3 and s["rows_file"] == str(out) for s in summaries)


def test_compare_keeps_the_method_order() -> None:
    from fints_agent.eval.commands import _personal_methods

    assert _personal_methods("knn", True) == ["zero-shot", "rag", "knn"]
    assert _personal_methods("rag", True) == ["zero-shot", "rag"]
    assert _personal_methods("rag+steer", False) == ["rag+steer"]
