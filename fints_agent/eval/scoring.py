"""Scoring of predicted tool calls against a record's chosen call.

Rules:

* ``function``: the predicted tool name equals the chosen one.
* ``args``: every graded argument (``record.graded_args``) is present in the prediction and
  equal to the chosen value. Strings compare trimmed and case-insensitively, numbers by value
  (``1 == 1.0``; booleans are not numbers), lists element-wise in order, dicts key-wise, with
  the same rules recursively.
* ``call``: both of the above.
* ``valid``: the predicted call names an offered tool and its arguments validate against that
  tool's JSON schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fints_agent.eval.dataset import PersonalRecord, ToolCall, schema_validator

__all__ = [
    "CallScore",
    "normalize_call",
    "percentile",
    "score_call",
    "summarize",
    "validate_call",
    "values_equal",
]


@dataclass(frozen=True)
class CallScore:
    """The score of one predicted call.

    Attributes:
        function: The predicted tool is the chosen tool.
        args: Every graded argument equals the chosen value.
        call: ``function and args``.
        valid: The prediction validates against its tool's schema.
        error: Why the prediction is invalid or missing, else None.
    """

    function: bool
    args: bool
    call: bool
    valid: bool
    error: str | None = None


def values_equal(predicted: Any, expected: Any) -> bool:
    """Compares two JSON values with the grading rules.

    Args:
        predicted: The predicted value.
        expected: The gold value.

    Returns:
        True when they match: strings trimmed and case-insensitive, numbers by value
        (booleans only equal booleans), lists element-wise, dicts key-wise, recursively.
    """
    if isinstance(expected, bool) or isinstance(predicted, bool):
        return isinstance(expected, bool) and isinstance(predicted, bool) and expected == predicted
    if isinstance(expected, int | float) and isinstance(predicted, int | float):
        if isinstance(expected, float) or isinstance(predicted, float):
            return math.isclose(float(predicted), float(expected), rel_tol=1e-9, abs_tol=1e-12)
        return predicted == expected
    if isinstance(expected, str) and isinstance(predicted, str):
        return predicted.strip().casefold() == expected.strip().casefold()
    if isinstance(expected, list | tuple) and isinstance(predicted, list | tuple):
        return len(expected) == len(predicted) and all(
            values_equal(p, e) for p, e in zip(predicted, expected, strict=True)
        )
    if isinstance(expected, Mapping) and isinstance(predicted, Mapping):
        return set(expected) == set(predicted) and all(
            values_equal(predicted[key], expected[key]) for key in expected
        )
    if expected is None or predicted is None:
        return expected is None and predicted is None
    return False


def normalize_call(predicted: Any) -> dict[str, Any] | None:
    """Turns a predicted call into ``{"name": str, "arguments": dict}``.

    Accepts a :class:`~fints_agent.eval.dataset.ToolCall`, a mapping with ``name`` and
    ``arguments`` (or LangChain's ``args``), where the arguments may also be a JSON string.

    Args:
        predicted: The prediction, or None.

    Returns:
        The normalized call, or None when there is no usable name.
    """
    if predicted is None:
        return None
    if isinstance(predicted, ToolCall):
        return predicted.as_dict()
    if not isinstance(predicted, Mapping):
        return None
    name = predicted.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = predicted.get("arguments", predicted.get("args", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return {"name": name, "arguments": arguments}
    return {"name": name, "arguments": arguments}


def validate_call(call: Mapping[str, Any], record: PersonalRecord) -> str | None:
    """Checks a normalized call against the record's tools.

    Args:
        call: ``{"name": ..., "arguments": ...}``.
        record: The record whose tools are offered.

    Returns:
        None when the call is valid, else the reason.
    """
    tool = record.tool(call["name"])
    if tool is None:
        return f"tool '{call['name']}' is not offered"
    arguments = call["arguments"]
    if not isinstance(arguments, dict):
        return "arguments are not a JSON object"
    errors = sorted(
        schema_validator(tool.function.parameters).iter_errors(arguments),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "<arguments>"
        return f"invalid arguments at {where}: {errors[0].message}"
    return None


def score_call(predicted: Any, record: PersonalRecord) -> CallScore:
    """Scores one predicted call against the record's chosen call.

    Args:
        predicted: ``{"name": str, "arguments": dict}`` (arguments may be a JSON string; a
            ``ToolCall`` or a LangChain tool call with ``args`` also works), or None when the
            model made no call.
        record: The record to score against.

    Returns:
        The :class:`CallScore`. A missing call scores False everywhere.
    """
    call = normalize_call(predicted)
    if call is None:
        return CallScore(False, False, False, False, "no call")
    function = call["name"] == record.chosen.name
    args = all(graded_arguments_right(call, record).values())
    error = validate_call(call, record)
    return CallScore(function, args, function and args, error is None, error)


def graded_arguments_right(call: Mapping[str, Any], record: PersonalRecord) -> dict[str, bool]:
    """Whether each graded argument of a normalized call equals the chosen call's.

    Args:
        call: ``{"name": ..., "arguments": ...}`` (from :func:`normalize_call`).
        record: The record to score against.

    Returns:
        ``{argument name: right}`` for every name in ``record.graded_args``.
    """
    arguments = call["arguments"] if isinstance(call["arguments"], dict) else {}
    expected = record.chosen.arguments
    return {
        name: name in arguments and values_equal(arguments[name], expected[name])
        for name in record.graded_args
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Returns the q-th percentile (0-100) with linear interpolation between ranks.

    Args:
        values: A non-empty sequence of numbers.
        q: The percentile, from 0 to 100.

    Returns:
        The interpolated percentile.

    Raises:
        ValueError: ``values`` is empty or ``q`` is out of range.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(float(v) for v in values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _rate(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarize(
    scores: Sequence[CallScore],
    prompt_tokens: Sequence[float] | None = None,
    latencies: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Aggregates call scores, prompt sizes and latencies.

    Args:
        scores: One score per evaluated turn.
        prompt_tokens: Prompt length in tokens per turn (optional).
        latencies: Wall time per turn in **seconds** (optional); reported in milliseconds.

    Returns:
        ``{"n", "function_acc", "arg_acc", "call_acc", "valid_rate", "mean_prompt_tokens",
        "p50_latency_ms", "p95_latency_ms"}``. Rates have 4 decimals, token means 1 and
        latencies 1; a statistic without data is None.
    """
    tokens = list(prompt_tokens or [])
    times = [1000.0 * t for t in (latencies or [])]
    return {
        "n": len(scores),
        "function_acc": _rate([s.function for s in scores]),
        "arg_acc": _rate([s.args for s in scores]),
        "call_acc": _rate([s.call for s in scores]),
        "valid_rate": _rate([s.valid for s in scores]),
        "mean_prompt_tokens": round(sum(tokens) / len(tokens), 1) if tokens else None,
        "p50_latency_ms": round(percentile(times, 50), 1) if times else None,
        "p95_latency_ms": round(percentile(times, 95), 1) if times else None,
    }
