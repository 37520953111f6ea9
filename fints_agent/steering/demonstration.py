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

from collections.abc import Sequence

from fints_agent.models import LoadedModel
from fints_agent.prefix_cache import common_prefix
from fints_agent.steering.capture import Text, _ids, capture_answer_means
from fints_agent.steering.layers import SITES, Site, find_sites
from fints_agent.steering.vector import SteeringVector

__all__ = ["demonstration_vectors"]


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
    tok = lm.tokenizer
    prompts: list[Text] = []
    answers: list[list[int]] = []
    offsets: list[int] = []
    groups: list[int] = []
    anchors: list[Text | None] = []
    pairs: list[list[tuple[int, int]]] = []  # per trajectory: (chosen-shown, rejected-shown)

    def add(i: int, prompt: Text, answer: list[int]) -> int:
        """Queues one capture of trajectory ``i`` at the answer's last position (the
        trajectory's captures share their common prefix); returns its index."""
        prompts.append(prompt)
        answers.append(answer)
        offsets.append(len(answer) - 1)
        groups.append(i)
        anchors.append(None if prefixes is None else prefixes[i])
        return len(prompts) - 1

    for i in range(n):
        if len(shown_rejected[i]) != len(rejected[i]):
            raise ValueError(
                f"trajectory {i}: {len(shown_rejected[i])} prompts for "
                f"{len(rejected[i])} rejected answers"
            )
        c_ids = _ids(tok, chosen[i])
        starts: list[tuple[int, int]] = []
        chosen_at: dict[int, int] = {}  # deciding position -> its chosen-shown capture
        for shown, r in zip(shown_rejected[i], rejected[i], strict=True):
            # The position that decides the first differing token: the one right before it.
            head = common_prefix(c_ids, _ids(tok, r))
            if head == 0:
                continue
            if head not in chosen_at:
                chosen_at[head] = add(i, shown_chosen[i], c_ids[:head])
            starts.append((chosen_at[head], add(i, shown, c_ids[:head])))
        if not starts:
            raise ValueError(
                f"trajectory {i}: no rejected answer shares a first token with the chosen one, "
                "so no position decides between them"
            )
        pairs.append(starts)
    layer_list = list(range(len(find_sites(lm.model)))) if layers is None else list(layers)
    means = capture_answer_means(
        lm,
        prompts,
        answers,
        layer_list,
        sites,
        batch_size=batch_size,
        answer_offsets=offsets,
        groups=groups,
        prefixes=anchors,
    )
    vectors = []
    for starts in pairs:
        diff = sum(means[c] - means[r] for c, r in starts) / len(starts)
        vectors.append(
            SteeringVector(
                diff,  # type: ignore[arg-type]
                tuple(layer_list),
                tuple(sites),
                lm.fingerprint,
                {"kind": "demonstration", "rejected": len(starts)},
            )
        )
    return vectors
