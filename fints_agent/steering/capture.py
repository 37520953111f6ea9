"""Batched capture of answer-token mean activations at attention and MLP outputs.

For each (prompt, answer) pair, one forward pass over ``prompt + answer`` records, at every
chosen layer and site, the mean of the site's output over the answer tokens only. Pairs run in
padded batches (right padding with an attention mask), never one at a time.

Example:
    >>> means = capture_answer_means(lm, ["Q: 2+2?\\nA: "], ["4"], layers=[0, 1])
    >>> means.shape   # (pairs, layers, sites, d_model)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fints_agent.models import LoadedModel
from fints_agent.steering.layers import SITES, Site, check_layers, check_sites, find_sites

__all__ = ["capture_answer_means"]

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
) -> torch.Tensor:
    """Mean activation over answer tokens, per pair, layer and site.

    Pairs that share a prompt (a chosen answer and its rejected answers) share one prompt pass:
    prompts run once, left-padded in a batch, and their KV cache is reused by every answer of
    the prompt, right-padded in a second batch. Only the answer pass is recorded, and the LM
    head is skipped.

    Args:
        lm: The model.
        prompts: Prompt texts (already chat-formatted) or token id lists.
        answers: Answer texts or token id lists, one per prompt.
        layers: Decoder layer indices (default: all).
        sites: ``"attn"`` and/or ``"mlp"``.
        batch_size: Answers per forward pass (a prompt's answers always share a batch).
        answer_offsets: Per pair, how many leading answer tokens to leave out of the mean
            (for example a prefix shared with the rejected answer); default none. At least one
            answer token always remains.
        answer_tails: Per pair, how many trailing answer tokens to leave out of the mean (for
            example a suffix shared with the rejected answer); default none. At least the first
            token after the offset always remains.

    Returns:
        float32 tensor of shape ``(len(prompts), len(layers), len(sites), d_model)`` on CPU.

    Raises:
        ValueError: Empty batch, zero-token answer, bad site.
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
    if len(prompts) == 0:
        raise ValueError("empty batch: no (prompt, answer) pairs given")
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    offsets = [0] * len(prompts) if answer_offsets is None else list(answer_offsets)
    if len(offsets) != len(prompts):
        raise ValueError(f"{len(offsets)} answer offsets for {len(prompts)} pairs")
    tails = [0] * len(prompts) if answer_tails is None else list(answer_tails)
    if len(tails) != len(prompts):
        raise ValueError(f"{len(tails)} answer tails for {len(prompts)} pairs")
    # Group the pairs by prompt: each group is one prompt pass and several answers.
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        a = _ids(tok, answer)
        if not a:
            raise ValueError(f"answer {i} has zero tokens; activations need at least one")
        p = _ids(tok, prompt)
        if not p:
            raise ValueError(f"prompt {i} has zero tokens")
        groups.setdefault(tuple(p), []).append((i, a))
    modules = [
        (li, si, found.module(layer, site))
        for li, layer in enumerate(layer_list)
        for si, site in enumerate(site_list)
    ]
    result = torch.zeros(len(prompts), len(layer_list), len(site_list), lm.d_model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    body = getattr(lm.model, "base_model", lm.model)  # skips the LM head
    device = lm.device
    chunks: list[list[tuple[tuple[int, ...], list[tuple[int, list[int]]]]]] = [[]]
    for item in sorted(groups.items(), key=lambda kv: len(kv[0])):
        if chunks[-1] and sum(len(g) for _, g in chunks[-1]) + len(item[1]) > batch_size:
            chunks.append([])
        chunks[-1].append(item)
    sink: dict[tuple[int, int], torch.Tensor] = {}
    with torch.inference_mode():
        for chunk in chunks:
            cache, rows, p_mask, p_len = _prompt_pass(body, chunk, pad_id, device)
            pairs = [(gi, idx, a) for gi, (_, g) in enumerate(chunk) for idx, a in g]
            width = max(len(a) for _, _, a in pairs)
            ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
            a_mask = torch.zeros((len(pairs), width), dtype=torch.long)
            weights = torch.zeros((len(pairs), width), dtype=torch.float32)
            for r, (_, idx, a) in enumerate(pairs):
                ids[r, : len(a)] = torch.tensor(a)
                a_mask[r, : len(a)] = 1
                first = min(max(0, offsets[idx]), len(a) - 1)
                weights[r, first : max(first + 1, len(a) - max(0, tails[idx]))] = 1.0
            weights = (weights / weights.sum(1, keepdim=True)).to(device)
            cache.batch_select_indices(torch.tensor(rows, device=device))
            attn = torch.cat([p_mask[rows], a_mask.to(device)], 1)
            positions = p_len[rows][:, None] + torch.arange(width, device=device)[None, :]
            with _recording(modules, sink):
                body(
                    input_ids=ids.to(device),
                    attention_mask=attn,
                    position_ids=positions,
                    cache=cache,
                    use_cache=True,
                )
            index = [idx for _, idx, _ in pairs]
            for (li, si), out in sink.items():
                mean = torch.einsum("bt,btd->bd", weights.to(out.dtype), out)
                result[index, li, si] = mean.float().cpu()
            sink.clear()
    return result


def _prompt_pass(
    body: nn.Module,
    chunk: Sequence[tuple[tuple[int, ...], list[tuple[int, list[int]]]]],
    pad_id: int,
    device: torch.device,
) -> tuple[Any, list[int], torch.Tensor, torch.Tensor]:
    """Run the chunk's prompts once (left-padded); return the cache and per-answer row map."""
    width = max(len(p) for p, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for r, (p, _) in enumerate(chunk):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    mask = mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = body(input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
               use_cache=True)  # fmt: skip
    rows = [gi for gi, (_, g) in enumerate(chunk) for _ in g]
    lengths = mask.sum(1)
    return out.cache, rows, mask, lengths
