"""Steering configuration: which layers and sites, how strong, how retrieval weights history.

A configuration is saved per model (by fingerprint) in the user cache, so that a tuned
configuration (``fints-agent tune``) is what the chat model uses by default for that model.
Models without a saved configuration use the preset shipped in ``fints_agent/presets`` (the
tuned configuration of the embedded default model), else the defaults.

Example:
    >>> cfg = SteeringConfig(coefficient=2.0, layers=list(range(8, 22)))
    >>> cfg.save_for(lm.fingerprint); SteeringConfig.for_model(lm.fingerprint) == cfg
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from fints_agent.paths import cache_dir

__all__ = ["VECTOR_KINDS", "SteeringConfig", "VectorKind"]

_PRESETS = Path(__file__).resolve().parent / "presets"

VectorKind = Literal["contrast", "demonstration", "split"]
"""How a memory computes trajectories' steering vectors (see :class:`SteeringConfig`)."""

VECTOR_KINDS: tuple[str, ...] = get_args(VectorKind)
"""Every :data:`VectorKind`."""


class SteeringConfig(BaseModel):
    """How a retrieved steering vector is applied.

    Attributes:
        layers: Decoder layers steered (``None``: all layers).
        sites: ``"attn"`` and/or ``"mlp"``.
        coefficient: Scale of the aggregated vector.
        k: Past trajectories retrieved per turn.
        temperature: Softmax temperature over similarities.
        min_similarity: Below this best similarity, no steering.
        steer_prompt: Steer prompt positions too (Fints steers every position).
        gate: ``"all"`` steers every generated token; ``"choices"`` steers the tool name, enum,
            number and boolean values and structure, not free-text string values copied from
            the request; ``"decisions"`` steers only the tokens that decide something: the
            tool name and enum, boolean and null values.
        canonical_choices: Generate tool names and enum values only along the tokenizer's own
            tokenization of the value (a grammar alone also allows odd spellings such as
            ``a`` + ``dd`` for ``add``, which a steered model can drift into).
        recency_half_life: Halve a trajectory's weight every this many newer trajectories of
            the same user (``None``: no recency weighting).
        tool_steering: ``"always"`` steers the tool-name decision like any other;
            ``"contrasted"`` scales it by the share of the retrieval weight that comes from
            trajectories whose rejected calls name another tool. A user's past weather calls
            that only contrast units then do not push a forecast request towards current
            weather; the units are still steered.
        vectors: How memories opened for this configuration compute a trajectory's vector:
            ``"contrast"`` (activations over the chosen call minus over the rejected ones) or
            ``"demonstration"`` (the position that decides, with the chosen call shown as a
            worked example minus with a rejected one shown; see
            :mod:`fints_agent.steering.demonstration`) or ``"split"`` (both: the contrastive
            vector steers as ``gate`` says, except at enum, boolean and null argument values,
            which the demonstration vector steers instead). A store keeps the kind it was
            built with.
        value_coefficient: Scale of the demonstration vector of ``"split"`` memories
            (``None``: ``coefficient``).
    """

    model_config = ConfigDict(extra="forbid")

    layers: list[int] | None = None
    sites: list[Literal["attn", "mlp"]] = Field(default_factory=lambda: ["attn", "mlp"])  # type: ignore[arg-type]
    coefficient: float = 2.0
    k: int = Field(default=5, ge=1, le=100)
    temperature: float = Field(default=0.1, gt=0)
    min_similarity: float = 0.2
    steer_prompt: bool = True
    gate: Literal["all", "choices", "decisions"] = "choices"
    recency_half_life: float | None = None
    canonical_choices: bool = False
    tool_steering: Literal["always", "contrasted"] = "always"
    vectors: VectorKind = "contrast"
    value_coefficient: float | None = None

    @staticmethod
    def path_for(fingerprint: str) -> Path:
        """Where the configuration of a model is saved."""
        return cache_dir() / "steering" / f"{fingerprint}.json"

    def save_for(self, fingerprint: str) -> Path:
        """Save as the default configuration of a model; returns the path."""
        path = self.path_for(fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return path

    @staticmethod
    def preset_for(fingerprint: str) -> Path:
        """Where the shipped preset of a model is (it may not exist)."""
        return _PRESETS / f"{fingerprint}.json"

    @classmethod
    def source_for(cls, fingerprint: str) -> Literal["saved", "preset", "default"]:
        """Where :meth:`for_model` takes a model's configuration from."""
        return cls._lookup(fingerprint)[0]

    @classmethod
    def for_model(cls, fingerprint: str) -> SteeringConfig:
        """The saved configuration of a model, else its shipped preset, else the defaults.

        A saved file that cannot be read (corrupt, or from an incompatible version) is skipped.
        """
        return cls._lookup(fingerprint)[1]

    @classmethod
    def _lookup(
        cls, fingerprint: str
    ) -> tuple[Literal["saved", "preset", "default"], SteeringConfig]:
        saved = cls._read(cls.path_for(fingerprint))
        if saved is not None:
            return "saved", saved
        preset = cls._read(cls.preset_for(fingerprint))
        if preset is not None:
            return "preset", preset
        return "default", cls()

    @classmethod
    def _read(cls, path: Path) -> SteeringConfig | None:
        if not path.is_file():
            return None
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError):
            return None
