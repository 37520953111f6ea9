"""One personalized turn: retrieve, aggregate, render, generate under steering and a grammar.

:class:`TurnEngine` is what the LangChain chat model, the evaluation and the demo share. A turn
is streamed: iterate a :class:`TurnStream` for text deltas, then read its ``result``.

The path of a turn, in :meth:`TurnEngine.prepare`: the tool choice is resolved once; the
user's trajectories are retrieved (:class:`RetrievalConfig`) and their vector restricted and
scaled (:class:`SteeringConfig`); the prompt is rendered (with retrieved examples for ``rag``)
and trimmed to the context window; the grammar of the allowed tools is built. Then one decode
runs the prepared turns of a batch (a single turn is a batch of one) under one
:class:`~fints_agent.turn_rules.TurnRules`, and each row's text is parsed into validated calls.

Example:
    >>> engine = TurnEngine(load_model(), memory)
    >>> stream = engine.run(TurnRequest(messages, specs, tool_choice="any", user_id="alice"))
    >>> for delta in stream: ...
    >>> stream.result.calls, stream.result.steering["trajectories"]
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fints_agent.calls import (
    CallGrammar,
    ConstrainedDecoder,
    InvalidToolCall,
    ToolCall,
    ToolMode,
    ToolSpec,
    call_blocks,
    dump_json,
    example_value,
    get_compiler,
    new_call_id,
    parse_calls,
    render_call,
    request_text,
    resolve_tool_choice,
    restrict_to_request,
    text_before_calls,
)
from fints_agent.config import Preset, RetrievalConfig, SteeringConfig
from fints_agent.decoding import DecodeStats, Steering, decode, stop_token_ids
from fints_agent.models import LoadedModel
from fints_agent.prompting import PromptRenderer, format_examples
from fints_agent.steering.inject import SteeringRow
from fints_agent.steering.vector import SteeringVector
from fints_agent.turn import MemoryLike, RetrievalLike, TurnRequest, TurnResult, TurnStream
from fints_agent.turn_rules import Gate, RowConstraints, RowRules, TurnRules

__all__ = ["MEMORY_UNAVAILABLE", "PreparedTurn", "TurnEngine", "UnavailableMemory"]

logger = logging.getLogger(__name__)

MEMORY_UNAVAILABLE = "memory unavailable"
"""The ``reason`` in a turn's steering info when its memory could not be reached."""


class TurnEngine:
    """Generates personalized turns on one model.

    Args:
        lm: The model.
        memory: Where users' trajectories are retrieved from (None: no personalization).
        preset: Retrieval, steering and decoding options (default: the model's preset,
            :meth:`Preset.for_model`). Read once, here.
    """

    def __init__(
        self,
        lm: LoadedModel,
        memory: MemoryLike | None = None,
        preset: Preset | None = None,
    ) -> None:
        self.lm = lm
        self.memory = memory
        self.preset = preset or Preset.for_model(lm.fingerprint)
        self.renderer = PromptRenderer(lm.tokenizer)
        self.stop_ids = sorted(stop_token_ids(lm))
        self.max_context = int(getattr(lm.model.config, "max_position_embeddings", 2048))

    @property
    def retrieval(self) -> RetrievalConfig:
        """How turns retrieve the user's trajectories."""
        return self.preset.retrieval

    @property
    def steering(self) -> SteeringConfig:
        """How retrieved vectors steer generation."""
        return self.preset.steering

    # -- pieces ----------------------------------------------------------------------------
    def retrieve(self, req: TurnRequest) -> RetrievalLike | None:
        """The user's retrieval for this turn, or None when nothing personalizes it.

        A memory that cannot be reached (its Chroma server is down) does not fail the turn: a
        warning is logged and the turn runs unsteered, its steering info saying
        ``"reason": "memory unavailable"``.
        """
        if req.personalization == "none" or req.user_id is None or self.memory is None:
            return None
        from fints_agent.memory.errors import StoreUnavailableError
        from fints_agent.memory.retrieval import Retrieval

        cfg = self.retrieval
        try:
            return self.memory.retrieve(
                req.user_id,
                req.messages,
                req.tools,
                k=cfg.k,
                temperature=cfg.softmax_temperature,
                min_similarity=cfg.min_similarity,
                recency_half_life=cfg.recency_half_life,
            )
        except StoreUnavailableError as exc:
            logger.warning("turn of user %r runs unsteered: %s", req.user_id, exc)
            return Retrieval(req.user_id, None, reason=MEMORY_UNAVAILABLE)

    def render(
        self, req: TurnRequest, retrieval: RetrievalLike | None, *, offered: bool = True
    ) -> tuple[str, str]:
        """The prompt text (context-window trimmed) and its cacheable prefix (the system
        prompt and tools, see :meth:`PromptRenderer.render_prefix`). ``offered``: whether the
        tools are shown (not under ``tool_choice="none"``)."""
        examples = ""
        if retrieval is not None and req.personalization in ("rag", "rag+steer"):
            examples = format_examples(retrieval.examples, req.tools)
        tools = req.tools if offered else []
        budget = self.max_context - req.max_new_tokens

        def fit(dropped: int) -> tuple[list[Mapping[str, Any]], str, int]:
            kept = _drop_oldest(req.messages, dropped)
            prompt = self.renderer.render_prompt(kept, tools, examples=examples or None)
            return kept, prompt, self.renderer.count_tokens(prompt)

        messages, prompt, n = fit(0)
        total = sum(m.get("role") != "system" for m in req.messages)
        if n > budget and total > 1:
            # The most of the newest non-system messages that fit: one of them must, then
            # doubling up from one and bisecting, O(log n) renders of at most the kept prompt.
            full = n
            best = fit(total - 1)  # the latest message alone
            if best[2] <= budget:
                good, bad = 1, total
                probe = 2
                while probe < bad:
                    got = fit(total - probe)
                    if got[2] > budget:
                        bad = probe
                        break
                    good, best = probe, got
                    probe *= 2
                while bad - good > 1:
                    mid = (good + bad) // 2
                    got = fit(total - mid)
                    if got[2] <= budget:
                        good, best = mid, got
                    else:
                        bad = mid
                warnings.warn(
                    f"prompt of {full} tokens exceeds the context window ({self.max_context} "
                    f"minus {req.max_new_tokens} for the answer): dropped the {total - good} "
                    f"oldest of {total} messages ({best[2]} tokens left)",
                    stacklevel=3,
                )
            messages, prompt, n = best
        if n > budget:
            raise ValueError(
                f"the last message alone needs {n} prompt tokens; the context window allows "
                f"{budget}"
            )
        return prompt, self.renderer.render_prefix(messages, tools)

    def _constraint(
        self, req: TurnRequest, mode: ToolMode, allowed: list[ToolSpec]
    ) -> ConstrainedDecoder | None:
        compiler = get_compiler(
            self.lm.tokenizer, int(self.lm.model.config.vocab_size), stop_token_ids=self.stop_ids
        )
        if req.json_schema is not None:
            grammar: CallGrammar | None = CallGrammar.for_json_schema(compiler, req.json_schema)
        else:
            specs = allowed
            if req.copy_strings and mode != "none":
                specs = restrict_to_request(allowed, request_text(req.messages))
            grammar = CallGrammar.build(compiler, specs, mode, parallel=req.parallel)
        return ConstrainedDecoder(grammar, 1) if grammar else None

    # -- a whole turn ------------------------------------------------------------------------
    def prepare(self, req: TurnRequest) -> PreparedTurn:
        """Everything before generation; all bad input fails here, before any generation."""
        if not req.messages:
            raise ValueError("a turn needs at least one message; none was given")
        mode, allowed = resolve_tool_choice(req.tool_choice, req.tools)
        if req.json_schema is not None or mode == "none":
            allowed = []
        constraint = self._constraint(req, mode, allowed)
        retrieval = self.retrieve(req)
        prompt, prefix = self.render(req, retrieval, offered=mode != "none")
        vector = value_vector = None
        if retrieval is not None and req.personalization in ("steer", "rag+steer"):
            vector = self._configured(retrieval.vector)
            if vector is not None:
                value_vector = self._configured(retrieval.value_vector)
        cfg = self.steering
        if value_vector is not None and cfg.value_coefficient is not None:
            # The decode scales every channel by ``coefficient``.
            if cfg.coefficient == 0.0:
                value_vector = None
            else:
                value_vector = value_vector * (cfg.value_coefficient / cfg.coefficient)
        gated = vector is not None and (cfg.gate != "all" or value_vector is not None)
        return PreparedTurn(
            request=req,
            prompt=prompt,
            prefix=prefix,
            constraint=constraint,
            allowed=allowed,
            vector=vector,
            value_vector=value_vector,
            gate=cfg.gate if gated else None,
            closing_reserve=self._closing_reserve(req, allowed) if constraint else 0,
            info=_steering_info(req, retrieval, vector is not None),
        )

    def _configured(self, vector: SteeringVector | None) -> SteeringVector | None:
        """The vector restricted to the configuration's layers and sites (None: none left)."""
        if vector is None:
            return None
        cfg = self.steering
        keep = [x for x in (cfg.layers or vector.layers) if x in vector.layers]
        sites = [s for s in cfg.sites if s in vector.sites]
        return vector.select(keep, sites) if keep and sites else None

    def _closing_reserve(self, req: TurnRequest, allowed: Sequence[ToolSpec]) -> int:
        """Tokens kept at the end of the budget to bring an open call to a valid end.

        The size of the smallest valid call (the longest one among the tools; required
        arguments only, short example values) plus a margin, at most the whole budget (a
        budget too small for any call then gives the shortest call the grammar allows).
        """
        if req.json_schema is not None:
            texts = [dump_json(example_value(req.json_schema))]
        else:
            texts = [
                render_call(s.name, example_value(s.parameters), s.parameters) for s in allowed
            ]
        need = max((self.renderer.count_tokens(t) for t in texts), default=0)
        return min(need + _CLOSING_MARGIN, req.max_new_tokens)

    def run(self, req: TurnRequest) -> TurnStream:
        """Start a turn; iterate the stream for text deltas."""
        prepared = self.prepare(req)
        stream = TurnStream(iter(()))
        stream._steps = self._stream(prepared, stream)
        return stream

    def _stream(self, turn: PreparedTurn, stream: TurnStream) -> Iterator[str]:
        """A single turn's text deltas (cut at its first stop sequence); sets the result."""
        req = turn.request
        stats = DecodeStats()
        text = ""
        stops = req.stop if turn.constraint is None else None
        for deltas in self._decode([turn], stats):
            delta = deltas[0]
            if stops:
                cut = _first_stop(text + delta, stops)
                if cut is not None:
                    tail = (text + delta)[:cut][len(text) :]
                    text += tail
                    if tail:
                        yield tail
                    stats.finish_reason = ["stop"]
                    break
            text += delta
            if delta:
                yield delta
        stream.result = self._result(turn, text, stats, 0)

    def _decode(self, turns: Sequence[PreparedTurn], stats: DecodeStats) -> Iterator[list[str]]:
        """Decode prepared turns as one padded batch; yields each step's text deltas.

        Temperature, seed and ``no_repeat_ngram`` are the first turn's. The model's lock is
        held while the decode runs (and released if the caller stops early).
        """
        first = turns[0].request
        rows = _steering_rows(turns)
        rules = TurnRules(
            [RowRules(t.constraint, t.allowed, t.gate, t.value_vector is not None) for t in turns],
            self.lm.tokenizer,
            canonical_choices=self.preset.canonical_choices,
        )
        with self.lm.lock:
            for step in decode(
                self.lm,
                [t.prompt for t in turns],
                max_new_tokens=[t.request.max_new_tokens for t in turns],
                constraint=RowConstraints([t.constraint for t in turns]),
                steering=None
                if rows is None
                else Steering(rows, self.steering.coefficient, self.steering.steer_prompt),
                rules=rules,
                no_repeat_ngram=first.no_repeat_ngram,
                close_within=[t.closing_reserve for t in turns],
                prefixes=[t.prefix for t in turns],
                temperature=first.temperature,
                seed=first.seed,
                stats=stats,
            ):
                yield step.text_delta

    def _result(self, turn: PreparedTurn, text: str, stats: DecodeStats, row: int) -> TurnResult:
        if turn.request.json_schema is not None:
            calls: list[ToolCall] = []
            invalid: list[InvalidToolCall] = []
            content = text
        else:
            calls, invalid, content = parse_calls(text, turn.allowed)
        finish = stats.finish_reason[row] if stats.finish_reason else "stop"
        if finish == "length" and turn.allowed:
            req = turn.request
            forced = resolve_tool_choice(req.tool_choice, req.tools)[0] == "required"
            invalid, content = _cut_by_budget(text, invalid, content, req.max_new_tokens, forced)
        return TurnResult(
            text=text,
            content=content,
            calls=calls,
            invalid_calls=invalid,
            prompt_tokens=stats.prompt_tokens[row] if stats.prompt_tokens else 0,
            completion_tokens=stats.generated_tokens[row] if stats.generated_tokens else 0,
            finish_reason=finish,
            steering=turn.info,
        )

    def complete(self, req: TurnRequest) -> TurnResult:
        """Run a turn to the end."""
        stream = self.run(req)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def complete_batch(self, requests: Sequence[TurnRequest]) -> list[TurnResult]:
        """Run several independent turns (of one or many users) in one padded batch.

        Each row keeps its own tools, grammar, token budget and steering vector, and gets the
        text :meth:`complete` gives its turn (greedy decoding, up to floating-point ties: in a
        batch each row feeds the text its grammar forces in one pass, as a single turn does).
        Temperature, seed and ``no_repeat_ngram`` are the first request's; stop sequences
        apply only to a single turn.
        """
        if not requests:
            return []
        if len(requests) == 1:
            return [self.complete(requests[0])]
        turns = [self.prepare(r) for r in requests]
        stats = DecodeStats()
        texts = [""] * len(turns)
        for deltas in self._decode(turns, stats):
            texts = [t + d for t, d in zip(texts, deltas, strict=True)]
        return [self._result(t, texts[i], stats, i) for i, t in enumerate(turns)]


@dataclass
class PreparedTurn:
    """A turn ready to generate: prompt, grammar, steering vectors and their explanation.

    Attributes:
        request: The turn asked for.
        prompt: The rendered prompt.
        prefix: The prompt's cacheable prefix (the system prompt and tools): its keys and
            values come from the model's prefix cache.
        constraint: The grammar of the allowed calls (None: free text).
        allowed: The tools the grammar allows.
        vector: The aggregated steering vector (None: unsteered).
        value_vector: Steers the argument-value decisions (enum, boolean, null) in place of
            ``vector`` (a ``"split"`` memory); ``None``: ``vector`` steers them as the gate
            says.
        gate: Which generated tokens ``vector`` steers; ``None``: every token (or unsteered).
        closing_reserve: Tokens before the end of the budget at which an open call is brought
            to an end.
        info: Why and how the turn is personalized (the result's ``steering``).
    """

    request: TurnRequest
    prompt: str
    prefix: str | None
    constraint: ConstrainedDecoder | None
    allowed: list[ToolSpec]
    vector: SteeringVector | None
    value_vector: SteeringVector | None
    gate: Gate | None
    closing_reserve: int
    info: dict[str, Any]


def _steering_rows(turns: Sequence[PreparedTurn]) -> list[SteeringRow] | None:
    """The decode's per-row steering: a vector, or (vector, value vector) channels when any
    row has a value vector; ``None`` when no row is steered."""
    if all(t.vector is None for t in turns):
        return None
    if any(t.value_vector is not None for t in turns):
        return [(t.vector, t.value_vector) for t in turns]
    return [t.vector for t in turns]


_CLOSING_MARGIN = 4
"""Extra tokens kept for closing a call (token boundaries differ from the example's)."""


def _drop_oldest(messages: Sequence[Mapping[str, Any]], dropped: int) -> list[Mapping[str, Any]]:
    """The messages without the ``dropped`` oldest non-system ones (system messages stay)."""
    kept: list[Mapping[str, Any]] = []
    for m in messages:
        if dropped and m.get("role") != "system":
            dropped -= 1
            continue
        kept.append(m)
    return kept


def _cut_by_budget(
    text: str, invalid: list[InvalidToolCall], content: str, budget: int, forced: bool
) -> tuple[list[InvalidToolCall], str]:
    """The invalid calls and content of a text the token budget ended: a call it cut inside
    its opening marker (``<tool_``) is an invalid call, not content (when a call was forced,
    or the fragment is all the text there is), and a call it cut open says so.

    Returns:
        ``(invalid calls, content)``.
    """
    invalid = list(invalid)
    blocks = call_blocks(text)
    if blocks and not blocks[-1].closed:  # only the last block can be open; it is invalid
        last = invalid[-1]
        error = f"the token budget ({budget}) ended the call: {last.error}"
        invalid[-1] = InvalidToolCall(last.name, last.args, last.id, error)
        return invalid, content
    head, opened = text_before_calls(content)
    fragment = content[len(head) :]
    if opened or not fragment or (head and not forced):
        return invalid, content
    error = (
        f"the token budget ({budget}) ended the call inside its opening marker "
        f"({fragment!r}): allow more tokens (max_tokens)"
    )
    invalid.append(InvalidToolCall(None, "", new_call_id(), error))
    return invalid, head.rstrip()


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _steering_info(
    req: TurnRequest, retrieval: RetrievalLike | None, steered: bool
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "user_id": req.user_id,
        "personalization": req.personalization,
        "steered": steered,
        "trajectories": [],
    }
    if getattr(retrieval, "reason", None) == MEMORY_UNAVAILABLE:
        info["reason"] = MEMORY_UNAVAILABLE
    if retrieval is not None:
        info["trajectories"] = [
            {"id": tid, "weight": round(float(w), 4), "similarity": round(float(s), 4)}
            for tid, w, s in zip(
                retrieval.trajectory_ids, retrieval.weights, retrieval.similarities, strict=False
            )
        ]
    return info


class UnavailableMemory:
    """A memory that could not be opened (its Chroma server is down): every retrieval raises
    the error that opening it raised, so the turn runs unsteered (see
    :meth:`TurnEngine.retrieve`).

    Args:
        error: The :class:`~fints_agent.memory.errors.StoreUnavailableError` of opening it.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error

    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        **settings: Any,
    ) -> RetrievalLike:
        """Raise the error of opening the memory."""
        raise self.error
