"""The decode loop: per-row token budgets and their bad input."""

from __future__ import annotations

import numpy as np
import pytest
from tiny import tiny_lm

from fints_agent.decoding import DecodeStats, decode

PROMPTS = ["get me the weather in oslo", "send a message to dana", "play a song"]


def _run(prompts: list[str], budget: int | list[int]) -> tuple[list[list[int]], DecodeStats]:
    lm = tiny_lm("llama")
    stats = DecodeStats()
    tokens: list[list[int]] = [[] for _ in prompts]
    for step in decode(lm, prompts, max_new_tokens=budget, stop_at_eos=False, stats=stats):
        for row, t in enumerate(step.tokens):
            if t >= 0:
                tokens[row].append(t)
    return tokens, stats


def test_each_row_stops_at_its_own_budget() -> None:
    together, stats = _run(PROMPTS, [2, 7, 4])
    assert [len(t) for t in together] == [2, 7, 4]
    assert stats.generated_tokens == [2, 7, 4]
    assert stats.finish_reason == ["length"] * 3
    # A row's tokens are those it gets with a larger budget, cut at its own: a short row that
    # stops early changes nothing for the others.
    wide, _ = _run(PROMPTS, 7)
    assert [w[: len(t)] for w, t in zip(wide, together, strict=True)] == together
    alone, _ = _run(PROMPTS[1:2], 7)
    assert alone[0] == together[1]


def test_one_budget_for_every_row() -> None:
    tokens, stats = _run(PROMPTS[:2], 3)
    assert [len(t) for t in tokens] == [3, 3] and stats.generated_tokens == [3, 3]
    tokens, _ = _run(PROMPTS[:2], np.int64(2))  # type: ignore[arg-type]
    assert [len(t) for t in tokens] == [2, 2]


@pytest.mark.parametrize("budget", [0, -1, [3, 0], [3], [1, 2, 3, 4]])
def test_bad_budgets_are_refused(budget: int | list[int]) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        _run(PROMPTS[:2], budget)


def test_batched_turns_keep_their_own_budgets() -> None:
    from fints_agent.config import Preset
    from fints_agent.engine import TurnEngine
    from fints_agent.turn import TurnRequest

    engine = TurnEngine(tiny_lm("llama"), None, Preset())
    requests = [
        TurnRequest(messages=[{"role": "user", "content": p}], max_new_tokens=b, no_repeat_ngram=0)
        for p, b in zip(PROMPTS, [3, 9, 5], strict=True)
    ]
    results = engine.complete_batch(requests)
    assert [r.completion_tokens for r in results] == [3, 9, 5]
    assert all(r.finish_reason == "length" for r in results)


class _EndAfter:
    """Step rules that leave row 0 only the end-of-turn token from its third token on."""

    def __init__(self, eos: int) -> None:
        self.eos = eos
        self.steps = 0

    def gate(self, texts: list[str]) -> None:
        return None

    def repeat_scope(self, texts: list[str]) -> list[bool]:
        return [True] * len(texts)

    def close_scope(self, texts: list[str]) -> list[bool]:
        return [True] * len(texts)

    def restrict(self, texts: list[str]) -> list[set[int] | None]:
        self.steps += 1
        return [{self.eos} if self.steps >= 3 else None] + [None] * (len(texts) - 1)


def test_a_free_text_row_ends_at_the_end_of_turn_token_in_a_batch_of_grammars() -> None:
    """A row without a grammar ends at its end-of-turn token also when the batch's other rows
    have grammars (per-row constraints), as it does decoded alone."""
    from fints_agent.decoding import stop_token_ids
    from fints_agent.turn_rules import RowConstraints

    lm = tiny_lm("llama")
    eos = min(stop_token_ids(lm))
    results = []
    for constraint in (None, RowConstraints([None, None])):
        stats = DecodeStats()
        steps = list(
            decode(
                lm,
                PROMPTS[:2],
                max_new_tokens=12,
                constraint=constraint,
                rules=_EndAfter(eos),
                stats=stats,
            )
        )
        results.append((stats.generated_tokens, stats.finish_reason, len(steps)))
    alone, per_row = results
    assert alone == per_row
    assert alone[0][0] == 2 and alone[1][0] == "stop"  # two tokens, then the end of turn
