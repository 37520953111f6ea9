"""Grammar-constrained generation of tool calls with xgrammar.

The pieces, for a hand-written decode loop (KV cache, greedy or sampling, batched with left
padding):

1. :func:`get_compiler` binds xgrammar to a tokenizer once (cached per tokenizer).
2. :meth:`CallGrammar.build` compiles the call grammar for a set of tools and a tool mode
   (:meth:`CallGrammar.for_json_schema` for plain JSON output).
3. :class:`ConstrainedDecoder` holds one matcher per batch row. Each step: ``mask_logits`` on the
   last position's logits, pick the tokens, ``accept`` them; a row is done when ``finished``.
   ``forced_tokens`` returns the tokens the grammar forces next (jump-forward), so a loop can feed
   them in one forward pass instead of one pass per token.

The grammar writes the format of :mod:`fints_agent.calls.format`: compact JSON inside
``<tool_call>`` blocks, arguments valid against each tool's JSON schema.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import xgrammar as xgr

from fints_agent.calls.errors import ToolSchemaError
from fints_agent.calls.format import (
    ARGUMENTS_INFIX,
    CALL_OPEN,
    CALL_SEPARATOR,
    CALL_SUFFIX,
    JSON_SEPARATORS,
    NAME_PREFIX,
)
from fints_agent.calls.instances import check_instance_size
from fints_agent.calls.schema import ToolSpec
from fints_agent.calls.validators import check_references, check_schema

ToolMode = Literal["auto", "required", "none"]
"""``required``: one or more calls and nothing else; ``auto``: free text or calls (the model
decides at the first tokens); ``none``: free text only (no grammar)."""

_MODES = ("auto", "required", "none")
_SHIFTS = torch.arange(32, dtype=torch.int32)
_SPARSE_WORDS = 64
"""Rows whose bitmask has at most this many non-zero words are masked by :meth:`_apply_sparse`."""
_FILL_CHUNK = 16384
"""Fill rows in pieces below torch's parallel grain size: waking a thread pool for a 50k-element
fill costs more than the fill (milliseconds on a busy 2-core machine)."""


_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
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


@functools.lru_cache(maxsize=512)
def _arguments_ebnf(schema_json: str) -> str:
    """The EBNF grammar of compact JSON valid against a schema (given as JSON text)."""
    grammar = xgr.Grammar.from_json_schema(
        schema_json, any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
    )
    return str(grammar)


@functools.lru_cache(maxsize=512)
def _check_bounded(schema_json: str) -> None:
    """Check a schema's references and that its smallest instance is finite and bounded.

    A grammar without a finite output makes xgrammar's jump-forward string grow until memory
    runs out; every grammar is built from a checked schema (tools from
    :func:`~fints_agent.calls.schema.to_tool_specs` are checked there already, this also covers
    specs built by hand).
    """
    schema = json.loads(schema_json)
    check_references(schema)
    check_instance_size(schema)


def _call_tag(spec: ToolSpec) -> dict[str, Any]:
    try:
        _check_bounded(spec.schema_json)
    except ToolSchemaError as exc:
        raise ToolSchemaError(
            f"tool {spec.name!r}: the parameters schema is not usable: {exc}"
        ) from exc
    try:
        ebnf = _arguments_ebnf(spec.schema_json)
    except Exception as exc:
        raise ToolSchemaError(
            f"tool {spec.name!r}: the parameters schema cannot be turned into a grammar: {exc}"
        ) from exc
    return {
        "type": "tag",
        "begin": NAME_PREFIX + spec.name + ARGUMENTS_INFIX,
        "content": {"type": "grammar", "grammar": ebnf},
        "end": CALL_SUFFIX,
    }


@dataclass(frozen=True, eq=False)
class CallGrammar:
    """A compiled grammar for tool calls (or for plain JSON output).

    Attributes:
        compiler: The compiler it was built with.
        compiled: xgrammar's compiled grammar.
        kind: ``"required"``, ``"auto"`` or ``"json"``.
        specs: The tools the grammar allows (empty for ``"json"``).
        max_calls: The most call blocks allowed (``None``: no limit).
    """

    compiler: CallCompiler
    compiled: xgr.CompiledGrammar
    kind: Literal["required", "auto", "json"]
    specs: tuple[ToolSpec, ...]
    max_calls: int | None

    @classmethod
    def build(
        cls,
        compiler: CallCompiler,
        specs: Sequence[ToolSpec],
        mode: ToolMode,
        *,
        parallel: bool = True,
        max_calls: int | None = None,
    ) -> CallGrammar | None:
        """Compile the call grammar for a set of tools.

        ``required`` allows one or more call blocks separated by newlines and nothing else
        (pass a single spec to force that tool). ``auto`` allows either that or free text that
        does not contain ``<tool_call>``. ``none`` needs no grammar.

        Args:
            compiler: From :func:`get_compiler`.
            specs: The tools (from :func:`~fints_agent.calls.schema.to_tool_specs`).
            mode: The tool mode.
            parallel: Allow several calls; if False, exactly one call (``required``) or at most
                one (``auto``), the same as ``max_calls=1``.
            max_calls: The most call blocks allowed (``None``: no limit). Small models tend to
                repeat calls rather than stop; a limit bounds that.

        Returns:
            The grammar, or ``None`` when generation is unconstrained (``none``, or ``auto``
            without tools).

        Raises:
            ValueError: If the mode is unknown or ``max_calls`` is below 1.
            ToolSchemaError: If ``required`` has no tools, names repeat, or a schema cannot be
                turned into a grammar (the message names the tool).
        """
        if mode not in _MODES:
            raise ValueError(f"unknown tool mode {mode!r}: expected one of {', '.join(_MODES)}")
        if mode == "none" or (mode == "auto" and not specs):
            return None
        if not specs:
            raise ToolSchemaError("tool mode 'required' needs at least one tool")
        if max_calls is not None and max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        if not parallel:
            max_calls = 1
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ToolSchemaError(f"duplicate tool names in {names}")
        tags = [_call_tag(spec) for spec in specs]
        calls: dict[str, Any]
        if max_calls is None or max_calls == 1:
            calls = {
                "type": "tags_with_separator",
                "tags": tags,
                "separator": CALL_SEPARATOR,
                "at_least_one": True,
                "stop_after_first": max_calls == 1,
            }
        else:
            one = {"type": "or", "elements": tags}
            more = {
                "type": "sequence",
                "elements": [{"type": "const_string", "value": CALL_SEPARATOR}, one],
            }
            calls = {
                "type": "sequence",
                "elements": [
                    one,
                    {"type": "repeat", "min": 0, "max": max_calls - 1, "content": more},
                ],
            }
        if mode == "auto":
            text = {"type": "any_text", "excludes": [CALL_OPEN]}
            fmt: dict[str, Any] = {"type": "or", "elements": [calls, text]}
        else:
            fmt = calls
        tag = json.dumps({"type": "structural_tag", "format": fmt}, ensure_ascii=False)
        try:
            compiled = compiler.compiler.compile_structural_tag(tag)
        except Exception as exc:
            raise ToolSchemaError(f"cannot compile the call grammar for {names}: {exc}") from exc
        return cls(compiler, compiled, mode, tuple(specs), max_calls)

    @classmethod
    def for_json_schema(cls, compiler: CallCompiler, schema: Mapping[str, Any]) -> CallGrammar:
        """Compile a grammar for one compact JSON value valid against a schema.

        For structured output without the call wrapper.

        Args:
            compiler: From :func:`get_compiler`.
            schema: A JSON schema.

        Returns:
            The grammar.

        Raises:
            ToolSchemaError: If the schema is invalid, refers outside itself, has no finite
                valid value (or only very long ones), or cannot be turned into a grammar.
        """
        try:
            schema_json = json.dumps(schema, ensure_ascii=False)
            check_schema(schema)
            _check_bounded(schema_json)
        except ToolSchemaError as exc:
            raise ToolSchemaError(f"invalid JSON schema: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ToolSchemaError(f"invalid JSON schema: not plain JSON: {exc}") from exc
        try:
            ebnf = _arguments_ebnf(schema_json)
            compiled = compiler.compiler.compile_grammar(ebnf)
        except Exception as exc:
            raise ToolSchemaError(
                f"the JSON schema cannot be turned into a grammar: {exc}"
            ) from exc
        return cls(compiler, compiled, "json", (), None)

    @property
    def vocab_size(self) -> int:
        """The vocabulary size the grammar's masks cover."""
        return self.compiler.vocab_size


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


def resolve_tool_choice(
    tool_choice: str | bool | Mapping[str, Any] | None, specs: Sequence[ToolSpec]
) -> tuple[ToolMode, list[ToolSpec]]:
    """Map a LangChain/OpenAI ``tool_choice`` to a tool mode and the tools it allows.

    ``None``/``"auto"`` -> ``auto``; ``"none"`` -> ``none``; ``"any"``/``"required"``/``True``
    -> ``required`` with all tools; a tool name, ``{"name": ...}`` or
    ``{"type": "function", "function": {"name": ...}}`` -> ``required`` with that tool only.

    Args:
        tool_choice: The choice.
        specs: The bound tools.

    Returns:
        ``(mode, allowed_specs)``.

    Raises:
        ToolSchemaError: If the choice names an unknown tool, or forces a call without tools.
        ValueError: If the choice has an unknown shape.
    """
    if tool_choice is None or tool_choice == "auto" or tool_choice is False:
        return ("auto" if specs else "none"), list(specs)
    if tool_choice == "none":
        return "none", []
    if tool_choice in ("any", "required") or tool_choice is True:
        if not specs:
            raise ToolSchemaError(f"tool_choice={tool_choice!r} needs at least one tool")
        return "required", list(specs)
    name: Any = None
    if isinstance(tool_choice, str):
        name = tool_choice
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
        if name is None and tool_choice.get("type") in ("auto", "none", "any", "required"):
            return resolve_tool_choice(str(tool_choice["type"]), specs)
    if not isinstance(name, str):
        raise ValueError(f"unsupported tool_choice: {tool_choice!r}")
    for spec in specs:
        if spec.name == name:
            return "required", [spec]
    known = ", ".join(spec.name for spec in specs) or "none"
    raise ToolSchemaError(f"tool_choice names unknown tool {name!r} (known: {known})")
