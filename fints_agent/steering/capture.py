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

__all__ = ["capture_answer_means", "tokenize_pairs"]

Text = str | Sequence[int]


def _ids(tokenizer: Any, text: Text) -> list[int]:
    if isinstance(text, str):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return [int(t) for t in text]


def tokenize_pairs(
    tokenizer: Any, prompts: Sequence[Text], answers: Sequence[Text]
) -> list[tuple[list[int], int]]:
    """Token ids of ``prompt + answer`` and the index where the answer starts, per pair.

    Prompt and answer are tokenized separately, so the answer boundary is exact.

    Raises:
        ValueError: Empty batch, length mismatch, or an answer of zero tokens.
    """
    if len(prompts) == 0:
        raise ValueError("empty batch: no (prompt, answer) pairs given")
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    pairs = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        p, a = _ids(tokenizer, prompt), _ids(tokenizer, answer)
        if not a:
            raise ValueError(f"answer {i} has zero tokens; activations need at least one")
        pairs.append((p + a, len(p)))
    return pairs


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
) -> torch.Tensor:
    """Mean activation over answer tokens, per pair, layer and site.

    Args:
        lm: The model.
        prompts: Prompt texts (already chat-formatted) or token id lists.
        answers: Answer texts or token id lists, one per prompt.
        layers: Decoder layer indices (default: all).
        sites: ``"attn"`` and/or ``"mlp"``.
        batch_size: Pairs per forward pass.
        answer_offsets: Per pair, how many leading answer tokens to leave out of the mean
            (for example a prefix shared with the rejected answer); default none. At least one
            answer token always remains.

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
    pairs = tokenize_pairs(lm.tokenizer, prompts, answers)
    offsets = [0] * len(pairs) if answer_offsets is None else list(answer_offsets)
    if len(offsets) != len(pairs):
        raise ValueError(f"{len(offsets)} answer offsets for {len(pairs)} pairs")
    modules = [
        (li, si, found.module(layer, site))
        for li, layer in enumerate(layer_list)
        for si, site in enumerate(site_list)
    ]
    d_model = lm.d_model
    result = torch.zeros(len(pairs), len(layer_list), len(site_list), d_model)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    device = lm.device
    # Similar lengths together: less padding.
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    sink: dict[tuple[int, int], torch.Tensor] = {}
    with torch.inference_mode(), _recording(modules, sink):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(pairs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            answer = torch.zeros((len(idx), width), dtype=torch.float32)
            for row, i in enumerate(idx):
                seq, a_start = pairs[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                attn[row, : len(seq)] = 1
                first = min(a_start + max(0, offsets[i]), len(seq) - 1)
                answer[row, first : len(seq)] = 1.0
            lm.model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)
            weights = (answer / answer.sum(1, keepdim=True)).to(device)
            for (li, si), out in sink.items():
                mean = torch.einsum("bt,btd->bd", weights.to(out.dtype), out)
                result[idx, li, si] = mean.float().cpu()
            sink.clear()
    return result
