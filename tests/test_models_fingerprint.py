"""The model fingerprint covers every weight tensor (tiny random models, no download)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from tiny import FAMILIES, tiny_lm

from fints_agent.models import model_fingerprint


def _copy(family: str = "llama") -> Any:
    return copy.deepcopy(tiny_lm(family).model)  # tiny_lm is shared: never change it in place


def _decoder_layer(model: Any, index: int) -> torch.nn.Module:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:  # GPT-2
        layers = model.transformer.h
    return layers[index]


def test_same_weights_same_fingerprint_in_any_dtype() -> None:
    base = model_fingerprint(tiny_lm("llama").model)
    assert model_fingerprint(_copy()) == base
    assert model_fingerprint(_copy().to(torch.bfloat16)) == base
    assert len(base) == 16 and int(base, 16) >= 0


def _bump_layer(model: Any) -> None:
    with torch.no_grad():
        for p in _decoder_layer(model, 1).parameters():
            p.add_(0.05 * torch.randn_like(p))


def _bump_embedding_tail(model: Any) -> None:
    # Rows and columns past the 16 x 64 corner the old fingerprint read.
    with torch.no_grad():
        model.get_input_embeddings().weight[20:].add_(0.5)


def _bump_final_norm(model: Any) -> None:
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)


@pytest.mark.parametrize("change", [_bump_layer, _bump_embedding_tail, _bump_final_norm])
def test_changed_weights_change_the_fingerprint(change: Callable[[Any], None]) -> None:
    torch.manual_seed(0)
    model = _copy()
    before = model_fingerprint(model)
    change(model)
    assert model_fingerprint(model) != before


@pytest.mark.parametrize("family", FAMILIES)
def test_one_decoder_layer_changes_it_in_every_family(family: str) -> None:
    torch.manual_seed(1)
    model = _copy(family)
    before = model_fingerprint(model)
    _bump_layer(model)
    assert model_fingerprint(model) != before


def test_fingerprint_is_fast() -> None:
    model = tiny_lm("llama").model
    start = time.perf_counter()
    for _ in range(20):
        model_fingerprint(model)
    assert (time.perf_counter() - start) / 20 < 0.05
