"""Inject steering vectors into attention and MLP outputs with forward hooks.

``steer`` is a context manager: while it is open, every forward pass (plain calls and
``generate``) adds ``coefficient[layer, site] * vector[layer, site]`` to the chosen module
outputs. Each batch row can get its own vector (or none), so several users' requests generate in
one batch. Nothing is recomputed, no tensor is changed in place, and the hooks are removed when
the block exits, on exceptions too.

Example:
    >>> with steer(lm, vector, coefficients=2.0, from_position=prompt_len):
    ...     out = lm.model.generate(**inputs)
    >>> with steer(lm, [v_alice, None, v_bob]) as handle:   # per batch row
    ...     handle.set_gate(torch.tensor([1.0, 0.0, 0.5]))  # rescale rows between steps
    ...     logits = lm.model(**batch).logits
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fints_agent.models import LoadedModel
from fints_agent.steering.layers import LayerSites, Site, find_sites
from fints_agent.steering.vector import SteeringVector, VectorMismatchError

__all__ = ["Coefficients", "SteeringHandle", "steer"]

Coefficients = float | Mapping[int, float] | Mapping[tuple[int, str], float]
"""One scale for all, a scale per layer, or a scale per (layer, site); missing keys are 0."""


class SteeringHandle:
    """State shared by the hooks of one ``steer`` block.

    Attributes:
        offset: Number of positions already processed in the current sequence (KV cache).
        from_position: First absolute position that is steered (0: the whole sequence).
    """

    def __init__(self, rows: int | None, from_position: int) -> None:
        self.rows = rows
        self.offset = 0
        self.from_position = from_position
        self.gate: torch.Tensor | None = None
        self._seq = 0

    def set_gate(self, gate: torch.Tensor | None) -> None:
        """Scale each batch row's steering (shape ``(rows,)``); ``None`` means all ones.

        The decode loop uses this to switch steering off for some rows and steps, for example
        while a free-text argument is being copied from the request.
        """
        if gate is not None and self.rows is not None and gate.shape != (self.rows,):
            raise ValueError(f"gate must have shape ({self.rows},), got {tuple(gate.shape)}")
        self.gate = None if gate is None else gate.detach().float()

    def reset(self) -> None:
        """Start a new sequence (positions count from 0 again)."""
        self.offset = 0


def _coefficient(coefficients: Coefficients, layer: int, site: str) -> float:
    if isinstance(coefficients, int | float):
        return float(coefficients)
    if (layer, site) in coefficients:
        return float(coefficients[(layer, site)])  # type: ignore[index]
    return float(coefficients.get(layer, 0.0))  # type: ignore[call-overload]


def _deltas(
    lm: LoadedModel,
    found: LayerSites,
    vectors: list[SteeringVector | None],
    coefficients: Coefficients,
    sites: Sequence[Site] | None,
) -> dict[tuple[int, Site], torch.Tensor]:
    present = [v for v in vectors if v is not None]
    if not present:
        return {}
    first = present[0]
    for v in present:
        v.check_model(lm.fingerprint, len(found), lm.d_model)
        if v.layers != first.layers or v.sites != first.sites:
            raise VectorMismatchError("per-row steering vectors must share layers and sites")
    use_sites = tuple(first.sites if sites is None else sites)
    for s in use_sites:
        if s not in first.sites:
            raise VectorMismatchError(f"site {s!r} not in the vector's sites {first.sites}")
    stacked = torch.stack(
        [torch.zeros_like(first.tensor) if v is None else v.tensor for v in vectors]
    )  # (rows, layers, sites, d_model)
    device, dtype = lm.device, lm.dtype
    deltas: dict[tuple[int, Site], torch.Tensor] = {}
    for li, layer in enumerate(first.layers):
        for site in use_sites:
            c = _coefficient(coefficients, layer, site)
            if c == 0.0:
                continue
            si = first.sites.index(site)
            deltas[(layer, site)] = (c * stacked[:, li, si]).to(device=device, dtype=dtype)
    return deltas


def _position_hook(handle: SteeringHandle) -> Any:
    def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        handle._seq = 0 if ids is None else int(ids.shape[1])

    def post(_m: nn.Module, _args: Any, _kwargs: Any, _out: Any) -> None:
        handle.offset += handle._seq

    return pre, post


def _site_hook(handle: SteeringHandle, delta: torch.Tensor) -> Any:
    per_row = delta.shape[0] > 1

    def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
        hidden = out[0] if isinstance(out, tuple) else out
        batch, seq = hidden.shape[0], hidden.shape[1]
        if per_row and batch != delta.shape[0]:
            raise VectorMismatchError(
                f"{delta.shape[0]} per-row steering vectors for a batch of {batch}"
            )
        add = delta[:, None, :]  # (rows or 1, 1, d)
        if handle.gate is not None:
            add = add * handle.gate.to(add.device, add.dtype)[:, None, None]
        start = handle.from_position - handle.offset
        if start > 0:
            if start >= seq:
                return None
            mask = torch.zeros(1, seq, 1, dtype=add.dtype, device=add.device)
            mask[:, start:] = 1
            add = add * mask
        steered = hidden + add
        if isinstance(out, tuple):
            return (steered, *out[1:])
        return steered

    return hook


@contextmanager
def steer(
    lm: LoadedModel,
    vectors: SteeringVector | Sequence[SteeringVector | None],
    *,
    coefficients: Coefficients = 1.0,
    sites: Sequence[Site] | None = None,
    from_position: int = 0,
) -> Iterator[SteeringHandle]:
    """Add steering vectors to attention/MLP outputs while the block runs.

    Args:
        lm: The model to steer.
        vectors: One vector for every row, or one per batch row (``None``: that row unsteered).
        coefficients: Scale per layer and site (see :data:`Coefficients`).
        sites: Restrict to these sites (default: all sites of the vectors).
        from_position: First absolute position steered; pass the (padded) prompt length to
            steer generated tokens only. Positions are counted across KV-cache steps; call
            ``handle.reset()`` between independent sequences in one block.

    Yields:
        A :class:`SteeringHandle` (per-row gates, position state).

    Raises:
        VectorMismatchError: A vector does not match the model (checked before any hook).
    """
    rows: list[SteeringVector | None] = (
        [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    )
    if not rows:
        raise ValueError("no steering vectors given")
    if from_position < 0:
        raise ValueError(f"from_position must be >= 0, got {from_position}")
    found = find_sites(lm.model)
    deltas = _deltas(lm, found, rows, coefficients, sites)
    handle = SteeringHandle(len(rows) if len(rows) > 1 else None, from_position)
    hooks = []
    try:
        pre, post = _position_hook(handle)
        hooks.append(lm.model.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(lm.model.register_forward_hook(post, with_kwargs=True))
        for (layer, site), delta in deltas.items():
            module = found.module(layer, site)
            hooks.append(module.register_forward_hook(_site_hook(handle, delta)))
    except BaseException:
        for h in hooks:
            h.remove()
        raise
    try:
        yield handle
    finally:
        for h in hooks:
            h.remove()
