"""Whose turn it is: the user id of a call, from its keyword, runnable config, run metadata or
the model's field."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config

__all__ = ["resolve_user_id", "with_user_id"]


def resolve_user_id(
    explicit: str | None,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    field_value: str | None,
) -> str | None:
    """The user id of a call, in order: kwarg, runnable config, run metadata, model field.

    The runnable config is read through LangGraph's ``get_config()`` (``configurable.user_id``),
    which sees the config of the graph or agent the model runs in.
    """
    if explicit:
        return explicit
    try:
        from langgraph.config import get_config

        configurable = get_config().get("configurable", {})
        if configurable.get("user_id"):
            return str(configurable["user_id"])
    except (ImportError, RuntimeError):
        pass
    if run_manager is not None:
        metadata = getattr(run_manager, "metadata", None) or {}
        if metadata.get("user_id"):
            return str(metadata["user_id"])
    return field_value


def with_user_id(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's kwargs, with its user id from its runnable config when not given.

    The config is the one passed, merged into that of the chain or graph the call runs in;
    ``configurable.user_id`` comes before ``metadata.user_id``. Given as a kwarg, the id
    reaches every path (streaming too) and is part of the call's cache key.
    """
    if kwargs.get("user_id"):
        return kwargs
    merged = ensure_config(config)
    user = merged.get("configurable", {}).get("user_id") or merged.get("metadata", {}).get(
        "user_id"
    )
    return {**kwargs, "user_id": str(user)} if user else kwargs
