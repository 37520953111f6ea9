"""One personalized turn: retrieve, aggregate, render, generate under steering and a grammar.

:class:`TurnEngine` is what the LangChain chat model, the evaluation and the demo share. A turn
is streamed: iterate a :class:`TurnStream` for text deltas, then read its ``result``.

Example:
    >>> engine = TurnEngine(load_model(), memory)
    >>> stream = engine.run(TurnRequest(messages, specs, tool_choice="any", user_id="alice"))
    >>> for delta in stream: ...
    >>> stream.result.calls, stream.result.steering["trajectories"]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from fints_agent.calls import (
    CALL_CLOSE,
    CALL_OPEN,
    CallGrammar,
    CallPosition,
    CallTracker,
    ConstrainedDecoder,
    InvalidToolCall,
    ToolCall,
    ToolSpec,
    dump_json,
    example_value,
    get_compiler,
    in_free_text_value,
    parse_calls,
    render_call,
    request_text,
    resolve_tool_choice,
    restrict_to_request,
)
from fints_agent.config import SteeringConfig
from fints_agent.decoding import DecodeStats, decode, stop_token_ids
from fints_agent.models import LoadedModel
from fints_agent.prompting import PromptRenderer, format_examples
from fints_agent.steering.inject import SteeringRow
from fints_agent.steering.vector import SteeringVector

__all__ = [
    "Personalization",
    "PreparedTurn",
    "RowConstraints",
    "TurnEngine",
    "TurnRequest",
    "TurnResult",
    "TurnStream",
]

Personalization = Literal["none", "steer", "rag", "rag+steer"]
"""How a user's history is used: not at all, as a steering vector, as prompt examples, or both."""

PERSONALIZATIONS: tuple[str, ...] = ("none", "steer", "rag", "rag+steer")


class RetrievalLike(Protocol):
    """What the engine reads from a memory retrieval."""

    vector: SteeringVector | None
    value_vector: SteeringVector | None
    trajectory_ids: list[str]
    weights: list[float]
    similarities: list[float]
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]]

    @property
    def tool_share(self) -> float:
        """Share of the mixing weight from trajectories that contrast the choice of tool."""
        ...


class MemoryLike(Protocol):
    """The part of :class:`fints_agent.memory.Memory` the engine uses."""

    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        k: int = 5,
        temperature: float = 0.1,
        min_similarity: float | None = None,
        recency_half_life: float | None = None,
    ) -> RetrievalLike:
        """Top-k of the user's trajectories and their aggregated vector."""
        ...


@dataclass
class TurnRequest:
    """One turn to generate.

    Attributes:
        messages: OpenAI-style message dicts.
        tools: The tools offered this turn.
        tool_choice: LangChain/OpenAI tool choice (None/"auto", "none", "any", a name...).
        user_id: Whose history personalizes the turn (None: nobody's).
        personalization: How the history is used.
        json_schema: Constrain the answer to one JSON value of this schema instead of calls.
        max_new_tokens: Upper bound on generated tokens.
        temperature: 0 for greedy decoding.
        seed: Sampling seed.
        stop: Stop sequences (text generation only).
        parallel: Allow several calls in one answer (parallel calls).
        no_repeat_ngram: Inside free text (plain answers and free-text string values of a
            call), never repeat an n-gram of this size (0: off).
        copy_strings: Restrict free string arguments to spans of the latest user message
            (:mod:`fints_agent.calls.spans`); the grammar only, calls validate as usual.
    """

    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: Any = None
    user_id: str | None = None
    personalization: Personalization = "steer"
    json_schema: dict[str, Any] | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    stop: list[str] | None = None
    parallel: bool = False
    no_repeat_ngram: int = 4
    copy_strings: bool = False


@dataclass
class TurnResult:
    """What a turn produced.

    Attributes:
        text: The raw generated text.
        content: Text outside call blocks.
        calls: Calls that name a bound tool and validate against its schema.
        invalid_calls: Calls that do not (with the error).
        prompt_tokens: Length of the rendered prompt.
        completion_tokens: Generated tokens.
        finish_reason: ``"stop"`` or ``"length"``.
        steering: Why and how the turn was personalized (user, trajectories, weights).
    """

    text: str
    content: str
    calls: list[ToolCall]
    invalid_calls: list[InvalidToolCall]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    steering: dict[str, Any]


class TurnStream:
    """Iterate for text deltas; ``result`` is set once the iteration ends."""

    def __init__(self, steps: Iterator[str]) -> None:
        self._steps = steps
        self.result: TurnResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self._steps


class TurnEngine:
    """Generates personalized turns on one model.

    Args:
        lm: The model.
        memory: Where users' trajectories are retrieved from (None: no personalization).
        config: Steering configuration (default: the model's saved one, else defaults).
    """

    def __init__(
        self,
        lm: LoadedModel,
        memory: MemoryLike | None = None,
        config: SteeringConfig | None = None,
    ) -> None:
        self.lm = lm
        self.memory = memory
        self.config = config or SteeringConfig.for_model(lm.fingerprint)
        self.renderer = PromptRenderer(lm.tokenizer)
        self.stop_ids = sorted(stop_token_ids(lm))
        self.max_context = int(getattr(lm.model.config, "max_position_embeddings", 2048))

    # -- pieces ----------------------------------------------------------------------------
    def retrieve(self, req: TurnRequest) -> RetrievalLike | None:
        """The user's retrieval for this turn, or None when nothing personalizes it."""
        if req.personalization == "none" or req.user_id is None or self.memory is None:
            return None
        cfg = self.config
        return self.memory.retrieve(
            req.user_id,
            req.messages,
            [s.to_openai() for s in req.tools],
            k=cfg.k,
            temperature=cfg.temperature,
            min_similarity=cfg.min_similarity,
            recency_half_life=cfg.recency_half_life,
        )

    def render(
        self, req: TurnRequest, retrieval: RetrievalLike | None
    ) -> tuple[str, str, list[ToolSpec]]:
        """The prompt text (context-window trimmed), its cacheable prefix (the system prompt
        and tools, see :meth:`PromptRenderer.render_prefix`) and the tools the grammar
        allows."""
        mode, allowed = resolve_tool_choice(req.tool_choice, req.tools)
        examples = ""
        if retrieval is not None and req.personalization in ("rag", "rag+steer"):
            examples = format_examples(retrieval.examples, req.tools)
        messages = list(req.messages)
        tools = [s.to_openai() for s in (req.tools if mode != "none" else [])]
        budget = self.max_context - req.max_new_tokens
        while True:
            prompt = self.renderer.render_prompt(messages, tools, examples=examples or None)
            n = self.renderer.count_tokens(prompt)
            droppable = [i for i, m in enumerate(messages) if m.get("role") != "system"]
            if n <= budget or len(droppable) <= 1:
                break
            warnings.warn(
                f"prompt of {n} tokens exceeds the context window ({self.max_context} minus "
                f"{req.max_new_tokens} for the answer): dropping the oldest message",
                stacklevel=3,
            )
            del messages[droppable[0]]
        if n > budget:
            raise ValueError(
                f"the last message alone needs {n} prompt tokens; the context window allows "
                f"{budget}"
            )
        prefix = self.renderer.render_prefix(messages, tools)
        return prompt, prefix, allowed if mode != "none" else []

    def _constraint(self, req: TurnRequest) -> tuple[ConstrainedDecoder | None, list[ToolSpec]]:
        compiler = get_compiler(
            self.lm.tokenizer, int(self.lm.model.config.vocab_size), stop_token_ids=self.stop_ids
        )
        if req.json_schema is not None:
            grammar: CallGrammar | None = CallGrammar.for_json_schema(compiler, req.json_schema)
            return ConstrainedDecoder(grammar, 1) if grammar else None, []
        mode, allowed = resolve_tool_choice(req.tool_choice, req.tools)
        specs = allowed
        if req.copy_strings and mode != "none":
            specs = restrict_to_request(allowed, request_text(req.messages))
        grammar = CallGrammar.build(compiler, specs, mode, parallel=req.parallel)
        return (ConstrainedDecoder(grammar, 1) if grammar else None), allowed

    # -- a whole turn ------------------------------------------------------------------------
    def prepare(self, req: TurnRequest) -> PreparedTurn:
        """Everything before generation; all bad input fails here, before any generation."""
        if not req.messages:
            raise ValueError("a turn needs at least one message; none was given")
        constraint, allowed = self._constraint(req)
        retrieval = self.retrieve(req)
        prompt, prefix, _ = self.render(req, retrieval)
        vector = value_vector = None
        if retrieval is not None and req.personalization in ("steer", "rag+steer"):
            vector = retrieval.vector
            value_vector = retrieval.value_vector
        cfg = self.config
        vector = self._configured(vector)
        value_vector = self._configured(value_vector) if vector is not None else None
        if value_vector is not None and cfg.value_coefficient is not None:
            # The decode scales every channel by ``coefficient``.
            if cfg.coefficient == 0.0:
                value_vector = None
            else:
                value_vector = value_vector * (cfg.value_coefficient / cfg.coefficient)
        tool_scale = 1.0
        if vector is not None and retrieval is not None and cfg.tool_steering == "contrasted":
            tool_scale = retrieval.tool_share
        info = _steering_info(req, retrieval, vector is not None)
        if vector is not None:
            info["tool_scale"] = round(tool_scale, 4)
        tracked = cfg.gate != "all" or tool_scale < 1.0 or value_vector is not None
        gated = vector is not None and tracked
        reserve = self._closing_reserve(req, allowed) if constraint is not None else 0
        return PreparedTurn(
            req,
            prompt,
            constraint,
            allowed,
            vector,
            info,
            gated,
            reserve,
            cfg.gate,
            tool_scale,
            value_vector,
            prefix,
        )

    def _configured(self, vector: SteeringVector | None) -> SteeringVector | None:
        """The vector restricted to the configuration's layers and sites (None: none left)."""
        if vector is None:
            return None
        cfg = self.config
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
        stream._steps = self._generate(prepared, stream)
        return stream

    def _repeat_scope(self, turns: Sequence[PreparedTurn], trackers: _RowTrackers) -> Any:
        """Rows where the repetition guard applies: unconstrained rows, and constrained rows
        inside a free-text argument value (``trackers`` follow each row's text)."""

        def scope(texts: list[str]) -> list[bool]:
            out = []
            for i, (t, text) in enumerate(zip(turns, texts, strict=True)):
                if t.constraint is None:
                    out.append(True)
                    continue
                tracker = trackers.at(i, text)
                out.append(
                    tracker.position is CallPosition.FREE_TEXT
                    if tracker is not None
                    else in_free_text_value(text, t.allowed)
                )
            return out

        return scope

    def _close_scope(self, turns: Sequence[PreparedTurn]) -> Any:
        def scope(texts: list[str]) -> list[bool]:
            return [
                t.constraint is not None
                and (
                    t.constraint.grammar.kind != "auto"
                    or text.rfind(CALL_OPEN) > text.rfind(CALL_CLOSE)
                )
                for t, text in zip(turns, texts, strict=True)
            ]

        return scope

    def _canonical(self, turns: Sequence[PreparedTurn], trackers: _RowTrackers) -> Any:
        """With ``canonical_choices``: tool names and enum values follow the tokenizer's own
        tokenization of the value, so that a steered row cannot drift into an odd spelling
        (``"a" "dd" "_p"...`` for ``add_product_review``) that the grammar also allows."""
        if not self.config.canonical_choices or not any(t.constraint for t in turns):
            return None
        tok = self.lm.tokenizer
        cache: dict[str, list[int]] = {}

        def ids(text: str) -> list[int]:
            if text not in cache:
                cache[text] = tok(text, add_special_tokens=False)["input_ids"]
            return cache[text]

        def restrict(texts: list[str]) -> list[set[int] | None]:
            out: list[set[int] | None] = []
            for i, (t, text) in enumerate(zip(turns, texts, strict=True)):
                tracker = trackers.at(i, text) if t.constraint is not None else None
                choice = tracker.open_choice() if tracker is not None else None
                out.append(None if choice is None else canonical_next(choice, ids))
            return out

        return restrict

    def _gate(self, turns: Sequence[PreparedTurn], trackers: _RowTrackers) -> Any:
        """The steering gate of each row, from its text so far (which includes the text its
        grammar forces next: a forced run is gated at its end, over the pass that feeds it)."""
        if not any(t.gated for t in turns):
            return None

        split = any(t.value_vector is not None for t in turns)

        def gate(texts: list[str]) -> torch.Tensor:
            values = [
                _gate_values(t, trackers.at(i, text) if t.gated else None)
                for i, (t, text) in enumerate(zip(turns, texts, strict=True))
            ]
            return torch.tensor(values if split else [v[0] for v in values])

        return gate

    def _generate(self, turn: PreparedTurn, stream: TurnStream) -> Iterator[str]:
        req = turn.request
        stats = DecodeStats()
        text = ""
        trackers = _RowTrackers([turn.allowed])
        with self.lm.lock:
            for step in decode(
                self.lm,
                [turn.prompt],
                max_new_tokens=req.max_new_tokens,
                constraint=turn.constraint,
                vectors=_steering_rows([turn]),
                coefficients=self.config.coefficient,
                steer_prompt=self.config.steer_prompt,
                gate=self._gate([turn], trackers),
                no_repeat_ngram=req.no_repeat_ngram,
                repeat_scope=self._repeat_scope([turn], trackers),
                close_within=turn.closing_reserve,
                close_scope=self._close_scope([turn]),
                restrict=self._canonical([turn], trackers),
                prefixes=[turn.prefix],
                temperature=req.temperature,
                seed=req.seed,
                stats=stats,
            ):
                delta = step.text_delta[0]
                if req.stop and turn.constraint is None:
                    cut = _first_stop(text + delta, req.stop)
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

    def _result(self, turn: PreparedTurn, text: str, stats: DecodeStats, row: int) -> TurnResult:
        if turn.request.json_schema is not None:
            calls: list[ToolCall] = []
            invalid: list[InvalidToolCall] = []
            content = text
        else:
            calls, invalid, content = parse_calls(text, turn.allowed)
        return TurnResult(
            text=text,
            content=content,
            calls=calls,
            invalid_calls=invalid,
            prompt_tokens=stats.prompt_tokens[row] if stats.prompt_tokens else 0,
            completion_tokens=stats.generated_tokens[row] if stats.generated_tokens else 0,
            finish_reason=stats.finish_reason[row] if stats.finish_reason else "stop",
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

        Each row keeps its own tools, grammar, token budget and steering vector. Greedy decoding
        gives each row the text :meth:`complete` gives its turn, up to floating-point ties: a
        single turn is run by :meth:`complete`, and in a batch each row feeds the text its
        grammar forces in one pass (jump-forward), as :meth:`complete` does. Temperature, seed
        and ``no_repeat_ngram`` are the first request's; stop sequences
        apply only to a single turn.
        """
        if not requests:
            return []
        if len(requests) == 1:
            return [self.complete(requests[0])]
        turns = [self.prepare(r) for r in requests]
        vectors = _steering_rows(turns)
        stats = DecodeStats()
        texts = [""] * len(turns)
        trackers = _RowTrackers([t.allowed for t in turns])
        with self.lm.lock:
            for step in decode(
                self.lm,
                [t.prompt for t in turns],
                max_new_tokens=[r.max_new_tokens for r in requests],
                constraint=RowConstraints([t.constraint for t in turns]),
                vectors=vectors,
                coefficients=self.config.coefficient,
                steer_prompt=self.config.steer_prompt,
                gate=self._gate(turns, trackers),
                no_repeat_ngram=requests[0].no_repeat_ngram,
                repeat_scope=self._repeat_scope(turns, trackers),
                close_within=[t.closing_reserve for t in turns],
                close_scope=self._close_scope(turns),
                restrict=self._canonical(turns, trackers),
                prefixes=[t.prefix for t in turns],
                temperature=requests[0].temperature,
                seed=requests[0].seed,
                stats=stats,
            ):
                texts = [t + d for t, d in zip(texts, step.text_delta, strict=True)]
        return [self._result(t, texts[i], stats, i) for i, t in enumerate(turns)]


@dataclass
class PreparedTurn:
    """A turn ready to generate: prompt, grammar, steering vector and its explanation."""

    request: TurnRequest
    prompt: str
    constraint: ConstrainedDecoder | None
    allowed: list[ToolSpec]
    vector: SteeringVector | None
    info: dict[str, Any]
    gated: bool
    """Whether the row's call tracker (over ``allowed``) gates its steering."""
    closing_reserve: int = 0
    """Tokens before the end of the budget at which an open call is brought to an end."""
    gate: str = "all"
    """Which generated tokens are steered (:attr:`SteeringConfig.gate`)."""
    tool_scale: float = 1.0
    """Scale of the steering at the tool-name decision (:attr:`SteeringConfig.tool_steering`)."""
    value_vector: SteeringVector | None = None
    """Steers the argument-value decisions (enum, boolean, null) in place of ``vector``
    (a memory of ``vectors="split"``); ``None``: ``vector`` steers them as the gate says."""
    prefix: str | None = None
    """The prompt's cacheable prefix (the system prompt and tools): its keys and values come
    from the model's prefix cache."""


def _steering_rows(turns: Sequence[PreparedTurn]) -> list[SteeringRow] | None:
    """The decode's per-row steering: a vector, or (vector, value vector) channels when any
    row has a value vector; ``None`` when no row is steered."""
    if all(t.vector is None for t in turns):
        return None
    if any(t.value_vector is not None for t in turns):
        return [(t.vector, t.value_vector) for t in turns]
    return [t.vector for t in turns]


def canonical_next(choice: tuple[str, Sequence[str]], ids: Any) -> set[int] | None:
    """The next tokens of the canonical tokenizations of the values that extend ``text``.

    ``choice`` is ``(text so far, allowed values)``; ``ids`` tokenizes a string. ``None`` (no
    restriction) when the text so far already is a value, or is not a canonical prefix of any.
    """
    text, values = choice
    done = ids(text) if text else []
    nxt: set[int] = set()
    for value in values:
        if value == text:
            return None
        if value.startswith(text):
            full = ids(value)
            if len(full) > len(done) and full[: len(done)] == done:
                nxt.add(full[len(done)])
    return nxt or None


_DECISIONS = frozenset({CallPosition.NAME, CallPosition.CHOICE})


class _RowTrackers:
    """One :class:`CallTracker` per batch row, fed only the text added since the last step
    (the texts of a decode only grow; a row whose text does not extend the fed one starts
    over). Rows without specs have no tracker. One instance serves every per-step rule of a
    decode (steering gate, repetition guard, canonical spelling): asking again for the same
    text feeds nothing."""

    def __init__(self, specs: Sequence[Sequence[ToolSpec]]) -> None:
        self._specs = [list(s) for s in specs]
        self._trackers: list[CallTracker | None] = [None] * len(self._specs)
        self._fed = [""] * len(self._specs)

    def at(self, row: int, text: str) -> CallTracker | None:
        """The row's tracker after ``text``."""
        if not self._specs[row]:
            return None
        tracker = self._trackers[row]
        if tracker is None or not text.startswith(self._fed[row]):
            tracker = self._trackers[row] = CallTracker(self._specs[row])
            self._fed[row] = ""
        tracker.feed(text[len(self._fed[row]) :])
        self._fed[row] = text
        return tracker


def _gate_values(turn: PreparedTurn, tracker: CallTracker | None) -> tuple[float, float]:
    """How strongly the next token of a row is steered, per channel: 0.0 (not at all) to 1.0.

    The first channel is the turn's vector: 0.0 or 1.0 by :attr:`SteeringConfig.gate`; at the
    tool name, times the turn's ``tool_scale`` (:attr:`SteeringConfig.tool_steering`). The
    second is its value vector, on only at enum, boolean and null values, where it replaces
    the first. ``tracker`` follows the row's text over the turn's offered tools (None when
    the turn is not ``gated``).
    """
    if tracker is None:
        return 1.0, 0.0
    position = tracker.position
    if position is CallPosition.NAME:
        return turn.tool_scale, 0.0
    if turn.value_vector is not None and position is CallPosition.CHOICE:
        return 0.0, 1.0
    if turn.gate == "all":
        return 1.0, 0.0
    if turn.gate == "decisions":
        return (1.0 if position in _DECISIONS else 0.0), 0.0
    return (0.0 if position is CallPosition.FREE_TEXT else 1.0), 0.0


class RowConstraints:
    """Per-row grammars for a batch whose rows offer different tools (None: unconstrained)."""

    def __init__(self, rows: Sequence[ConstrainedDecoder | None]) -> None:
        self.rows = list(rows)

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Mask each constrained row with its own grammar."""
        for i, c in enumerate(self.rows):
            if c is not None:
                c.mask_logits(logits[i : i + 1])

    def accept(self, tokens: torch.Tensor) -> None:
        """Advance each constrained row."""
        for i, c in enumerate(self.rows):
            if c is not None and not c.finished(0):
                c.accept(tokens[i : i + 1])

    def forced_tokens(self, row: int, limit: int | None = None) -> list[int]:
        """The tokens a row's grammar forces next (jump-forward; see
        :meth:`ConstrainedDecoder.forced_tokens`); none for unconstrained or finished rows."""
        c = self.rows[row]
        if c is None or c.finished(0):
            return []
        return c.forced_tokens(0, limit=limit)

    def accept_tokens(self, row: int, tokens: Sequence[int]) -> None:
        """Advance a row by forced tokens."""
        c = self.rows[row]
        if c is not None:
            c.accept_tokens(0, list(tokens))

    def prefer_closing(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Restrict the given constrained rows to closing tokens (see ConstrainedDecoder)."""
        restricted: list[int] = []
        for i in rows:
            c = self.rows[i]
            if c is not None and c.prefer_closing(logits[i : i + 1], [0]):
                restricted.append(i)
        return restricted

    def finished(self, row: int) -> bool:
        """Whether a row's grammar is complete (unconstrained rows: never)."""
        c = self.rows[row]
        return c is not None and c.finished(0)


_CLOSING_MARGIN = 4
"""Extra tokens kept for closing a call (token boundaries differ from the example's)."""


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
    if retrieval is not None:
        info["trajectories"] = [
            {"id": tid, "weight": round(float(w), 4), "similarity": round(float(s), 4)}
            for tid, w, s in zip(
                retrieval.trajectory_ids, retrieval.weights, retrieval.similarities, strict=False
            )
        ]
    return info
