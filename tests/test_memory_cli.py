"""``fints-agent memory ...`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from memory_fixtures import make_memory, new_prefix, weather_item

from fints_agent.memory.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_memory_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, prefix = str(tmp_path / "store"), new_prefix()
    memory = make_memory(store, prefix)
    ids = memory.record_many(
        [weather_item("alice", i) for i in range(3)] + [weather_item("bob", 1)], progress=False
    )
    opts = ["--store", store, "--prefix", prefix]

    code, out = _run(capsys, "stats", *opts, "--json", "--per-user")
    stats = json.loads(out)
    assert code == 0 and stats["users"] == 2 and stats["trajectories"] == 4
    assert stats["per_user"] == {"alice": 3, "bob": 1}
    assert stats["layout"]["model_fingerprint"] == memory.lm.fingerprint
    code, out = _run(capsys, "stats", *opts)
    assert "trajectories: 4" in out

    code, out = _run(capsys, "list", "alice", *opts, "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == ids[:3]
    code, out = _run(capsys, "list", "alice", *opts, "--limit", "1")
    assert ids[0] in out and ids[1] not in out

    path = tmp_path / "alice.jsonl"
    code, out = _run(capsys, "export", "alice", str(path), *opts)
    assert code == 0 and len(path.read_text().splitlines()) == 4
    code, out = _run(capsys, "import", str(path), "--as-user", "carol", *opts, "--json")
    assert code == 0 and json.loads(out)["imported"] == 3

    code, out = _run(capsys, "delete", "carol", "nope", *opts)
    assert code == 1
    code, out = _run(capsys, "forget", "alice", *opts, "--yes", "--json")
    assert code == 0 and json.loads(out) == {"user_id": "alice", "deleted": 3}
    code, out = _run(capsys, "recover", *opts, "--full", "--json")
    assert code == 0 and json.loads(out)["dangling"] == 0
    code, out = _run(capsys, "stats", *opts, "--json", "--per-user")
    assert json.loads(out)["per_user"] == {"bob": 1, "carol": 3}


def test_memory_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--store", str(tmp_path / "missing")]) == 2
    assert "no store at" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"format": "other"}\n')
    (tmp_path / "s").mkdir()
    assert main(["import", str(tmp_path / "bad.jsonl"), "--store", str(tmp_path / "s")]) == 2
    assert "not a trajectory export" in capsys.readouterr().err
    assert main(["list", "", "--store", str(tmp_path / "s")]) == 2
    assert "user_id must be a non-empty string" in capsys.readouterr().err


def test_wired_into_the_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fints_agent.cli import main as fints_main

    (tmp_path / "s").mkdir()
    assert fints_main(["memory", "stats", "--store", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trajectories"] == 0
