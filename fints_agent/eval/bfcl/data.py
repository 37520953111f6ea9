"""BFCL data: the single-turn AST categories, read from the installed ``bfcl-eval`` package.

The data ships inside the PyPI package ``bfcl-eval`` (``bfcl_eval/data/BFCL_v4_<category>.json``,
answers under ``possible_answer/``). Install it with ``fints-agent setup --eval`` (which runs
``pip install --no-deps`` with the pinned version): a full install pulls every API SDK, and none
of them is needed here.

Example:
    >>> cases = load_bfcl("simple_python", limit=5)
    >>> cases[0].question, cases[0].tools[0]["function"]["name"]
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fints_agent.eval.bfcl.tools import bfcl_tools, tool_name_map

__all__ = ["AST_CATEGORIES", "BfclCase", "bfcl_data_dir", "load_bfcl"]

AST_CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
"""Single-turn Python categories that this module loads and grades."""


@dataclass
class BfclCase:
    """One BFCL test case.

    Attributes:
        id: The BFCL id, e.g. ``simple_python_0``.
        category: The category, e.g. ``simple_python``.
        messages: The chat messages of the (single) turn: ``[{"role", "content"}]``.
        functions: The BFCL function docs, unchanged (the checker needs them).
        possible_answer: The BFCL ground truth (a list of ``{func_name: {arg: [options]}}``),
            or None where the category has no answers (irrelevance, relevance).
        tools: The function docs as OpenAI function tools with JSON-schema parameters.
        name_map: Tool name (as in ``tools``) to original BFCL function name.
    """

    id: str
    category: str
    messages: list[dict[str, str]]
    functions: list[dict[str, Any]]
    possible_answer: list[dict[str, Any]] | None
    tools: list[dict[str, Any]] = field(default_factory=list)
    name_map: dict[str, str] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The content of the last user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content", "")
        return self.messages[-1].get("content", "") if self.messages else ""


def bfcl_data_dir() -> Path:
    """Returns the ``data`` folder of the installed ``bfcl_eval`` package.

    Raises:
        ImportError: ``bfcl-eval`` is not installed.
    """
    from fints_agent.install import BFCL, MissingPackageError, missing_message

    spec = importlib.util.find_spec(BFCL.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(missing_message(BFCL))
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _category_file(folder: Path, category: str) -> Path | None:
    pattern = re.compile(rf"BFCL_v(\d+)_{re.escape(category)}\.json")
    found = []
    for path in folder.glob("BFCL_v*.json"):
        match = pattern.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_bfcl(category: str, limit: int | None = None) -> list[BfclCase]:
    """Loads the cases of one BFCL category from the installed ``bfcl-eval`` package.

    Args:
        category: One of :data:`AST_CATEGORIES` (e.g. ``simple_python``, ``multiple``,
            ``parallel``, ``parallel_multiple``, ``irrelevance``, ``live_simple``).
        limit: Keep only the first ``limit`` cases (file order).

    Returns:
        The cases, with converted tools and the tool-name map.

    Raises:
        ValueError: The category is unknown or not a single-turn Python AST category.
        ImportError: ``bfcl-eval`` is not installed.
    """
    if category not in AST_CATEGORIES:
        raise ValueError(
            f"unsupported BFCL category {category!r}; supported: {', '.join(AST_CATEGORIES)}"
        )
    folder = bfcl_data_dir()
    questions_file = _category_file(folder, category)
    if questions_file is None:
        raise ValueError(f"no data file for BFCL category {category!r} under {folder}")
    entries = _read_jsonl(questions_file)
    if limit is not None:
        entries = entries[: max(limit, 0)]

    answers: dict[str, list[dict[str, Any]]] = {}
    if not _answerless(category):
        answers_file = _category_file(folder / "possible_answer", category)
        if answers_file is None:
            raise ValueError(f"no possible answers for BFCL category {category!r}")
        answers = {entry["id"]: entry["ground_truth"] for entry in _read_jsonl(answers_file)}

    cases = []
    for entry in entries:
        turns = entry["question"]
        if len(turns) != 1:
            raise ValueError(f"BFCL case {entry['id']} has {len(turns)} turns; expected 1")
        functions = entry["function"]
        possible = None
        if not _answerless(category):
            if entry["id"] not in answers:
                raise ValueError(f"BFCL case {entry['id']} has no possible answer")
            possible = answers[entry["id"]]
        cases.append(
            BfclCase(
                id=entry["id"],
                category=category,
                messages=[{"role": m["role"], "content": m["content"]} for m in turns[0]],
                functions=functions,
                possible_answer=possible,
                tools=bfcl_tools(functions),
                name_map=tool_name_map(functions),
            )
        )
    return cases


def _answerless(category: str) -> bool:
    return "irrelevance" in category or "relevance" in category
