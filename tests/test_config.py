"""The configuration types and where a model's preset comes from: saved, shipped, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from fints_agent.config import Preset, RetrievalConfig, SteeringConfig

DEFAULT_MODEL_FINGERPRINT = "4ec2bf9548155add"
"""The embedded SmolLM2-135M-Instruct (its fingerprint is checked against the real model in
the tests marked ``model``)."""


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))
    return tmp_path


def test_unknown_model_gets_the_defaults() -> None:
    assert Preset.source_for("0" * 16) == "default"
    assert Preset.for_model("0" * 16) == Preset()


def test_default_model_ships_its_tuned_preset() -> None:
    shipped = Preset.shipped_for(DEFAULT_MODEL_FINGERPRINT)
    assert shipped.is_file()
    assert Preset.source_for(DEFAULT_MODEL_FINGERPRINT) == "preset"
    preset = Preset.for_model(DEFAULT_MODEL_FINGERPRINT)
    assert preset == Preset.model_validate(json.loads(shipped.read_text()))
    assert preset != Preset()
    # The shipped file is in the nested form, one section per job.
    assert set(json.loads(shipped.read_text())) == {
        "retrieval",
        "steering",
        "vector_kind",
        "canonical_choices",
    }


def test_saved_preset_wins_over_the_shipped_one() -> None:
    mine = Preset(steering=SteeringConfig(coefficient=3.5, layers=[1, 2]))
    mine.save_for(DEFAULT_MODEL_FINGERPRINT)
    assert Preset.source_for(DEFAULT_MODEL_FINGERPRINT) == "saved"
    assert Preset.for_model(DEFAULT_MODEL_FINGERPRINT) == mine


@pytest.mark.parametrize(
    "text", ["{not json", '{"coefficient": "strong"}', '{"bogus": 1}', "", "[]", "null"]
)
def test_unreadable_saved_file_is_skipped(text: str) -> None:
    path = Preset.path_for(DEFAULT_MODEL_FINGERPRINT)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert Preset.source_for(DEFAULT_MODEL_FINGERPRINT) == "preset"
    assert Preset.for_model(DEFAULT_MODEL_FINGERPRINT) == Preset.model_validate(
        json.loads(Preset.shipped_for(DEFAULT_MODEL_FINGERPRINT).read_text())
    )


def test_flat_file_of_earlier_versions_is_read_into_its_jobs() -> None:
    flat = {
        "layers": [3, 4],
        "coefficient": 4.0,
        "k": 3,
        "temperature": 0.2,
        "gate": "decisions",
        "canonical_choices": True,
        "tool_steering": "always",
        "vectors": "split",
    }
    preset = Preset.model_validate(flat)
    assert preset.steering == SteeringConfig(layers=[3, 4], coefficient=4.0, gate="decisions")
    assert preset.retrieval == RetrievalConfig(k=3, softmax_temperature=0.2)
    assert preset.vector_kind == "split" and preset.canonical_choices is True


def test_replace_routes_each_option_to_its_job() -> None:
    base = Preset(retrieval=RetrievalConfig(k=7), steering=SteeringConfig(coefficient=1.5))
    changed = base.replace(coefficient=4.0, min_similarity=0.5, vector_kind="demonstration")
    assert changed.steering.coefficient == 4.0 and changed.retrieval.min_similarity == 0.5
    assert changed.retrieval.k == 7 and changed.vector_kind == "demonstration"
    assert base.steering.coefficient == 1.5  # the original is unchanged
    assert changed.flat()["coefficient"] == 4.0 and changed.flat()["k"] == 7


@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"softmax_temperature": 0.0},
        {"recency_half_life": -1.0},
        {"gate": "sometimes"},
        {"tool_steering": "contrasted"},  # an option of earlier versions that no longer exists
        {"coefficent": 2.0},  # misspelled
    ],
)
def test_bad_options_are_refused_by_name(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        Preset().replace(**bad)


def test_configs_are_immutable() -> None:
    with pytest.raises(ValidationError):
        RetrievalConfig().k = 3  # type: ignore[misc]
