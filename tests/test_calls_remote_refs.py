"""References outside a tool schema are refused, and nothing is ever fetched.

jsonschema downloads a remote ``$ref`` while validating: a tool schema naming
``http://internal-host/...`` made the process request that address when binding, recording
feedback and on every generated call. A loopback server counts the requests it gets.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fints_agent.calls import (
    ToolSchemaError,
    ToolSpec,
    check_schema,
    order_arguments,
    parse_calls,
    schema_validator,
    to_tool_specs,
    validate_arguments,
)
from fints_agent.chat_model import FintsChatModel


class _Server:
    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                body = b'{"type": "string"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.close()


def _remote(url: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"city": {"$ref": f"{url}/city.json"}},
        "required": ["city"],
    }


def _tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather.", "parameters": schema},
    }


def test_remote_reference_is_refused_without_a_request(server: _Server, tmp_path: Path) -> None:
    schema = _remote(server.url)
    tool = _tool(schema)
    outside = r"get_weather.*reference 'http://127\.0\.0\.1:\d+/city\.json' points outside"

    with pytest.raises(ToolSchemaError, match=outside):
        to_tool_specs([tool])
    with pytest.raises(ToolSchemaError, match=outside):
        FintsChatModel(model="unused").bind_tools([tool])
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1"}
    llm = FintsChatModel(model="unused", memory=str(tmp_path / "memory"))
    with pytest.raises(ToolSchemaError, match=outside):
        llm.record_feedback("alice", [{"role": "user", "content": "weather?"}], [tool], call)

    # A spec built by hand skips the checks of to_tool_specs: validation still fetches nothing.
    spec = ToolSpec("get_weather", "Weather.", schema)
    with pytest.raises(ToolSchemaError, match="points outside"):
        validate_arguments(spec, {"city": "Oslo"})
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    with pytest.raises(ToolSchemaError, match="points outside"):
        parse_calls(text, [spec])
    with pytest.raises(ToolSchemaError, match="points outside"):
        schema_validator(schema)
    with pytest.raises(ToolSchemaError, match="points outside"):
        check_schema({"$defs": {"x": {"$ref": f"{server.url}/x.json"}}})
    branches = {"anyOf": [{"$ref": f"{server.url}/a.json"}, {"type": "object"}]}
    assert order_arguments({"b": 1, "a": 2}, branches) == {"b": 1, "a": 2}
    assert server.requests == []


def test_other_non_local_references_are_refused(server: _Server) -> None:
    for ref in ("other.json", "other.json#/x", "urn:example:city", "file:///etc/passwd"):
        with pytest.raises(ToolSchemaError, match="points outside"):
            to_tool_specs([_tool({"type": "object", "properties": {"a": {"$ref": ref}}})])
    with pytest.raises(ToolSchemaError, match="names nothing"):
        to_tool_specs([_tool({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}})])
    assert server.requests == []


def test_local_references_and_data_that_looks_like_one_are_fine(server: _Server) -> None:
    schema = {
        "$schema": f"{server.url}/meta-schema.json",  # names a dialect; never fetched
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/place"},
            "work": {"$ref": "#place"},
            "tag": {"const": {"$ref": f"{server.url}/not-a-reference"}},
        },
        "required": ["home", "work"],
        "$defs": {
            "place": {
                "$anchor": "place",
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }
        },
    }
    (spec,) = to_tool_specs([_tool(schema)])
    assert validate_arguments(spec, {"home": {"city": "Oslo"}, "work": {"city": "Rome"}}) is None
    assert "city" in (validate_arguments(spec, {"home": {}, "work": {"city": "Rome"}}) or "")
    assert server.requests == []


def test_memory_and_dataset_paths_fetch_nothing(server: _Server, tmp_path: Path) -> None:
    from memory_fixtures import make_memory, user_msg

    from fints_agent.eval.dataset import DatasetError, parse_record
    from fints_agent.memory import MemoryInputError

    schema = _remote(server.url)
    memory = make_memory(tmp_path / "store")
    chosen = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    with pytest.raises(MemoryInputError, match="points outside"):
        memory.record("alice", user_msg("weather in oslo"), [_tool(schema)], chosen)
    record = {
        "user_id": "u1",
        "turn": 0,
        "split": "history",
        "messages": [{"role": "user", "content": "weather in oslo"}],
        "tools": [_tool(schema)],
        "chosen": chosen,
        "rejected": [],
        "graded_args": ["city"],
    }
    with pytest.raises(DatasetError, match="points outside"):
        parse_record(record)
    assert server.requests == []
