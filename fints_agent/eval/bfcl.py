"""The Berkeley Function Calling Leaderboard (BFCL), single-turn AST categories, offline.

The data ships inside the PyPI package ``bfcl-eval`` (``bfcl_eval/data/BFCL_v4_<category>.json``,
answers under ``possible_answer/``). Install it with ``fints-agent setup --eval`` (which runs
``pip install --no-deps`` with the pinned version): a full install pulls every API SDK, and none
of them is needed here.

* :func:`load_bfcl` reads a category into :class:`BfclCase` objects.
* :func:`bfcl_tools` turns BFCL function docs (types like ``dict``, ``float``, ``tuple``,
  ``any``; names with dots) into valid JSON-schema OpenAI tools with legal names.
* :func:`check_case` grades calls with the official AST checker,
  ``bfcl_eval.eval_checker.ast_eval.ast_checker.ast_checker``. The checker module imports
  ``bfcl_eval.constants.model_config`` (which imports every model handler and their SDKs) only to
  read ``MODEL_CONFIG_MAPPING[name].underscore_to_dot``; a small stand-in module is registered
  under that name while the checker is imported, so none of the handlers is loaded.
* :func:`evaluate_bfcl` runs a predictor over a category and reports accuracy and validity.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fints_agent.calls.validators import schema_validator as local_validator
from fints_agent.eval.dataset import schema_validator

__all__ = [
    "AST_CATEGORIES",
    "BfclCase",
    "bfcl_data_dir",
    "bfcl_tools",
    "calls_valid",
    "check_case",
    "convert_parameters",
    "evaluate_bfcl",
    "gold_calls",
    "legal_tool_name",
    "load_bfcl",
    "tool_name_map",
]

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

CHECKER_MODEL_NAME = "fints-agent"
"""The model name passed to the BFCL checker (tool names are mapped back before checking)."""

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_TYPE_MAP = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "string": "string",
    "str": "string",
    "char": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
}
"""BFCL type names to JSON-schema types; ``any`` and unknown types get no type constraint."""

_COPIED_KEYWORDS = {
    "minimum": (int, float),
    "maximum": (int, float),
    "exclusiveMinimum": (int, float),
    "exclusiveMaximum": (int, float),
    "minItems": (int,),
    "maxItems": (int,),
    "minLength": (int,),
    "maxLength": (int,),
    "pattern": (str,),
    "format": (str,),
}


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


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Tool conversion
# --------------------------------------------------------------------------------------------


def legal_tool_name(name: str) -> str:
    """Maps a BFCL function name to a legal tool name (``^[a-zA-Z0-9_-]{1,64}$``).

    Dots and other characters become ``_``; names are cut to 64 characters.

    Args:
        name: The BFCL function name, e.g. ``math.factorial``.

    Returns:
        The tool name, e.g. ``math_factorial``.
    """
    legal = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]
    return legal or "function"


def _tool_names(functions: Sequence[Mapping[str, Any]]) -> list[str]:
    originals = [str(function["name"]) for function in functions]
    names: list[str | None] = [None] * len(originals)
    taken: set[str] = set()
    # Names that are already legal keep themselves; the others are mapped around them.
    for index, original in enumerate(originals):
        if _TOOL_NAME.fullmatch(original) and original not in taken:
            names[index] = original
            taken.add(original)
    for index, original in enumerate(originals):
        if names[index] is not None:
            continue
        base = legal_tool_name(original)
        name, counter = base, 2
        while name in taken:
            suffix = f"_{counter}"
            name = base[: 64 - len(suffix)] + suffix
            counter += 1
        taken.add(name)
        names[index] = name
    return [name for name in names if name is not None]


def tool_name_map(functions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Returns ``{tool name: original BFCL name}`` for the tools of :func:`bfcl_tools`.

    Args:
        functions: BFCL function docs.

    Returns:
        The map from legal tool names back to BFCL names (collisions get ``_2``, ``_3``...).
    """
    return {
        legal: str(function["name"])
        for legal, function in zip(_tool_names(functions), functions, strict=True)
    }


def _json_type_ok(value: Any, json_type: str | None) -> bool:
    if json_type is None:
        return True
    if json_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if json_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "object":
        return isinstance(value, dict)
    return True


def _coerce(value: Any, json_type: str | None) -> Any:
    """Coerces a string enum value to ``json_type`` (``"true"`` -> True, ``"3"`` -> 3)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if json_type == "boolean" and text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if json_type == "integer" and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if json_type == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return value


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    seen: set[str] = set()
    for value in values:
        key = json.dumps(value, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _convert_schema(node: Any) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {}
    out: dict[str, Any] = {}
    raw_type = node.get("type")
    json_type = _TYPE_MAP.get(raw_type) if isinstance(raw_type, str) else None
    if json_type is None and isinstance(raw_type, str) and raw_type != "any":
        json_type = _gorilla_type(raw_type)
    if json_type is not None:
        out["type"] = json_type
    if isinstance(node.get("description"), str):
        out["description"] = node["description"]

    properties = node.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {str(k): _convert_schema(v) for k, v in properties.items()}
        if json_type is None:
            out["type"] = json_type = "object"
    required = node.get("required")
    if json_type == "object" and isinstance(required, list):
        names = _unique(r for r in required if isinstance(r, str))
        if names:
            props = out.setdefault("properties", {})
            for name in names:
                props.setdefault(name, {})
            out["required"] = names
    if json_type == "array" and isinstance(node.get("items"), Mapping):
        out["items"] = _convert_schema(node["items"])

    for keyword, kinds in _COPIED_KEYWORDS.items():
        value = node.get(keyword)
        if isinstance(value, kinds) and not isinstance(value, bool):
            out[keyword] = value

    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        _set_enum(out, enum, json_type)

    if "default" in node:
        default = node["default"]
        if default is None and json_type is not None:
            # BFCL documents "defaults to None" this way; null is then an accepted value.
            out["type"] = [json_type, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if local_validator(out).is_valid(default):
            out["default"] = default
    return out


def _set_enum(out: dict[str, Any], enum: list[Any], json_type: str | None) -> None:
    if all(_json_type_ok(v, json_type) for v in enum):
        out["enum"] = _unique(enum)
        return
    coerced = [_coerce(v, json_type) for v in enum]
    if all(_json_type_ok(v, json_type) for v in coerced):
        out["enum"] = _unique(coerced)
        return
    items = out.get("items")
    if json_type == "array" and isinstance(items, dict):
        item_type = items.get("type")
        if all(_json_type_ok(v, item_type) for v in enum):
            items["enum"] = _unique(enum)
            return
    allowed = ", ".join(json.dumps(v) for v in enum)
    out["description"] = (out.get("description", "") + f" Allowed values: {allowed}.").strip()


def _gorilla_type(raw_type: str) -> str | None:
    try:
        from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    except ImportError:  # pragma: no cover - only without bfcl-eval
        return None
    mapped = GORILLA_TO_OPENAPI.get(raw_type)
    return mapped if mapped in _TYPE_MAP.values() else None


def convert_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Converts a BFCL ``parameters`` doc into a JSON schema (Draft 2020-12).

    ``dict`` becomes ``object``, ``float`` ``number``, ``tuple`` ``array``; ``any`` gets no type
    constraint; a property documented with ``default: None`` also accepts null; ``optional`` flags
    are dropped; enum values of the wrong type are coerced
    (``"true"`` for a boolean) or moved to the items (an enum on an array of strings) or else
    listed in the description; defaults that do not fit the schema are dropped; nested required
    names without a property get an unconstrained property. The top level is an object with
    ``additionalProperties: false`` and only the required names that are properties.

    Args:
        parameters: The BFCL ``parameters`` object of a function doc.

    Returns:
        The JSON schema.
    """
    schema = _convert_schema({**parameters, "required": []})
    schema["type"] = "object"
    properties = schema.setdefault("properties", {})
    required = parameters.get("required")
    names = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    schema["required"] = _unique(r for r in names if r in properties)
    schema["additionalProperties"] = False
    return schema


def bfcl_tools(functions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Converts BFCL function docs into OpenAI function tools with JSON-schema parameters.

    Args:
        functions: BFCL function docs (``name``, ``description``, ``parameters``).

    Returns:
        ``[{"type": "function", "function": {"name", "description", "parameters"}}]`` with
        legal names (see :func:`tool_name_map` for the way back).
    """
    tools = []
    for name, function in zip(_tool_names(functions), functions, strict=True):
        parameters = function.get("parameters")
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": str(function.get("description", "")),
                    "parameters": convert_parameters(
                        parameters if isinstance(parameters, Mapping) else {}
                    ),
                },
            }
        )
    return tools


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


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
