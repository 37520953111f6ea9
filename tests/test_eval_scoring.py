"""Tests of per-call scoring and the summary of scores."""

from __future__ import annotations

from typing import Any

import pytest

from fints_agent.eval.dataset import PersonalRecord, ToolCall, parse_record
from fints_agent.eval.scoring import (
    CallScore,
    percentile,
    score_call,
    summarize,
    values_equal,
)


def _record(graded: list[str] | None = None) -> PersonalRecord:
    data: dict[str, Any] = {
        "user_id": "u1",
        "turn": 0,
        "split": "test",
        "messages": [{"role": "user", "content": "Order 2 portions of pad thai from Lotus."}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "place_order",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "restaurant": {"type": "string"},
                            "items": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "name": {"type": "string"},
                                        "quantity": {"type": "integer"},
                                    },
                                    "required": ["name", "quantity"],
                                },
                            },
                            "service": {"type": "string", "enum": ["ubereats", "doordash"]},
                            "tip_percent": {"type": "number"},
                        },
                        "required": ["restaurant", "items", "service"],
                        "additionalProperties": False,
                    },
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "search_restaurants",
                    "parameters": {
                        "type": "object",
                        "properties": {"service": {"type": "string"}},
                        "required": ["service"],
                    },
                },
            },
        ],
        "chosen": {
            "name": "place_order",
            "arguments": {
                "restaurant": "Lotus",
                "items": [{"name": "pad thai", "quantity": 2}],
                "service": "ubereats",
                "tip_percent": 10,
            },
        },
        "rejected": [
            {
                "name": "place_order",
                "arguments": {
                    "restaurant": "Lotus",
                    "items": [{"name": "pad thai", "quantity": 2}],
                    "service": "doordash",
                },
            }
        ],
        "graded_args": graded if graded is not None else ["restaurant", "items", "service"],
    }
    return parse_record(data)


def _call(**arguments: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "restaurant": "Lotus",
        "items": [{"name": "pad thai", "quantity": 2}],
        "service": "ubereats",
    }
    base.update(arguments)
    return {"name": "place_order", "arguments": {k: v for k, v in base.items() if v is not None}}


@pytest.mark.parametrize(
    ("predicted", "expected", "equal"),
    [
        ("  Oslo ", "oslo", True),
        ("OSLO", "Oslo", True),
        ("Oslo.", "Oslo", False),
        (1, 1.0, True),
        (1.0, 1, True),
        (0.1 + 0.2, 0.3, True),
        (2, 3, False),
        (True, 1, False),
        (1, True, False),
        (True, True, True),
        ("1", 1, False),
        (None, None, True),
        (None, "x", False),
        ([" A", 2.0], ["a", 2], True),
        (["a", "b"], ["b", "a"], False),
        (["a"], ["a", "a"], False),
        ({"Name": "x"}, {"name": "x"}, False),
        ({"name": " X ", "quantity": 2.0}, {"name": "x", "quantity": 2}, True),
        ({"name": "x"}, {"name": "x", "quantity": 2}, False),
        ([{"q": [1, "A"]}], [{"q": [1.0, "a"]}], True),
        ((1, 2), [1, 2], True),
    ],
)
def test_values_equal(predicted: Any, expected: Any, equal: bool) -> None:
    assert values_equal(predicted, expected) is equal


def test_exact_call_scores_everything() -> None:
    score = score_call(_call(), _record())
    assert score == CallScore(True, True, True, True, None)


def test_case_trim_and_number_rules() -> None:
    predicted = _call(
        restaurant="  lotus ",
        items=[{"name": "Pad Thai", "quantity": 2.0}],
        service="UberEats",
    )
    score = score_call(predicted, _record())
    assert score.function and score.args and score.call
    # "UberEats" is not in the schema's enum and 2.0 is a valid integer: only the enum fails.
    assert not score.valid
    assert score.error is not None and "service" in score.error


def test_ungraded_arguments_are_ignored() -> None:
    score = score_call(_call(tip_percent=25), _record())
    assert score.call and score.valid


def test_missing_graded_argument() -> None:
    score = score_call(_call(service=None), _record())
    assert score.function and not score.args and not score.call
    assert not score.valid  # service is required


def test_wrong_value_and_wrong_function() -> None:
    assert not score_call(_call(service="doordash"), _record()).args
    wrong_tool = {"name": "search_restaurants", "arguments": {"service": "ubereats"}}
    score = score_call(wrong_tool, _record(graded=["service"]))
    assert not score.function and score.args and not score.call and score.valid


def test_no_graded_args_means_args_match() -> None:
    assert score_call(_call(restaurant="other"), _record(graded=[])).call


def test_missing_and_malformed_predictions() -> None:
    record = _record()
    assert score_call(None, record) == CallScore(False, False, False, False, "no call")
    assert not score_call({"arguments": {}}, record).valid
    assert not score_call("place_order", record).function
    unknown = score_call({"name": "cancel_order", "arguments": {}}, record)
    assert not unknown.function and not unknown.valid
    assert unknown.error == "tool 'cancel_order' is not offered"
    broken = score_call({"name": "place_order", "arguments": "{not json"}, record)
    assert broken.function and not broken.args and not broken.valid


def test_accepts_json_strings_toolcalls_and_langchain_calls() -> None:
    record = _record()
    as_json = {
        "name": "place_order",
        "arguments": (
            '{"restaurant": "Lotus", "items": [{"name": "pad thai", "quantity": 2}],'
            ' "service": "ubereats"}'
        ),
    }
    assert score_call(as_json, record).call
    langchain = {
        "name": "place_order",
        "args": _call()["arguments"],
        "id": "1",
        "type": "tool_call",
    }
    assert score_call(langchain, record).call
    assert score_call(ToolCall(**_call()), record).call


def test_percentile() -> None:
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4, 5], 0) == 1
    assert percentile([1, 2, 3, 4, 5], 100) == 5
    assert percentile(list(range(101)), 95) == pytest.approx(95)
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize() -> None:
    scores = [
        CallScore(True, True, True, True),
        CallScore(True, False, False, True),
        CallScore(False, True, False, False),
    ]
    summary = summarize(scores, [100, 200, 301], [0.1, 0.2, 0.3])
    assert summary == {
        "n": 3,
        "function_acc": 0.6667,
        "arg_acc": 0.6667,
        "call_acc": 0.3333,
        "valid_rate": 0.6667,
        "mean_prompt_tokens": 200.3,
        "p50_latency_ms": 200.0,
        "p95_latency_ms": 290.0,
    }


def test_summarize_without_data() -> None:
    summary = summarize([])
    assert summary["n"] == 0
    assert all(summary[k] is None for k in summary if k != "n")
    assert summarize([CallScore(True, True, True, True)])["mean_prompt_tokens"] is None
