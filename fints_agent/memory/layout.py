"""What a store's vectors and embeddings are: the :class:`StoreLayout`, fixed by its first vector.

A store keeps vectors of one model, layers, sites and vector kind, retrieved by embeddings of
one embedder; the layout records these in the store's ``P-meta`` collection (see
:mod:`~fints_agent.memory.chroma`), and vectors of another model are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fints_agent.config import VECTOR_KINDS
from fints_agent.memory.embed import Embedder
from fints_agent.memory.errors import StoreError, StoreLayoutError
from fints_agent.memory.records import TrajectoryRecord
from fints_agent.models import LoadedModel
from fints_agent.steering.layers import check_layers, check_sites

__all__ = ["StoreLayout"]

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class StoreLayout:
    """What a store's vectors and embeddings are: fixed when the store gets its first vector.

    Attributes:
        model_fingerprint: Fingerprint of the model the vectors were computed on.
        layers: Decoder layers of each vector.
        sites: Sites of each vector.
        d_model: Width of each direction.
        embedder: Name of the retrieval embedder.
        embed_dim: Width of a retrieval embedding.
        vectors: How the steering vectors were computed (``"contrast"``,
            ``"demonstration"`` or ``"split"``, see :class:`~fints_agent.memory.Memory`).
    """

    model_fingerprint: str
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    d_model: int
    embedder: str
    embed_dim: int
    vectors: str = "contrast"

    @classmethod
    def of(
        cls,
        lm: LoadedModel,
        embedder: Embedder,
        layers: Sequence[int] | None,
        sites: Sequence[str],
        vectors: str,
    ) -> StoreLayout:
        """The layout of the vectors a memory of this model and embedder computes.

        Args:
            lm: The model.
            embedder: The retrieval embedder.
            layers: Decoder layers (``None``: all).
            sites: Sites.
            vectors: The vector kind (one of :data:`~fints_agent.config.VECTOR_KINDS`).

        Raises:
            ValueError: No layers, an unknown or repeated site, or an unknown vector kind.
            IndexError: A layer the model does not have.
        """
        layer_list = list(range(lm.num_layers)) if layers is None else [int(x) for x in layers]
        if not layer_list:
            raise ValueError("no layers chosen")
        check_layers(layer_list, lm.num_layers)
        check_sites(list(sites))
        if vectors not in VECTOR_KINDS:
            raise ValueError(f"unknown vectors {vectors!r}; use one of {VECTOR_KINDS}")
        return cls(
            model_fingerprint=lm.fingerprint,
            layers=tuple(layer_list),
            sites=tuple(sites),
            d_model=lm.d_model,
            embedder=embedder.name,
            embed_dim=embedder.dim,
            vectors=vectors,
        )

    @property
    def parts(self) -> int:
        """Steering vectors per trajectory: 2 for ``"split"`` (the contrastive vector, then
        the demonstration vector), else 1."""
        return 2 if self.vectors == "split" else 1

    @property
    def vector_dim(self) -> int:
        """Number of floats of one flat vector (all its parts)."""
        return self.parts * len(self.layers) * len(self.sites) * self.d_model

    def vector_header(self) -> dict[str, Any]:
        """The header :meth:`SteeringVector.from_flat` needs."""
        return {
            "layers": list(self.layers),
            "sites": list(self.sites),
            "d_model": self.d_model,
            "model_fingerprint": self.model_fingerprint,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model_fingerprint": self.model_fingerprint,
            "layers": list(self.layers),
            "sites": list(self.sites),
            "d_model": self.d_model,
            "embedder": self.embedder,
            "embed_dim": self.embed_dim,
            "vectors": self.vectors,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreLayout:
        """Inverse of :meth:`to_dict` (also reads collection metadata).

        Raises:
            StoreError: Fields are missing or malformed.
        """
        try:
            layers = data["layers"]
            sites = data["sites"]
            if isinstance(layers, str):
                layers = json.loads(layers)
            if isinstance(sites, str):
                sites = json.loads(sites)
            return cls(
                model_fingerprint=str(data["model_fingerprint"]),
                layers=tuple(int(x) for x in layers),
                sites=tuple(str(s) for s in sites),
                d_model=int(data["d_model"]),
                embedder=str(data["embedder"]),
                embed_dim=int(data["embed_dim"]),
                # Stores written before the field existed hold contrastive vectors.
                vectors=str(data.get("vectors", "contrast")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"malformed store layout {dict(data)!r}: {exc}") from exc

    def to_metadata(self) -> dict[str, str | int]:
        """The form kept as Chroma collection metadata (flat: lists as JSON text)."""
        d = self.to_dict()
        d["layers"] = json.dumps(d["layers"])
        d["sites"] = json.dumps(d["sites"])
        return {**d, "format_version": _FORMAT_VERSION}

    def differences(self, other: StoreLayout) -> list[str]:
        """Human-readable differences from another layout (empty when equal)."""
        out = []
        names = (
            "model_fingerprint",
            "layers",
            "sites",
            "d_model",
            "embedder",
            "embed_dim",
            "vectors",
        )
        for name in names:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: store has {a!r}, got {b!r}")
        return out

    def unserved(self, wanted: StoreLayout) -> list[str]:
        """How a store of this layout cannot serve a memory that wants ``wanted`` (empty: it
        can). A store with more layers or sites serves a subset (selected at retrieval)."""
        out = []
        for d in self.differences(wanted):
            if d.startswith("layers:") and set(wanted.layers) <= set(self.layers):
                continue
            if d.startswith("sites:") and set(wanted.sites) <= set(self.sites):
                continue
            out.append(d)
        return out

    def check_records(self, records: Sequence[TrajectoryRecord]) -> None:
        """Check the records' vector and embedding widths against this layout.

        Raises:
            StoreLayoutError: A vector or embedding missing or of the wrong width.
        """
        for r in records:
            if r.vector is None or r.embedding is None:
                raise StoreLayoutError(f"trajectory {r.id} has no vector or no embedding")
            if np.asarray(r.vector).size != self.vector_dim:
                raise StoreLayoutError(
                    f"trajectory {r.id}: vector of {np.asarray(r.vector).size} values, the store "
                    f"holds {self.vector_dim} ({self.parts} x {len(self.layers)} layers "
                    f"x {len(self.sites)} sites x {self.d_model})"
                )
            if np.asarray(r.embedding).size != self.embed_dim:
                raise StoreLayoutError(
                    f"trajectory {r.id}: embedding of {np.asarray(r.embedding).size} values, the "
                    f"store's embedder {self.embedder!r} gives {self.embed_dim}"
                )
