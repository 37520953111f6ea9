"""xgrammar bound to a tokenizer: :class:`CallCompiler` (shared per tokenizer through
:func:`get_compiler`), the stop-token mask, each token's bytes, and the tokens that close open
JSON (:class:`ClosingTokens`).

A compiler compiles the grammars of :mod:`fints_agent.calls.grammar`, and
:class:`~fints_agent.calls.decoder.ConstrainedDecoder` reads its masks and token tables.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import xgrammar as xgr

__all__ = ["CallCompiler", "ClosingTokens", "get_compiler"]

_QUOTE, _COMMA = ord('"'), ord(",")
_CLOSERS = frozenset(b'"}]')


@dataclass(frozen=True)
class ClosingTokens:
    """Tokens that bring open JSON to an end, by where the text is.

    Attributes:
        in_string: Inside a string: tokens that start with ``"`` and go on only with ``"}]``
            (end the string, maybe the enclosing objects and arrays; never a comma, which
            would start another array item).
        outside: Between values: tokens spelled only with ``}`` and ``]``, and stop tokens.
        comma: Between values when a required property still follows: tokens of ``}],``.
    """

    in_string: torch.Tensor
    outside: torch.Tensor
    comma: torch.Tensor


class CallCompiler:
    """xgrammar's grammar compiler bound to one tokenizer and vocabulary size.

    Use :func:`get_compiler` to share one per tokenizer.

    Args:
        tokenizer: A Hugging Face tokenizer.
        vocab_size: The model's vocabulary size (the width of its logits; it may be larger than
            ``len(tokenizer)``).
        stop_token_ids: Tokens that end generation; default: the tokenizer's EOS token.

    Raises:
        ValueError: If no stop token is given and the tokenizer has no EOS token.
    """

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int] | None = None
    ) -> None:
        if stop_token_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            if eos is None:
                raise ValueError("the tokenizer has no EOS token: pass stop_token_ids")
            stop_token_ids = [int(eos)]
        if not stop_token_ids:
            raise ValueError("stop_token_ids must not be empty")
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.stop_token_ids: tuple[int, ...] = tuple(int(t) for t in stop_token_ids)
        self.tokenizer_info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=self.vocab_size, stop_token_ids=list(self.stop_token_ids)
        )
        self.compiler = xgr.GrammarCompiler(
            self.tokenizer_info, max_threads=max(1, min(8, os.cpu_count() or 1))
        )
        stop_mask = xgr.allocate_token_bitmask(1, self.vocab_size)
        stop_mask.zero_()
        for token in self.stop_token_ids:
            stop_mask[0, token // 32] |= _bit(token % 32)
        self.stop_mask: torch.Tensor = stop_mask[0]
        self._closing: ClosingTokens | None = None
        self._token_bytes: list[bytes] | None = None

    @property
    def token_bytes(self) -> list[bytes]:
        """Each token's text as bytes (computed once)."""
        if self._token_bytes is None:
            self._token_bytes = [
                raw if isinstance(raw, bytes) else str(raw).encode()
                for raw in self.tokenizer_info.decoded_vocab
            ]
        return self._token_bytes

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters one token spells (at least 1)."""
        return max(1, max((len(raw) for raw in self.token_bytes), default=1))

    @property
    def closing_tokens(self) -> ClosingTokens:
        """Token ids that close open JSON (computed once); see :class:`ClosingTokens`."""
        if self._closing is None:
            in_string: list[int] = []
            outside: list[int] = list(self.stop_token_ids)
            comma: list[int] = []
            for token, raw in enumerate(self.token_bytes[: self.vocab_size]):
                chars = set(raw)
                if not raw or not chars <= _CLOSERS | {_COMMA}:
                    continue
                if raw[0] == _QUOTE:
                    if _COMMA not in chars:
                        in_string.append(token)
                elif _QUOTE not in chars:
                    (comma if _COMMA in chars else outside).append(token)
            self._closing = ClosingTokens(
                torch.tensor(sorted(in_string)),
                torch.tensor(sorted(set(outside))),
                torch.tensor(sorted(comma)),
            )
        return self._closing

    def encode(self, text: str) -> list[int]:
        """Tokenize text without special tokens.

        Args:
            text: The text.

        Returns:
            Its token ids.
        """
        return list(self.tokenizer.encode(text, add_special_tokens=False))


def _bit(index: int) -> int:
    """The int32 value with only bit ``index`` set."""
    return -(2**31) if index == 31 else 1 << index


_CompilerKey = tuple[int, int, tuple[int, ...] | None]
_COMPILERS: dict[_CompilerKey, CallCompiler] = {}
"""Compilers by (tokenizer id, vocabulary size, stop tokens); each holds its tokenizer, so an
id is never reused while its entry exists."""
_COMPILERS_LOCK = threading.Lock()


def get_compiler(
    tokenizer: Any, vocab_size: int, *, stop_token_ids: Sequence[int] | None = None
) -> CallCompiler:
    """Return the shared compiler for a tokenizer, creating it on first use.

    Args:
        tokenizer: A Hugging Face tokenizer.
        vocab_size: The model's vocabulary size (from the model config).
        stop_token_ids: Tokens that end generation; default: the tokenizer's EOS token.

    Returns:
        A compiler, kept for the life of the process; grammars it compiles are cached by content.
    """
    stops = None if stop_token_ids is None else tuple(int(t) for t in stop_token_ids)
    key = (id(tokenizer), int(vocab_size), stops)
    with _COMPILERS_LOCK:
        compiler = _COMPILERS.get(key)
        if compiler is None:
            compiler = CallCompiler(tokenizer, vocab_size, stop_token_ids)
            _COMPILERS[key] = compiler
        return compiler
