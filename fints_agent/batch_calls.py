"""``batch`` and ``abatch`` of the chat model: inputs run as calls of their own, in cohorts
whose turns the model's micro-batcher decodes together (:mod:`fints_agent.batching`).

Each input runs the model's own ``invoke`` (or ``ainvoke``) with its config, so LangChain's
per-call path (callbacks, cache, message ids and metadata) is untouched and only the decoding
is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ContextThreadPoolExecutor, get_config_list

from fints_agent.batching import Cohort, MicroBatcher

__all__ = ["Chunk", "in_cohorts", "run_abatch", "run_batch"]

Chunk = list[tuple[LanguageModelInput, RunnableConfig]]
"""Inputs with their configs."""


def in_cohorts(
    batcher: MicroBatcher[Any, Any],
    inputs: list[LanguageModelInput],
    config: RunnableConfig | list[RunnableConfig] | None,
    max_batch_size: int,
) -> list[tuple[Cohort, Chunk]]:
    """The inputs with their configs, in cohorts decoded together: of ``max_batch_size``
    inputs, or fewer when ``max_concurrency`` allows fewer concurrent calls."""
    pairs = list(zip(inputs, get_config_list(config, len(inputs)), strict=True))
    limit = pairs[0][1].get("max_concurrency") if pairs else None
    size = max(1, min(max_batch_size, limit)) if limit else max_batch_size
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    return [(batcher.cohort(len(chunk)), chunk) for chunk in chunks]


def run_batch(
    invoke: Callable[..., Any],
    cohorts: list[tuple[Cohort, Chunk]],
    return_exceptions: bool,
    kwargs: Mapping[str, Any],
) -> list[Any]:
    """Each input's ``invoke`` on a thread of its own, a cohort at a time; results in order
    (an input's exception in its place with ``return_exceptions``)."""
    outputs: list[Any] = []
    for cohort, chunk in cohorts:

        def one(item: tuple[LanguageModelInput, RunnableConfig], cohort: Cohort = cohort) -> Any:
            with cohort.member():
                try:
                    return invoke(item[0], item[1], **kwargs)
                except Exception as exc:
                    if return_exceptions:
                        return exc
                    raise

        if len(chunk) == 1:
            outputs.append(one(chunk[0]))
            continue
        with ContextThreadPoolExecutor(max_workers=len(chunk)) as pool:
            outputs += pool.map(one, chunk)
    return outputs


async def run_abatch(
    ainvoke: Callable[..., Awaitable[Any]],
    cohorts: list[tuple[Cohort, Chunk]],
    return_exceptions: bool,
    kwargs: Mapping[str, Any],
) -> list[Any]:
    """:func:`run_batch` on the event loop: each input's ``ainvoke`` as a task."""
    outputs: list[Any] = []
    for cohort, chunk in cohorts:

        async def one(
            item: tuple[LanguageModelInput, RunnableConfig], cohort: Cohort = cohort
        ) -> Any:
            with cohort.member():
                try:
                    return await ainvoke(item[0], item[1], **kwargs)
                except Exception as exc:
                    if return_exceptions:
                        return exc
                    raise

        outputs += await asyncio.gather(*(one(item) for item in chunk))
    return outputs
