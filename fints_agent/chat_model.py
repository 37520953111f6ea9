"""FintsChatModel: a LangChain chat model whose tool calls follow each user's history.

Drop it into any LangChain agent in place of another chat model. Tool calls are generated under
a grammar (the name is a bound tool, the arguments validate against its schema) and steered per
user: the user's most similar past trajectories are retrieved from the trajectory memory and
their contrastive steering vectors, mixed by similarity, are added to the model's attention and
MLP outputs while it generates.

Turns of several users decode together in padded batches: the inputs of ``batch``/``abatch``,
and concurrent async calls (``ainvoke`` of several users), which a micro-batcher groups
(:mod:`fints_agent.batching`). Async calls decode on worker threads, never on the event loop.

Example:
    >>> llm = FintsChatModel(memory="./memory")            # embedded default model
    >>> agent = create_agent(llm, tools=[get_directions, book_ride])
    >>> agent.invoke({"messages": [("user", "Get me to the airport")]},
    ...              config={"configurable": {"user_id": "alice"}})
    >>> llm.record_feedback("alice", messages, tools, {"name": "book_ride", "arguments": {...}})
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    MessageLikeRepresentation,
    convert_to_messages,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from fints_agent.batch_calls import in_cohorts, run_abatch, run_batch
from fints_agent.batching import (
    Cohort,
    MicroBatcher,
    complete_turns,
    iterate_in_thread,
    turn_batch_key,
)
from fints_agent.calls import (
    resolve_tool_choice,
    to_tool_specs,
    unique_specs,
)
from fints_agent.chat_options import checked_options
from fints_agent.config import Preset, RetrievalConfig, SteeringConfig, VectorKind
from fints_agent.engine import TurnEngine, UnavailableMemory
from fints_agent.messages import (
    ai_message,
    call_dict,
    feedback_chat,
    to_chat_dicts,
)
from fints_agent.models import (
    DEFAULT_MODEL,
    LoadedModel,
    cache_dir,
    load_model,
)
from fints_agent.streaming import TurnChunks
from fints_agent.turn import MemoryLike, Personalization, TurnRequest, TurnResult
from fints_agent.user_ids import resolve_user_id, with_user_id

if TYPE_CHECKING:
    from fints_agent.memory import Memory

__all__ = ["FintsChatModel"]

_memories: dict[tuple[str | None, ...], Any] = {}
_memories_lock = threading.Lock()
_batcher_lock = threading.Lock()


def default_memory_location() -> str:
    """Where the trajectory memory lives when none is given (under the user cache)."""
    return str(cache_dir() / "memory")


class FintsChatModel(BaseChatModel):
    """A chat model on a local Hugging Face model, steered per user from past tool calls.

    Constructing it never loads weights; instances naming the same model share one loaded copy.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model_name: str = Field(
        default_factory=lambda: os.environ.get("FINTS_AGENT_MODEL", DEFAULT_MODEL), alias="model"
    )
    """The embedded default model, a local model directory or a locally cached model id
    (default: ``$FINTS_AGENT_MODEL``, else the embedded SmolLM2-135M-Instruct). A model you
    loaded yourself is given as ``model=`` too: a :class:`~fints_agent.models.LoadedModel`,
    or a transformers model with ``tokenizer=`` (the field then holds the name it is
    registered under, see :func:`~fints_agent.models.register_model`)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to transformers' ``from_pretrained`` when the model is loaded from a directory
    or the local cache: ``{"device_map": "auto"}``, a ``quantization_config``..."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = "float32"
    """``float32``, ``bfloat16`` or ``float16``."""
    user_id: str | None = None
    """Default user whose history personalizes calls (overridden per call)."""
    memory: str | None = None
    """Trajectory store: a directory (embedded Chroma) or ``http://host:port`` (Chroma server).
    Default: ``memory`` under the user cache directory."""
    memory_token: SecretStr | None = None
    """Token of a Chroma server with token authentication (default:
    ``$FINTS_AGENT_CHROMA_TOKEN``); never shown or serialized. A server with basic
    authentication takes ``http://USER:PASSWORD@host:port`` as :attr:`memory` instead."""
    memory_tenant: str | None = None
    """Chroma tenant of a server memory (default: Chroma's ``default_tenant``)."""
    memory_database: str | None = None
    """Chroma database of a server memory (default: Chroma's ``default_database``)."""
    personalization: Personalization = "steer"
    """How history is used: ``steer``, ``rag`` (examples in the prompt), ``rag+steer``, ``none``."""
    retrieval: RetrievalConfig | None = None
    """Which past trajectories steer a turn (``k``, weighting, recency); default: the model's
    preset (:meth:`fints_agent.config.Preset.for_model`). Set ``recency_half_life`` for
    users whose preferences change."""
    steering: SteeringConfig | None = None
    """Where and how strongly history steers (layers, sites, coefficient, gate); default: the
    model's preset. Set it after tuning a model of your own by hand."""
    vector_kind: VectorKind | None = None
    """The kind of vectors a new memory records (``contrast``, ``demonstration``, ``split``);
    default: the model's preset. A memory keeps the kind it was built with."""
    canonical_choices: bool | None = None
    """Write tool names and enum values only as the tokenizer spells them (every turn,
    steered or not); default: the model's preset."""
    max_tokens: int = 256
    """Upper bound on generated tokens per turn."""
    max_batch_size: int = Field(default=8, ge=1, le=256)
    """Most turns decoded together in one padded batch: the inputs of ``batch``/``abatch``
    (this many at a time), and concurrent async calls (``ainvoke`` of several users)."""
    batch_wait_ms: float = Field(default=10.0, ge=0.0, le=1000.0)
    """How long an async call waits for other calls to share its batch (milliseconds; calls
    arriving while a batch decodes wait for the next batch anyway)."""
    temperature: float = 0.0
    """0 for greedy decoding."""
    seed: int | None = None
    """Sampling seed."""
    stop: list[str] | None = None
    """Stop sequences for text answers."""
    call_on_user_turn: bool = True
    """With tools bound and ``tool_choice`` auto, a turn that answers a user message must call
    a tool (after a tool result the model may still answer in text).

    On by default because that is what works on the embedded default model: a 135M model
    rarely chooses to call a tool on its own, so with it off an agent on the default model
    answers requests in text and calls nothing. Turn it off for a model that decides well by
    itself, or for an agent that must be able to answer a user in text (LangChain's plain
    ``tool_choice="auto"``); ``tool_choice`` ``"none"``, ``"any"`` or a tool name is always
    followed as given."""
    parallel_tool_calls: bool = False
    """Allow several calls in one answer (or per call: ``parallel_tool_calls=True``)."""
    copy_strings: bool = False
    """Write free string arguments (no enum, pattern, format or length bound) only as spans of
    the latest user message (or per call: ``copy_strings=True``). Small models often put a
    placeholder where a query, place or name from the request belongs; leave it off for tools
    whose strings the model must compose (:mod:`fints_agent.calls.spans`)."""

    record_in_background: bool = False
    """Record feedback on a worker thread (:class:`fints_agent.memory.BackgroundRecorder`):
    :meth:`record_feedback` checks the feedback, queues it and returns at once a
    ``concurrent.futures.Future`` of the trajectory id instead of the id itself, so that
    recording (a forward pass and a store write) does not delay the next turn.
    :meth:`flush_feedback` waits until everything queued is recorded; a process that is killed
    loses only feedback still queued."""

    @model_validator(mode="before")
    @classmethod
    def _checked_options(cls, data: Any) -> Any:
        """Refuse misspelled options (naming the closest field); take a model object."""
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        return checked_options(data, known)

    _memory_obj: Memory | None = PrivateAttr(default=None)
    _engines: dict[tuple[str, str], TurnEngine] = PrivateAttr(default_factory=dict)
    _engines_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _batcher: Any = PrivateAttr(default=None)
    _recorder: Any = PrivateAttr(default=None)
    _recorder_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

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
    def lc_secrets(self) -> dict[str, str]:
        """The memory token serializes as a reference to its environment variable."""
        return {"memory_token": "FINTS_AGENT_CHROMA_TOKEN"}

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
        return load_model(
            model or self.model_name,
            dtype=self.dtype,
            device=self.device,
            model_kwargs=self.model_kwargs,
        )

    def preset(self, lm: LoadedModel | None = None) -> Preset:
        """The options turns use: the model's preset with this instance's fields applied."""
        lm = lm or self.load()
        base = Preset.for_model(lm.fingerprint)
        return base.model_copy(
            update={
                "retrieval": self.retrieval or base.retrieval,
                "steering": self.steering or base.steering,
                "vector_kind": self.vector_kind or base.vector_kind,
                "canonical_choices": base.canonical_choices
                if self.canonical_choices is None
                else self.canonical_choices,
            }
        )

    def get_memory(self, lm: LoadedModel | None = None) -> Memory:
        """The trajectory memory of this model (opened on first use, shared per location)."""
        if self._memory_obj is not None:
            return self._memory_obj
        from fints_agent.memory import Memory, TrajectoryStore

        lm = lm or self.load()
        location = self.memory or default_memory_location()
        token = self.memory_token.get_secret_value() if self.memory_token else None
        key = (
            location,
            lm.fingerprint,
            self.memory_tenant,
            self.memory_database,
            hashlib.sha256(token.encode()).hexdigest() if token else None,
        )
        with _memories_lock:
            if key not in _memories:
                if "://" not in location:
                    Path(location).mkdir(parents=True, exist_ok=True)
                preset = self._engine_for(lm).preset
                store = TrajectoryStore(
                    location,
                    token=self.memory_token,
                    tenant=self.memory_tenant,
                    database=self.memory_database,
                )
                kind = preset.vector_kind
                if store.layout is not None and store.layout.vectors != kind:
                    # A store keeps the kind of vectors it was built with.
                    warnings.warn(
                        f"memory {location} holds {store.layout.vectors!r} vectors; the "
                        f"preset asks for {kind!r}: using the store's kind",
                        stacklevel=2,
                    )
                    kind = store.layout.vectors  # type: ignore[assignment]
                _memories[key] = Memory(
                    lm,
                    store,
                    layers=preset.steering.layers,
                    sites=tuple(preset.steering.sites),
                    vectors=kind,
                )
            self._memory_obj = _memories[key]
        return self._memory_obj

    def use_memory(self, memory: Memory) -> FintsChatModel:
        """Use an already opened :class:`fints_agent.memory.Memory`; returns self."""
        self._memory_obj = memory
        return self

    def _engine_for(self, lm: LoadedModel) -> TurnEngine:
        """The model's turn engine, built once per model and settings (the preset is read
        from disk then, not per turn)."""
        settings = (self.retrieval, self.steering, self.vector_kind, self.canonical_choices)
        key = (lm.fingerprint, repr(settings))
        with self._engines_lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = self._engines[key] = TurnEngine(lm, None, self.preset(lm))
        return engine

    def _engine(self, model: str | None, user_id: str | None) -> TurnEngine:
        lm = self.load(model)
        engine = self._engine_for(lm)
        # Turns without a user retrieve nothing whatever the memory; an open memory serves
        # them too, so that their turns can share a batch with personalized ones.
        if user_id and self.personalization != "none":
            engine.memory = self._turn_memory(lm)
        elif self._memory_obj is not None:
            engine.memory = self._memory_obj
        return engine

    def _turn_memory(self, lm: LoadedModel) -> MemoryLike:
        """The memory a turn retrieves from. One on a Chroma server that cannot be reached now
        is not opened: the turn runs unsteered (``"reason": "memory unavailable"``), and a
        later turn tries to open it again."""
        from fints_agent.memory.errors import StoreUnavailableError

        try:
            return self.get_memory(lm)
        except StoreUnavailableError as exc:
            return UnavailableMemory(exc)

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
        specs = unique_specs(tools)
        resolve_tool_choice(tool_choice, specs)  # fails now on an unknown tool name
        return self.bind(tools=[s.to_openai() for s in specs], tool_choice=tool_choice, **kwargs)

    # -- token counting ----------------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """The ids of ``text`` under the model's own tokenizer (no special tokens added).

        Loads the model on first use (shared, see :meth:`load`); never reaches the network.
        """
        ids = self.load().tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(i) for i in ids]

    def get_num_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` under the model's own tokenizer."""
        return len(self.get_token_ids(text))

    def get_num_tokens_from_messages(
        self,
        messages: list[BaseMessage],
        tools: Sequence[Any] | None = None,
    ) -> int:
        """Number of prompt tokens of ``messages`` (and ``tools``), as the model would see them.

        The messages are rendered by the model's chat template exactly as a turn renders them
        (:class:`fints_agent.prompting.PromptRenderer`: system messages merged, tool results
        and calls in the template's form, the opening of the answer included), so the count is
        the turn's ``usage_metadata["input_tokens"]`` without retrieved examples. Works as
        ``trim_messages(..., token_counter=llm)``.

        Args:
            messages: The messages (any form LangChain accepts).
            tools: Tools offered with them (any form :meth:`bind_tools` takes); their schemas
                count as the template writes them.
        """
        from fints_agent.prompting import PromptRenderer

        chat = to_chat_dicts(convert_to_messages(messages))
        specs = to_tool_specs(list(tools)) if tools else []
        if not chat and not specs:
            return 0
        renderer = PromptRenderer(self.load().tokenizer)
        prompt = renderer.render_prompt(chat, [spec.to_openai() for spec in specs])
        return renderer.count_tokens(prompt)

    # -- structured output -------------------------------------------------------------------
    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A runnable that answers with an instance of ``schema``, decoded under its grammar.

        Args:
            schema: A Pydantic model, a ``TypedDict``, a JSON schema or an OpenAI tool dict.
            include_raw: Return ``{"raw", "parsed", "parsing_error"}`` instead of raising on a
                parse failure.
            method: ``"function_calling"`` (a forced call of a tool named after the schema,
                parsed from ``tool_calls``), ``"json_schema"`` (the answer text is a JSON
                instance of the schema) or ``"json_mode"`` (the answer text is a JSON object;
                with a ``schema``, decoded under its grammar as ``"json_schema"`` is: JSON mode
                promises JSON, and a small model keeps the keys the schema asks for only when
                its grammar does).
            **kwargs: ``strict`` is accepted and ignored (decoding is always strict).

        An answer cut short by ``max_tokens`` (``finish_reason: "length"``) is never parsed
        into a value, even when its JSON happens to validate (the grammar closes open strings
        near the end of the budget, so a truncated answer can look complete):
        :class:`~langchain_core.exceptions.OutputParserException` is raised, or under
        ``include_raw`` returned as ``parsing_error`` with ``parsed`` ``None``.

        Raises:
            ValueError: An unknown ``method``, or an unknown keyword argument.
        """
        from fints_agent.structured import structured_output

        return structured_output(self, schema, include_raw=include_raw, method=method, **kwargs)

    # -- generation --------------------------------------------------------------------------
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Generate one turn (the user id may come from ``config``, see
        :func:`fints_agent.user_ids.with_user_id`).

        Calls from several threads decode one at a time; :meth:`batch` and the async calls
        decode concurrent turns together.
        """
        return super().invoke(input, config, stop=stop, **with_user_id(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Generate one turn without blocking the event loop.

        The turn is decoded on a worker thread, in one padded batch with the turns of other
        concurrent async calls of this model (see :meth:`_agenerate`).
        """
        return await super().ainvoke(input, config, stop=stop, **with_user_id(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream one turn: text as it is written, each tool call as ``tool_call_chunks`` while
        it is written (see :meth:`_stream`)."""
        yield from super().stream(input, config, stop=stop, **with_user_id(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """:meth:`stream` without blocking the event loop (the turn decodes on a thread)."""
        kwargs = with_user_id(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[AIMessage]:
        """Generate several turns (of one or many users), decoded together in padded batches.

        Each input gives the message :meth:`invoke` gives it with its config (``config`` is
        one config for all inputs or one per input; the user id comes from
        ``configurable.user_id`` or ``metadata.user_id``), and its callbacks fire as for
        :meth:`invoke`. Up to :attr:`max_batch_size` inputs at a time (fewer with
        ``max_concurrency``) each run :meth:`invoke` on a thread of their own, as members of
        one cohort of the model's micro-batcher (:mod:`fints_agent.batching`): each turn's
        request, built as for :meth:`invoke`, waits in the batcher until every input of the
        cohort has arrived (or failed), and the cohort's turns are then decoded in one
        :meth:`TurnEngine.complete_batch <fints_agent.engine.TurnEngine.complete_batch>`.
        So LangChain's own per-call path (callbacks, cache, message ids and metadata) is
        untouched and only the decoding is shared; greedy turns give the calls they give
        alone. A turn with stop sequences, or sampled with a seed, is decoded alone; a
        streamed turn (a streaming callback handler, ``stream=True``) streams alone.

        Args:
            inputs: The inputs (messages, a string or a prompt value each).
            config: One config for every input, or one per input.
            return_exceptions: Return an input's exception in its place instead of raising
                the first one.
            **kwargs: Call options for every input (``tools``, ``tool_choice``,
                ``max_tokens``...), as for :meth:`invoke`.

        Returns:
            One message per input, in order (or its exception, with ``return_exceptions``).
        """
        return run_batch(self.invoke, self._cohorts(inputs, config), return_exceptions, kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[AIMessage]:
        """:meth:`batch` on the event loop: the inputs' :meth:`ainvoke` calls run as tasks,
        in cohorts decoded together on a worker thread (same arguments and results)."""
        cohorts = self._cohorts(inputs, config)
        return await run_abatch(self.ainvoke, cohorts, return_exceptions, kwargs)

    def _cohorts(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None,
    ) -> list[tuple[Cohort, list[tuple[LanguageModelInput, RunnableConfig]]]]:
        """The inputs of ``batch`` with their configs, in cohorts decoded together: of
        :attr:`max_batch_size` inputs, or fewer when ``max_concurrency`` allows fewer
        concurrent calls."""
        return in_cohorts(self._get_batcher(), inputs, config, self.max_batch_size)

    def _get_batcher(self) -> MicroBatcher[tuple[TurnEngine, TurnRequest], TurnResult]:
        """The model's micro-batcher (a new one when the batch settings changed)."""
        wait_s = self.batch_wait_ms / 1000.0
        with _batcher_lock:
            batcher = self._batcher
            if batcher is None or (batcher.max_size, batcher.wait_s) != (
                self.max_batch_size,
                wait_s,
            ):
                batcher = self._batcher = MicroBatcher(
                    complete_turns, max_size=self.max_batch_size, wait_s=wait_s
                )
        return cast(MicroBatcher[tuple[TurnEngine, TurnRequest], TurnResult], batcher)

    def _request(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> tuple[TurnEngine, TurnRequest]:
        """The engine and request of a turn (every path builds its turn here)."""
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
        """Text as it is written; each call as tool-call chunks while it is written: its name,
        id and index once the name is complete, then its arguments' JSON text piece by piece.

        The chunks add up to the message :meth:`invoke` gives (the same content, calls and
        invalid calls); an invalid call's arguments end, in the last chunk, with what makes
        LangChain read it as invalid (:mod:`fints_agent.streaming`).
        """
        engine, req = self._request(messages, stop, run_manager, kwargs)
        stream = engine.run(req)
        chunks = TurnChunks(calls=req.json_schema is None)

        def sent(messages: list[AIMessageChunk]) -> Iterator[ChatGenerationChunk]:
            for message in messages:
                chunk = ChatGenerationChunk(message=message)
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

        for delta in stream:
            yield from sent(chunks.feed(delta))
        result = stream.result
        assert result is not None
        yield from sent(chunks.finish(result, self._metadata(result, kwargs)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """:meth:`_stream`, driven on a thread of its own (streamed turns decode alone)."""
        sync_manager = run_manager.get_sync() if run_manager is not None else None
        chunks = iterate_in_thread(lambda: self._stream(messages, stop, sync_manager, **kwargs))
        async for chunk in chunks:
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine, req = self._request(messages, stop, run_manager, kwargs)
        batcher = self._get_batcher()
        if batcher.joined():  # an input of `batch`: decoded with the call's other inputs
            result = batcher.submit(turn_batch_key(engine, req), (engine, req)).result()
        else:
            result = engine.complete(req)
        return self._chat_result(result, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The turn is built on a worker thread (the first call loads the model) and decoded
        by the model's micro-batcher, on its thread: async calls arriving within
        :attr:`batch_wait_ms` of the first one waiting (or while a batch decodes), up to
        :attr:`max_batch_size`, share one padded batch."""
        engine, req = await asyncio.to_thread(self._request, messages, stop, run_manager, kwargs)
        result = await self._get_batcher().asubmit(turn_batch_key(engine, req), (engine, req))
        return self._chat_result(result, kwargs)

    def _chat_result(self, result: TurnResult, kwargs: Mapping[str, Any]) -> ChatResult:
        message = ai_message(result, self._metadata(result, kwargs))
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
        messages: Sequence[MessageLikeRepresentation],
        tools: Sequence[Any],
        chosen: Mapping[str, Any],
        rejected: Sequence[Mapping[str, Any]] | None = None,
    ) -> str | Future[str]:
        """Record the outcome of a turn, so the user's next turns are steered by it.

        With :attr:`record_in_background`, the feedback is checked now and recorded on a worker
        thread: the return value is then a ``concurrent.futures.Future`` of the trajectory id
        (``.result()`` waits for it, or raises what prevented recording).

        Args:
            user_id: Whose turn it was.
            messages: The turn's messages, in any form LangChain accepts (messages,
                ``(role, content)`` tuples, strings, role/content dicts, OpenAI dicts).
            tools: The tools offered (any form ``bind_tools`` takes).
            chosen: The call the user chose: ``{"name": ..., "arguments"|"args": {...}}``.
            rejected: Calls the user rejected, same form (default: negatives built by memory).

        Returns:
            The id of the stored trajectory; with :attr:`record_in_background`, a future of it.

        Raises:
            fints_agent.memory.MemoryInputError: Bad feedback (empty request, no tools, a call
                that fails its tool's schema, ...), raised at once in both modes: nothing is
                recorded or queued.

        Example:
            >>> llm = FintsChatModel(memory="./memory", record_in_background=True)
            >>> future = llm.record_feedback("alice", messages, tools, call)   # returns at once
            >>> llm.flush_feedback()
            >>> future.result()
            '3f2c...'
        """
        chat = feedback_chat(messages)
        specs = to_tool_specs(list(tools))
        memory = self.get_memory()
        args = (
            user_id,
            chat,
            [s.to_openai() for s in specs],
            call_dict(chosen),
            [call_dict(r) for r in rejected] if rejected else None,
        )
        if not self.record_in_background:
            return str(memory.record(*args))
        from fints_agent.memory import BackgroundRecorder

        with self._recorder_lock:
            recorder = self._recorder
            if recorder is None or recorder.closed or recorder.memory is not memory:
                if recorder is not None:
                    recorder.close()  # the memory changed (use_memory): finish the old queue
                recorder = self._recorder = BackgroundRecorder(memory)
        future: Future[str] = recorder.record(*args)
        return future

    def flush_feedback(self, timeout: float | None = None) -> None:
        """Wait until all feedback queued by :meth:`record_feedback` is recorded.

        Nothing to wait for without :attr:`record_in_background`. Errors of single trajectories
        are on their futures, not raised here.

        Args:
            timeout: Most seconds to wait (None: as long as it takes).

        Raises:
            TimeoutError: Feedback is still being recorded after ``timeout`` seconds.

        Example:
            >>> llm.record_feedback("alice", messages, tools, call)
            >>> llm.flush_feedback(timeout=60)
        """
        recorder = self._recorder
        if recorder is not None:
            recorder.flush(timeout)
