"""Demonstration vectors: what showing the chosen call does at the position that decides.

A contrastive vector (:mod:`fints_agent.steering.contrast`) averages activations over the tokens
of the chosen and the rejected answer. Those activations describe having written a value, not
choosing it: the position that chooses a value (the one right before it) sees the same prefix
in both answers, so there is nothing to contrast there. A demonstration vector contrasts that
position under two contexts instead. The trajectory's prompt is shown with one worked example,
once the chosen call and once a rejected one (the same example section retrieval-augmented
prompting uses), and the chosen call is fed up to the first token where the two calls differ.
The vector is the activation at that last position with the chosen call shown, minus the
activation with the rejected call shown, averaged over the rejected calls: the effect of the
demonstration on the decision itself, without its tokens in the prompt at inference (an
in-context vector in the sense of Liu et al., 2023).

Example:
    >>> [v] = demonstration_vectors(
    ...     lm, [shown_a], [[shown_b]], ['{"name": "a"}'], [['{"name": "b"}']]
    ... )
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fints_agent.models import LoadedModel
from fints_agent.prefix_cache import common_prefix
from fints_agent.steering.capture import CapturePlan, Text, _ids
from fints_agent.steering.layers import SITES, Site
from fints_agent.steering.vector import SteeringVector

__all__ = ["demonstration_vectors", "plan_demonstration"]


def demonstration_vectors(
    lm: LoadedModel,
    shown_chosen: Sequence[Text],
    shown_rejected: Sequence[Sequence[Text]],
    chosen: Sequence[Text],
    rejected: Sequence[Sequence[Text]],
    layers: Sequence[int] | None = None,
    sites: Sequence[Site] = SITES,
    *,
    batch_size: int = 8,
    prefixes: Sequence[Text | None] | None = None,
) -> list[SteeringVector]:
    """One demonstration vector per trajectory.

    Args:
        lm: The model.
        shown_chosen: Per trajectory, its prompt with the chosen call shown as an example.
        shown_rejected: Per trajectory, one prompt per rejected call, with that call shown.
        chosen: Per trajectory, the chosen answer.
        rejected: Per trajectory, the rejected answers (the same order as ``shown_rejected``).
        layers: Decoder layers (default: all).
        sites: Sites to capture.
        batch_size: Pairs per forward pass.
        prefixes: Per trajectory, its prompts' cacheable prefix (the system prompt and tools;
            see :func:`~fints_agent.steering.capture.capture_answer_means`).

    Raises:
        ValueError: Length mismatch, empty batch, or a trajectory none of whose rejected
            answers differs from the chosen one after its first token.
    """
    plan = CapturePlan(lm, layers, sites, batch_size=batch_size)
    finish = plan_demonstration(
        plan, shown_chosen, shown_rejected, chosen, rejected, prefixes=prefixes
    )
    return finish(plan.run())


def plan_demonstration(
    plan: CapturePlan,
    shown_chosen: Sequence[Text],
    shown_rejected: Sequence[Sequence[Text]],
    chosen: Sequence[Text],
    rejected: Sequence[Sequence[Text]],
    *,
    prefixes: Sequence[Text | None] | None = None,
) -> Callable[[torch.Tensor], list[SteeringVector]]:
    """Queue the captures of :func:`demonstration_vectors` on a plan; returns the function
    that turns the plan's result into the vectors (the arguments are those of
    :func:`demonstration_vectors`)."""
    n = len(chosen)
    if not (len(shown_chosen) == len(shown_rejected) == len(rejected) == n):
        raise ValueError(
            f"{len(shown_chosen)} chosen prompts, {len(shown_rejected)} rejected prompt lists, "
            f"{n} chosen answers and {len(rejected)} rejected lists"
        )
    if n == 0:
        raise ValueError("empty batch: no trajectories given")
    if prefixes is not None and len(prefixes) != n:
        raise ValueError(f"{len(prefixes)} prefixes for {n} trajectories")
    tok = plan.lm.tokenizer
    base = len(plan)
    pairs: list[list[tuple[int, int]]] = []  # per trajectory: (chosen-shown, rejected-shown)
    for i in range(n):
        if len(shown_rejected[i]) != len(rejected[i]):
            raise ValueError(
                f"trajectory {i}: {len(shown_rejected[i])} prompts for "
                f"{len(rejected[i])} rejected answers"
            )
        group = ("demonstration", base, i)  # a trajectory's captures share their prefix
        prefix = None if prefixes is None else prefixes[i]

        def add(
            prompt: Text, answer: list[int], group: tuple = group, prefix: Text | None = prefix
        ) -> int:
            """Queues one capture at the answer's last position; returns its row."""
            return plan.add(prompt, answer, offset=len(answer) - 1, group=group, prefix=prefix)

        c_ids = _ids(tok, chosen[i])
        starts: list[tuple[int, int]] = []
        chosen_at: dict[int, int] = {}  # deciding position -> its chosen-shown capture
        for shown, r in zip(shown_rejected[i], rejected[i], strict=True):
            # The position that decides the first differing token: the one right before it.
            head = common_prefix(c_ids, _ids(tok, r))
            if head == 0:
                continue
            if head not in chosen_at:
                chosen_at[head] = add(shown_chosen[i], c_ids[:head])
            starts.append((chosen_at[head], add(shown, c_ids[:head])))
        if not starts:
            raise ValueError(
                f"trajectory {i}: no rejected answer shares a first token with the chosen one, "
                "so no position decides between them"
            )
        pairs.append(starts)

    def finish(means: torch.Tensor) -> list[SteeringVector]:
        return [
            SteeringVector(
                sum(means[c] - means[r] for c, r in starts) / len(starts),  # type: ignore[arg-type]
                plan.layers,
                plan.sites,
                plan.lm.fingerprint,
                {"kind": "demonstration", "rejected": len(starts)},
            )
            for starts in pairs
        ]

    return finish
