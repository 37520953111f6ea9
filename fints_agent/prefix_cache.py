"""The prompt-prefix KV cache: the system prompt and tools are encoded once, not every turn.

Every turn of every user with the same tools starts with the same rendered prefix (the system
prompt and the tool schemas, ~350 tokens for the personal web-API tools); only the conversation
after it differs. :class:`PrefixCache` keeps the keys and values of such prefixes, keyed by their
exact token ids, so a turn or a recording encodes only what comes after its prefix. It is shared
by everything that runs one model (turns, batches, recording) and lives on the
:class:`~fints_agent.models.LoadedModel` (``lm.prefix_cache``).

A prefix's keys and values depend only on its tokens (attention is causal), so a row continued
from a cached prefix computes what the whole prompt would, up to floating-point rounding. What
the cache does not know is steering: prompt positions of a row steered on its prompt
(``steer_prompt``) must not come from the cache, and the callers leave those rows out.

:class:`PastBatch` lays out several rows' cached prefixes as one batch: each row's prefix
right-aligned in a padded block, whose padding the attention mask hides. Continuations are fed
after it with explicit position ids, so rows with prefixes of different lengths (or none) share
one forward pass.

Example:
    >>> ids = lm.tokenizer(prompt)["input_ids"]
    >>> n = common_prefix(ids, lm.tokenizer(renderer.render_prefix(messages, tools))["input_ids"])
    >>> [kv] = lm.prefix_cache.prefill(lm, [ids[:n]])   # computed once, then a hit
    >>> lm.prefix_cache.stats()["hits"]
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from fints_agent.models import LoadedModel

__all__ = [
    "DEFAULT_PREFIX_CACHE_BYTES",
    "KV",
    "PastBatch",
    "PrefixCache",
    "common_prefix",
    "left_padded",
]

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per decoder layer, the keys and values of one prefix: ``(1, kv_heads, tokens, head_dim)``."""

DEFAULT_PREFIX_CACHE_BYTES = 256 * 2**20
"""Default bound of a model's prefix cache: 256 MiB (SmolLM2-135M keeps ~46 KB per token in
float32, so ~15 prefixes of 375 tokens)."""

MIN_PREFIX_TOKENS = 16
"""Shorter prefixes are not worth a cache entry."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def left_padded(
    rows: Sequence[Sequence[int]],
    pad: int,
    device: torch.device | str = "cpu",
    start: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded batch: ids, attention mask and position ids (each row's
    positions count from its ``start``, default 0; padding takes the first position)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if start is not None:
        positions = positions + torch.tensor(list(start), device=device)[:, None]
    return ids, mask, positions


def body_of(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (the model itself where there is none)."""
    return getattr(model, "base_model", model)


def cacheable(model: nn.Module) -> bool:
    """Whether the model's KV cache is a plain per-layer cache that prefixes can be cut from
    (models with sliding-window or recurrent layers are not cached)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=getattr(model, "config", None))
    return all(type(layer) is DynamicLayer for layer in cache.layers)


class PrefixCache:
    """Keys and values of prompt prefixes, keyed by token ids, bounded in bytes (LRU).

    Safe under concurrent users: lookups and insertions take a lock, and stored tensors are
    never changed in place (a batch is built from copies).

    Args:
        max_bytes: Bound on the stored keys and values; 0 turns the cache off (every prompt is
            encoded whole).
    """

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._sizes: dict[tuple[int, ...], int] = {}
        self._lock = threading.Lock()
        self._supported: bool | None = None
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __repr__(self) -> str:
        s = self.stats()
        return f"PrefixCache({s['entries']} prefixes, {s['bytes']} of {self.max_bytes} bytes)"

    @property
    def enabled(self) -> bool:
        """Whether prefixes are cached at all (``max_bytes > 0``)."""
        return self.max_bytes > 0

    def usable(self, lm: LoadedModel) -> bool:
        """Whether this cache serves ``lm`` (enabled, and a model whose cache can be cut)."""
        if not self.enabled:
            return False
        if self._supported is None:
            self._supported = cacheable(lm.model)
        return self._supported

    def stats(self) -> dict[str, int]:
        """Entries, bytes, hits, misses and evictions so far."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": sum(self._sizes.values()),
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._sizes.clear()

    def get(self, ids: Sequence[int]) -> KV | None:
        """The keys and values of this prefix, or ``None``.

        A stored longer prefix that starts with ``ids`` serves it too (cut to its length): a
        prompt with examples after the tools and one without share the tools' prefix.
        """
        want = tuple(ids)
        n = len(want)
        with self._lock:
            for key, kv in reversed(self._entries.items()):
                if len(key) >= n and key[:n] == want:
                    self._entries.move_to_end(key)
                    if len(key) == n:
                        return kv
                    return tuple((k[:, :, :n], v[:, :, :n]) for k, v in kv)
            return None

    def put(self, ids: Sequence[int], kv: KV) -> None:
        """Keep a prefix's keys and values, in place of stored prefixes of it (evicting the
        least recently used beyond the bound; a prefix larger than the whole bound is not
        kept)."""
        key = tuple(ids)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if size > self.max_bytes:
            return
        with self._lock:
            for old in [o for o in self._entries if len(o) <= len(key) and key[: len(o)] == o]:
                del self._entries[old]
                del self._sizes[old]
            self._entries[key] = kv
            self._sizes[key] = size
            total = sum(self._sizes.values())
            while total > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                total -= self._sizes.pop(old)
                self.evictions += 1

    def prefill(self, lm: LoadedModel, prefixes: Sequence[Sequence[int]]) -> list[KV | None]:
        """The keys and values of each prefix, encoding those not cached (in one batch).

        Empty prefixes, and every prefix when the cache does not serve ``lm``, give ``None``.
        The caller holds ``lm.lock`` (the model runs here) and has no steering hooks open.
        """
        out: list[KV | None] = [None] * len(prefixes)
        if not self.usable(lm):
            return out
        missing: dict[tuple[int, ...], list[int]] = {}
        for i, ids in enumerate(prefixes):
            if not ids:
                continue
            kv = self.get(ids)
            if kv is None:
                missing.setdefault(tuple(ids), []).append(i)
            else:
                out[i] = kv
        with self._lock:
            self.hits += sum(1 for x in out if x is not None)
            self.misses += len(missing)
        if missing:
            keys = list(missing)
            for key, kv in zip(keys, _encode(lm, keys), strict=True):
                self.put(key, kv)
                for i in missing[key]:
                    out[i] = kv
        return out


def _encode(lm: LoadedModel, prefixes: Sequence[Sequence[int]]) -> list[KV]:
    """Encode prefixes (left-padded, one batch) and cut each row's keys and values."""
    width = max(len(p) for p in prefixes)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids, mask, positions = left_padded(prefixes, pad, lm.device)
    with torch.inference_mode():
        out = body_of(lm.model)(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True
        )
    layers = out.cache.layers
    return [
        tuple(
            (
                layer.keys[r : r + 1, :, width - len(p) :].clone(),
                layer.values[r : r + 1, :, width - len(p) :].clone(),
            )
            for layer in layers
        )
        for r, p in enumerate(prefixes)
    ]


@dataclass
class PastBatch:
    """Rows' cached prefixes as one batch: a KV cache and the attention mask of its columns.

    Attributes:
        cache: A ``DynamicCache`` holding the block (``None`` when no row has a prefix).
        mask: ``(rows, columns)``, 1 where a column is one of the row's prefix tokens.
        lengths: Per row, its prefix length (its next position id).
    """

    cache: Any
    mask: torch.Tensor
    lengths: list[int]

    @classmethod
    def of(cls, lm: LoadedModel, kvs: Sequence[KV | None]) -> PastBatch:
        """Right-align each row's prefix in a block as wide as the longest (``None``: none)."""
        from transformers import DynamicCache

        lengths = [0 if kv is None else int(kv[0][0].shape[2]) for kv in kvs]
        width = max(lengths, default=0)
        device = lm.device
        mask = torch.zeros((len(kvs), width), dtype=torch.long, device=device)
        if width == 0:
            return cls(None, mask, lengths)
        first = next(kv for kv in kvs if kv is not None)
        cache = DynamicCache(config=lm.model.config)
        full = all(n == width for n in lengths)  # the usual case: one set of tools
        for li in range(len(first)):
            if full:
                keys = torch.cat([kv[li][0] for kv in kvs if kv is not None], 0)
                values = torch.cat([kv[li][1] for kv in kvs if kv is not None], 0)
                cache.update(keys.to(device), values.to(device), li)
                continue
            shape_k, shape_v = list(first[li][0].shape), list(first[li][1].shape)
            shape_k[0] = shape_v[0] = len(kvs)
            shape_k[2] = shape_v[2] = width
            keys = torch.zeros(shape_k, dtype=first[li][0].dtype, device=device)
            values = torch.zeros(shape_v, dtype=first[li][1].dtype, device=device)
            for r, kv in enumerate(kvs):
                if kv is not None:
                    n = lengths[r]
                    keys[r, :, width - n :] = kv[li][0][0]
                    values[r, :, width - n :] = kv[li][1][0]
            cache.update(keys, values, li)
        for r, n in enumerate(lengths):
            if n:
                mask[r, width - n :] = 1
        return cls(cache, mask, lengths)
