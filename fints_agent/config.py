"""Configuration, one small type per job, and the per-model preset that bundles them.

- :class:`RetrievalConfig`: which past trajectories a turn retrieves and how they are weighted.
- :class:`SteeringConfig`: where and how strongly the aggregated vector is added, and at
  which generated tokens.
- :class:`Preset`: what a model uses by default: its retrieval and steering configurations,
  the kind of vectors its memories record (:data:`VectorKind`) and the decoding option
  ``canonical_choices``. A tuned preset is saved per model (by fingerprint) in the user
  cache (``fints-agent tune``); a model without one uses the preset shipped in
  ``fints_agent/presets`` (the tuned preset of the embedded default model), else the
  defaults.

Example:
    >>> preset = Preset.for_model(lm.fingerprint)
    >>> preset.steering.coefficient, preset.retrieval.k, preset.vector_kind
    >>> preset.replace(coefficient=2.0, k=3).save_for(lm.fingerprint)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fints_agent.paths import cache_dir

__all__ = [
    "DEFAULT_RETRIEVAL",
    "VECTOR_KINDS",
    "Preset",
    "PresetSource",
    "RetrievalConfig",
    "SteeringConfig",
    "VectorKind",
]

_PRESETS = Path(__file__).resolve().parent / "presets"

VectorKind = Literal["contrast", "demonstration", "split"]
"""How a memory computes a trajectory's steering vector: ``"contrast"`` (activations over the
chosen call minus over the rejected ones), ``"demonstration"`` (the position that decides,
with the chosen call shown as a worked example minus with a rejected one shown; see
:mod:`fints_agent.steering.demonstration`) or ``"split"`` (both: the contrastive vector steers
as :attr:`SteeringConfig.gate` says, except at enum, boolean and null argument values, which
the demonstration vector steers instead). A store keeps the kind it was built with."""

VECTOR_KINDS: tuple[str, ...] = get_args(VectorKind)
"""Every :data:`VectorKind`."""

PresetSource = Literal["saved", "preset", "default"]
"""Where a model's preset comes from: tuned and saved, shipped, or the defaults."""


class RetrievalConfig(BaseModel):
    """Which of a user's past trajectories steer a turn, and with what weights.

    Attributes:
        k: Past trajectories retrieved per turn.
        softmax_temperature: Temperature of the softmax over similarities that weights them
            (lower: the most similar trajectory dominates).
        min_similarity: Below this best similarity, the turn is not steered.
        recency_half_life: Halve a trajectory's weight every this many newer trajectories of
            the same user (``None``: no recency weighting). Set it for users whose
            preferences change.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=5, ge=1, le=100)
    softmax_temperature: float = Field(default=0.1, gt=0)
    min_similarity: float = 0.2
    recency_half_life: float | None = Field(default=None, gt=0)


class SteeringConfig(BaseModel):
    """How a retrieved steering vector is applied while the model generates.

    Attributes:
        layers: Decoder layers steered (``None``: every layer the vector has).
        sites: ``"attn"`` and/or ``"mlp"`` outputs.
        coefficient: Scale of the aggregated vector.
        value_coefficient: Scale of the demonstration vector of ``"split"`` memories
            (``None``: ``coefficient``).
        steer_prompt: Steer prompt positions too (Fints steers every position); off, the
            prompt's keys and values come from the prefix cache.
        gate: ``"all"`` steers every generated token; ``"choices"`` steers the tool name,
            enum, number and boolean values and structure, not free-text string values
            copied from the request; ``"decisions"`` steers only the tokens that decide
            something: the tool name and enum, boolean and null values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[int] | None = None
    sites: list[Literal["attn", "mlp"]] = Field(default_factory=lambda: ["attn", "mlp"])  # type: ignore[arg-type]
    coefficient: float = 2.0
    value_coefficient: float | None = None
    steer_prompt: bool = True
    gate: Literal["all", "choices", "decisions"] = "choices"


DEFAULT_RETRIEVAL = RetrievalConfig()
"""The retrieval defaults, which every API that retrieves (the memory, the turn engine) takes
its defaults from."""

_JOBS: dict[str, type[BaseModel]] = {"retrieval": RetrievalConfig, "steering": SteeringConfig}
_RENAMED = {"temperature": "softmax_temperature", "vectors": "vector_kind"}
"""Keys of the single flat configuration of earlier versions, under their present names."""


class Preset(BaseModel):
    """What a model uses unless told otherwise.

    Attributes:
        retrieval: How a turn retrieves the user's trajectories.
        steering: How the retrieved vector steers generation.
        vector_kind: The kind of vectors a memory opened for this model records.
        canonical_choices: Generate tool names and enum values only along the tokenizer's
            own tokenization of the value (a grammar alone also allows odd spellings such as
            ``a`` + ``dd`` for ``add``, which a steered model can drift into). A decoding
            option: it applies to every turn, steered or not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    steering: SteeringConfig = Field(default_factory=SteeringConfig)
    vector_kind: VectorKind = "contrast"
    canonical_choices: bool = False

    @model_validator(mode="before")
    @classmethod
    def _nest_flat(cls, data: Any) -> Any:
        """Read the flat form (every option at the top level, as earlier versions saved it)."""
        if not isinstance(data, dict) or not any(k not in cls.model_fields for k in data):
            return data
        return cls._nested(data, base={})

    @classmethod
    def _nested(cls, flat: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {job: dict(base.get(job, {})) for job in _JOBS}
        out.update({k: v for k, v in base.items() if k not in _JOBS})
        for key, value in flat.items():
            key = _RENAMED.get(key, key)
            if key in _JOBS and isinstance(value, dict):
                out[key].update(value)
                continue
            job = next((j for j, t in _JOBS.items() if key in t.model_fields), None)
            if job is not None:
                out[job][key] = value
            elif key == "tool_steering" and value == "always":
                continue  # an option of earlier versions; "always" is what every turn does
            else:
                out[key] = value  # a top-level field, or an unknown key pydantic refuses
        return out

    def replace(self, **changes: Any) -> Preset:
        """A copy with options changed by name, whichever job they belong to.

        Example:
            >>> preset.replace(coefficient=4.0, k=3, vector_kind="split")
        """
        return Preset.model_validate(self._nested(changes, base=self.model_dump()))

    def flat(self) -> dict[str, Any]:
        """Every option by name, without the job level (for tables and comparisons)."""
        data = self.model_dump()
        out: dict[str, Any] = {}
        for job in _JOBS:
            out.update(data.pop(job))
        out.update(data)
        return out

    # -- per model -----------------------------------------------------------------------------
    @staticmethod
    def path_for(fingerprint: str) -> Path:
        """Where the tuned preset of a model is saved."""
        return cache_dir() / "steering" / f"{fingerprint}.json"

    def save_for(self, fingerprint: str) -> Path:
        """Save as the preset of a model; returns the path."""
        path = self.path_for(fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return path

    @staticmethod
    def shipped_for(fingerprint: str) -> Path:
        """Where the shipped preset of a model is (it may not exist)."""
        return _PRESETS / f"{fingerprint}.json"

    @classmethod
    def source_for(cls, fingerprint: str) -> PresetSource:
        """Where :meth:`for_model` takes a model's preset from."""
        return cls._lookup(fingerprint)[0]

    @classmethod
    def for_model(cls, fingerprint: str) -> Preset:
        """The saved preset of a model, else its shipped preset, else the defaults.

        A saved file that cannot be read (corrupt, or from an incompatible version) is skipped.
        """
        return cls._lookup(fingerprint)[1]

    @classmethod
    def _lookup(cls, fingerprint: str) -> tuple[PresetSource, Preset]:
        saved = cls._read(cls.path_for(fingerprint))
        if saved is not None:
            return "saved", saved
        shipped = cls._read(cls.shipped_for(fingerprint))
        if shipped is not None:
            return "preset", shipped
        return "default", cls()

    @classmethod
    def _read(cls, path: Path) -> Preset | None:
        if not path.is_file():
            return None
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError):
            return None
