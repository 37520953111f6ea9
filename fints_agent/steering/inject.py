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

A row can also carry several *channels*, a tuple of vectors whose gates are set separately
(shape ``(rows, channels)``): for example one vector for the tool-name decision and another
for argument values, each switched on at its own tokens.

    >>> with steer(lm, [(v_names, v_values)]) as handle:
    ...     handle.set_gate(torch.tensor([[1.0, 0.0]]))   # only the first channel this step
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

__all__ = ["Coefficients", "SteeringHandle", "SteeringRow", "steer"]

Coefficients = float | Mapping[int, float] | Mapping[tuple[int, str], float]
"""One scale for all, a scale per layer, or a scale per (layer, site); missing keys are 0."""

SteeringRow = SteeringVector | None | tuple[SteeringVector | None, ...]
"""What steers one batch row: a vector, nothing, or one vector (or nothing) per channel."""


class SteeringHandle:
    """State shared by the hooks of one ``steer`` block.

    Attributes:
        offset: Number of positions already processed in the current sequence (KV cache).
        from_position: First absolute position that is steered (0: the whole sequence).
        channels: Vectors per row (1 unless rows were given as tuples).
    """

    def __init__(self, rows: int | None, from_position: int, channels: int = 1) -> None:
        self.rows = rows
        self.channels = channels
        self.offset = 0
        self.from_position = from_position
        self.gate: torch.Tensor | None = None
        self._seq = 0

    def set_gate(self, gate: torch.Tensor | None) -> None:
        """Scale each batch row's steering; ``None`` means all ones.

        Shape ``(rows,)`` scales every channel of a row alike, ``(rows, channels)`` each
        channel separately. The decode loop uses this to switch steering off for some rows and
        steps, for example while a free-text argument is being copied from the request.
        """
        if gate is not None:
            shape = tuple(gate.shape)
            rows = self.rows if self.rows is not None else (shape[0] if shape else 1)
            if shape not in ((rows,), (rows, self.channels)):
                raise ValueError(
                    f"gate must have shape ({rows},) or ({rows}, {self.channels}), got {shape}"
                )
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


def _channels(rows: Sequence[SteeringRow]) -> list[tuple[SteeringVector | None, ...]]:
    """Every row as a tuple of one vector (or ``None``) per channel."""
    width = max((len(r) for r in rows if isinstance(r, tuple)), default=1)
    if width < 1:
        raise ValueError("a steering row with zero channels")
    out = []
    for r in rows:
        if isinstance(r, tuple):
            if len(r) != width:
                raise ValueError(f"steering rows have {len(r)} and {width} channels")
            out.append(r)
        else:
            out.append((r,) + (None,) * (width - 1))
    return out


def _deltas(
    lm: LoadedModel,
    found: LayerSites,
    rows: list[tuple[SteeringVector | None, ...]],
    coefficients: Coefficients,
    sites: Sequence[Site] | None,
) -> dict[tuple[int, Site], torch.Tensor]:
    """Per (layer, site), the scaled vectors, shape ``(rows, channels, d_model)``."""
    present = [v for row in rows for v in row if v is not None]
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
    zeros = torch.zeros_like(first.tensor)
    stacked = torch.stack(
        [torch.stack([zeros if v is None else v.tensor for v in row]) for row in rows]
    )  # (rows, channels, layers, sites, d_model)
    device, dtype = lm.device, lm.dtype
    deltas: dict[tuple[int, Site], torch.Tensor] = {}
    for li, layer in enumerate(first.layers):
        for site in use_sites:
            c = _coefficient(coefficients, layer, site)
            if c == 0.0:
                continue
            si = first.sites.index(site)
            deltas[(layer, site)] = (c * stacked[:, :, li, si]).to(device=device, dtype=dtype)
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
    """``delta`` has shape ``(rows, channels, d_model)``."""
    per_row = delta.shape[0] > 1
    summed = delta.sum(1)  # (rows, d): the ungated and row-gated cases

    def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
        hidden = out[0] if isinstance(out, tuple) else out
        batch, seq = hidden.shape[0], hidden.shape[1]
        if per_row and batch != delta.shape[0]:
            raise VectorMismatchError(
                f"{delta.shape[0]} per-row steering vectors for a batch of {batch}"
            )
        gate = handle.gate
        if gate is not None and gate.ndim == 2:
            g = gate.to(delta.device, delta.dtype)
            add = (delta * g[:, :, None]).sum(1)[:, None, :]  # (rows, 1, d)
        else:
            add = summed[:, None, :]  # (rows or 1, 1, d)
            if gate is not None:
                add = add * gate.to(add.device, add.dtype).reshape(-1, 1, 1)
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
    vectors: SteeringVector | Sequence[SteeringRow],
    *,
    coefficients: Coefficients = 1.0,
    sites: Sequence[Site] | None = None,
    from_position: int = 0,
) -> Iterator[SteeringHandle]:
    """Add steering vectors to attention/MLP outputs while the block runs.

    Args:
        lm: The model to steer.
        vectors: One vector for every row, or one per batch row (``None``: that row
            unsteered); a row may be a tuple of vectors, one per channel (see
            :meth:`SteeringHandle.set_gate`).
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
    given: list[SteeringRow] = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not given:
        raise ValueError("no steering vectors given")
    rows = _channels(given)
    if from_position < 0:
        raise ValueError(f"from_position must be >= 0, got {from_position}")
    found = find_sites(lm.model)
    deltas = _deltas(lm, found, rows, coefficients, sites)
    handle = SteeringHandle(len(rows) if len(rows) > 1 else None, from_position, len(rows[0]))
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
