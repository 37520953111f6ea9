"""The per-step rules of a batch of turns: grammar per row, steering gate, repetition and
closing scopes, canonical spelling of choices.

:class:`TurnRules` is the :class:`~fints_agent.decoding.StepRules` the turn engine hands to the
decode loop, built once per batch from each row's :class:`RowRules`. One
:class:`~fints_agent.calls.CallTracker` per row follows the row's text and answers every rule.

Example:
    >>> rules = TurnRules([RowRules(decoder, specs, gate="decisions")], tokenizer)
    >>> decode(lm, [prompt], constraint=RowConstraints([decoder]), rules=rules, ...)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from fints_agent.calls import (
    CallPosition,
    CallTracker,
    ConstrainedDecoder,
    ToolSpec,
    in_free_text_value,
    in_open_call,
)

__all__ = ["Gate", "RowConstraints", "RowRules", "TurnRules", "canonical_next"]

Gate = Literal["all", "choices", "decisions"]
"""Which generated tokens are steered (:attr:`fints_agent.config.SteeringConfig.gate`)."""

_DECISIONS = frozenset({CallPosition.NAME, CallPosition.CHOICE})


@dataclass(frozen=True)
class RowRules:
    """What the rules of one batch row depend on.

    Attributes:
        constraint: The row's grammar (None: free text).
        allowed: The tools the row may call.
        gate: Which tokens the row's vector steers; ``None``: the row is not gated (steered
            everywhere, or not steered).
        split: The row also has a value vector, which steers enum, boolean and null values in
            place of its vector.
    """

    constraint: ConstrainedDecoder | None
    allowed: Sequence[ToolSpec]
    gate: Gate | None = None
    split: bool = False


class RowConstraints:
    """Per-row grammars for a batch whose rows offer different tools (None: unconstrained)."""

    def __init__(self, rows: Sequence[ConstrainedDecoder | None]) -> None:
        self.rows = list(rows)

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Mask each constrained row with its own grammar."""
        for i, c in enumerate(self.rows):
            if c is not None:
                c.mask_logits(logits[i : i + 1])

    def accept(self, tokens: torch.Tensor) -> None:
        """Advance each constrained row."""
        for i, c in enumerate(self.rows):
            if c is not None and not c.finished(0):
                c.accept(tokens[i : i + 1])

    def forced_tokens(self, row: int, limit: int | None = None) -> list[int]:
        """The tokens a row's grammar forces next (jump-forward; see
        :meth:`ConstrainedDecoder.forced_tokens`); none for unconstrained or finished rows."""
        c = self.rows[row]
        if c is None or c.finished(0):
            return []
        return c.forced_tokens(0, limit=limit)

    def accept_tokens(self, row: int, tokens: Sequence[int]) -> None:
        """Advance a row by forced tokens."""
        c = self.rows[row]
        if c is not None:
            c.accept_tokens(0, list(tokens))

    def prefer_closing(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Restrict the given constrained rows to closing tokens (see ConstrainedDecoder)."""
        restricted: list[int] = []
        for i in rows:
            c = self.rows[i]
            if c is not None and c.prefer_closing(logits[i : i + 1], [0]):
                restricted.append(i)
        return restricted

    def free_text(self, row: int) -> bool:
        """Whether a row is unconstrained (an end-of-turn token ends it)."""
        return self.rows[row] is None

    def finished(self, row: int) -> bool:
        """Whether a row's grammar is complete (unconstrained rows: never)."""
        c = self.rows[row]
        return c is not None and c.finished(0)


class TurnRules:
    """The decode's :class:`~fints_agent.decoding.StepRules` for a batch of turns.

    Args:
        rows: Per row, what its rules depend on.
        tokenizer: The model's tokenizer.
        canonical_choices: Tool names and enum values follow the tokenizer's own tokenization
            of the value, so that a steered row cannot drift into an odd spelling (``"a"
            "dd" "_p"...`` for ``add_product_review``) that the grammar also allows.
    """

    def __init__(
        self, rows: Sequence[RowRules], tokenizer: Any, *, canonical_choices: bool = False
    ) -> None:
        self.rows = list(rows)
        self._trackers = _RowTrackers([r.allowed for r in self.rows])
        self._split = any(r.split for r in self.rows)
        self._gated = any(r.gate is not None for r in self.rows)
        self._canonical = canonical_choices and any(r.constraint for r in self.rows)
        self._tokenizer = tokenizer
        self._ids: dict[str, list[int]] = {}

    def gate(self, texts: list[str]) -> torch.Tensor | None:
        """How strongly each row's next token is steered, per channel (see :func:`_gate_values`),
        from its text so far (which includes the text its grammar forces next: a forced run is
        gated at its end, over the pass that feeds it)."""
        if not self._gated:
            return None
        values = [
            _gate_values(r, self._trackers.at(i, text) if r.gate is not None else None)
            for i, (r, text) in enumerate(zip(self.rows, texts, strict=True))
        ]
        return torch.tensor(values if self._split else [v[0] for v in values])

    def repeat_scope(self, texts: list[str]) -> list[bool]:
        """Rows where the repetition guard applies: unconstrained rows, and constrained rows
        inside a free-text argument value."""
        out = []
        for i, (r, text) in enumerate(zip(self.rows, texts, strict=True)):
            if r.constraint is None:
                out.append(True)
                continue
            tracker = self._trackers.at(i, text)
            out.append(
                tracker.position is CallPosition.FREE_TEXT
                if tracker is not None
                else in_free_text_value(text, r.allowed)
            )
        return out

    def close_scope(self, texts: list[str]) -> list[bool]:
        """Rows where a call may be brought to an end: constrained rows inside a call (a row
        that may answer in text is closed only once it has opened a call)."""
        return [
            r.constraint is not None and (r.constraint.grammar.kind != "auto" or in_open_call(text))
            for r, text in zip(self.rows, texts, strict=True)
        ]

    def restrict(self, texts: list[str]) -> list[Collection[int] | None] | None:
        """With ``canonical_choices``, the next tokens of each row inside a tool name or enum
        value (see :func:`canonical_next`)."""
        if not self._canonical:
            return None
        out: list[Collection[int] | None] = []
        for i, (r, text) in enumerate(zip(self.rows, texts, strict=True)):
            tracker = self._trackers.at(i, text) if r.constraint is not None else None
            choice = tracker.open_choice() if tracker is not None else None
            out.append(None if choice is None else canonical_next(choice, self._token_ids))
        return out

    def _token_ids(self, text: str) -> list[int]:
        if text not in self._ids:
            self._ids[text] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._ids[text]


def canonical_next(
    choice: tuple[str, Sequence[str]], ids: Callable[[str], list[int]]
) -> set[int] | None:
    """The next tokens of the canonical tokenizations of the values that extend ``text``.

    ``choice`` is ``(text so far, allowed values)``; ``ids`` tokenizes a string. ``None`` (no
    restriction) when the text so far already is a value, or is not a canonical prefix of any.
    """
    text, values = choice
    done = ids(text) if text else []
    nxt: set[int] = set()
    for value in values:
        if value == text:
            return None
        if value.startswith(text):
            full = ids(value)
            if len(full) > len(done) and full[: len(done)] == done:
                nxt.add(full[len(done)])
    return nxt or None


class _RowTrackers:
    """One :class:`CallTracker` per batch row, fed only the text added since the last step
    (the texts of a decode only grow; a row whose text does not extend the fed one starts
    over). Rows without specs have no tracker. One instance serves every per-step rule of a
    decode: asking again for the same text feeds nothing."""

    def __init__(self, specs: Sequence[Sequence[ToolSpec]]) -> None:
        self._specs = [list(s) for s in specs]
        self._trackers: list[CallTracker | None] = [None] * len(self._specs)
        self._fed = [""] * len(self._specs)

    def at(self, row: int, text: str) -> CallTracker | None:
        """The row's tracker after ``text``."""
        if not self._specs[row]:
            return None
        tracker = self._trackers[row]
        if tracker is None or not text.startswith(self._fed[row]):
            tracker = self._trackers[row] = CallTracker(self._specs[row])
            self._fed[row] = ""
        tracker.feed(text[len(self._fed[row]) :])
        self._fed[row] = text
        return tracker


def _gate_values(row: RowRules, tracker: CallTracker | None) -> tuple[float, float]:
    """How strongly the next token of a row is steered, per channel: 0.0 (not at all) to 1.0.

    The first channel is the row's vector: 0.0 or 1.0 by its gate. The second is its value
    vector, on only at enum, boolean and null values, where it replaces the first.
    ``tracker`` follows the row's text over its offered tools (None when the row is not
    gated).
    """
    if tracker is None:
        return 1.0, 0.0
    position = tracker.position
    if row.split and position is CallPosition.CHOICE:
        return 0.0, 1.0
    if row.gate == "all":
        return 1.0, 0.0
    if row.gate == "decisions":
        return (1.0 if position in _DECISIONS else 0.0), 0.0
    return (0.0 if position is CallPosition.FREE_TEXT else 1.0), 0.0
