"""The speed benchmark's recording and turn sections, on a tiny random model with the real
SmolLM2 tokenizer: they run, and their fast paths give the slow paths' vectors and calls."""

from __future__ import annotations

import pytest
from tiny import random_llama, smollm2_tokenizer_or_skip

from fints_agent.bench import bench_recording, bench_turns
from fints_agent.config import Preset, SteeringConfig
from fints_agent.models import wrap_model
from fints_agent.steering.capture import CapturePlan


@pytest.fixture(scope="module")
def tiny_smol():
    tok = smollm2_tokenizer_or_skip()
    model = random_llama(tok, hidden_size=32, layers=2, max_positions=2048)
    return wrap_model(model, tok, name="tiny-smol-bench")


def test_recording_section_compares_vectors_with_the_old_path(tiny_smol) -> None:
    run = CapturePlan.run
    out = bench_recording(tiny_smol, trajectories=3)
    assert CapturePlan.run is run  # the baseline's path is put back
    assert tiny_smol.prefix_cache.stats()["entries"] == 0  # the model's own cache is untouched
    for kind in ("split", "contrast"):
        figures = out[kind]
        assert figures["seconds_per_trajectory_p50"] > 0
        assert figures["seconds_per_trajectory_before_p50"] > 0
        assert figures["vectors_max_relative_difference"] < 1e-3


def test_turn_section_finds_identical_calls(tiny_smol) -> None:
    out = bench_turns(
        tiny_smol, turns=3, users=1, preset=Preset(steering=SteeringConfig(steer_prompt=False))
    )
    assert out["identical_calls"] == "3/3"
    assert out["prefix_cache"]["hits"] >= 2  # every turn after the first of its tools
    assert out["turn_seconds_p50_prefix_cache"] > 0
