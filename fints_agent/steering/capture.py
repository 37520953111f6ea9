"""Batched capture of answer-token mean activations at attention and MLP outputs.

For each (prompt, answer) pair, the forward pass over ``prompt + answer`` records, at every
chosen layer and site, the mean of the site's output over the answer tokens only. Pairs run in
padded batches, never one at a time, and what pairs share runs once: the prompt prefix from the
model's prefix cache, then each group's common prefix (a trajectory's prompt and the start its
answers share), then each pair's own tokens.

Example:
    >>> means = capture_answer_means(lm, ["Q: 2+2?\\nA: "], ["4"], layers=[0, 1])
    >>> means.shape   # (pairs, layers, sites, d_model)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fints_agent.models import LoadedModel
from fints_agent.prefix_cache import MIN_PREFIX_TOKENS, PastBatch, body_of, common_prefix
from fints_agent.steering.layers import SITES, Site, check_layers, check_sites, find_sites

__all__ = ["CapturePlan", "capture_answer_means"]

Text = str | Sequence[int]


def _ids(tokenizer: Any, text: Text) -> list[int]:
    if isinstance(text, str):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return [int(t) for t in text]


@contextmanager
def _recording(
    modules: Sequence[tuple[int, int, nn.Module]], sink: dict[tuple[int, int], torch.Tensor]
) -> Iterator[None]:
    handles = []

    def make_hook(key: tuple[int, int]) -> Any:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            sink[key] = out[0] if isinstance(out, tuple) else out

        return hook

    for li, si, module in modules:
        handles.append(module.register_forward_hook(make_hook((li, si))))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def capture_answer_means(
    lm: LoadedModel,
    prompts: Sequence[Text],
    answers: Sequence[Text],
    layers: Sequence[int] | None = None,
    sites: Sequence[Site] = SITES,
    *,
    batch_size: int = 8,
    answer_offsets: Sequence[int] | None = None,
    answer_tails: Sequence[int] | None = None,
    groups: Sequence[Hashable] | None = None,
    prefixes: Sequence[Text | None] | None = None,
) -> torch.Tensor:
    """Mean activation over answer tokens, per pair, layer and site.

    Each pair is one sequence, ``prompt + answer``; the mean is over its answer tokens (less
    ``answer_offsets`` and ``answer_tails``). Nothing is computed twice:

    - Pairs of one group (by default: pairs with the same prompt; a trajectory's chosen and
      rejected answers, or its prompts with different worked examples) share the longest
      common prefix of their sequences, which runs once; each pair then runs only the tokens
      after it, from the shared prefix's KV cache, in a padded batch.
    - A pair's ``prefixes`` entry (the system prompt and tools, see
      :meth:`~fints_agent.prompting.PromptRenderer.render_prefix`) comes from the model's
      prefix cache (:mod:`fints_agent.prefix_cache`), across calls.

    Only the layers and sites asked for are recorded, and the LM head is skipped.

    Args:
        lm: The model.
        prompts: Prompt texts (already chat-formatted) or token id lists.
        answers: Answer texts or token id lists, one per prompt.
        layers: Decoder layer indices (default: all).
        sites: ``"attn"`` and/or ``"mlp"``.
        batch_size: Pairs per forward pass (a group's pairs always share a batch).
        answer_offsets: Per pair, how many leading answer tokens to leave out of the mean
            (for example a prefix shared with the rejected answer); default none. At least one
            answer token always remains.
        answer_tails: Per pair, how many trailing answer tokens to leave out of the mean (for
            example a suffix shared with the rejected answer); default none. At least the first
            token after the offset always remains.
        groups: Per pair, a key; pairs with equal keys share their common prefix's pass
            (default: the prompt).
        prefixes: Per pair, the prompt's cacheable prefix (text or ids; ``None``: none).

    Returns:
        float32 tensor of shape ``(len(prompts), len(layers), len(sites), d_model)`` on CPU.

    Raises:
        ValueError: Empty batch, zero-token answer, bad site, or a per-pair list of the wrong
            length.
        IndexError: Layer index out of range.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    found = find_sites(lm.model)
    layer_list = list(range(len(found))) if layers is None else list(layers)
    if not layer_list:
        raise ValueError("no layers chosen")
    check_layers(layer_list, len(found))
    site_list = list(sites)
    check_sites(site_list)
    tok = lm.tokenizer
    n = len(prompts)
    if n == 0:
        raise ValueError("empty batch: no (prompt, answer) pairs given")
    if len(answers) != n:
        raise ValueError(f"{n} prompts but {len(answers)} answers")
    offsets = _per_pair(answer_offsets, n, 0, "answer offsets")
    tails = _per_pair(answer_tails, n, 0, "answer tails")
    keys = _per_pair(groups, n, None, "groups")
    anchors = _per_pair(prefixes, n, None, "prefixes")
    seqs: list[_Sequence] = []
    by_group: dict[Hashable, list[int]] = {}
    anchor_ids: dict[str, list[int]] = {}
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        a = _ids(tok, answer)
        if not a:
            raise ValueError(f"answer {i} has zero tokens; activations need at least one")
        p = _ids(tok, prompt)
        if not p:
            raise ValueError(f"prompt {i} has zero tokens")
        first = min(max(0, offsets[i]), len(a) - 1)
        end = max(first + 1, len(a) - max(0, tails[i]))
        anchor = anchors[i]
        cached = 0
        if anchor is not None:
            if isinstance(anchor, str):
                if anchor not in anchor_ids:
                    anchor_ids[anchor] = _ids(tok, anchor)
                anchor = anchor_ids[anchor]
            cached = common_prefix(p, anchor)
        seqs.append(_Sequence(p + a, len(p) + first, len(p) + end, cached))
        key = ("prompt", tuple(p)) if keys[i] is None else ("group", keys[i])
        by_group.setdefault(key, []).append(i)
    modules = [
        (li, si, found.module(layer, site))
        for li, layer in enumerate(layer_list)
        for si, site in enumerate(site_list)
    ]
    result = torch.zeros(n, len(layer_list), len(site_list), lm.d_model)
    chunks: list[list[list[int]]] = [[]]
    for members in sorted(by_group.values(), key=lambda g: max(len(seqs[i].ids) for i in g)):
        if chunks[-1] and sum(len(g) for g in chunks[-1]) + len(members) > batch_size:
            chunks.append([])
        chunks[-1].append(members)
    with torch.inference_mode():
        for chunk in chunks:
            means = _capture_chunk(
                lm, modules, result.shape[1:3], [[seqs[i] for i in g] for g in chunk]
            )
            result[[i for g in chunk for i in g]] = means
    return result


class CapturePlan:
    """Pairs gathered from several vector builders, captured in one call, so that one
    trajectory's contrastive and demonstration pairs share forward passes.

    Args:
        lm: The model.
        layers: Decoder layer indices (default: all).
        sites: ``"attn"`` and/or ``"mlp"``.
        batch_size: Pairs per forward pass.

    Example:
        >>> plan = CapturePlan(lm, layers=[0, 1])
        >>> a = plan.add("Q: 2+2?\\nA: ", "4", group="t0")
        >>> b = plan.add("Q: 2+2?\\nA: ", "5", group="t0")
        >>> means = plan.run()
        >>> means[a] - means[b]
    """

    def __init__(
        self,
        lm: LoadedModel,
        layers: Sequence[int] | None = None,
        sites: Sequence[Site] = SITES,
        *,
        batch_size: int = 8,
    ) -> None:
        self.lm = lm
        self.layers: tuple[int, ...] = tuple(
            range(len(find_sites(lm.model))) if layers is None else layers
        )
        self.sites: tuple[Site, ...] = tuple(sites)
        self.batch_size = batch_size
        self.prompts: list[Text] = []
        self.answers: list[Text] = []
        self.offsets: list[int] = []
        self.tails: list[int] = []
        self.groups: list[Hashable] = []
        self.prefixes: list[Text | None] = []

    def __len__(self) -> int:
        return len(self.prompts)

    def add(
        self,
        prompt: Text,
        answer: Text,
        *,
        offset: int = 0,
        tail: int = 0,
        group: Hashable = None,
        prefix: Text | None = None,
    ) -> int:
        """Queue one pair (see :func:`capture_answer_means` for the arguments); returns its
        row in :meth:`run`'s result."""
        self.prompts.append(prompt)
        self.answers.append(answer)
        self.offsets.append(offset)
        self.tails.append(tail)
        self.groups.append(group)
        self.prefixes.append(prefix)
        return len(self.prompts) - 1

    def run(self) -> torch.Tensor:
        """Every queued pair's means: ``(pairs, layers, sites, d_model)``."""
        return capture_answer_means(
            self.lm,
            self.prompts,
            self.answers,
            self.layers,
            self.sites,
            batch_size=self.batch_size,
            answer_offsets=self.offsets,
            answer_tails=self.tails,
            groups=self.groups,
            prefixes=self.prefixes,
        )


@dataclass
class _Sequence:
    """One pair's token ids, the span ``[first, end)`` averaged, and its cacheable prefix."""

    ids: list[int]
    first: int
    end: int
    cached: int


def _per_pair(values: Sequence[Any] | None, n: int, default: Any, what: str) -> list[Any]:
    out = [default] * n if values is None else list(values)
    if len(out) != n:
        raise ValueError(f"{len(out)} {what} for {n} pairs")
    return out


def _capture_chunk(
    lm: LoadedModel,
    modules: Sequence[tuple[int, int, nn.Module]],
    shape: Sequence[int],
    groups: Sequence[Sequence[_Sequence]],
) -> torch.Tensor:
    """Mean activations of a chunk's sequences: a pass over each group's shared prefix (after
    what the prefix cache holds), then one over each sequence's own tokens."""
    device = lm.device
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    body = body_of(lm.model)
    shared: list[int] = []  # per group: tokens shared by all its sequences
    cached: list[int] = []  # per group: of those, tokens from the prefix cache
    for g in groups:
        lcp = min(len(s.ids) for s in g) - 1  # every sequence keeps a token of its own
        for s in g[1:]:
            lcp = min(lcp, common_prefix(g[0].ids, s.ids))
        shared.append(lcp)
        # Cached tokens are never averaged (they are the prompt's, before any answer).
        usable = min(min(s.cached for s in g), min(s.first for s in g), lcp)
        cached.append(usable if usable >= MIN_PREFIX_TOKENS else 0)
    kvs = lm.prefix_cache.prefill(lm, [g[0].ids[:c] for g, c in zip(groups, cached, strict=True)])
    cached = [0 if kv is None else c for kv, c in zip(kvs, cached, strict=True)]
    past = PastBatch.of(lm, kvs)
    rows = [gi for gi, g in enumerate(groups) for _ in g]
    members = [s for g in groups for s in g]
    total = torch.zeros(len(members), *shape, lm.d_model, device=device)
    counts = torch.tensor([float(s.end - s.first) for s in members], device=device)
    sink: dict[tuple[int, int], torch.Tensor] = {}
    cache, mask = past.cache, past.mask
    # The groups' shared tokens after their cached prefixes, right-padded.
    width = max(s - c for s, c in zip(shared, cached, strict=True))
    if width > 0:
        ids = torch.full((len(groups), width), pad, dtype=torch.long)
        new_mask = torch.zeros((len(groups), width), dtype=torch.long)
        for gi, g in enumerate(groups):
            part = g[0].ids[cached[gi] : shared[gi]]
            ids[gi, : len(part)] = torch.tensor(part, dtype=torch.long)
            new_mask[gi, : len(part)] = 1
        weights = torch.zeros((len(members), width))
        for r, s in enumerate(members):
            gi = rows[r]
            lo, hi = max(s.first, cached[gi]), min(s.end, shared[gi])
            if hi > lo:
                weights[r, lo - cached[gi] : hi - cached[gi]] = 1.0
        positions = torch.tensor(cached)[:, None] + torch.arange(width)[None, :]
        mask = torch.cat([mask, new_mask.to(device)], 1)
        with _recording(modules, sink):
            out = body(
                input_ids=ids.to(device),
                attention_mask=mask,
                position_ids=positions.to(device),
                cache=cache,
                use_cache=True,
            )
        cache = out.cache
        _accumulate(total, sink, weights.to(device), rows)
    # Each sequence's own tokens, from its group's cache, right-padded, in passes of
    # similar widths (padding a short tail to a long one costs more than another pass).
    for part in _by_width([len(s.ids) - shared[rows[r]] for r, s in enumerate(members)]):
        _own_pass(body, modules, sink, total, cache, mask, part, members, rows, shared, pad)
    return (total / counts[:, None, None, None]).cpu()


def _by_width(widths: Sequence[int]) -> list[list[int]]:
    """Indices grouped into passes: sorted by width, a new pass where the width exceeds twice
    the pass's first width plus a few tokens."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    passes: list[list[int]] = []
    for i in order:
        if not passes or widths[i] > 2 * widths[passes[-1][0]] + 8:
            passes.append([])
        passes[-1].append(i)
    return passes


def _own_pass(
    body: nn.Module,
    modules: Sequence[tuple[int, int, nn.Module]],
    sink: dict[tuple[int, int], torch.Tensor],
    total: torch.Tensor,
    cache: Any,
    mask: torch.Tensor,
    part: Sequence[int],
    members: Sequence[_Sequence],
    rows: Sequence[int],
    shared: Sequence[int],
    pad: int,
) -> None:
    """One pass over the own tokens of the members ``part`` (indices into ``members``), each
    from its group's row (``rows``) of the shared cache, which is left as it is."""
    from transformers import DynamicCache

    device = mask.device
    width = max(len(members[r].ids) - shared[rows[r]] for r in part)
    ids = torch.full((len(part), width), pad, dtype=torch.long)
    new_mask = torch.zeros((len(part), width), dtype=torch.long)
    weights = torch.zeros((len(part), width))
    for b, r in enumerate(part):
        s, start = members[r], shared[rows[r]]
        tokens = s.ids[start:]
        ids[b, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        new_mask[b, : len(tokens)] = 1
        lo, hi = max(s.first, start), s.end
        if hi > lo:
            weights[b, lo - start : hi - start] = 1.0
    index = torch.tensor([rows[r] for r in part], device=device)
    selected = None
    if cache is not None:
        selected = DynamicCache(config=getattr(body, "config", None))
        for li, layer in enumerate(cache.layers):
            selected.update(layer.keys[index], layer.values[index], li)
    positions = torch.tensor([shared[rows[r]] for r in part])[:, None] + torch.arange(width)
    with _recording(modules, sink):
        body(
            input_ids=ids.to(device),
            attention_mask=torch.cat([mask[index], new_mask.to(device)], 1),
            position_ids=positions.to(device),
            cache=selected,
            use_cache=True,
        )
    _accumulate(total, sink, weights.to(device), list(range(len(part))), part)


def _accumulate(
    total: torch.Tensor,
    sink: dict[tuple[int, int], torch.Tensor],
    weights: torch.Tensor,
    rows: Sequence[int],
    members: Sequence[int] | None = None,
) -> None:
    """Add the weighted sums of a pass's outputs to ``total`` (members, layers, sites,
    d_model): weight row ``i`` reads batch row ``rows[i]`` into member ``members[i]``
    (default: member ``i``); empties ``sink``."""
    index = torch.tensor(rows, device=weights.device)
    into = torch.arange(len(rows)) if members is None else torch.tensor(list(members))
    for (li, si), out in sink.items():
        sums = torch.einsum("bt,btd->bd", weights.to(out.dtype), out[index]).float()
        total[into.to(total.device), li, si] += sums
    sink.clear()
