"""Grammar-constrained decoding: :class:`ConstrainedDecoder` masks a decode loop's logits with
a :class:`~fints_agent.calls.grammar.CallGrammar`.

For a hand-written decode loop (KV cache, greedy or sampling, batched with left padding):

1. :func:`~fints_agent.calls.compiler.get_compiler` binds xgrammar to a tokenizer once (cached
   per tokenizer).
2. :meth:`~fints_agent.calls.grammar.CallGrammar.build` compiles the call grammar for a set of
   tools and a tool mode (:meth:`~fints_agent.calls.grammar.CallGrammar.for_json_schema` for
   plain JSON output).
3. :class:`ConstrainedDecoder` holds one matcher per batch row. Each step: ``mask_logits`` on the
   last position's logits, pick the tokens, ``accept`` them; a row is done when ``finished``.
   ``forced_tokens`` returns the tokens the grammar forces next (jump-forward), so a loop can feed
   them in one forward pass instead of one pass per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import xgrammar as xgr

from fints_agent.calls.grammar import CallGrammar

__all__ = ["ConstrainedDecoder"]

_SHIFTS = torch.arange(32, dtype=torch.int32)
_SPARSE_WORDS = 64
"""Rows whose bitmask has at most this many non-zero words are masked by :meth:`_apply_sparse`."""
_FILL_CHUNK = 16384
"""Fill rows in pieces below torch's parallel grain size: waking a thread pool for a 50k-element
fill costs more than the fill (milliseconds on a busy 2-core machine)."""
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


class ConstrainedDecoder:
    """Applies a grammar to a batch of sequences, one token per row per step.

    Usage in a decode loop::

        decoder = ConstrainedDecoder(grammar, batch_size)
        while not decoder.all_finished():
            logits = model(...).logits[:, -1, :]
            decoder.mask_logits(logits)        # in place
            tokens = logits.argmax(-1)         # or sample
            decoder.accept(tokens)

    Rows that are finished (their grammar accepted a stop token) are masked to the stop tokens
    and ignore what they are given. Masks are filled once per state and reused; rows whose
    grammar allows every token are not touched.

    Args:
        grammar: The compiled grammar.
        batch_size: The number of rows.
    """

    def __init__(self, grammar: CallGrammar, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.grammar = grammar
        self.batch_size = batch_size
        self._compiler = grammar.compiler
        self._matchers = [xgr.GrammarMatcher(grammar.compiled) for _ in range(batch_size)]
        self._bitmask = xgr.allocate_token_bitmask(batch_size, grammar.vocab_size)
        self._fresh = [False] * batch_size  # the row's mask matches its matcher state
        self._need_apply = [True] * batch_size
        self._stopped = [False] * batch_size
        self._device_bitmask: torch.Tensor | None = None
        # Per row: inside a JSON string, and after a backslash there (for prefer_closing).
        self._in_string = [False] * batch_size
        self._escaped = [False] * batch_size

    def reset(self) -> None:
        """Bring every row back to the start of the grammar."""
        for matcher in self._matchers:
            matcher.reset()
        self._in_string = [False] * self.batch_size
        self._escaped = [False] * self.batch_size
        self._fresh = [False] * self.batch_size
        self._stopped = [False] * self.batch_size

    def _fill(self, row: int) -> None:
        if self._fresh[row]:
            return
        if self._stopped[row] or self._matchers[row].is_terminated():
            self._stopped[row] = True
            self._bitmask[row].copy_(self._compiler.stop_mask)
            self._need_apply[row] = True
        else:
            self._need_apply[row] = self._matchers[row].fill_next_token_bitmask(self._bitmask, row)
        self._fresh[row] = True

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the grammar does not allow to ``-inf``, in place.

        Args:
            logits: ``[batch_size, vocab]`` logits of the next token (any device; float32,
                float16 or bfloat16). Columns past the grammar's vocabulary size are masked.

        Raises:
            ValueError: If the shape does not match the batch.
        """
        if logits.dim() != 2 or logits.shape[0] != self.batch_size:
            raise ValueError(
                f"expected logits of shape [{self.batch_size}, vocab], got {tuple(logits.shape)}"
            )
        for row in range(self.batch_size):
            self._fill(row)
        vocab = self.grammar.vocab_size
        if logits.shape[1] > vocab:
            logits[:, vocab:] = float("-inf")
        indices = [row for row in range(self.batch_size) if self._need_apply[row]]
        if not indices:
            return
        width = min(vocab, logits.shape[1])
        if logits.device.type == "cpu":
            indices = [row for row in indices if not self._apply_sparse(logits, row, width)]
            if not indices:
                return
            bitmask = self._bitmask
        else:
            if self._device_bitmask is None or self._device_bitmask.device != logits.device:
                self._device_bitmask = torch.empty_like(self._bitmask, device=logits.device)
            self._device_bitmask.copy_(self._bitmask, non_blocking=True)
            bitmask = self._device_bitmask
        all_rows = len(indices) == self.batch_size
        xgr.apply_token_bitmask_inplace(
            logits, bitmask, vocab_size=width, indices=None if all_rows else indices
        )

    def _apply_sparse(self, logits: torch.Tensor, row: int, width: int) -> bool:
        """Mask a CPU row by keeping its few allowed logits; False if the row allows many.

        xgrammar's CPU kernel writes every masked entry one by one, which costs about as much
        as a small model's step when nearly all tokens are masked (most steps of a call); this
        path costs a few small tensor operations instead.
        """
        words = self._bitmask[row]
        used = torch.nonzero(words).flatten()
        if used.numel() > _SPARSE_WORDS:
            return False
        bits = ((words[used].unsqueeze(1) >> _SHIFTS) & 1).bool()
        ids = (used.unsqueeze(1) * 32 + _SHIFTS)[bits]
        if width % 32:
            ids = ids[ids < width]
        values = logits[row, ids]
        target = logits[row]
        for start in range(0, width, _FILL_CHUNK):
            target[start : min(width, start + _FILL_CHUNK)] = float("-inf")
        target[ids] = values
        return True

    def prefer_closing(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Restrict rows to tokens that close the open JSON, where the grammar allows any.

        Call after :meth:`mask_logits`. Near the end of a token budget this brings a call to a
        valid end (a string value is cut short rather than the whole call). Inside a string the
        row keeps the allowed tokens that end it (``"``, ``"}``...); between values, those that
        end objects and arrays (or stop), else a comma. Text the grammar forces (the next
        required key) and values it needs (a number, an enum, a string of ``minLength``) are
        left to the model. The tokens are :attr:`CallCompiler.closing_tokens`.

        Args:
            logits: The masked ``[batch_size, vocab]`` logits (in place).
            rows: The rows to restrict.

        Returns:
            The rows that were restricted (the others had no closing token allowed).
        """
        closing = self._compiler.closing_tokens
        restricted: list[int] = []
        for row in rows:
            if self._stopped[row]:
                continue
            target = logits[row]
            tiers = (
                (closing.in_string,) if self._in_string[row] else (closing.outside, closing.comma)
            )
            for tier in tiers:
                ids = tier.to(target.device)
                values = target[ids]
                if bool(torch.isfinite(values).any()):
                    target.fill_(float("-inf"))
                    target[ids] = values
                    restricted.append(row)
                    break
        return restricted

    def accept(self, tokens: torch.Tensor | Sequence[int]) -> None:
        """Advance every unfinished row by its chosen token.

        Args:
            tokens: One token id per row (finished rows' entries are ignored).

        Raises:
            ValueError: If a row's token is not allowed by its grammar (it was not taken from
                masked logits), or the number of tokens does not match the batch.
        """
        values = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        if len(values) != self.batch_size:
            raise ValueError(f"expected {self.batch_size} tokens, got {len(values)}")
        for row, token in enumerate(values):
            if not self._stopped[row]:
                self._accept(row, int(token))

    def accept_tokens(self, row: int, tokens: Sequence[int]) -> None:
        """Advance one row by several tokens (for example the result of :meth:`forced_tokens`).

        Args:
            row: The batch row.
            tokens: The tokens, in order.

        Raises:
            ValueError: If a token is not allowed or the row is finished.
        """
        for token in tokens:
            if self._stopped[row]:
                raise ValueError(f"row {row} is finished and takes no more tokens")
            self._accept(row, int(token))

    def _accept(self, row: int, token: int) -> None:
        matcher = self._matchers[row]
        if not matcher.accept_token(token):
            raise ValueError(f"row {row}: token {token} is not allowed by the grammar here")
        self._fresh[row] = False
        if matcher.is_terminated():
            self._stopped[row] = True
        in_string, escaped = self._in_string[row], self._escaped[row]
        for byte in self._compiler.token_bytes[token] if token < self.grammar.vocab_size else b"":
            if escaped:
                escaped = False
            elif in_string and byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = not in_string
        self._in_string[row], self._escaped[row] = in_string, escaped

    def free_text(self, row: int) -> bool:
        """Whether a row is generated without a grammar: never (every row has one)."""
        return False

    def finished(self, row: int) -> bool:
        """Tell whether a row is done: it accepted a stop token, or stop is all it may emit.

        Args:
            row: The batch row.

        Returns:
            True when the row needs no more tokens from the model.
        """
        if self._stopped[row]:
            return True
        if not self._matchers[row].is_completed():
            return False
        self._fill(row)
        return bool(torch.equal(self._bitmask[row], self._compiler.stop_mask))

    def all_finished(self) -> bool:
        """Tell whether every row is done (see :meth:`finished`)."""
        return all(self.finished(row) for row in range(self.batch_size))

    def forced_text(self, row: int) -> str:
        """The text the grammar forces next in a row (empty when the model has a choice).

        Args:
            row: The batch row.

        Returns:
            The longest string every continuation of the row starts with.
        """
        if self._stopped[row]:
            return ""
        return self._matchers[row].find_jump_forward_string()

    def forced_tokens(self, row: int, limit: int | None = None) -> list[int]:
        """Tokens the grammar forces next in a row, safe to feed without sampling.

        The forced text is tokenized; the last token is left out (the model writes the boundary
        between forced text and its own choice, as it would tokenize it) unless the forced text
        ends the output, and tokens the grammar would not accept are cut off. Feed the result to
        the model in one forward pass and give it to :meth:`accept_tokens`.

        Args:
            row: The batch row.
            limit: The most tokens to return: pass what is left of the row's token budget, so
                a long forced stretch is neither tokenized nor fed past it (``None``: no limit).

        Returns:
            The token ids (possibly empty), at most ``limit`` of them.
        """
        if limit is not None and limit < 1:
            return []
        text = self.forced_text(row)
        if not text:
            return []
        cut = False
        if limit is not None:
            # A token spells at most max_token_chars characters: this keeps more than `limit`.
            keep = (limit + 2) * self._compiler.max_token_chars
            cut = len(text) > keep
            text = text[:keep]
        tokens = self._compiler.encode(text)
        probe = self._matchers[row].fork()
        for count, token in enumerate(tokens):
            if not probe.accept_token(token):
                return tokens[: max(0, count - 1)][:limit]
        if not cut and probe.is_completed():
            scratch = xgr.allocate_token_bitmask(1, self.grammar.vocab_size)
            probe.fill_next_token_bitmask(scratch)
            if torch.equal(scratch[0], self._compiler.stop_mask):
                return tokens[:limit]
        return tokens[:-1][:limit]

    def is_complete(self, row: int) -> bool:
        """Tell whether the tokens accepted so far form a complete output of the grammar.

        Args:
            row: The batch row.

        Returns:
            True when stopping now would leave a valid output.
        """
        return self._stopped[row] or self._matchers[row].is_completed()
