"""Where a model's steering configuration comes from: saved, shipped preset, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fints_agent.config import SteeringConfig

DEFAULT_MODEL_FINGERPRINT = "4ec2bf9548155add"
"""The embedded SmolLM2-135M-Instruct (its fingerprint is checked against the real model in
the tests marked ``model``)."""


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))
    return tmp_path


def test_unknown_model_gets_the_defaults() -> None:
    assert SteeringConfig.source_for("0" * 16) == "default"
    assert SteeringConfig.for_model("0" * 16) == SteeringConfig()


def test_default_model_ships_its_tuned_preset() -> None:
    preset = SteeringConfig.preset_for(DEFAULT_MODEL_FINGERPRINT)
    assert preset.is_file()
    assert SteeringConfig.source_for(DEFAULT_MODEL_FINGERPRINT) == "preset"
    config = SteeringConfig.for_model(DEFAULT_MODEL_FINGERPRINT)
    assert config == SteeringConfig.model_validate(json.loads(preset.read_text()))
    assert config != SteeringConfig()


def test_saved_configuration_wins_over_the_preset() -> None:
    mine = SteeringConfig(coefficient=3.5, layers=[1, 2])
    mine.save_for(DEFAULT_MODEL_FINGERPRINT)
    assert SteeringConfig.source_for(DEFAULT_MODEL_FINGERPRINT) == "saved"
    assert SteeringConfig.for_model(DEFAULT_MODEL_FINGERPRINT) == mine


@pytest.mark.parametrize("text", ["{not json", '{"coefficient": "strong"}', '{"bogus": 1}', ""])
def test_unreadable_saved_file_is_skipped(text: str) -> None:
    path = SteeringConfig.path_for(DEFAULT_MODEL_FINGERPRINT)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert SteeringConfig.source_for(DEFAULT_MODEL_FINGERPRINT) == "preset"
    assert SteeringConfig.for_model(DEFAULT_MODEL_FINGERPRINT) == SteeringConfig.model_validate(
        json.loads(SteeringConfig.preset_for(DEFAULT_MODEL_FINGERPRINT).read_text())
    )
