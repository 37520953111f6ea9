"""Tests of BFCL loading, tool conversion and grading with the official AST checker."""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any

import jsonschema
import pytest

pytest.importorskip("bfcl_eval")

from fints_agent.eval.bfcl import (
    BfclCase,
    bfcl_tools,
    calls_valid,
    check_case,
    convert_parameters,
    evaluate_bfcl,
    gold_calls,
    legal_tool_name,
    load_bfcl,
    tool_name_map,
)
from fints_agent.eval.bfcl.tools import _TOOL_NAME

CATEGORIES = {
    "simple_python": 400,
    "multiple": 200,
    "parallel": 200,
    "parallel_multiple": 200,
    "irrelevance": 240,
    "live_simple": 258,
}

# Possible answers that contradict their own function docs in BFCL v4, so that no output
# passes the checker: an empty list of allowed values for a required parameter.
UNSOLVABLE = {"live_simple_106-63-0", "live_simple_112-68-0"}


@pytest.fixture(scope="module")
def cases() -> dict[str, list[BfclCase]]:
    return {category: load_bfcl(category) for category in CATEGORIES}


def _perturb(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1000
    if isinstance(value, float):
        return value + 1000.5
    if isinstance(value, str):
        return "zzz " + value + " qqq"
    if isinstance(value, list):
        return [*reversed([_perturb(v) for v in value]), "zzz"]
    if isinstance(value, dict):
        return {k: _perturb(v) for k, v in value.items()}
    return "zzz"


def _wrong_calls(case: BfclCase) -> list[dict[str, Any]]:
    """A plausible but wrong prediction: every argument of the first gold call altered."""
    if case.possible_answer is None:
        tool = case.tools[0]["function"]
        return [{"name": tool["name"], "arguments": {}}]
    calls = copy.deepcopy(gold_calls(case))
    if calls[0]["arguments"]:
        calls[0]["arguments"] = {k: _perturb(v) for k, v in calls[0]["arguments"].items()}
    else:
        calls.pop(0)
    return calls


def test_load_counts_and_fields(cases: dict[str, list[BfclCase]]) -> None:
    for category, count in CATEGORIES.items():
        loaded = cases[category]
        assert len(loaded) == count, category
        assert all(case.category == category for case in loaded)
        assert len({case.id for case in loaded}) == count
        for case in loaded:
            assert case.id.startswith(category + "_")
            assert case.messages and case.messages[-1]["role"] == "user"
            assert case.question
            assert len(case.tools) == len(case.functions) >= 1
            if category == "irrelevance":
                assert case.possible_answer is None
            else:
                assert case.possible_answer


def test_limit_and_unknown_category() -> None:
    assert [c.id for c in load_bfcl("multiple", limit=3)] == [
        "multiple_0",
        "multiple_1",
        "multiple_2",
    ]
    assert load_bfcl("parallel", limit=0) == []
    with pytest.raises(ValueError, match="unsupported BFCL category"):
        load_bfcl("multi_turn_base")


def test_every_converted_schema_is_valid(cases: dict[str, list[BfclCase]]) -> None:
    checked: set[str] = set()
    for loaded in cases.values():
        for case in loaded:
            for tool in case.tools:
                assert tool["type"] == "function"
                function = tool["function"]
                assert _TOOL_NAME.fullmatch(function["name"])
                assert function["parameters"]["type"] == "object"
                key = json.dumps(function["parameters"], sort_keys=True)
                if key not in checked:  # many cases share function docs
                    checked.add(key)
                    jsonschema.Draft202012Validator.check_schema(function["parameters"])
    assert len(checked) > 1000


def test_tool_names_map_back() -> None:
    functions = [
        {"name": "math.factorial", "parameters": {"type": "dict", "properties": {}}},
        {"name": "math_factorial", "parameters": {"type": "dict", "properties": {}}},
        {"name": "a" * 70 + ".b", "parameters": {"type": "dict", "properties": {}}},
    ]
    names = [tool["function"]["name"] for tool in bfcl_tools(functions)]
    assert names[0] == "math_factorial_2"  # the already-legal name keeps itself
    assert names[1] == "math_factorial"
    assert len(names[2]) == 64
    assert tool_name_map(functions) == {
        "math_factorial_2": "math.factorial",
        "math_factorial": "math_factorial",
        names[2]: "a" * 70 + ".b",
    }
    assert legal_tool_name("spotify.play") == "spotify_play"


def test_type_conversion() -> None:
    schema = convert_parameters(
        {
            "type": "dict",
            "properties": {
                "f": {"type": "float", "description": "x", "optional": True},
                "t": {"type": "tuple", "items": {"type": "integer"}},
                "a": {"type": "any"},
                "d": {
                    "type": "dict",
                    "properties": {"inner": {"type": "array", "items": {"type": "float"}}},
                    "required": ["inner", "missing"],
                },
                "b": {"type": "boolean", "enum": ["True", "False"]},
                "arr": {"type": "array", "items": {"type": "string"}, "enum": ["x", "y"]},
                "n": {"type": "string", "default": None, "enum": ["u", "v"]},
                "odd": {"type": "integer", "enum": ["low", 3]},
            },
            "required": ["f", "ghost"],
        }
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert props["f"] == {"type": "number", "description": "x"}
    assert props["t"] == {"type": "array", "items": {"type": "integer"}}
    assert props["a"] == {}
    assert props["d"]["type"] == "object"
    assert props["d"]["properties"]["inner"]["items"] == {"type": "number"}
    assert props["d"]["properties"]["missing"] == {}
    assert props["d"]["required"] == ["inner", "missing"]
    assert props["b"]["enum"] == [True, False]
    assert props["arr"]["items"]["enum"] == ["x", "y"] and "enum" not in props["arr"]
    assert props["n"]["type"] == ["string", "null"] and props["n"]["enum"] == ["u", "v", None]
    assert "enum" not in props["odd"] and "Allowed values" in props["odd"]["description"]
    assert schema["required"] == ["f"]
    assert schema["additionalProperties"] is False


def test_checker_imports_without_model_handlers(cases: dict[str, list[BfclCase]]) -> None:
    case = cases["simple_python"][0]
    assert check_case(case, gold_calls(case)) == (True, None)
    assert "bfcl_eval.constants.model_config" not in sys.modules
    assert not any(name.startswith("bfcl_eval.model_handler") for name in sys.modules)
    assert os.environ.get("BFCL_PROJECT_ROOT")


def test_gold_answers_pass_and_wrong_answers_fail(cases: dict[str, list[BfclCase]]) -> None:
    failed_gold: list[str] = []
    for category, loaded in cases.items():
        for case in loaded:
            correct, error = check_case(case, gold_calls(case))
            if not correct:
                failed_gold.append(case.id)
                continue
            assert error is None
            wrong, reason = check_case(case, _wrong_calls(case))
            assert not wrong, (category, case.id)
            assert reason
    assert set(failed_gold) == UNSOLVABLE


def test_check_case_details(cases: dict[str, list[BfclCase]]) -> None:
    case = next(c for c in cases["simple_python"] if c.id == "simple_python_1")
    assert case.functions[0]["name"] == "math.factorial"
    assert case.tools[0]["function"]["name"] == "math_factorial"
    assert check_case(case, [{"name": "math_factorial", "arguments": {"number": 5}}]) == (
        True,
        None,
    )
    # BFCL names, JSON-string arguments and LangChain ``args`` work too.
    assert check_case(case, [{"name": "math.factorial", "arguments": '{"number": 5}'}])[0]
    assert check_case(case, [{"name": "math_factorial", "args": {"number": 5}}])[0]
    ok, error = check_case(case, [{"name": "math_factorial", "arguments": {"number": 6}}])
    assert not ok and error is not None and "number" in error
    assert check_case(case, []) == (False, "made no call")
    twice = [{"name": "math_factorial", "arguments": {"number": 5}}] * 2
    assert not check_case(case, twice)[0]
    assert not check_case(case, [{"name": "math_factorial", "arguments": "[1]"}])[0]

    irrelevant = cases["irrelevance"][0]
    assert check_case(irrelevant, []) == (True, None)
    assert not check_case(irrelevant, _wrong_calls(irrelevant))[0]


def test_calls_valid(cases: dict[str, list[BfclCase]]) -> None:
    case = next(c for c in cases["simple_python"] if c.id == "simple_python_1")
    assert calls_valid(case, [{"name": "math_factorial", "arguments": {"number": 5}}])
    assert calls_valid(case, [{"name": "math.factorial", "arguments": {"number": 5}}])
    assert not calls_valid(case, [{"name": "math_factorial", "arguments": {"number": "5"}}])
    assert not calls_valid(case, [{"name": "math_factorial", "arguments": {}}])
    assert not calls_valid(case, [{"name": "nope", "arguments": {"number": 5}}])
    assert not calls_valid(case, [])
    assert calls_valid(cases["irrelevance"][0], [])


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_evaluate_with_gold_and_wrong_predictors(
    category: str, cases: dict[str, list[BfclCase]]
) -> None:
    loaded = cases[category]
    gold = evaluate_bfcl(category, gold_calls, progress=False, cases=loaded)
    unsolvable = sum(case.id in UNSOLVABLE for case in loaded)
    assert gold["n"] == len(loaded)
    assert gold["n_correct"] == len(loaded) - unsolvable
    if not unsolvable:
        assert gold["accuracy"] == 1.0
    # Gold answers that break their own schema: variables passed as strings, values outside
    # the documented enum or type, or the unsolvable cases above.
    assert gold["valid_rate"] >= 0.98
    wrong = evaluate_bfcl(category, _wrong_calls, progress=False, cases=loaded)
    assert wrong["accuracy"] == 0.0
    assert wrong["results"][0]["error"]
    assert set(wrong["results"][0]) == {"id", "correct", "valid", "error", "calls"}


def test_evaluate_loads_with_limit() -> None:
    result = evaluate_bfcl("irrelevance", lambda case: [], limit=5, progress=False)
    assert result["n"] == 5 and result["accuracy"] == 1.0 and result["valid_rate"] == 1.0
    assert result["error_types"] == {}
