"""The model loader, ``wrap_model`` and the weights fingerprint, on tiny random-config models
(saved to a temporary folder where a load from disk is tested; nothing is downloaded)."""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import FAMILIES, tiny_lm, tiny_tokenizer

from fints_agent.models import (
    LoadedModel,
    ModelLoadError,
    load_model,
    model_fingerprint,
    wrap_model,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama and its tokenizer, saved as a Hugging Face model folder."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_lm("llama").model.save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


def _fresh_tokenizer() -> Any:
    return copy.deepcopy(tiny_tokenizer())  # tiny_tokenizer is shared: never change it


def _copy(family: str = "llama") -> Any:
    return copy.deepcopy(tiny_lm(family).model)  # tiny_lm is shared: never change it in place


# -- loading --------------------------------------------------------------------------------


def test_missing_local_path_is_a_model_load_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError, match="no model directory") as info:
        load_model(str(missing), shared=False)
    assert str(missing) in str(info.value)


def test_missing_local_path_says_it_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError) as info:
        load_model(str(missing), shared=False)
    assert "repo id" not in str(info.value).lower()
    assert any(words in str(info.value).lower() for words in ("not exist", "not found", "no such"))


def test_a_folder_without_a_model_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path), shared=False)
    assert str(tmp_path) in str(info.value)


class _NetworkUsed(RuntimeError):
    pass


def test_a_model_id_not_in_the_local_cache_fails_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts: list[str] = []

    def no_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        hosts.append(str(host))
        raise _NetworkUsed(host)  # fails at once instead of waiting for the retries

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model", shared=False)
    assert hosts == []


def test_bad_dtype_and_device_are_model_load_errors(saved: Path) -> None:
    with pytest.raises(ModelLoadError, match="float8"):
        load_model(str(saved), dtype="float8", shared=False)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            load_model(str(saved), device="cuda", shared=False)


def test_loads_a_saved_model_folder(saved: Path) -> None:
    tiny = tiny_lm("llama")
    lm = load_model(str(saved), shared=False)
    assert isinstance(lm, LoadedModel)
    assert (lm.name, lm.source) == (str(saved), "hf")
    assert not lm.model.training
    assert (lm.dtype, lm.device.type) == (torch.float32, "cpu")
    assert (lm.num_layers, lm.d_model) == (3, 32)
    assert lm.fingerprint == tiny.fingerprint  # the same weights, read back from disk
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert lm.tokenizer.chat_template == tiny_tokenizer().chat_template
    text = "what is the weather in oslo"
    assert lm.tokenizer(text)["input_ids"] == tiny.tokenizer(text)["input_ids"]
    for name, param in lm.model.state_dict().items():
        assert torch.equal(param, tiny.model.state_dict()[name]), name


def test_loads_in_another_dtype_with_the_same_fingerprint(saved: Path) -> None:
    lm = load_model(str(saved), dtype="bf16", shared=False)
    assert lm.dtype == torch.bfloat16
    assert lm.fingerprint == tiny_lm("llama").fingerprint


def test_the_same_name_loads_once(saved: Path) -> None:
    first = load_model(str(saved))
    assert load_model(str(saved)) is first
    assert load_model(str(saved), dtype=torch.float32) is first  # the same dtype, spelt otherwise
    assert load_model(str(saved), shared=False) is not first
    other_dtype = load_model(str(saved), dtype="bfloat16")
    assert other_dtype is not first and other_dtype.dtype == torch.bfloat16
    assert load_model(str(saved), dtype="bf16") is other_dtype


# -- wrap_model -----------------------------------------------------------------------------


def test_wrap_model() -> None:
    model = _copy()
    model.train()
    tokenizer = _fresh_tokenizer()
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"
    lm = wrap_model(model, tokenizer, name="mine")
    assert (lm.name, lm.source, lm.load_seconds) == ("mine", "memory", 0.0)
    assert lm.model is model and not model.training
    assert lm.fingerprint == model_fingerprint(model) == tiny_lm("llama").fingerprint
    assert lm.tokenizer.pad_token == tokenizer.eos_token  # a missing pad token is the eos
    assert lm.tokenizer.padding_side == "left"
    assert (lm.num_layers, lm.d_model) == (3, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrapped_models_of_every_family_know_their_shape(family: str) -> None:
    lm = tiny_lm(family)
    assert lm.num_layers == 3
    assert lm.d_model == 32
    assert (lm.dtype, lm.device.type) == (torch.float32, "cpu")


# -- fingerprint ----------------------------------------------------------------------------


def _decoder_layer(model: Any, index: int) -> torch.nn.Module:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:  # GPT-2
        layers = model.transformer.h
    return layers[index]


def test_same_weights_same_fingerprint_in_any_dtype() -> None:
    base = model_fingerprint(tiny_lm("llama").model)
    assert model_fingerprint(tiny_lm("llama").model) == base  # stable
    assert model_fingerprint(_copy()) == base
    assert model_fingerprint(_copy().to(torch.bfloat16)) == base
    assert len(base) == 16 and int(base, 16) >= 0


def test_different_weights_different_fingerprints() -> None:
    seeds = {tiny_lm("llama", seed=s).fingerprint for s in range(3)}
    families = {tiny_lm(family).fingerprint for family in FAMILIES}
    assert len(seeds) == 3
    assert len(families) == len(FAMILIES)


def _bump_layer(model: Any) -> None:
    with torch.no_grad():
        for p in _decoder_layer(model, 1).parameters():
            p.add_(0.05 * torch.randn_like(p))


def _bump_embedding_tail(model: Any) -> None:
    # Rows and columns past the 16 x 64 corner an older fingerprint read.
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


def test_a_registered_model_is_what_load_model_returns() -> None:
    from fints_agent.models import register_model

    lm = tiny_lm("qwen2")
    name = register_model(lm)
    assert load_model(name, dtype="float32", device="cpu") is lm
    other = tiny_lm("qwen2", seed=1)  # same name, other weights: registered apart
    assert other.name == lm.name and other.fingerprint != lm.fingerprint
    renamed = register_model(other)
    assert renamed == f"{lm.name}#{other.fingerprint}"
    assert load_model(renamed).fingerprint == other.fingerprint
    assert load_model(name) is lm


def test_model_kwargs_reach_from_pretrained(saved: Path) -> None:
    lm = load_model(str(saved), shared=False, model_kwargs={"attn_implementation": "eager"})
    assert lm.model.config._attn_implementation == "eager"
    with pytest.raises(ModelLoadError, match="embedded default"):
        load_model(None, model_kwargs={"device_map": "auto"})


# -- named packaged models: the de-quantized copy in the user cache --------------------------


class _FakePackage:
    """Stands in for a packaged GGUF model: counts de-quantizations, with a settable key."""

    def __init__(self) -> None:
        self.key: dict[str, Any] | None = {"package": "fake", "version": "1"}
        self.dequantized = 0

    def dequantize(self, spec: Any) -> tuple[Any, Any]:
        self.dequantized += 1
        return _copy("llama"), _fresh_tokenizer()


@pytest.fixture
def packaged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _FakePackage:
    from fints_agent import models

    fake = _FakePackage()
    monkeypatch.setenv("FINTS_AGENT_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_dequantize", fake.dequantize)
    spec = models._Packaged(gguf=lambda scratch: scratch, key=lambda: fake.key)
    monkeypatch.setitem(models._PACKAGED, "fake-model", spec)
    return fake


def test_a_packaged_model_is_dequantized_once_then_read_from_the_cache(
    packaged: _FakePackage, tmp_path: Path
) -> None:
    first = load_model("fake-model", shared=False)
    assert (first.source, packaged.dequantized) == ("gguf", 1)
    stored = json.loads((tmp_path / "fake-model" / "fints_source.json").read_text())
    assert stored == packaged.key
    again = load_model("fake-model", dtype="bf16", shared=False)
    assert (again.source, packaged.dequantized) == ("cache", 1)
    assert again.fingerprint == first.fingerprint == tiny_lm("llama").fingerprint
    assert again.dtype == torch.bfloat16
    text = "what is the weather in oslo"
    assert again.tokenizer(text)["input_ids"] == first.tokenizer(text)["input_ids"]


def test_another_packaged_file_is_dequantized_again(packaged: _FakePackage, tmp_path: Path) -> None:
    load_model("fake-model", shared=False)
    packaged.key = {"package": "fake", "version": "2"}  # another version installed
    assert load_model("fake-model", shared=False).source == "gguf"
    assert packaged.dequantized == 2
    stored = json.loads((tmp_path / "fake-model" / "fints_source.json").read_text())
    assert stored["version"] == "2"
    assert load_model("fake-model", shared=False).source == "cache"


def test_without_its_packages_the_cached_copy_is_used(packaged: _FakePackage) -> None:
    load_model("fake-model", shared=False)
    packaged.key = None  # the packages were uninstalled: nothing to compare with
    assert load_model("fake-model", shared=False).source == "cache"
    assert packaged.dequantized == 1


def test_a_cached_copy_without_a_key_is_rebuilt_unless_legacy(
    packaged: _FakePackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fints_agent import models

    load_model("fake-model", shared=False)
    key_file = tmp_path / "fake-model" / "fints_source.json"
    key_file.unlink()
    assert load_model("fake-model", shared=False).source == "gguf"
    key_file.unlink()
    legacy = models._Packaged(gguf=lambda s: s, key=lambda: packaged.key, legacy_cache=True)
    monkeypatch.setitem(models._PACKAGED, "fake-model", legacy)
    assert load_model("fake-model", shared=False).source == "cache"
    assert json.loads(key_file.read_text()) == packaged.key  # and it gets the current key
    assert packaged.dequantized == 2


def test_named_models_refuse_model_kwargs() -> None:
    from fints_agent.models import GEMMA3_270M, NAMED_MODELS

    assert NAMED_MODELS == ("smollm2-135m-instruct", GEMMA3_270M)
    with pytest.raises(ModelLoadError, match="'gemma3-270m'"):
        load_model(GEMMA3_270M, model_kwargs={"device_map": "auto"}, shared=False)
