"""The example files run, and the README and docs show exactly their code and valid commands."""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from fints_agent.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```\n", re.S)
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```\n", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
RUN_HERE = {
    "examples/agent_two_users.py",
    "examples/chroma_server.py",
    "examples/custom_model.py",
}
"""The example files the tests below run."""


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_readme_agent_snippets_are_example_files_verbatim() -> None:
    """Every Python block of "Use it in an agent" is an example file, shown byte for byte."""
    section = _section("Use it in an agent")
    blocks = section.count("```python\n")
    shown = MARKER.findall(section)
    assert blocks >= 1 and len(shown) == blocks, "each Python block needs an example marker"
    for path, code in shown:
        assert (ROOT / path).read_text(encoding="utf-8") == code, f"README drifted from {path}"
        ast.parse(code)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_doc_snippets_are_example_files_verbatim(page: Path) -> None:
    """A Python block anywhere in the README or the docs is an example file that a test here
    runs, shown byte for byte after its marker."""
    text = page.read_text(encoding="utf-8")
    shown = MARKER.findall(text)
    assert text.count("```python\n") == len(shown), f"{page.name}: a Python block lacks a marker"
    for path, code in shown:
        assert path in RUN_HERE, f"{page.name} shows {path}, which no test here runs"
        assert (ROOT / path).read_text(encoding="utf-8") == code, f"{page.name} drifted from {path}"


def test_every_example_is_run_here() -> None:
    """A new example file needs a test here that runs it."""
    found = {p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").glob("*.py")}
    assert found == RUN_HERE


def _command_lines() -> list[tuple[str, str]]:
    lines = []
    for page in DOCS:
        for block in SHELL_BLOCK.findall(page.read_text(encoding="utf-8")):
            for line in block.splitlines():
                if line.startswith("fints-agent "):
                    lines.append((page.name, line))
    return lines


@pytest.mark.parametrize(("page", "line"), _command_lines())
def test_doc_commands_parse(page: str, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``fints-agent`` command the README and the docs show is one the CLI accepts."""
    monkeypatch.chdir(ROOT)  # relative paths in the docs are relative to the repository
    words = shlex.split(line, comments=True)[1:]
    build_parser().parse_args(words)


def test_doc_links_resolve() -> None:
    """Relative links of the README and the docs name files that exist, and their anchors
    name headings of those files."""
    for page in DOCS:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name}: broken link {target}"
            if anchor and file.suffix == ".md":
                assert anchor in _anchors(file.read_text(encoding="utf-8")), (
                    f"{page.name}: no heading for {target}"
                )


def _calls(line: str) -> list[tuple[str, dict[str, object]]]:
    """The calls a printed line ``user [(name, args), ...]`` shows."""
    return ast.literal_eval(line.split(" ", 1)[1])


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
        called = _calls(line)
        assert called and {name for name, _ in called} <= tool_names, (user, line)
    assert "'steered': True" in out[1] and "'steered': False" in out[3]
    assert names["ai"].tool_calls  # bob's answer, the last one


@pytest.mark.model
@pytest.mark.server
def test_chroma_server_example_steers_from_the_server(
    chroma_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``examples/chroma_server.py URL`` against a real ``chroma run`` server on loopback: the
    feedback it records is on the server, and the next turn is a valid call steered by it."""
    monkeypatch.chdir(tmp_path)  # nothing may be written beside the example
    monkeypatch.setattr(sys, "argv", ["chroma_server.py", chroma_server])
    names = runpy.run_path(str(ROOT / "examples" / "chroma_server.py"))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("carol ")
    called = _calls(out[0])
    assert [name for name, _ in called] == ["get_weather"], out[0]
    assert "'steered': True" in out[1]
    assert out[2] == f"{chroma_server}: 1 users, 1 trajectories"
    assert names["memory"].store.location == chroma_server
    assert list(tmp_path.iterdir()) == []  # the memory is on the server, not in a directory


@pytest.mark.model
def test_custom_model_example_runs_on_a_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``examples/custom_model.py`` as a user runs it, without arguments: it saves the default
    model to ./my-model, loads that directory with transformers, gives the model object to the
    chat model, and steers the user with feedback while the user without history is not
    steered."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["custom_model.py"])
    try:
        names = runpy.run_path(str(ROOT / "examples" / "custom_model.py"))
        out = capsys.readouterr().out.splitlines()
        lm = names["lm"]
        # A saved copy of the default model keeps its fingerprint, hence its shipped preset.
        assert out[0] == f"./my-model 30 layers {lm.fingerprint} preset"
        assert lm.model is names["model"]  # the user's own object serves the turns
        assert lm.source == "memory" and (tmp_path / "memory-custom").is_dir()
        tool_names = {t.name for t in names["tools"]}
        assert [line.split(" ", 1)[0] for line in out[1::2]] == ["dana", "erin"]
        for line in out[1::2]:
            called = _calls(line)
            assert called and {name for name, _ in called} <= tool_names, line
        assert "'steered': True" in out[2] and "'steered': False" in out[4]
    finally:
        shutil.rmtree(tmp_path / "my-model", ignore_errors=True)  # ~0.5 GB of weights
