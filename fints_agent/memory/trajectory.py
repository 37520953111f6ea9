"""A trajectory to record: :class:`TrajectoryInput` as given, :class:`PreparedTrajectory` once
checked.

A trajectory is a request (its messages), the tools offered, the call the user accepted and the
calls they rejected. :meth:`Recorder.prepare <fints_agent.memory.recorder.Recorder.prepare>`
checks one and normalizes it into a :class:`PreparedTrajectory`, which everything after the
checks (negatives, vectors, the stored record) reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fints_agent.calls.specs import ToolSpec
from fints_agent.memory.negatives import Call, MemoryInputError

__all__ = ["NegativeFn", "PreparedTrajectory", "TrajectoryInput"]

NegativeFn = Callable[[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]], Sequence[Any]]
"""``(messages, tools, chosen) -> calls``: supplies rejected calls (e.g. the unsteered model's)."""


@dataclass
class TrajectoryInput:
    """One trajectory to record.

    Attributes:
        user_id: Whose turn it was.
        messages: The request context (role/content dicts).
        tools: The tools offered (any form :func:`fints_agent.calls.specs.to_tool_specs` reads).
        chosen: The accepted call, ``{"name": ..., "arguments": {...}}``.
        rejected: Rejected calls, same form (``None``: build negatives).
        supersedes: Id of an older trajectory of the same user this one replaces.
        created_at: Unix time of the turn (default: now).
    """

    user_id: str
    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Any]
    chosen: Any
    rejected: Sequence[Any] | None = None
    supersedes: str | None = None
    created_at: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrajectoryInput:
        """From a dict with ``user_id``, ``messages``, ``tools``, ``chosen`` and optionally
        ``rejected``, ``supersedes``, ``created_at``: for example a line of
        ``examples/data/personal_webapi.jsonl``.

        Raises:
            MemoryInputError: A required key is missing.
        """
        try:
            return cls(
                user_id=data["user_id"],
                messages=data["messages"],
                tools=data["tools"],
                chosen=data["chosen"],
                rejected=data.get("rejected"),
                supersedes=data.get("supersedes"),
                created_at=data.get("created_at"),
            )
        except KeyError as exc:
            raise MemoryInputError(f"trajectory dict is missing {exc}") from None


@dataclass
class PreparedTrajectory:
    """A checked trajectory: plain messages, OpenAI tools and their specs, normalized calls.

    Attributes:
        user_id: Whose turn it was.
        messages: The request context as plain role/content dicts.
        tools: The tools offered, as OpenAI function-tool dicts.
        specs: The same tools as specs.
        request: The text it is retrieved by.
        chosen: The accepted call.
        rejected: The rejected calls given (``None``: build negatives).
        supersedes: Id of an older trajectory of the same user this one replaces.
        created_at: Unix time of the turn.
    """

    user_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    specs: list[ToolSpec]
    request: str
    chosen: Call
    rejected: list[Call] | None
    supersedes: str | None
    created_at: float

    def chosen_spec(self) -> ToolSpec:
        """The spec of the chosen call's tool."""
        return next(s for s in self.specs if s.name == self.chosen.name)
