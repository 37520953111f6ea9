"""The methods of the personalized benchmark, and the ``knn`` baseline (no model).

Example:
    >>> personalization_of("rag+steer"), METHODS[-1]
    ('rag+steer', 'knn')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.memory import Memory

__all__ = ["METHODS", "knn_call", "personalization_of"]

METHODS: tuple[str, ...] = ("zero-shot", "rag", "steer", "rag+steer", "knn")
"""The methods of the benchmark, in the order results are reported."""

_PERSONALIZATION = {"zero-shot": "none", "rag": "rag", "steer": "steer", "rag+steer": "rag+steer"}


def personalization_of(method: str) -> str:
    """The engine's ``personalization`` for an LM method.

    Args:
        method: One of :data:`METHODS` except ``knn``.

    Returns:
        ``"none"``, ``"rag"``, ``"steer"`` or ``"rag+steer"``.

    Raises:
        ValueError: The method is unknown or does not use the model.
    """
    if method not in _PERSONALIZATION:
        raise ValueError(f"unknown LM method {method!r}; choose from {list(_PERSONALIZATION)}")
    return _PERSONALIZATION[method]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def knn_call(memory: Memory, record: PersonalRecord) -> tuple[dict[str, Any] | None, str | None]:
    """The ``knn`` baseline: the call of the user's most similar past trajectory.

    Only trajectories whose tool is offered this turn count (the memory's tool matching); no
    similarity threshold applies.

    Args:
        memory: The memory holding the user's trajectories.
        record: The turn to answer.

    Returns:
        ``(call, trajectory id)``, or ``(None, None)`` when the user has no usable trajectory.
    """
    retrieval = memory.retrieve(
        record.user_id,
        [m.model_dump() for m in record.messages],
        record.openai_tools(),
        k=1,
        min_similarity=-2.0,
    )
    if not retrieval.calls:
        return None, None
    call = retrieval.calls[0]
    tid = retrieval.trajectory_ids[0] if retrieval.trajectory_ids else None
    return {"name": call.get("name"), "arguments": dict(call.get("arguments") or {})}, tid
