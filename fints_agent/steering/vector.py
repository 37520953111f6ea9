"""SteeringVector: one typed value holding a vector per (layer, site), with its metadata.

A steering vector is a float32 tensor of shape ``(len(layers), len(sites), d_model)`` plus the
fingerprint of the model it was computed on. Vectors support arithmetic (``+ - * /``, negation)
between vectors of the same model, layers and sites, and save/load as safetensors.

Example:
    >>> v = SteeringVector.zeros(lm.fingerprint, layers=[3, 4], sites=("attn", "mlp"), d_model=576)
    >>> w = 0.5 * (v + v) - v
    >>> w.save("v.safetensors"); SteeringVector.load("v.safetensors") == w
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fints_agent.steering.layers import Site, check_sites

__all__ = ["SteeringVector", "VectorMismatchError"]


class VectorMismatchError(ValueError):
    """A steering vector does not fit a model or another vector (fingerprint, layers, d_model)."""


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-layer, per-site steering directions for one model.

    Attributes:
        tensor: float32, shape ``(len(layers), len(sites), d_model)``.
        layers: Decoder layer indices, one per first-axis row.
        sites: Site names, one per second-axis column.
        model_fingerprint: Fingerprint of the model the vector belongs to.
        metadata: Free-form JSON-serializable facts (e.g. how it was built).
    """

    tensor: torch.Tensor
    layers: tuple[int, ...]
    sites: tuple[Site, ...]
    model_fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = tuple(int(x) for x in self.layers)
        sites = tuple(self.sites)
        check_sites(sites)
        if len(set(layers)) != len(layers):
            raise ValueError(f"repeated layer in {layers}")
        if self.tensor.ndim != 3 or tuple(self.tensor.shape[:2]) != (len(layers), len(sites)):
            raise ValueError(
                f"tensor shape {tuple(self.tensor.shape)} does not match "
                f"{len(layers)} layers x {len(sites)} sites x d_model"
            )
        if not torch.isfinite(self.tensor).all():
            raise ValueError("steering vector contains NaN or infinite values")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "tensor", self.tensor.detach().to("cpu", torch.float32))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def zeros(
        cls, model_fingerprint: str, layers: Sequence[int], sites: Sequence[Site], d_model: int
    ) -> SteeringVector:
        """An all-zero vector (the neutral element of ``+``)."""
        return cls(
            torch.zeros(len(layers), len(sites), d_model),
            tuple(layers),
            tuple(sites),
            model_fingerprint,
        )

    @property
    def d_model(self) -> int:
        """Width of each direction."""
        return int(self.tensor.shape[2])

    def like(self, tensor: torch.Tensor, **metadata: Any) -> SteeringVector:
        """A vector with this one's layers, sites and model, and another tensor."""
        return SteeringVector(
            tensor, self.layers, self.sites, self.model_fingerprint, {**self.metadata, **metadata}
        )

    # -- checks -------------------------------------------------------------------------------
    def check_model(self, fingerprint: str, num_layers: int, d_model: int) -> None:
        """Refuse a model this vector was not computed on.

        Raises:
            VectorMismatchError: Fingerprint, layer count or d_model differ.
        """
        if self.d_model != d_model:
            raise VectorMismatchError(
                f"steering vector has d_model {self.d_model}, the model has {d_model}"
            )
        if max(self.layers, default=-1) >= num_layers:
            raise VectorMismatchError(
                f"steering vector uses layer {max(self.layers)}, the model has {num_layers} layers"
            )
        if self.model_fingerprint != fingerprint:
            raise VectorMismatchError(
                f"steering vector was computed on model {self.model_fingerprint}, "
                f"not on this model ({fingerprint})"
            )

    def _check_same_space(self, other: SteeringVector) -> None:
        if (
            self.layers != other.layers
            or self.sites != other.sites
            or self.model_fingerprint != other.model_fingerprint
            or self.d_model != other.d_model
        ):
            raise VectorMismatchError(
                "vectors differ in model, layers, sites or d_model: "
                f"({self.model_fingerprint}, {self.layers}, {self.sites}, {self.d_model}) vs "
                f"({other.model_fingerprint}, {other.layers}, {other.sites}, {other.d_model})"
            )

    # -- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        self._check_same_space(other)
        return self.like(self.tensor + other.tensor)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        self._check_same_space(other)
        return self.like(self.tensor - other.tensor)

    def __mul__(self, scale: float) -> SteeringVector:
        if not isinstance(scale, int | float):
            return NotImplemented
        return self.like(self.tensor * float(scale))

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> SteeringVector:
        if not isinstance(scale, int | float):
            return NotImplemented
        if scale == 0:
            raise ZeroDivisionError("division of a steering vector by zero")
        return self.like(self.tensor / float(scale))

    def __neg__(self) -> SteeringVector:
        return self.like(-self.tensor)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return (
            self.layers == other.layers
            and self.sites == other.sites
            and self.model_fingerprint == other.model_fingerprint
            and torch.equal(self.tensor, other.tensor)
        )

    __hash__ = None  # type: ignore[assignment]

    @staticmethod
    def weighted_sum(vectors: Sequence[SteeringVector], weights: Sequence[float]) -> SteeringVector:
        """``sum_i weights[i] * vectors[i]``, computed in one tensor op.

        Raises:
            ValueError: Empty input or a length mismatch.
            VectorMismatchError: The vectors are not of one model, layers and sites.
        """
        if not vectors:
            raise ValueError("weighted_sum of no vectors")
        if len(vectors) != len(weights):
            raise ValueError(f"{len(vectors)} vectors but {len(weights)} weights")
        first = vectors[0]
        for v in vectors[1:]:
            first._check_same_space(v)
        stacked = torch.stack([v.tensor for v in vectors])
        w = torch.tensor(list(weights), dtype=torch.float32).view(-1, 1, 1, 1)
        return first.like((stacked * w).sum(0))

    def select(
        self, layers: Sequence[int] | None = None, sites: Sequence[Site] | None = None
    ) -> SteeringVector:
        """The sub-vector for some of this vector's layers and sites."""
        layers = tuple(self.layers if layers is None else layers)
        sites = tuple(self.sites if sites is None else sites)
        missing = [x for x in layers if x not in self.layers]
        if missing or any(s not in self.sites for s in sites):
            raise VectorMismatchError(f"vector has layers {self.layers} and sites {self.sites}")
        li = [self.layers.index(x) for x in layers]
        si = [self.sites.index(s) for s in sites]
        return SteeringVector(
            self.tensor[li][:, si].clone(),
            layers,
            sites,
            self.model_fingerprint,
            dict(self.metadata),
        )

    # -- flat form (for vector stores) ---------------------------------------------------------
    def flat(self) -> list[float]:
        """The tensor as one flat list of floats (row-major: layer, site, d_model)."""
        values: list[float] = self.tensor.flatten().tolist()
        return values

    def header(self) -> dict[str, Any]:
        """The metadata needed to rebuild a vector from :meth:`flat`."""
        return {
            "layers": list(self.layers),
            "sites": list(self.sites),
            "d_model": self.d_model,
            "model_fingerprint": self.model_fingerprint,
        }

    @classmethod
    def from_flat(
        cls, values: Sequence[float] | torch.Tensor, header: dict[str, Any]
    ) -> SteeringVector:
        """Rebuild a vector from :meth:`flat` values and :meth:`header`."""
        layers = tuple(int(x) for x in header["layers"])
        sites = tuple(header["sites"])
        d_model = int(header["d_model"])
        t = torch.as_tensor(values, dtype=torch.float32)
        if t.numel() != len(layers) * len(sites) * d_model:
            raise VectorMismatchError(
                f"{t.numel()} values do not fill {len(layers)}x{len(sites)}x{d_model}"
            )
        return cls(
            t.reshape(len(layers), len(sites), d_model),
            layers,
            sites,
            str(header["model_fingerprint"]),
        )

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the vector and its metadata to a safetensors file (exact round-trip)."""
        meta = {**{k: json.dumps(v) for k, v in self.header().items()}}
        meta["metadata"] = json.dumps(self.metadata)
        save_file({"vector": self.tensor.contiguous()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a vector written by :meth:`save`.

        Raises:
            ValueError: The file is not a steering vector file.
        """
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            header = {
                k: json.loads(meta[k]) for k in ("layers", "sites", "d_model", "model_fingerprint")
            }
            extra = json.loads(meta.get("metadata", "{}"))
            tensor = tensors["vector"]
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"{path} is not a steering vector file: {exc}") from exc
        return cls(
            tensor,
            tuple(header["layers"]),
            tuple(header["sites"]),
            header["model_fingerprint"],
            extra,
        )
