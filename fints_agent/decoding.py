"""A batched KV-cache decode loop with optional steering and grammar constraints.

The chat model, the benchmarks and the evaluation all generate through :func:`decode`. It yields
one :class:`Step` per generated position, so callers can stream. Rows are left-padded; each row
can carry its own steering vector (or none, :class:`Steering`) and its own grammar matcher
(:class:`Constraint`); what each row may or must do at each step, given its text so far, comes
from one :class:`StepRules` object.

Example:
    >>> for step in decode(lm, [prompt], max_new_tokens=32):
    ...     print(step.text_delta[0], end="")
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fints_agent.models import LoadedModel
from fints_agent.prefix_cache import MIN_PREFIX_TOKENS, PastBatch, common_prefix, left_padded
from fints_agent.steering.inject import Coefficients, SteeringHandle, SteeringRow, steer
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "Constraint",
    "DecodeStats",
    "NoRules",
    "Steering",
    "Step",
    "StepRules",
    "decode",
    "stop_token_ids",
]


class Constraint(Protocol):
    """What the decode loop needs from a grammar constraint (one matcher per batch row)."""

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Set disallowed tokens of each row to -inf, in place."""

    def accept(self, tokens: torch.Tensor) -> None:
        """Advance each unfinished row's matcher by its sampled token."""

    def finished(self, row: int) -> bool:
        """Whether the row's grammar is complete."""

    def free_text(self, row: int) -> bool:
        """Whether the row has no grammar (free text: an end-of-turn token ends it)."""

    def forced_tokens(self, row: int, limit: int | None = None) -> list[int]:
        """The tokens the row's grammar forces next (at most ``limit``; jump-forward)."""

    def accept_tokens(self, row: int, tokens: Sequence[int]) -> None:
        """Advance the row's matcher by forced tokens."""

    def prefer_closing(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Restrict the given rows to tokens that close their open JSON where the grammar
        allows one (in place); returns the rows so restricted."""


class StepRules(Protocol):
    """Per-step rules of a decode, from each row's text so far (built once per batch)."""

    def gate(self, texts: list[str]) -> torch.Tensor | None:
        """The steering gate for the next token: shape ``(rows,)``, or ``(rows, channels)``
        for rows steered by channel tuples; ``None``: every steered row fully."""

    def repeat_scope(self, texts: list[str]) -> list[bool]:
        """Per row, whether the n-gram repetition rule applies at the next token."""

    def close_scope(self, texts: list[str]) -> list[bool]:
        """Per row, whether ``close_within`` may bring the row's open JSON to an end now."""

    def restrict(self, texts: list[str]) -> list[Collection[int] | None] | None:
        """Per row, the tokens it may take next after the grammar (``None``: any)."""


class NoRules:
    """:class:`StepRules` that change nothing: no gate, every row in every scope."""

    def gate(self, texts: list[str]) -> torch.Tensor | None:
        """No gate."""
        return None

    def repeat_scope(self, texts: list[str]) -> list[bool]:
        """Every row."""
        return [True] * len(texts)

    def close_scope(self, texts: list[str]) -> list[bool]:
        """Every row."""
        return [True] * len(texts)

    def restrict(self, texts: list[str]) -> list[Collection[int] | None] | None:
        """No restriction."""
        return None


@dataclass(frozen=True)
class Steering:
    """What steers a decode.

    Attributes:
        rows: A steering vector for all rows, one per row (``None`` entries: unsteered), or
            per row a tuple of vectors, one per gate channel (see :func:`steer`).
        coefficients: Steering scale per layer/site.
        steer_prompt: Steer prompt positions too (the Fints default), else generated ones
            only (the prompt's cached prefix is then reused).
    """

    rows: SteeringVector | Sequence[SteeringRow]
    coefficients: Coefficients = 1.0
    steer_prompt: bool = True


@dataclass
class Step:
    """One decode step.

    Attributes:
        tokens: The token generated for each row (-1 for rows already finished).
        text_delta: New text per row since the previous step.
        done: Per row, whether the row has finished (after this step).
    """

    tokens: list[int]
    text_delta: list[str]
    done: list[bool]


@dataclass
class DecodeStats:
    """Counts filled in while decoding."""

    prompt_tokens: list[int] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    """Per row, the prompt tokens taken from the prefix cache (not encoded)."""
    generated_tokens: list[int] = field(default_factory=list)
    finish_reason: list[str] = field(default_factory=list)
    closed_early: list[bool] = field(default_factory=list)
    """Per row, whether ``close_within`` had to bring its JSON to an end (the row finished
    valid, but its finish reason is ``"length"``: a value may be cut short)."""


def stop_token_ids(lm: LoadedModel) -> set[int]:
    """Token ids that end a turn: EOS of the tokenizer and of the generation config, and
    ``<|im_end|>`` where the vocabulary has it."""
    ids: set[int] = set()
    tok = lm.tokenizer
    for t in (tok.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(t, int):
            ids.add(t)
        elif isinstance(t, list):
            ids.update(int(x) for x in t)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        ids.add(im_end)
    return ids


def decode(
    lm: LoadedModel,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int] = 256,
    constraint: Constraint | None = None,
    steering: Steering | None = None,
    rules: StepRules | None = None,
    no_repeat_ngram: int = 0,
    close_within: int | Sequence[int] = 0,
    prefixes: Sequence[str | Sequence[int] | None] | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    jump_forward: bool = True,
    stats: DecodeStats | None = None,
) -> Iterator[Step]:
    """Generate from a batch of prompts, one step at a time.

    Args:
        lm: The model.
        prompts: Prompt texts (chat-formatted) or token id lists.
        max_new_tokens: Upper bound on generated tokens: one for every row, or one per row (a
            row that reaches its own budget stops there while the others go on).
        constraint: A grammar constraint with one matcher per row.
        steering: The rows' steering vectors, scale and whether prompts are steered.
        rules: Per-step rules from each row's text so far (:class:`StepRules`): the steering
            gate, where the repetition and closing rules apply, and token restrictions applied
            after the grammar (ignored for a row where none of its tokens is still possible).
        no_repeat_ngram: Forbid a token that would repeat an n-gram of this size already
            generated in the row (0: off), unless it is the only token the grammar allows.
            Small models otherwise loop inside free text.
        close_within: When a row has this many tokens of budget left (one number, or one per
            row), restrict it to tokens that close its open JSON wherever the grammar allows
            one, so a long call ends valid instead of being cut off. 0: off.
        prefixes: Per row, the prompt's cacheable prefix (the system prompt and tools, see
            :meth:`~fints_agent.prompting.PromptRenderer.render_prefix`; ``None``: none). Its
            keys and values come from the model's prefix cache (:mod:`fints_agent.prefix_cache`)
            and only the rest of the prompt is encoded; rows steered on their prompt encode
            the whole prompt.
        temperature: 0 for greedy decoding, else sampling temperature.
        seed: Seed for sampling.
        stop_at_eos: Stop a row at an end-of-turn token (benchmarks turn this off).
        jump_forward: With a grammar, feed the tokens each row's grammar forces next (for
            example ``{"name": "``) in the same forward pass as its sampled token; rows of a
            batch feeding runs of different lengths are left-padded within the step.
        stats: Filled with token counts and finish reasons.

    Raises:
        ValueError: Empty batch or an empty prompt.
    """
    if len(prompts) == 0:
        raise ValueError("empty batch: no prompts given")
    tok = lm.tokenizer
    rows = [
        list(tok(p, add_special_tokens=False)["input_ids"]) if isinstance(p, str) else list(p)
        for p in prompts
    ]
    if any(len(r) == 0 for r in rows):
        raise ValueError("a prompt has zero tokens")
    batch = len(rows)
    budgets = _per_row(max_new_tokens, batch, "max_new_tokens")
    if min(budgets) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {min(budgets)}")
    if prefixes is not None and len(prefixes) != batch:
        raise ValueError(f"{len(prefixes)} prefixes for {batch} rows")
    rules = rules or NoRules()
    prompt_steering = steering.rows if steering is not None and steering.steer_prompt else None
    past = _cached_prefixes(lm, rows, prefixes, prompt_steering)
    rest = [r[n:] for r, n in zip(rows, past.lengths, strict=True)]
    width = max(len(r) for r in rest)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = lm.device
    ids, mask, positions = left_padded(rest, pad, device, past.lengths)
    mask = torch.cat([past.mask, mask], 1)
    stop = stop_token_ids(lm) if stop_at_eos else set()
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)
    generated: list[list[int]] = [[] for _ in range(batch)]
    texts = [""] * batch
    done = [False] * batch
    reasons = ["length"] * batch
    closed: set[int] = set()
    reserves = _per_row(close_within, batch, "close_within")
    if stats is not None:
        stats.prompt_tokens = [len(r) for r in rows]
        stats.cached_tokens = list(past.lengths)

    with ExitStack() as stack, torch.inference_mode():
        handle: SteeringHandle | None = None
        if steering is not None:
            handle = stack.enter_context(
                steer(
                    lm,
                    steering.rows,
                    coefficients=steering.coefficients,
                    from_position=0 if steering.steer_prompt else width,
                )
            )
        cache: Any = past.cache
        step_ids, step_pos, attn = ids, positions, mask
        next_pos = positions[:, -1] + 1  # per row, the position of its next token
        jumper = constraint if jump_forward else None
        for _ in range(max(budgets)):
            if handle is not None:
                gate = rules.gate(texts)
                if gate is not None:
                    handle.set_gate(gate)
            out = lm.model(
                input_ids=step_ids,
                attention_mask=attn,
                position_ids=step_pos,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.cache
            logits = out.logits[:, -1, :].float()
            if constraint is not None:
                constraint.mask_logits(logits)
            allowed = rules.restrict(texts)
            if allowed is not None:
                _restrict(logits, allowed, done)
            if constraint is not None and any(reserve > 0 for reserve in reserves):
                scope = rules.close_scope(texts)
                closing = [
                    i
                    for i in range(batch)
                    if scope[i] and not done[i] and budgets[i] - len(generated[i]) <= reserves[i]
                ]
                if closing:
                    closed.update(constraint.prefer_closing(logits, closing))
            if no_repeat_ngram > 1:
                scope = rules.repeat_scope(texts)
                for i in range(batch):
                    if scope[i] and not done[i]:
                        _ban_repeats(logits[i], generated[i], no_repeat_ngram)
            if temperature > 0:
                # Exponential race: argmax(p / E), E ~ Exp(1), samples from p (and is much
                # faster than torch.multinomial over a large vocabulary).
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                race = torch.empty_like(probs).exponential_(generator=generator)
                nxt = (probs / race).argmax(-1)
            else:
                nxt = logits.argmax(-1).cpu()
            if constraint is not None:
                constraint.accept(nxt)
            tokens: list[int] = []
            deltas: list[str] = []
            for i in range(batch):
                if done[i]:
                    tokens.append(-1)
                    deltas.append("")
                    continue
                t = int(nxt[i])
                tokens.append(t)
                grammar_done = constraint is not None and constraint.finished(i)
                free = constraint is None or constraint.free_text(i)
                if t in stop and (free or grammar_done):
                    done[i] = True
                    reasons[i] = "stop"
                    deltas.append("")
                    continue
                generated[i].append(t)
                new_text = tok.decode(generated[i], skip_special_tokens=True)
                # Hold back text while a multi-byte character is incomplete.
                if new_text.startswith(texts[i]) and not new_text.endswith("\ufffd"):
                    deltas.append(new_text[len(texts[i]) :])
                    texts[i] = new_text
                else:
                    deltas.append("")
                if grammar_done:
                    done[i] = True
                    reasons[i] = "stop"
                if done[i]:
                    final = tok.decode(generated[i], skip_special_tokens=True)
                    deltas[-1] += final[len(texts[i]) :]
                    texts[i] = final
            # Jump-forward: text a row's grammar forces next is fed in the same forward pass.
            forced: list[list[int]] = [[] for _ in range(batch)]
            for i in range(batch):
                if jumper is None or done[i] or len(generated[i]) >= budgets[i]:
                    continue
                forced[i] = jumper.forced_tokens(i, limit=budgets[i] - len(generated[i]))
                if forced[i]:
                    jumper.accept_tokens(i, forced[i])
                    generated[i].extend(forced[i])
                    final = tok.decode(generated[i], skip_special_tokens=True)
                    if final.startswith(texts[i]) and not final.endswith("\ufffd"):
                        deltas[i] += final[len(texts[i]) :]
                        texts[i] = final
                    if jumper.finished(i):
                        done[i] = True
                        reasons[i] = "stop"
            for i in range(batch):
                if not done[i] and len(generated[i]) >= budgets[i]:
                    done[i] = True  # its own budget is spent; reason stays "length"
            yield Step(tokens, deltas, list(done))
            if all(done):
                break
            # Each row's next tokens, left-padded: rows feeding forced runs of other lengths
            # leave masked holes, and every row's last token is in the last column.
            feeds = [[max(t, 0), *f] for t, f in zip(tokens, forced, strict=True)]
            step_ids, step_mask, step_pos = left_padded(feeds, pad, device, next_pos.tolist())
            next_pos = next_pos + step_mask.sum(-1)
            attn = torch.cat([attn, step_mask], 1)
    if stats is not None:
        stats.generated_tokens = [len(g) for g in generated]
        stats.finish_reason = ["length" if i in closed else r for i, r in enumerate(reasons)]
        stats.closed_early = [i in closed for i in range(batch)]


def _cached_prefixes(
    lm: LoadedModel,
    rows: Sequence[list[int]],
    prefixes: Sequence[str | Sequence[int] | None] | None,
    prompt_steering: SteeringVector | Sequence[SteeringRow] | None,
) -> PastBatch:
    """The rows' cached prompt prefixes (each row keeps at least one token to encode; rows
    whose prompt is steered, per ``prompt_steering``, get none)."""
    lengths = [0] * len(rows)
    if prefixes is not None and lm.prefix_cache.usable(lm):
        steered = [prompt_steering is not None] * len(rows)
        if prompt_steering is not None and not isinstance(prompt_steering, SteeringVector):
            steered = [
                any(v is not None for v in r) if isinstance(r, tuple) else r is not None
                for r in prompt_steering
            ]
        for i, (row, prefix) in enumerate(zip(rows, prefixes, strict=True)):
            if prefix is None or steered[i]:
                continue
            anchor = (
                lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]
                if isinstance(prefix, str)
                else prefix
            )
            n = min(common_prefix(row, anchor), len(row) - 1)
            lengths[i] = n if n >= MIN_PREFIX_TOKENS else 0
    kvs = lm.prefix_cache.prefill(lm, [r[:n] for r, n in zip(rows, lengths, strict=True)])
    return PastBatch.of(lm, kvs)


def _per_row(value: int | Sequence[int], batch: int, name: str) -> list[int]:
    """One integer for every row, or one per row (checked against the batch size)."""
    values = [int(v) for v in value] if isinstance(value, Sequence) else [int(value)] * batch
    if len(values) != batch:
        raise ValueError(f"{name} has {len(values)} entries for {batch} rows")
    return values


def _restrict(
    logits: torch.Tensor, allowed: Sequence[Collection[int] | None], done: Sequence[bool]
) -> None:
    """Keep only the allowed tokens of each row (in place) where one of them is still possible."""
    for i, tokens in enumerate(allowed):
        if not tokens or done[i]:
            continue
        index = torch.tensor(sorted(tokens), device=logits.device)
        kept = logits[i, index]
        if torch.isfinite(kept).any():
            logits[i].fill_(float("-inf"))
            logits[i, index] = kept


def _ban_repeats(logits: torch.Tensor, generated: list[int], n: int) -> None:
    """Set to -inf the tokens that would repeat an n-gram of ``generated`` (in place)."""
    if len(generated) < n:
        return
    prefix = generated[len(generated) - n + 1 :]
    banned = {
        generated[j + n - 1]
        for j in range(len(generated) - n + 1)
        if generated[j : j + n - 1] == prefix
    }
    if not banned:
        return
    index = torch.tensor(sorted(banned), device=logits.device)
    kept = logits[index].clone()
    logits[index] = float("-inf")
    if not torch.isfinite(logits).any():  # the grammar allows nothing else: keep them
        logits[index] = kept
