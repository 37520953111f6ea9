"""The call grammar: compiled xgrammar grammars that allow exactly the call text format.

:meth:`CallGrammar.build` compiles the call grammar for a set of tools and a tool mode
(:data:`ToolMode`; :func:`resolve_tool_choice` maps a LangChain/OpenAI ``tool_choice`` to one);
:meth:`CallGrammar.for_json_schema` compiles one for plain JSON output. The grammar writes the
format of :mod:`fints_agent.calls.format`: compact JSON inside ``<tool_call>`` blocks, arguments
valid against each tool's JSON schema. :class:`~fints_agent.calls.decoder.ConstrainedDecoder`
applies it in a decode loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import xgrammar as xgr

from fints_agent.calls.compiler import CallCompiler
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
from fints_agent.calls.specs import ToolSpec
from fints_agent.calls.validators import check_references, check_schema

__all__ = ["CallGrammar", "ToolMode", "resolve_tool_choice"]

ToolMode = Literal["auto", "required", "none"]
"""``required``: one or more calls and nothing else; ``auto``: free text or calls (the model
decides at the first tokens); ``none``: free text only (no grammar)."""

_MODES = ("auto", "required", "none")


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
    :func:`~fints_agent.calls.specs.to_tool_specs` are checked there already, this also covers
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
            specs: The tools (from :func:`~fints_agent.calls.specs.to_tool_specs`).
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
