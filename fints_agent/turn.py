"""The value types of one turn: what is asked (:class:`TurnRequest`), what came out
(:class:`TurnResult`, streamed by :class:`TurnStream`), and what the turn engine reads from a
memory (:class:`MemoryLike`, :class:`RetrievalLike`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fints_agent.calls import InvalidToolCall, ToolCall, ToolSpec
from fints_agent.config import DEFAULT_RETRIEVAL
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "MemoryLike",
    "Personalization",
    "RetrievalLike",
    "TurnRequest",
    "TurnResult",
    "TurnStream",
]

Personalization = Literal["none", "steer", "rag", "rag+steer"]
"""How a user's history is used: not at all, as a steering vector, as prompt examples, or both."""


class RetrievalLike(Protocol):
    """What the engine reads from a memory retrieval."""

    vector: SteeringVector | None
    value_vector: SteeringVector | None
    trajectory_ids: list[str]
    weights: list[float]
    similarities: list[float]
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]]


class MemoryLike(Protocol):
    """The part of :class:`fints_agent.memory.Memory` the engine uses."""

    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        *,
        k: int = DEFAULT_RETRIEVAL.k,
        temperature: float = DEFAULT_RETRIEVAL.softmax_temperature,
        min_similarity: float | None = None,
        recency_half_life: float | None = None,
    ) -> RetrievalLike:
        """Top-k of the user's trajectories and their aggregated vector."""
        ...


@dataclass
class TurnRequest:
    """One turn to generate.

    Attributes:
        messages: OpenAI-style message dicts.
        tools: The tools offered this turn.
        tool_choice: LangChain/OpenAI tool choice (None/"auto", "none", "any", a name...).
        user_id: Whose history personalizes the turn (None: nobody's).
        personalization: How the history is used.
        json_schema: Constrain the answer to one JSON value of this schema instead of calls.
        max_new_tokens: Upper bound on generated tokens.
        temperature: 0 for greedy decoding.
        seed: Sampling seed.
        stop: Stop sequences (text generation only).
        parallel: Allow several calls in one answer (parallel calls).
        no_repeat_ngram: Inside free text (plain answers and free-text string values of a
            call), never repeat an n-gram of this size (0: off).
        copy_strings: Restrict free string arguments to spans of the latest user message
            (:mod:`fints_agent.calls.spans`); the grammar only, calls validate as usual.
    """

    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: Any = None
    user_id: str | None = None
    personalization: Personalization = "steer"
    json_schema: dict[str, Any] | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    stop: list[str] | None = None
    parallel: bool = False
    no_repeat_ngram: int = 4
    copy_strings: bool = False


@dataclass
class TurnResult:
    """What a turn produced.

    Attributes:
        text: The raw generated text.
        content: Text outside call blocks.
        calls: Calls that name a bound tool and validate against its schema.
        invalid_calls: Calls that do not (with the error).
        prompt_tokens: Length of the rendered prompt.
        completion_tokens: Generated tokens.
        finish_reason: ``"stop"`` or ``"length"``.
        steering: Why and how the turn was personalized (user, trajectories, weights).
    """

    text: str
    content: str
    calls: list[ToolCall]
    invalid_calls: list[InvalidToolCall]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    steering: dict[str, Any]


class TurnStream:
    """Iterate for text deltas; ``result`` is set once the iteration ends."""

    def __init__(self, steps: Iterator[str]) -> None:
        self._steps = steps
        self.result: TurnResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self._steps
