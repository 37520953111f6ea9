"""A trajectory's steering vectors: computed on exactly the prompt the model sees at inference,
and kept as one flat float32 array.

Chosen and rejected calls are serialized by the same function the model's answers are parsed
against (the renderer's ``render_call``), on the prompt of
:class:`fints_agent.prompting.PromptRenderer`. A store keeps one kind of vector
(:attr:`StoreLayout.vectors <fints_agent.memory.layout.StoreLayout.vectors>`):

* ``"contrast"``: activations over the chosen answer minus over the rejected ones
  (:mod:`~fints_agent.steering.contrast`);
* ``"demonstration"``: the decision position with the chosen call shown as a worked example
  minus with a rejected one shown (:mod:`~fints_agent.steering.demonstration`);
* ``"split"``: both, in this order, concatenated (:attr:`StoreLayout.parts
  <fints_agent.memory.layout.StoreLayout.parts>` is 2). The contrastive part steers the tool
  name, so it contrasts the chosen call with the rejected calls of *another* tool where there
  are any (a rejected call of the same tool differs in a value, which the demonstration part
  carries; averaging it in would dilute the tool contrast), else with every rejected call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.negatives import Call
from fints_agent.memory.trajectory import PreparedTrajectory
from fints_agent.models import LoadedModel
from fints_agent.steering.layers import Site
from fints_agent.steering.vector import SteeringVector

__all__ = ["flatten", "steering_vectors", "unflatten"]


def flatten(parts: Sequence[SteeringVector]) -> np.ndarray:
    """A trajectory's vectors as the one flat array the store keeps (see ``StoreLayout.parts``)."""
    return np.concatenate([v.tensor.numpy().reshape(-1) for v in parts])


def unflatten(
    flat: np.ndarray,
    layout: StoreLayout,
    layers: tuple[int, ...],
    sites: tuple[Site, ...],
) -> list[SteeringVector]:
    """Every part of a flat vector (see :attr:`StoreLayout.parts`), on ``layers`` and ``sites``
    (a subset of the layout's)."""
    import torch

    out = []
    for part in np.split(flat, layout.parts):
        vector = SteeringVector.from_flat(
            torch.from_numpy(np.ascontiguousarray(part)), layout.vector_header()
        )
        if vector.layers != layers or vector.sites != sites:
            vector = vector.select(layers, sites)
        out.append(vector)
    return out


def steering_vectors(
    lm: LoadedModel,
    renderer: Any,
    layout: StoreLayout,
    items: list[PreparedTrajectory],
    negatives: list[list[Call]],
    *,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """The flat steering vectors of a chunk of trajectories, of the layout's ``vectors`` kind
    (a split store's: the contrastive vector, then the demonstration vector).

    Args:
        lm: The model (the caller holds its lock).
        renderer: Renders prompts and calls.
        layout: The store's layout: which layers, sites and kind.
        items: The checked trajectories.
        negatives: Per trajectory, the rejected calls to contrast with.
        batch_size: Forward-pass batch size.
    """
    from fints_agent.prompting import format_examples
    from fints_agent.steering.capture import CapturePlan
    from fints_agent.steering.contrast import plan_contrastive
    from fints_agent.steering.demonstration import plan_demonstration

    params = [{s.name: s.parameters for s in p.specs} for p in items]
    chosen = [
        renderer.render_call(p.chosen.name, p.chosen.arguments, ps.get(p.chosen.name))
        for p, ps in zip(items, params, strict=True)
    ]
    rejected = [
        [renderer.render_call(c.name, c.arguments, ps.get(c.name)) for c in n]
        for n, ps in zip(negatives, params, strict=True)
    ]
    prefixes = [renderer.render_prefix(p.messages, p.tools) for p in items]
    # Both kinds of a split memory are captured in one plan: one set of forward passes.
    plan = CapturePlan(
        lm,
        list(layout.layers),
        layout.sites,  # type: ignore[arg-type]
        batch_size=batch_size,
    )
    finishers = []
    if layout.vectors == "split":
        contrasted = [
            [r for r, c in zip(rs, n, strict=True) if c.name != p.chosen.name] or rs
            for rs, n, p in zip(rejected, negatives, items, strict=True)
        ]
    else:
        contrasted = rejected
    if layout.vectors in ("contrast", "split"):
        finishers.append(
            plan_contrastive(
                plan,
                [renderer.render_prompt(p.messages, p.tools) for p in items],
                chosen,
                contrasted,
                prefixes=prefixes,
            )
        )
    if layout.vectors in ("demonstration", "split"):

        def shown(p: PreparedTrajectory, call: Call) -> str:
            examples = format_examples([(p.messages, call.as_dict())], p.specs)
            return str(renderer.render_prompt(p.messages, p.tools, examples=examples))

        finishers.append(
            plan_demonstration(
                plan,
                [shown(p, p.chosen) for p in items],
                [[shown(p, c) for c in n] for p, n in zip(items, negatives, strict=True)],
                chosen,
                rejected,
                prefixes=prefixes,
            )
        )
    means = plan.run()
    parts = [finish(means) for finish in finishers]
    return [flatten(row) for row in zip(*parts, strict=True)]
