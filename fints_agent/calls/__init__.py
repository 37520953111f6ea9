"""Tool calls: tool schemas in, grammar-constrained call generation, validation and parsing out.

- :mod:`fints_agent.calls.schema`: :class:`ToolSpec`, :func:`to_tool_specs`,
  :func:`validate_arguments`, :func:`parse_calls`.
- :mod:`fints_agent.calls.format`: the call text format (:func:`render_call`,
  :func:`render_tools_prompt`) and :class:`CallTracker` (what the next token belongs to).
- :mod:`fints_agent.calls.constrain`: xgrammar grammars (:class:`CallGrammar`) and the
  per-step masking of a decode loop (:class:`ConstrainedDecoder`).
- :mod:`fints_agent.calls.spans`: request-span copying (:func:`restrict_to_request`), free
  string arguments restricted to spans of the latest user message.
- :mod:`fints_agent.calls.validators`: every JSON-schema validator (:func:`schema_validator`,
  :func:`check_schema`); references resolve only inside the schema, nothing is fetched.
- :mod:`fints_agent.calls.instances`: the smallest valid instance of a schema
  (:func:`smallest_instance_chars`, :func:`check_instance_size`) and :func:`example_value`,
  for recursive schemas too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fints_agent.lazy import lazy_exports

if TYPE_CHECKING:
    from fints_agent.calls.constrain import (
        CallCompiler,
        CallGrammar,
        ConstrainedDecoder,
        ToolMode,
        get_compiler,
        resolve_tool_choice,
    )
    from fints_agent.calls.errors import ToolSchemaError
    from fints_agent.calls.format import (
        CALL_CLOSE,
        CALL_OPEN,
        CALL_SEPARATOR,
        CallPosition,
        CallTracker,
        call_position,
        dump_json,
        in_free_text_value,
        order_arguments,
        render_call,
        render_calls,
        render_tools_prompt,
    )
    from fints_agent.calls.instances import (
        MAX_INSTANCE_CHARS,
        check_instance_size,
        example_value,
        smallest_instance_chars,
    )
    from fints_agent.calls.schema import (
        InvalidToolCall,
        ToolCall,
        ToolSpec,
        new_call_id,
        parse_calls,
        to_tool_specs,
        validate_arguments,
    )
    from fints_agent.calls.spans import request_span_pattern, request_text, restrict_to_request
    from fints_agent.calls.validators import check_schema, schema_validator

_EXPORTS: dict[str, str] = {
    "CallCompiler": "fints_agent.calls.constrain",
    "CallGrammar": "fints_agent.calls.constrain",
    "ConstrainedDecoder": "fints_agent.calls.constrain",
    "ToolMode": "fints_agent.calls.constrain",
    "get_compiler": "fints_agent.calls.constrain",
    "resolve_tool_choice": "fints_agent.calls.constrain",
    "ToolSchemaError": "fints_agent.calls.errors",
    "CALL_CLOSE": "fints_agent.calls.format",
    "CALL_OPEN": "fints_agent.calls.format",
    "CALL_SEPARATOR": "fints_agent.calls.format",
    "CallPosition": "fints_agent.calls.format",
    "CallTracker": "fints_agent.calls.format",
    "call_position": "fints_agent.calls.format",
    "dump_json": "fints_agent.calls.format",
    "in_free_text_value": "fints_agent.calls.format",
    "order_arguments": "fints_agent.calls.format",
    "render_call": "fints_agent.calls.format",
    "render_calls": "fints_agent.calls.format",
    "render_tools_prompt": "fints_agent.calls.format",
    "MAX_INSTANCE_CHARS": "fints_agent.calls.instances",
    "check_instance_size": "fints_agent.calls.instances",
    "example_value": "fints_agent.calls.instances",
    "smallest_instance_chars": "fints_agent.calls.instances",
    "InvalidToolCall": "fints_agent.calls.schema",
    "ToolCall": "fints_agent.calls.schema",
    "ToolSpec": "fints_agent.calls.schema",
    "new_call_id": "fints_agent.calls.schema",
    "parse_calls": "fints_agent.calls.schema",
    "to_tool_specs": "fints_agent.calls.schema",
    "validate_arguments": "fints_agent.calls.schema",
    "request_span_pattern": "fints_agent.calls.spans",
    "request_text": "fints_agent.calls.spans",
    "restrict_to_request": "fints_agent.calls.spans",
    "check_schema": "fints_agent.calls.validators",
    "schema_validator": "fints_agent.calls.validators",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "CALL_SEPARATOR",
    "MAX_INSTANCE_CHARS",
    "CallCompiler",
    "CallGrammar",
    "CallPosition",
    "CallTracker",
    "ConstrainedDecoder",
    "InvalidToolCall",
    "ToolCall",
    "ToolMode",
    "ToolSchemaError",
    "ToolSpec",
    "call_position",
    "check_instance_size",
    "check_schema",
    "dump_json",
    "example_value",
    "get_compiler",
    "in_free_text_value",
    "new_call_id",
    "order_arguments",
    "parse_calls",
    "render_call",
    "render_calls",
    "render_tools_prompt",
    "request_span_pattern",
    "request_text",
    "resolve_tool_choice",
    "restrict_to_request",
    "schema_validator",
    "smallest_instance_chars",
    "to_tool_specs",
    "validate_arguments",
]
