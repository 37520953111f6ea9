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
    CallGrammar,
    ConstrainedDecoder,
    InvalidToolCall,
    ToolCall,
    ToolSpec,
    get_compiler,
    in_free_text_value,
    parse_calls,
    render_call,
    resolve_tool_choice,
)
from fints_agent.config import SteeringConfig
from fints_agent.decoding import DecodeStats, decode, stop_token_ids
from fints_agent.models import LoadedModel
from fints_agent.prompting import PromptRenderer
from fints_agent.steering.vector import SteeringVector

__all__ = ["Personalization", "TurnEngine", "TurnRequest", "TurnResult", "TurnStream"]

Personalization = Literal["none", "steer", "rag", "rag+steer"]
"""How a user's history is used: not at all, as a steering vector, as prompt examples, or both."""

PERSONALIZATIONS: tuple[str, ...] = ("none", "steer", "rag", "rag+steer")


class RetrievalLike(Protocol):
    """What the engine reads from a memory retrieval."""

    vector: SteeringVector | None
    trajectory_ids: list[str]
    weights: list[float]
    similarities: list[float]
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]]


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


def _request_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return ""


def format_examples(
    examples: Sequence[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]],
    specs: Sequence[ToolSpec],
) -> str:
    """Retrieved past turns as a system-prompt section (retrieval-augmented prompting)."""
    if not examples:
        return ""
    by_name = {s.name: s.parameters for s in specs}
    lines = ["# This user's past requests and the calls that served them"]
    for messages, call in examples:
        name = str(call.get("name", ""))
        args = call.get("arguments", {})
        lines.append(f"Request: {_request_text(messages)}")
        lines.append(f"Call: {render_call(name, args, by_name.get(name))}")
    return "\n".join(lines)


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
            [_openai_tool(s) for s in req.tools],
            k=cfg.k,
            temperature=cfg.temperature,
            min_similarity=cfg.min_similarity,
            recency_half_life=cfg.recency_half_life,
        )

    def render(
        self, req: TurnRequest, retrieval: RetrievalLike | None
    ) -> tuple[str, list[ToolSpec]]:
        """The prompt text (context-window trimmed) and the tools the grammar allows."""
        mode, allowed = resolve_tool_choice(req.tool_choice, req.tools)
        examples = ""
        if retrieval is not None and req.personalization in ("rag", "rag+steer"):
            examples = format_examples(retrieval.examples, req.tools)
        messages = list(req.messages)
        tools = [_openai_tool(s) for s in (req.tools if mode != "none" else [])]
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
        return prompt, allowed if mode != "none" else []

    def _constraint(self, req: TurnRequest) -> tuple[ConstrainedDecoder | None, list[ToolSpec]]:
        compiler = get_compiler(
            self.lm.tokenizer, int(self.lm.model.config.vocab_size), stop_token_ids=self.stop_ids
        )
        if req.json_schema is not None:
            grammar: CallGrammar | None = CallGrammar.for_json_schema(compiler, req.json_schema)
            return ConstrainedDecoder(grammar, 1) if grammar else None, []
        mode, allowed = resolve_tool_choice(req.tool_choice, req.tools)
        grammar = CallGrammar.build(compiler, allowed, mode, parallel=req.parallel)
        return (ConstrainedDecoder(grammar, 1) if grammar else None), allowed

    # -- a whole turn ------------------------------------------------------------------------
    def run(self, req: TurnRequest) -> TurnStream:
        """Start a turn; iterate the stream for text deltas."""
        # Everything that can fail on bad input fails here, before any generation.
        constraint, allowed = self._constraint(req)
        retrieval = self.retrieve(req)
        prompt, _ = self.render(req, retrieval)
        vector = None
        if retrieval is not None and req.personalization in ("steer", "rag+steer"):
            vector = retrieval.vector
        info = _steering_info(req, retrieval, vector is not None)
        stream = TurnStream(iter(()))
        stream._steps = self._generate(req, prompt, constraint, allowed, vector, info, stream)
        return stream

    def _generate(
        self,
        req: TurnRequest,
        prompt: str,
        constraint: ConstrainedDecoder | None,
        allowed: list[ToolSpec],
        vector: SteeringVector | None,
        info: dict[str, Any],
        stream: TurnStream,
    ) -> Iterator[str]:
        cfg = self.config
        coefficients: Any = cfg.coefficient
        if vector is not None:
            keep = [x for x in (cfg.layers or vector.layers) if x in vector.layers]
            sites = [s for s in cfg.sites if s in vector.sites]
            vector = vector.select(keep, sites) if keep and sites else None
        gate = None
        if vector is not None and cfg.gate == "choices" and allowed:
            specs = list(allowed)

            def gate(texts: list[str]) -> torch.Tensor:
                return torch.tensor([0.0 if in_free_text_value(t, specs) else 1.0 for t in texts])

        stats = DecodeStats()
        text = ""
        with self.lm.lock:
            for step in decode(
                self.lm,
                [prompt],
                max_new_tokens=req.max_new_tokens,
                constraint=constraint,
                vectors=vector,
                coefficients=coefficients,
                steer_prompt=cfg.steer_prompt,
                gate=gate,
                temperature=req.temperature,
                seed=req.seed,
                stats=stats,
            ):
                delta = step.text_delta[0]
                if req.stop and constraint is None:
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
        if req.json_schema is not None:
            calls, invalid, content = [], [], text
        else:
            calls, invalid, content = parse_calls(text, allowed)
        stream.result = TurnResult(
            text=text,
            content=content,
            calls=calls,
            invalid_calls=invalid,
            prompt_tokens=stats.prompt_tokens[0] if stats.prompt_tokens else 0,
            completion_tokens=stats.generated_tokens[0] if stats.generated_tokens else 0,
            finish_reason=stats.finish_reason[0] if stats.finish_reason else "stop",
            steering=info,
        )

    def complete(self, req: TurnRequest) -> TurnResult:
        """Run a turn to the end."""
        stream = self.run(req)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _openai_tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


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
