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
