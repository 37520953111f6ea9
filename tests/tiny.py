"""Tiny random-config models and a tiny real tokenizer, built offline for unit tests."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from fints_agent.models import LoadedModel, ModelLoadError, _gguf_location, wrap_model

WORDS = tuple(
    (
        "the a to from of get me weather in oslo paris tomorrow today play song music by "
        "take airport office home ride transit bus car send message email sms text dana "
        "alex bob search product review recommend buy book hotel flight news sport tech "
        "celsius fahrenheit please now what is how can you i want find order food pizza "
        'sushi { } [ ] : , " name arguments tool call yes no 0 1 2 3 4 5 6 7 8 9 . ? !'
        " "
        "hello world"
    ).split()
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

VOCAB_SIZE = 128


@cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A real fast tokenizer over a small word vocabulary with a ChatML-like template."""
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "\n"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + list(WORDS)))}
    assert len(vocab) <= VOCAB_SIZE
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(family: str) -> Any:
    common: dict[str, Any] = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "mistral":
        return MistralConfig(**common)
    if family == "phi3":
        return Phi3Config(**common)
    if family == "gemma":
        return GemmaConfig(**common, head_dim=8)
    if family == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB_SIZE,
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_positions=256,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
    raise ValueError(family)


FAMILIES = ("llama", "qwen2", "mistral", "phi3", "gemma", "gpt2")


@cache
def tiny_lm(family: str = "llama", seed: int = 0) -> LoadedModel:
    """A tiny random-config model of one family, wrapped with the tiny tokenizer."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family), dtype=torch.float32)
    return wrap_model(model, tiny_tokenizer(), name=f"tiny-{family}")


SHORT = {"type": "string", "maxLength": 8}
"""A free string short enough for random weights to finish."""


def bounded_tool(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An OpenAI function tool whose free strings are short, so random weights finish calls."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} tool.",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def smollm2_tokenizer() -> Any:
    """The embedded default model's real tokenizer, read from its package's GGUF file, or from a
    saved Hugging Face tokenizer folder named by ``FINTS_TEST_TOKENIZER`` (machines without the
    package).

    Raises:
        ModelLoadError: Neither is available.
    """
    from transformers import AutoTokenizer

    saved = os.environ.get("FINTS_TEST_TOKENIZER")
    if saved:
        return AutoTokenizer.from_pretrained(saved)
    folder, name = _gguf_location()
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=name)


def has_smollm2_tokenizer() -> bool:
    """Whether :func:`smollm2_tokenizer` has something to load."""
    if os.environ.get("FINTS_TEST_TOKENIZER"):
        return True
    try:
        _gguf_location()
    except ModelLoadError:
        return False
    return True


def smollm2_tokenizer_or_skip() -> Any:
    """:func:`smollm2_tokenizer`, or skip the test when there is nothing to load."""
    import pytest

    if not has_smollm2_tokenizer():
        pytest.skip("no tokenizer: install the embedded model or set FINTS_TEST_TOKENIZER")
    return smollm2_tokenizer()


def random_llama(
    tokenizer: Any, *, hidden_size: int, layers: int, max_positions: int, seed: int = 0
) -> Any:
    """A random-weight float32 Llama over ``tokenizer``'s vocabulary (4 heads, 2 KV heads)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def saved_tiny_smol(tmp_path_factory: Any, name: str) -> Iterator[Any]:
    """A tiny random Llama with the real SmolLM2 tokenizer, saved in a folder that
    ``FintsChatModel(model=...)`` loads; torch runs on one thread meanwhile (a module fixture's
    body: ``yield from saved_tiny_smol(tmp_path_factory, "tiny-smol")``)."""
    tok = smollm2_tokenizer_or_skip()
    model = random_llama(tok, hidden_size=32, layers=2, max_positions=1024)
    out = tmp_path_factory.mktemp(name)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield out
    torch.set_num_threads(threads)


def generate_text(lm: Any, prompts: Sequence[str], **kwargs: Any) -> list[str]:
    """Run :func:`fints_agent.decoding.decode` to the end and return each row's text."""
    from fints_agent.decoding import decode

    texts = [""] * len(prompts)
    for step in decode(lm, prompts, **kwargs):
        texts = [t + d for t, d in zip(texts, step.text_delta, strict=True)]
    return texts
