"""Answering test turns: padded batches of engine requests, or the ``knn`` baseline.

The latency of a turn is reported as the wall time of its batch divided by the batch's rows
(:data:`LATENCY_BASIS`).

Example:
    >>> outcomes = answer_turns(records, "rag+steer", engine=engine, batch_size=8)
    >>> outcomes[0].call, outcomes[0].score.call
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fints_agent.eval.personal.methods import _check_method, knn_call, personalization_of
from fints_agent.eval.scoring import CallScore, score_call

if TYPE_CHECKING:
    from fints_agent.engine import TurnEngine
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.memory import Memory
    from fints_agent.turn import TurnRequest, TurnResult

__all__ = ["LATENCY_BASIS", "TurnOutcome", "answer_turns"]

LATENCY_BASIS = "batch wall time / rows in the batch (retrieval, prompt and decoding included)"
"""How per-turn latencies are measured when turns run in batches."""


@dataclass
class TurnOutcome:
    """One answered test turn.

    Attributes:
        record: The test record.
        call: The predicted call (``{"name", "arguments"}``), or None without a call.
        score: Its score against the record.
        prompt_tokens: Prompt length (0 for ``knn``).
        latency_s: Wall time per turn, in seconds (batch wall time / rows).
        steering: Which trajectories personalized the turn.
    """

    record: PersonalRecord
    call: dict[str, Any] | None
    score: CallScore
    prompt_tokens: int
    latency_s: float
    steering: dict[str, Any] = field(default_factory=dict)


def _predicted(result: TurnResult) -> dict[str, Any] | None:
    if result.calls:
        return {"name": result.calls[0].name, "arguments": dict(result.calls[0].arguments)}
    if result.invalid_calls and result.invalid_calls[0].name:
        bad = result.invalid_calls[0]
        return {"name": bad.name, "arguments": bad.args}
    return None


def _request(
    record: PersonalRecord, personalization: str, max_new_tokens: int, copy_strings: bool = False
) -> TurnRequest:
    from fints_agent.calls import to_tool_specs
    from fints_agent.turn import TurnRequest

    return TurnRequest(
        messages=[m.model_dump() for m in record.messages],
        tools=to_tool_specs(record.openai_tools()),
        tool_choice="any",
        user_id=record.user_id,
        personalization=personalization,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        copy_strings=copy_strings,
    )


def _length_key(record: PersonalRecord) -> tuple[int, int]:
    return (len(json.dumps(record.openai_tools())), len(record.request))


def answer_turns(
    records: Sequence[PersonalRecord],
    method: str,
    *,
    engine: TurnEngine | None = None,
    memory: Memory | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    copy_strings: bool = False,
    on_batch: Any = None,
) -> list[TurnOutcome]:
    """Answers independent turns in padded batches (similar prompt lengths together).

    Args:
        records: The turns; they must not depend on each other (no feedback between them).
        method: One of :data:`METHODS`.
        engine: The turn engine (LM methods).
        memory: The memory (``knn``).
        batch_size: Rows per batch.
        max_new_tokens: Token budget of a call.
        copy_strings: Restrict free string arguments to spans of the request
            (:mod:`fints_agent.calls.spans`).
        on_batch: Called with the number of rows after each batch (progress).

    Returns:
        One outcome per record, in the order of ``records``.

    Raises:
        ValueError: Unknown method, or the engine or memory it needs is missing.
    """
    _check_method(method)
    outcomes: list[TurnOutcome | None] = [None] * len(records)
    if method == "knn":
        if memory is None:
            raise ValueError("the knn baseline needs a memory")
        for i, record in enumerate(records):
            start = time.perf_counter()
            call, tid = knn_call(memory, record)
            elapsed = time.perf_counter() - start
            steering = {"trajectories": [{"id": tid}] if tid else []}
            outcomes[i] = TurnOutcome(record, call, score_call(call, record), 0, elapsed, steering)
            if on_batch is not None:
                on_batch(1)
        return [o for o in outcomes if o is not None]
    if engine is None:
        raise ValueError(f"method {method!r} needs a turn engine")
    personalization = personalization_of(method)
    order = sorted(range(len(records)), key=lambda i: _length_key(records[i]))
    size = max(1, batch_size)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        requests = [
            _request(records[i], personalization, max_new_tokens, copy_strings) for i in chunk
        ]
        began = time.perf_counter()
        results = engine.complete_batch(requests)
        per_turn = (time.perf_counter() - began) / len(chunk)
        for i, result in zip(chunk, results, strict=True):
            call = _predicted(result)
            outcomes[i] = TurnOutcome(
                records[i],
                call,
                score_call(call, records[i]),
                result.prompt_tokens,
                per_turn,
                result.steering,
            )
        if on_batch is not None:
            on_batch(len(chunk))
    return [o for o in outcomes if o is not None]
