"""Tool calls: tool schemas in, grammar-constrained call generation, validation and parsing out.

Modules, by concept; each imports only modules listed above it (there is no import cycle):

- :mod:`~fints_agent.calls.errors`: :class:`ToolSchemaError` (unusable tools and schemas).
- :mod:`~fints_agent.calls.validators`: every JSON-schema validator (:func:`schema_validator`,
  :func:`check_schema`); references resolve only inside the schema, nothing is fetched.
- :mod:`~fints_agent.calls.instances`: the smallest valid instance of a schema
  (:func:`smallest_instance_chars`, :func:`check_instance_size`), for recursive schemas too.
- :mod:`~fints_agent.calls.examples`: a small valid value of a schema (:func:`example_value`).
- :mod:`~fints_agent.calls.specs`: tool specs and their validation (:class:`ToolSpec`,
  :func:`to_tool_specs`, :func:`unique_specs`, :func:`validate_arguments`).
- :mod:`~fints_agent.calls.format`: the text format of a call: the block markers
  (:data:`CALL_OPEN`, :data:`CALL_CLOSE`, :data:`CALL_SEPARATOR`) and writing calls
  (:func:`render_call`, :func:`render_calls`, :func:`render_tools_prompt`,
  :func:`order_arguments`).
- :mod:`~fints_agent.calls.positions`: what a generated token belongs to (:class:`CallPosition`)
  and how a value's schema classifies it.
- :mod:`~fints_agent.calls.tracker`: the one reader of call text as it is generated: where
  blocks open and close (:func:`call_blocks`, :func:`in_open_call`, :func:`text_before_calls`)
  and where in a call the next token falls (:class:`CallTracker`).
- :mod:`~fints_agent.calls.parsing`: finished text into calls (:func:`parse_calls`,
  :class:`ToolCall`, :class:`InvalidToolCall`).
- :mod:`~fints_agent.calls.request`: the request of a turn (:func:`request_text`, and the
  memory's :func:`retrieval_text`).
- :mod:`~fints_agent.calls.spans`: request-span copying (:func:`restrict_to_request`), free
  string arguments restricted to spans of the request.
- :mod:`~fints_agent.calls.compiler`: xgrammar bound to a tokenizer (:class:`CallCompiler`,
  :func:`get_compiler`).
- :mod:`~fints_agent.calls.grammar`: the call grammar (:class:`CallGrammar`, :data:`ToolMode`,
  :func:`resolve_tool_choice`).
- :mod:`~fints_agent.calls.decoder`: the per-step masking of a decode loop
  (:class:`ConstrainedDecoder`).

Names load lazily (importing the package loads neither torch nor xgrammar).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fints_agent.lazy import lazy_exports

if TYPE_CHECKING:
    from fints_agent.calls.compiler import CallCompiler, ClosingTokens, get_compiler
    from fints_agent.calls.decoder import ConstrainedDecoder
    from fints_agent.calls.errors import ToolSchemaError
    from fints_agent.calls.examples import example_value
    from fints_agent.calls.format import (
        CALL_CLOSE,
        CALL_OPEN,
        CALL_SEPARATOR,
        dump_json,
        order_arguments,
        render_call,
        render_calls,
        render_tools_prompt,
    )
    from fints_agent.calls.grammar import CallGrammar, ToolMode, resolve_tool_choice
    from fints_agent.calls.instances import (
        MAX_INSTANCE_CHARS,
        check_instance_size,
        smallest_instance_chars,
    )
    from fints_agent.calls.parsing import InvalidToolCall, ToolCall, new_call_id, parse_calls
    from fints_agent.calls.positions import CallPosition
    from fints_agent.calls.request import request_text, retrieval_text
    from fints_agent.calls.spans import request_span_pattern, restrict_to_request
    from fints_agent.calls.specs import ToolSpec, to_tool_specs, unique_specs, validate_arguments
    from fints_agent.calls.tracker import (
        CallBlock,
        CallTracker,
        call_blocks,
        call_position,
        in_free_text_value,
        in_open_call,
        text_before_calls,
    )
    from fints_agent.calls.validators import check_schema, schema_validator

_EXPORTS: dict[str, str] = {
    "CallCompiler": "fints_agent.calls.compiler",
    "ClosingTokens": "fints_agent.calls.compiler",
    "get_compiler": "fints_agent.calls.compiler",
    "ConstrainedDecoder": "fints_agent.calls.decoder",
    "ToolSchemaError": "fints_agent.calls.errors",
    "example_value": "fints_agent.calls.examples",
    "CALL_CLOSE": "fints_agent.calls.format",
    "CALL_OPEN": "fints_agent.calls.format",
    "CALL_SEPARATOR": "fints_agent.calls.format",
    "dump_json": "fints_agent.calls.format",
    "order_arguments": "fints_agent.calls.format",
    "render_call": "fints_agent.calls.format",
    "render_calls": "fints_agent.calls.format",
    "render_tools_prompt": "fints_agent.calls.format",
    "CallGrammar": "fints_agent.calls.grammar",
    "ToolMode": "fints_agent.calls.grammar",
    "resolve_tool_choice": "fints_agent.calls.grammar",
    "MAX_INSTANCE_CHARS": "fints_agent.calls.instances",
    "check_instance_size": "fints_agent.calls.instances",
    "smallest_instance_chars": "fints_agent.calls.instances",
    "InvalidToolCall": "fints_agent.calls.parsing",
    "ToolCall": "fints_agent.calls.parsing",
    "new_call_id": "fints_agent.calls.parsing",
    "parse_calls": "fints_agent.calls.parsing",
    "CallPosition": "fints_agent.calls.positions",
    "request_text": "fints_agent.calls.request",
    "retrieval_text": "fints_agent.calls.request",
    "request_span_pattern": "fints_agent.calls.spans",
    "restrict_to_request": "fints_agent.calls.spans",
    "ToolSpec": "fints_agent.calls.specs",
    "to_tool_specs": "fints_agent.calls.specs",
    "unique_specs": "fints_agent.calls.specs",
    "validate_arguments": "fints_agent.calls.specs",
    "CallBlock": "fints_agent.calls.tracker",
    "CallTracker": "fints_agent.calls.tracker",
    "call_blocks": "fints_agent.calls.tracker",
    "call_position": "fints_agent.calls.tracker",
    "in_free_text_value": "fints_agent.calls.tracker",
    "in_open_call": "fints_agent.calls.tracker",
    "text_before_calls": "fints_agent.calls.tracker",
    "check_schema": "fints_agent.calls.validators",
    "schema_validator": "fints_agent.calls.validators",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "CALL_SEPARATOR",
    "MAX_INSTANCE_CHARS",
    "CallBlock",
    "CallCompiler",
    "CallGrammar",
    "CallPosition",
    "CallTracker",
    "ClosingTokens",
    "ConstrainedDecoder",
    "InvalidToolCall",
    "ToolCall",
    "ToolMode",
    "ToolSchemaError",
    "ToolSpec",
    "call_blocks",
    "call_position",
    "check_instance_size",
    "check_schema",
    "dump_json",
    "example_value",
    "get_compiler",
    "in_free_text_value",
    "in_open_call",
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
    "retrieval_text",
    "schema_validator",
    "smallest_instance_chars",
    "text_before_calls",
    "to_tool_specs",
    "unique_specs",
    "validate_arguments",
]
