"""The example files run, and the README shows exactly their code."""

from __future__ import annotations

import ast
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```\n", re.S)


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_readme_agent_snippets_are_example_files_verbatim() -> None:
    """Every Python block of "Use it in an agent" is an example file, shown byte for byte."""
    section = _section("Use it in an agent")
    blocks = section.count("```python\n")
    shown = MARKER.findall(section)
    assert blocks >= 1 and len(shown) == blocks, "each Python block needs an example marker"
    for path, code in shown:
        assert (ROOT / path).read_text(encoding="utf-8") == code, f"README drifted from {path}"
        ast.parse(code)


@pytest.mark.model
def test_agent_two_users_example_calls_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's agent example, as written, on the default model with a real Chroma memory
    in a temporary directory: every request gets a tool call (no option needed), alice's turn
    is steered by her feedback and bob's, without history, is not."""
    monkeypatch.chdir(tmp_path)  # the example's ./memory
    names = runpy.run_path(str(ROOT / "examples" / "agent_two_users.py"))
    assert (tmp_path / "memory").is_dir()
    out = capsys.readouterr().out.splitlines()
    calls = {line.split(" ", 1)[0]: line for line in out[0::2]}
    assert set(calls) == {"alice", "bob"}
    tool_names = {t.name for t in names["tools"]}
    for user, line in calls.items():
        called = ast.literal_eval(line.split(" ", 1)[1])
        assert called and {name for name, _ in called} <= tool_names, (user, line)
    assert "'steered': True" in out[1] and "'steered': False" in out[3]
    assert names["ai"].tool_calls  # bob's answer, the last one
