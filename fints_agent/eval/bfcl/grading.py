"""Grading BFCL predictions with the official AST checker, and the gold calls of a case.

* :func:`check_case` grades calls with the official AST checker,
  ``bfcl_eval.eval_checker.ast_eval.ast_checker.ast_checker``. The checker module imports
  ``bfcl_eval.constants.model_config`` (which imports every model handler and their SDKs) only to
  read ``MODEL_CONFIG_MAPPING[name].underscore_to_dot``; a small stand-in module is registered
  under that name while the checker is imported, so none of the handlers is loaded.
* :func:`calls_valid` checks calls against the tools' schemas; :func:`gold_calls` gives the
  calls a perfect model would make.
* :func:`evaluate_bfcl` runs a predictor over a category and reports accuracy and validity.

Example:
    >>> report = evaluate_bfcl("simple_python", gold_calls, limit=20)
    >>> report["accuracy"], report["valid_rate"]
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fints_agent.eval.bfcl.data import BfclCase, bfcl_data_dir, load_bfcl
from fints_agent.eval.bfcl.tools import legal_tool_name
from fints_agent.eval.dataset import schema_validator

__all__ = ["CHECKER_MODEL_NAME", "calls_valid", "check_case", "evaluate_bfcl", "gold_calls"]

CHECKER_MODEL_NAME = "fints-agent"
"""The model name passed to the BFCL checker (tool names are mapped back before checking)."""

_CHECKER: Callable[..., dict[str, Any]] | None = None


def _ast_checker() -> Callable[..., dict[str, Any]]:
    """Imports the official AST checker without loading BFCL's model handlers."""
    global _CHECKER
    if _CHECKER is not None:
        return _CHECKER
    os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl-"))
    checker_name = "bfcl_eval.eval_checker.ast_eval.ast_checker"
    config_name = "bfcl_eval.constants.model_config"
    entry = types.SimpleNamespace(underscore_to_dot=False)
    module = sys.modules.get(checker_name)
    if module is None:
        bfcl_data_dir()  # a clear ImportError when bfcl-eval is missing
        stand_in = None
        if config_name not in sys.modules:
            stand_in = types.ModuleType(config_name)
            stand_in.MODEL_CONFIG_MAPPING = {}  # type: ignore[attr-defined]
            sys.modules[config_name] = stand_in
        try:
            module = importlib.import_module(checker_name)
        finally:
            if stand_in is not None and sys.modules.get(config_name) is stand_in:
                del sys.modules[config_name]
    mapping = module.MODEL_CONFIG_MAPPING
    mapping.setdefault(CHECKER_MODEL_NAME.replace("_", "/"), entry)
    _CHECKER = module.ast_checker
    return _CHECKER


def _python_language() -> Any:
    from bfcl_eval.constants.enums import Language

    return Language.PYTHON


def _arguments(call: Mapping[str, Any]) -> Any:
    arguments = call.get("arguments", call.get("args", {}))
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return arguments
    return arguments


def _format_error(result: Mapping[str, Any]) -> str:
    errors = result.get("error") or []
    text = "; ".join(e if isinstance(e, str) else json.dumps(e, default=str) for e in errors)
    kind = result.get("error_type")
    message = f"{kind}: {text}" if kind else text or "rejected by the checker"
    return message if len(message) <= 1000 else message[:997] + "..."


def check_case(case: BfclCase, calls: Sequence[Mapping[str, Any]]) -> tuple[bool, str | None]:
    """Grades predicted calls for one case with the official BFCL AST checker.

    Tool names are mapped back to BFCL names with ``case.name_map`` (BFCL names are accepted as
    they are). Irrelevance cases are correct when no call is made; relevance cases when at
    least one call is made.

    Args:
        case: The case.
        calls: The predicted calls, ``[{"name": str, "arguments": dict}]`` (``args`` and JSON
            string arguments are accepted too), in the order the model made them.

    Returns:
        ``(correct, error)``: the error is None when correct, else the checker's reason.
    """
    if "irrelevance" in case.category:
        if calls:
            return False, f"made {len(calls)} call(s) where none was expected"
        return True, None
    if "relevance" in case.category:
        return (True, None) if calls else (False, "made no call where one was expected")
    if case.possible_answer is None:
        raise ValueError(f"case {case.id} has no possible answer to check against")
    if not calls:
        return False, "made no call"
    model_output: list[dict[str, Any]] = []
    for call in calls:
        name = str(call.get("name", ""))
        original = case.name_map.get(name, name)
        arguments = _arguments(call)
        if not isinstance(arguments, dict):
            return False, f"arguments of '{name}' are not a JSON object"
        model_output.append({original: arguments})
    try:
        result = _ast_checker()(
            case.functions,
            model_output,
            case.possible_answer,
            _python_language(),
            case.category,
            CHECKER_MODEL_NAME,
        )
    except Exception as exc:  # the checker assumes well-typed output in places
        return False, f"checker failed on the output: {type(exc).__name__}: {exc}"
    if result.get("valid"):
        return True, None
    return False, _format_error(result)


def calls_valid(case: BfclCase, calls: Sequence[Mapping[str, Any]]) -> bool:
    """Checks that every call names a tool of the case and validates against its schema.

    An empty prediction is valid on irrelevance categories only.

    Args:
        case: The case.
        calls: The predicted calls.

    Returns:
        Whether the prediction is schema-valid.
    """
    if not calls:
        return "irrelevance" in case.category
    tools = {tool["function"]["name"]: tool for tool in case.tools}
    by_original = {original: legal for legal, original in case.name_map.items()}
    for call in calls:
        name = str(call.get("name", ""))
        tool = tools.get(name) or tools.get(by_original.get(name, ""))
        if tool is None:
            return False
        arguments = _arguments(call)
        if not isinstance(arguments, dict):
            return False
        if not schema_validator(tool["function"]["parameters"]).is_valid(arguments):
            return False
    return True


def _pick(options: Any) -> Any:
    """The first allowed value that is not ``""`` (optional), else ``""``."""
    if not isinstance(options, list):
        return options
    for option in options:
        if not (isinstance(option, str) and option == ""):
            return option
    return ""


def _gold_value(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, options in value.items():
            picked = _pick(options)
            if not (isinstance(picked, str) and picked == ""):
                out[key] = _gold_value(picked)
        return out
    if isinstance(value, list):
        return [_gold_value(item) for item in value]
    return value


def gold_calls(case: BfclCase) -> list[dict[str, Any]]:
    """Turns the possible answer of a case into the calls a perfect model would make.

    Optional arguments (``""`` among the allowed values) are left out unless the function
    requires them; the others get their first allowed value that is not ``""``. Names are the
    tool names of ``case.tools``.

    Args:
        case: The case.

    Returns:
        ``[{"name", "arguments"}]``; empty for cases without answers.
    """
    if not case.possible_answer:
        return []
    by_original = {original: legal for legal, original in case.name_map.items()}
    required = {
        str(f["name"]): set((f.get("parameters") or {}).get("required") or [])
        for f in case.functions
    }
    calls = []
    for answer in case.possible_answer:
        for original, params in answer.items():
            needed = required.get(original, set())
            kept = {
                key: options
                for key, options in params.items()
                if key in needed or not (isinstance(options, list) and "" in options)
            }
            calls.append(
                {
                    "name": by_original.get(original, legal_tool_name(original)),
                    "arguments": _gold_value(copy.deepcopy(kept)),
                }
            )
    return calls


def evaluate_bfcl(
    category: str,
    predict: Callable[[BfclCase], Sequence[Mapping[str, Any]]],
    limit: int | None = None,
    progress: bool = True,
    cases: Sequence[BfclCase] | None = None,
) -> dict[str, Any]:
    """Runs a predictor on a BFCL category and grades it.

    Args:
        category: The BFCL category (see :data:`AST_CATEGORIES`).
        predict: ``predict(case) -> [{"name", "arguments"}]``; names are those of
            ``case.tools``. Exceptions propagate.
        limit: Evaluate only the first ``limit`` cases.
        progress: Show a tqdm progress bar.
        cases: Already loaded cases (default: ``load_bfcl(category, limit)``).

    Returns:
        ``{"category", "n", "accuracy", "valid_rate", "n_correct", "n_valid",
        "mean_latency_ms", "error_types", "results"}`` where ``results`` lists
        ``{"id", "correct", "valid", "error", "calls"}`` per case and ``error_types`` counts the
        checker's error kinds.
    """
    if cases is None:
        cases = load_bfcl(category, limit)
    elif limit is not None:
        cases = list(cases)[:limit]
    iterator: Iterable[BfclCase] = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc=f"BFCL {category}", unit="case")
    results: list[dict[str, Any]] = []
    elapsed = 0.0
    for case in iterator:
        start = time.perf_counter()
        calls = [dict(call) for call in predict(case)]
        elapsed += time.perf_counter() - start
        correct, error = check_case(case, calls)
        results.append(
            {
                "id": case.id,
                "correct": correct,
                "valid": calls_valid(case, calls),
                "error": error,
                "calls": calls,
            }
        )
    n = len(results)
    n_correct = sum(r["correct"] for r in results)
    n_valid = sum(r["valid"] for r in results)
    error_types = Counter(
        str(r["error"]).split(":", 1)[0] for r in results if r["error"] is not None
    )
    return {
        "category": category,
        "n": n,
        "accuracy": round(n_correct / n, 4) if n else None,
        "valid_rate": round(n_valid / n, 4) if n else None,
        "n_correct": n_correct,
        "n_valid": n_valid,
        "mean_latency_ms": round(1000 * elapsed / n, 1) if n else None,
        "error_types": dict(error_types.most_common()),
        "results": results,
    }
