"""FintsChatModel: a LangChain chat model whose tool calls follow each user's history.

Drop it into any LangChain agent in place of another chat model. Tool calls are generated under
a grammar (the name is a bound tool, the arguments validate against its schema) and steered per
user: the user's most similar past trajectories are retrieved from the trajectory memory and
their contrastive steering vectors, mixed by similarity, are added to the model's attention and
MLP outputs while it generates.

Example:
    >>> llm = FintsChatModel(memory="./memory")            # embedded default model
    >>> agent = create_agent(llm, tools=[get_directions, book_ride])
    >>> agent.invoke({"messages": [("user", "Get me to the airport")]},
    ...              config={"configurable": {"user_id": "alice"}})
    >>> llm.record_feedback("alice", messages, tools, {"name": "book_ride", "arguments": {...}})
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import (
    invalid_tool_call,
    tool_call,
    tool_call_chunk,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr

from fints_agent.calls import (
    CALL_OPEN,
    ToolSchemaError,
    ToolSpec,
    resolve_tool_choice,
    to_tool_specs,
)
from fints_agent.config import SteeringConfig
from fints_agent.engine import Personalization, TurnEngine, TurnRequest, TurnResult
from fints_agent.messages import dumps_args, to_chat_dicts
from fints_agent.models import DEFAULT_MODEL, LoadedModel, cache_dir, load_model

__all__ = ["FintsChatModel", "resolve_user_id"]

_memories: dict[tuple[str, str], Any] = {}
_memories_lock = threading.Lock()


def default_memory_location() -> str:
    """Where the trajectory memory lives when none is given (under the user cache)."""
    return str(cache_dir() / "memory")


def resolve_user_id(
    explicit: str | None,
    run_manager: CallbackManagerForLLMRun | None,
    field_value: str | None,
) -> str | None:
    """The user id of a call, in order: kwarg, runnable config, run metadata, model field.

    The runnable config is read through LangGraph's ``get_config()`` (``configurable.user_id``),
    which sees the config of the graph or agent the model runs in.
    """
    if explicit:
        return explicit
    try:
        from langgraph.config import get_config

        configurable = get_config().get("configurable", {})
        if configurable.get("user_id"):
            return str(configurable["user_id"])
    except (ImportError, RuntimeError):
        pass
    if run_manager is not None:
        metadata = getattr(run_manager, "metadata", None) or {}
        if metadata.get("user_id"):
            return str(metadata["user_id"])
    return field_value


class FintsChatModel(BaseChatModel):
    """A chat model on a local Hugging Face model, steered per user from past tool calls.

    Constructing it never loads weights; instances naming the same model share one loaded copy.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model_name: str = Field(
        default_factory=lambda: os.environ.get("FINTS_AGENT_MODEL", DEFAULT_MODEL), alias="model"
    )
    """The embedded default model, a local model directory or a locally cached model id
    (default: ``$FINTS_AGENT_MODEL``, else the embedded SmolLM2-135M-Instruct)."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = "float32"
    """``float32``, ``bfloat16`` or ``float16``."""
    user_id: str | None = None
    """Default user whose history personalizes calls (overridden per call)."""
    memory: str | None = None
    """Trajectory store: a directory (embedded Chroma) or ``http://host:port`` (Chroma server).
    Default: ``memory`` under the user cache directory."""
    personalization: Personalization = "steer"
    """How history is used: ``steer``, ``rag`` (examples in the prompt), ``rag+steer``, ``none``."""
    steering: SteeringConfig | None = None
    """Steering configuration; default: the model's saved (tuned) configuration."""
    max_tokens: int = 256
    """Upper bound on generated tokens per turn."""
    temperature: float = 0.0
    """0 for greedy decoding."""
    seed: int | None = None
    """Sampling seed."""
    stop: list[str] | None = None
    """Stop sequences for text answers."""
    call_on_user_turn: bool = False
    """With tools bound and ``tool_choice`` auto, a turn that answers a user message must call
    a tool (after a tool result the model may still answer in text). Small models rarely choose
    to call a tool on their own; agents built on them usually want this on."""
    parallel_tool_calls: bool = False
    """Allow several calls in one answer (or per call: ``parallel_tool_calls=True``)."""
    copy_strings: bool = False
    """Write free string arguments (no enum, pattern, format or length bound) only as spans of
    the latest user message (or per call: ``copy_strings=True``). Small models often put a
    placeholder where a query, place or name from the request belongs; leave it off for tools
    whose strings the model must compose (:mod:`fints_agent.calls.spans`)."""

    _memory_obj: Any = PrivateAttr(default=None)

    # -- LangChain identity ------------------------------------------------------------------
    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Configurations serialize (no secrets; weights are never part of it)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["fints_agent", "chat_model"]``."""
        return ["fints_agent", "chat_model"]

    @property
    def _llm_type(self) -> str:
        return "fints"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "device": self.device,
            "dtype": self.dtype,
            "personalization": self.personalization,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="fints_agent",
            ls_model_name=str(kwargs.get("model", self.model_name)),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- engine ------------------------------------------------------------------------------
    def load(self, model: str | None = None) -> LoadedModel:
        """The loaded model (loaded on first use, shared between instances)."""
        return load_model(model or self.model_name, dtype=self.dtype, device=self.device)

    def get_memory(self, lm: LoadedModel | None = None) -> Any:
        """The trajectory memory of this model (opened on first use, shared per location)."""
        if self._memory_obj is not None:
            return self._memory_obj
        from fints_agent.memory import Memory, TrajectoryStore

        lm = lm or self.load()
        location = self.memory or default_memory_location()
        key = (location, lm.fingerprint)
        with _memories_lock:
            if key not in _memories:
                if "://" not in location:
                    Path(location).mkdir(parents=True, exist_ok=True)
                config = self.steering or SteeringConfig.for_model(lm.fingerprint)
                store = TrajectoryStore(location)
                vectors = config.vectors
                if store.layout is not None and store.layout.vectors != vectors:
                    # A store keeps the kind of vectors it was built with.
                    warnings.warn(
                        f"memory {location} holds {store.layout.vectors!r} vectors; the "
                        f"steering configuration asks for {vectors!r}: using the store's kind",
                        stacklevel=2,
                    )
                    vectors = store.layout.vectors  # type: ignore[assignment]
                _memories[key] = Memory(
                    lm,
                    store,
                    layers=config.layers,
                    sites=tuple(config.sites),
                    vectors=vectors,
                )
            self._memory_obj = _memories[key]
        return self._memory_obj

    def use_memory(self, memory: Any) -> FintsChatModel:
        """Use an already opened :class:`fints_agent.memory.Memory`; returns self."""
        self._memory_obj = memory
        return self

    def _engine(self, model: str | None, user_id: str | None) -> TurnEngine:
        lm = self.load(model)
        memory = self.get_memory(lm) if user_id and self.personalization != "none" else None
        return TurnEngine(lm, memory, self.steering)

    # -- tools -------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, Pydantic models, functions, OpenAI/JSON-schema dicts).

        Args:
            tools: Any number of tools.
            tool_choice: ``None``/``"auto"`` (the model may answer in text), ``"none"``,
                ``"any"``/``"required"``/``True`` (a call is forced), a tool name, or
                ``{"type": "function", "function": {"name": ...}}``.
            **kwargs: Passed through to ``bind``.

        Raises:
            fints_agent.calls.ToolSchemaError: A malformed tool schema, or a tool_choice naming
                a tool that is not bound.
        """
        specs = _unique_specs(tools)
        resolve_tool_choice(tool_choice, specs)  # fails now on an unknown tool name
        return self.bind(tools=[s.to_openai() for s in specs], tool_choice=tool_choice, **kwargs)

    # -- generation --------------------------------------------------------------------------
    def _request(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> tuple[TurnEngine, TurnRequest]:
        chat = to_chat_dicts(messages)
        tools = to_tool_specs(kwargs.get("tools") or [])
        user_id = resolve_user_id(kwargs.get("user_id"), run_manager, self.user_id)
        schema = kwargs.get("response_format")
        json_schema = None
        if isinstance(schema, Mapping) and schema.get("type") == "json_schema":
            json_schema = dict(schema["json_schema"].get("schema", {}))
        elif isinstance(schema, Mapping) and schema.get("type") == "json_object":
            json_schema = {"type": "object"}
        tool_choice = kwargs.get("tool_choice")
        if (
            self.call_on_user_turn
            and tools
            and tool_choice in (None, "auto")
            and chat
            and chat[-1]["role"] == "user"
        ):
            tool_choice = "any"
        req = TurnRequest(
            messages=chat,
            tools=tools,
            tool_choice=tool_choice,
            user_id=user_id,
            personalization=kwargs.get("personalization", self.personalization),
            json_schema=json_schema,
            max_new_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
            temperature=float(kwargs.get("temperature", self.temperature)),
            seed=kwargs.get("seed", self.seed),
            stop=stop or self.stop,
            parallel=bool(kwargs.get("parallel_tool_calls", self.parallel_tool_calls)),
            copy_strings=bool(kwargs.get("copy_strings", self.copy_strings)),
        )
        return self._engine(kwargs.get("model"), user_id), req

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        engine, req = self._request(messages, stop, run_manager, kwargs)
        stream = engine.run(req)
        held, in_call = "", False
        for delta in stream:
            if in_call:
                continue
            held += delta
            if CALL_OPEN in held:
                emit, held, in_call = held.split(CALL_OPEN, 1)[0], "", True
            else:
                emit, held = _split_held(held)
            if emit:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=emit))
                if run_manager:
                    run_manager.on_llm_new_token(emit, chunk=chunk)
                yield chunk
        result = stream.result
        assert result is not None
        chunks = [
            tool_call_chunk(name=c.name, args=dumps_args(c.arguments), id=c.id, index=i)
            for i, c in enumerate(result.calls)
        ]
        # Invalid calls must never parse into tool_calls: their args carry the error first.
        chunks += [
            tool_call_chunk(
                name=c.name,
                args=f"<invalid: {c.error}> {c.args}",
                id=c.id,
                index=len(result.calls) + i,
            )
            for i, c in enumerate(result.invalid_calls)
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=held,
                tool_call_chunks=chunks,
                usage_metadata=_usage(result),
                response_metadata=self._metadata(result, kwargs),
                chunk_position="last",
            )
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine, req = self._request(messages, stop, run_manager, kwargs)
        result = engine.complete(req)
        message = AIMessage(
            content=result.content if (result.calls or result.invalid_calls) else result.text,
            tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in result.calls],
            invalid_tool_calls=[
                invalid_tool_call(name=c.name, args=c.args, id=c.id, error=c.error)
                for c in result.invalid_calls
            ],
            usage_metadata=_usage(result),
            response_metadata=self._metadata(result, kwargs),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _metadata(self, result: TurnResult, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "model_name": str(kwargs.get("model", self.model_name)),
            "model_provider": "fints_agent",
            "finish_reason": result.finish_reason,
            "fints": result.steering,
        }

    # -- feedback ----------------------------------------------------------------------------
    def record_feedback(
        self,
        user_id: str,
        messages: Sequence[BaseMessage] | Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        accepted: Mapping[str, Any],
        rejected: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Record the outcome of a turn, so the user's next turns are steered by it.

        Args:
            user_id: Whose turn it was.
            messages: The turn's messages (LangChain messages or role/content dicts).
            tools: The tools offered (any form ``bind_tools`` takes).
            accepted: The call the user accepted: ``{"name": ..., "arguments"|"args": {...}}``.
            rejected: Calls the user rejected, same form (default: negatives built by memory).

        Returns:
            The id of the stored trajectory.
        """
        chat = (
            to_chat_dicts(messages)  # type: ignore[arg-type]
            if messages and isinstance(messages[0], BaseMessage)
            else [dict(m) for m in messages]
        )
        specs = to_tool_specs(list(tools))
        memory = self.get_memory()
        return str(
            memory.record(
                user_id,
                chat,
                [s.to_openai() for s in specs],
                _call_dict(accepted),
                [_call_dict(r) for r in rejected] if rejected else None,
            )
        )


def _unique_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """Tool specs; the same tool given twice (say, a model and its JSON schema) counts once."""
    specs: dict[str, ToolSpec] = {}
    for tool in tools:
        [spec] = to_tool_specs([tool])
        seen = specs.get(spec.name)
        if seen is not None and _schema_core(seen.parameters) != _schema_core(spec.parameters):
            raise ToolSchemaError(f"tool {spec.name!r}: bound twice with different schemas")
        specs.setdefault(spec.name, spec)
    return list(specs.values())


def _schema_core(schema: Any) -> Any:
    """A schema without its titles and descriptions (they differ between equivalent forms)."""
    if isinstance(schema, Mapping):
        return {k: _schema_core(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_schema_core(v) for v in schema]
    return schema


def _split_held(text: str) -> tuple[str, str]:
    """Split streamed text into what can be shown and a tail that may start a call block."""
    for k in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-k:]):
            return text[:-k], text[-k:]
    return text, ""


def _call_dict(call: Mapping[str, Any]) -> dict[str, Any]:
    args = call.get("arguments", call.get("args", {}))
    return {"name": call.get("name"), "arguments": dict(args) if args else {}}


def _usage(result: TurnResult) -> Any:
    from langchain_core.messages.ai import UsageMetadata

    return UsageMetadata(
        input_tokens=result.prompt_tokens,
        output_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )
