"""Aggregation weights and the weighted vector sum (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fints_agent.memory.aggregate import (
    Recency,
    aggregate,
    aggregate_flat,
    log_decay,
    mix_weights,
    select_top,
    softmax,
)
from fints_agent.steering import SteeringVector, VectorMismatchError


def _vec(seed: int, fp: str = "fp", layers: tuple[int, ...] = (0, 2)) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(torch.randn(len(layers), 2, 8, generator=g), layers, ("attn", "mlp"), fp)


def test_softmax_weights_match_hand_computation() -> None:
    sims = [0.9, 0.8, 0.2]
    e = [math.exp(s / 0.1) for s in sims]
    expected = [x / sum(e) for x in e]
    got = mix_weights(sims, temperature=0.1)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    assert got.sum() == pytest.approx(1.0)


def test_temperature() -> None:
    hot = mix_weights([0.9, 0.8], temperature=100.0)
    cold = mix_weights([0.9, 0.8], temperature=0.001)
    assert hot[0] == pytest.approx(0.5, abs=1e-3)
    assert cold[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        mix_weights([0.5], temperature=0.0)
    with pytest.raises(ValueError, match="nothing"):
        softmax([])


def test_recency_decay_halves_per_half_life() -> None:
    assert np.exp(log_decay([0, 10, 20], 10)).tolist() == pytest.approx([1.0, 0.5, 0.25])
    # Equal similarity: the newer trajectory (age 0) gets twice the weight of age = half_life.
    w = mix_weights([0.7, 0.7], decay=log_decay([0, 5], 5))
    assert w.tolist() == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError):
        Recency(0)
    with pytest.raises(ValueError):
        Recency(3, "days")  # type: ignore[arg-type]


def test_select_top_by_similarity_then_recency() -> None:
    sims = [0.5, 0.9, 0.7, 0.9]
    assert select_top(sims, 2) == [1, 3]
    assert select_top(sims, 10) == [1, 3, 2, 0]
    # A strong decay on the most similar ones lets a newer, less similar one in.
    decay = log_decay([100, 100, 0, 100], 1)
    assert select_top(sims, 1, decay=decay) == [2]
    with pytest.raises(ValueError):
        select_top(sims, 0)


def test_aggregate_equals_hand_computed_softmax_sum() -> None:
    vectors = [_vec(1), _vec(2), _vec(3)]
    sims = [0.82, 0.75, 0.31]
    weights = mix_weights(sims, temperature=0.1)
    got = aggregate(vectors, weights)
    e = [math.exp(s / 0.1) for s in sims]
    expected = sum((x / sum(e)) * v.tensor.double() for x, v in zip(e, vectors, strict=True))
    assert torch.allclose(got.tensor.double(), expected, atol=1e-6)
    assert got.layers == (0, 2) and got.sites == ("attn", "mlp")
    assert got.model_fingerprint == "fp"


def test_aggregate_refuses_mixed_models() -> None:
    with pytest.raises(VectorMismatchError):
        aggregate([_vec(1), _vec(2, fp="other")], [0.5, 0.5])
    with pytest.raises(ValueError):
        aggregate([], [])


def test_aggregate_flat_matches_aggregate() -> None:
    vectors = [_vec(4), _vec(5), _vec(6)]
    weights = mix_weights([0.9, 0.85, 0.6])
    flat = aggregate_flat([v.tensor.numpy().reshape(-1) for v in vectors], weights)
    assert flat.dtype == np.float32
    expected = aggregate(vectors, weights).tensor.numpy().reshape(-1)
    assert np.allclose(flat, expected, atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        aggregate_flat([np.zeros(3, np.float32)], [0.5, 0.5])
    with pytest.raises(ValueError, match="lengths"):
        aggregate_flat([np.zeros(3, np.float32), np.zeros(4, np.float32)], [0.5, 0.5])
