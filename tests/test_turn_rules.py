"""The per-step rules of a batch of turns: steering gate, repetition scope, canonical spelling."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from memory_fixtures import WEATHER_TOOLS

from fints_agent.calls import CallTracker, in_free_text_value, render_call, to_tool_specs
from fints_agent.steering import SteeringVector
from fints_agent.turn_rules import RowRules, TurnRules, _gate_values, _RowTrackers, canonical_next

SPECS = to_tool_specs(WEATHER_TOOLS[:1])
TEXT = render_call("get_weather", {"city": "Oslo", "units": "celsius"}, SPECS[0].parameters)


def _fresh(prefix: str) -> CallTracker:
    tracker = CallTracker(SPECS)
    tracker.feed(prefix)
    return tracker


@pytest.mark.parametrize("mode", ["choices", "decisions"])
def test_steering_gate_modes(mode: Any) -> None:
    """``choices`` steers all but free text; ``decisions`` only the tool name and enum values."""
    row = RowRules(None, SPECS, gate=mode)
    steered = "".join(
        TEXT[i] for i in range(len(TEXT)) if _gate_values(row, _fresh(TEXT[:i]))[0] == 1.0
    )
    # Fed step by step, the row's tracker gives the same gate as one fed the whole prefix.
    rows = _RowTrackers([SPECS])
    assert [_gate_values(row, rows.at(0, TEXT[:i])) for i in range(len(TEXT))] == [
        _gate_values(row, _fresh(TEXT[:i])) for i in range(len(TEXT))
    ]
    if mode == "decisions":
        # The characters of the name and of the enum value, quotes included, nothing else.
        assert steered == ' "get_weather" "celsius"'
    else:
        assert "Oslo" not in steered and "get_weather" in steered and "celsius" in steered
        assert "<tool_call>" in steered
    # A row that is not gated (no tracker) is steered everywhere.
    assert all(_gate_values(RowRules(None, SPECS), None) == (1.0, 0.0) for _ in TEXT)


@pytest.mark.parametrize("mode", ["all", "choices", "decisions"])
def test_value_vector_replaces_the_vector_at_enum_values_only(mode: Any) -> None:
    """With a value vector (a ``"split"`` memory), enum values get it and not the vector."""

    def gates(split: bool) -> list[tuple[float, float]]:
        rows = _RowTrackers([SPECS])
        row = RowRules(None, SPECS, gate=mode, split=split)
        return [_gate_values(row, rows.at(0, TEXT[:i])) for i in range(len(TEXT))]

    plain, split = gates(False), gates(True)
    assert all(v == 0.0 for _, v in plain)
    on_value = "".join(TEXT[i] for i in range(len(TEXT)) if split[i][1] == 1.0)
    assert on_value == ' "celsius"'
    assert all(split[i][0] == 0.0 for i in range(len(TEXT)) if split[i][1] == 1.0)
    # Everywhere else the first channel is what it is without a value vector.
    assert all(s[0] == p[0] for s, p in zip(split, plain, strict=True) if s[1] == 0.0)


def test_gate_tensor_has_a_channel_per_vector_only_when_a_row_is_split() -> None:
    texts = [TEXT[:5], TEXT[:5]]
    one = TurnRules([RowRules(None, SPECS, gate="all"), RowRules(None, SPECS)], tokenizer=None)
    assert one.gate(texts).shape == (2,)  # type: ignore[union-attr]
    two = TurnRules([RowRules(None, SPECS, gate="all", split=True), RowRules(None, [])], None)
    assert two.gate(texts).shape == (2, 2)  # type: ignore[union-attr]
    assert TurnRules([RowRules(None, SPECS)], None).gate([TEXT]) is None  # nobody gated


def test_repeat_scope_follows_free_text_values_incrementally() -> None:
    """The repetition guard's scope, fed step by step, equals a full re-parse of every prefix."""
    constrained = RowRules(object(), SPECS)  # type: ignore[arg-type]
    rules = TurnRules([constrained, RowRules(None, SPECS)], tokenizer=None)
    got = [rules.repeat_scope([TEXT[:i], TEXT[:i]]) for i in range(len(TEXT))]
    assert [g[0] for g in got] == [in_free_text_value(TEXT[:i], SPECS) for i in range(len(TEXT))]
    assert all(g[1] for g in got)  # an unconstrained row is always in scope
    inside = "".join(TEXT[i] for i in range(len(TEXT)) if got[i][0])
    assert inside == ' "Oslo"'  # the value, its quotes and the space before it


def test_canonical_next_follows_the_tokenizers_spelling() -> None:
    spelling = {
        "add_review": [1, 2],
        "add_rating": [1, 3],
        "search": [4],
        "a": [5],
        "add": [1],
        "add_r": [1, 6],
    }

    def ids(text: str) -> list[int]:
        return spelling[text]

    values = ["add_review", "add_rating", "search"]
    assert canonical_next(("", values), ids) == {1, 4}
    assert canonical_next(("add", values), ids) == {2, 3}
    assert canonical_next(("add_r", values), ids) is None  # not a canonical prefix: no rule
    assert canonical_next(("search", values), ids) is None  # complete: the grammar decides
    assert canonical_next(("a", values), ids) is None


def test_restrict_is_off_without_canonical_choices() -> None:
    rules = TurnRules([RowRules(object(), SPECS)], tokenizer=None)  # type: ignore[arg-type]
    assert rules.restrict([TEXT]) is None


def test_value_vectors_are_plain_tensors() -> None:
    """The split test above needs no real vector: the rules see only whether a row is split."""
    value = SteeringVector.zeros("m", layers=[0], sites=("mlp",), d_model=4)
    assert torch.count_nonzero(value.tensor) == 0
