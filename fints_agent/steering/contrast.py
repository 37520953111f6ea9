"""Contrastive steering vectors: mean activation on the chosen answer minus the rejected ones.

For one past trajectory with prompt ``p``, chosen answer ``c`` and rejected answers ``r_1..r_n``,
the vector at each layer and site is ``mean_act(p + c) - mean_j mean_act(p + r_j)``, means over
answer tokens only. All pairs of a batch of trajectories run in one batched capture.

Example:
    >>> [v] = contrastive_vectors(lm, [prompt], ['{"name": "a"}'], [['{"name": "b"}']])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fints_agent.models import LoadedModel
from fints_agent.steering.capture import CapturePlan, Text, _ids
from fints_agent.steering.layers import SITES, Site
from fints_agent.steering.vector import SteeringVector

__all__ = ["contrastive_vectors", "plan_contrastive"]


def contrastive_vectors(
    lm: LoadedModel,
    prompts: Sequence[Text],
    chosen: Sequence[Text],
    rejected: Sequence[Sequence[Text]],
    layers: Sequence[int] | None = None,
    sites: Sequence[Site] = SITES,
    *,
    batch_size: int = 8,
    prefixes: Sequence[Text | None] | None = None,
) -> list[SteeringVector]:
    """One contrastive steering vector per (prompt, chosen, rejected answers) triple.

    Args:
        lm: The model.
        prompts: Prompt texts or token ids.
        chosen: The preferred answer for each prompt.
        rejected: For each prompt, one or more dispreferred answers (averaged).
        layers: Decoder layers (default: all).
        sites: Sites to capture.
        batch_size: Pairs per forward pass.
        prefixes: Per prompt, its cacheable prefix (the system prompt and tools; see
            :func:`~fints_agent.steering.capture.capture_answer_means`).

    Raises:
        ValueError: Length mismatch, empty batch, a trajectory without rejected answers, or an
            answer of zero tokens.
    """
    plan = CapturePlan(lm, layers, sites, batch_size=batch_size)
    finish = plan_contrastive(
        plan,
        prompts,
        chosen,
        rejected,
        prefixes=prefixes,
    )
    return finish(plan.run())


def plan_contrastive(
    plan: CapturePlan,
    prompts: Sequence[Text],
    chosen: Sequence[Text],
    rejected: Sequence[Sequence[Text]],
    *,
    prefixes: Sequence[Text | None] | None = None,
) -> Callable[[torch.Tensor], list[SteeringVector]]:
    """Queue the pairs of :func:`contrastive_vectors` on a plan; returns the function that
    turns the plan's result into the vectors (the arguments are those of
    :func:`contrastive_vectors`)."""
    if not (len(prompts) == len(chosen) == len(rejected)):
        raise ValueError(
            f"{len(prompts)} prompts, {len(chosen)} chosen and {len(rejected)} rejected lists"
        )
    if len(prompts) == 0:
        raise ValueError("empty batch: no trajectories given")
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    spans: list[tuple[int, int]] = []  # (row of the chosen pair, number of rejected)
    tok = plan.lm.tokenizer
    base = len(plan)
    for i, (p, c, rs) in enumerate(zip(prompts, chosen, rejected, strict=True)):
        if len(rs) == 0:
            raise ValueError(f"trajectory {i} has no rejected answers")
        c_ids = _ids(tok, c)
        r_ids = [_ids(tok, r) for r in rs]
        group = ("contrast", base, i)  # a trajectory's pairs share their prefix
        prefix = None if prefixes is None else prefixes[i]
        row = plan.add(p, c_ids, group=group, prefix=prefix)
        for r in r_ids:
            plan.add(p, r, group=group, prefix=prefix)
        spans.append((row, len(rs)))

    def finish(means: torch.Tensor) -> list[SteeringVector]:
        return [
            SteeringVector(
                means[row] - means[row + 1 : row + 1 + n_rej].mean(0),
                plan.layers,
                plan.sites,
                plan.lm.fingerprint,
                {"kind": "contrastive", "rejected": n_rej},
            )
            for row, n_rej in spans
        ]

    return finish
