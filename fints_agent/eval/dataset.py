"""Records of the personalized tool-calling dataset, and a strict loader for them.

A record is one user turn: the request (``messages``), the tools offered, the call the user
actually wanted (``chosen``), plausible calls they did not want (``rejected``), and the names of
the arguments of ``chosen`` that are graded exactly (``graded_args``). Records of one user are
ordered by ``turn``; ``history`` turns come before ``test`` turns.

The file format is JSON Lines, one record per line::

    {"user_id": "u01", "turn": 0, "split": "history",
     "messages": [{"role": "user", "content": "..."}],
     "tools": [{"type": "function", "function": {"name": ..., "parameters": {...}}}],
     "chosen": {"name": ..., "arguments": {...}},
     "rejected": [{"name": ..., "arguments": {...}}],
     "graded_args": ["..."],
     "meta": {...}}                                  # optional

:func:`load_records` checks every record (JSON syntax, fields and types, that the chosen and
rejected calls use offered tools and validate against their JSON schemas, that the graded
arguments exist) and reports the file and line of the first problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fints_agent.calls.errors import ToolSchemaError
from fints_agent.calls.validators import check_schema
from fints_agent.calls.validators import schema_validator as local_validator

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DatasetError",
    "FunctionSpec",
    "Message",
    "PersonalRecord",
    "ToolCall",
    "ToolSpec",
    "UserRecords",
    "group_by_user",
    "load_records",
    "parse_record",
    "schema_validator",
]

DEFAULT_MAX_LINE_BYTES = 1_000_000
"""Longest accepted line of a dataset file, in bytes (a record is a few kilobytes)."""


class DatasetError(ValueError):
    """A dataset file or record is malformed.

    Attributes:
        path: The file, when the record came from one.
        line: The 1-based line number, when known.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        """Builds the error; the message is prefixed with ``path:line:`` when they are known.

        Args:
            message: What is wrong.
            path: The file the record came from.
            line: The 1-based line number of the record.
        """
        self.path = path
        self.line = line
        self.reason = message
        if path is not None and line is not None:
            prefix = f"{path}:{line}: "
        elif path is not None:
            prefix = f"{path}: "
        else:
            prefix = ""
        super().__init__(prefix + message)


class Message(BaseModel):
    """One chat message of a request."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class FunctionSpec(BaseModel):
    """The ``function`` part of an OpenAI function tool."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any]


class ToolSpec(BaseModel):
    """An OpenAI function tool: ``{"type": "function", "function": {...}}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: FunctionSpec


class ToolCall(BaseModel):
    """A tool call: the tool's name and its arguments."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    arguments: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Returns the call as a plain ``{"name": ..., "arguments": ...}`` dict."""
        return {"name": self.name, "arguments": dict(self.arguments)}


class PersonalRecord(BaseModel):
    """One turn of one user, with the call they chose and the calls they did not."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str = Field(min_length=1)
    turn: int = Field(ge=0)
    split: Literal["history", "test"]
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] = Field(min_length=1)
    chosen: ToolCall
    rejected: list[ToolCall]
    graded_args: list[str]
    meta: dict[str, Any] | None = None

    @property
    def request(self) -> str:
        """The content of the last user message (the request of this turn)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return self.messages[-1].content

    def tool(self, name: str) -> ToolSpec | None:
        """Returns the offered tool called ``name``, or None."""
        for tool in self.tools:
            if tool.function.name == name:
                return tool
        return None

    def openai_tools(self) -> list[dict[str, Any]]:
        """Returns the offered tools as plain OpenAI function-tool dicts."""
        return [tool.model_dump(exclude_unset=True) for tool in self.tools]

    def to_json(self) -> str:
        """Serializes the record as one JSON line (without the newline)."""
        data = self.model_dump(exclude_unset=True)
        if data.get("meta", 0) is None:
            del data["meta"]
        return json.dumps(data, ensure_ascii=False)


@dataclass
class UserRecords:
    """The records of one user, each list sorted by turn."""

    history: list[PersonalRecord] = field(default_factory=list)
    test: list[PersonalRecord] = field(default_factory=list)


_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}


def schema_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """Returns a cached Draft 2020-12 validator for a JSON schema, checking the schema first.

    Args:
        schema: A JSON schema (for example a tool's ``parameters``).

    Returns:
        A validator for the schema.

    References resolve only inside the schema (nothing is fetched, see
    :mod:`fints_agent.calls.validators`).

    Raises:
        ToolSchemaError: The schema itself is invalid, or a reference points outside it.
    """
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _VALIDATORS.get(key)
    if validator is None:
        check_schema(schema)
        validator = local_validator(schema)
        if len(_VALIDATORS) > 4096:
            _VALIDATORS.clear()
        _VALIDATORS[key] = validator
    return validator


def _format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "<record>"
        kind = item["type"]
        if kind == "missing":
            parts.append(f"missing field '{loc}'")
        elif kind == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        else:
            parts.append(f"field '{loc}': {item['msg']}")
    if len(parts) > 5:
        parts = [*parts[:5], f"and {len(parts) - 5} more problem(s)"]
    return "; ".join(parts)


def _check_call(call: ToolCall, tools: dict[str, ToolSpec], what: str) -> str | None:
    tool = tools.get(call.name)
    if tool is None:
        return f"{what} tool '{call.name}' is not among the record's tools {sorted(tools)}"
    validator = schema_validator(tool.function.parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(call.arguments))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "<arguments>"
        return f"{what} arguments are invalid for tool '{call.name}' at {where}: {error.message}"
    return None


def parse_record(data: Any, path: str | None = None, line: int | None = None) -> PersonalRecord:
    """Validates one decoded record and returns it as a :class:`PersonalRecord`.

    Besides the field types, it checks that tool names are unique and their parameter schemas
    are valid JSON schemas, that ``chosen`` and every ``rejected`` call use an offered tool and
    validate against its schema, that no rejected call equals the chosen one, and that every
    graded argument is an argument of ``chosen``.

    Args:
        data: The decoded JSON value of the record.
        path: The file it came from, for error messages.
        line: Its 1-based line number, for error messages.

    Returns:
        The validated record.

    Raises:
        DatasetError: The record is malformed; the message names the file and line.
    """
    if not isinstance(data, dict):
        raise DatasetError(f"a record must be a JSON object, got {type(data).__name__}", path, line)
    try:
        record = PersonalRecord.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(f"invalid record: {_format_validation_error(exc)}", path, line) from None

    tools: dict[str, ToolSpec] = {}
    for tool in record.tools:
        name = tool.function.name
        if name in tools:
            raise DatasetError(f"tool '{name}' is offered twice", path, line)
        try:
            schema_validator(tool.function.parameters)
        except ToolSchemaError as exc:
            raise DatasetError(
                f"tool '{name}' has an invalid parameters schema: {exc}", path, line
            ) from None
        tools[name] = tool

    problem = _check_call(record.chosen, tools, "chosen")
    if problem is not None:
        raise DatasetError(problem, path, line)
    for index, rejected in enumerate(record.rejected):
        problem = _check_call(rejected, tools, f"rejected[{index}]")
        if problem is not None:
            raise DatasetError(problem, path, line)
        if rejected == record.chosen:
            raise DatasetError(f"rejected[{index}] is identical to the chosen call", path, line)
    missing = [name for name in record.graded_args if name not in record.chosen.arguments]
    if missing:
        raise DatasetError(
            f"graded_args {missing} are not arguments of the chosen call "
            f"'{record.chosen.name}' (arguments: {sorted(record.chosen.arguments)})",
            path,
            line,
        )
    if len(set(record.graded_args)) != len(record.graded_args):
        raise DatasetError(f"graded_args has duplicates: {record.graded_args}", path, line)
    return record


def _read_lines(path: Path, max_line_bytes: int) -> Iterable[tuple[int, str]]:
    with path.open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise DatasetError(
                    f"line is longer than {max_line_bytes} bytes; refusing to parse it",
                    str(path),
                    number,
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    f"line is not valid UTF-8 ({exc.reason})", str(path), number
                ) from None
            yield number, text


def load_records(
    path: str | Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> list[PersonalRecord]:
    """Loads and validates a JSON Lines dataset file.

    Blank lines are skipped. Every record is checked with :func:`parse_record`; across records,
    each ``(user_id, turn)`` must be unique and a user's history turns must all come before
    their test turns.

    Args:
        path: The ``.jsonl`` file.
        max_line_bytes: Lines longer than this are rejected without being parsed.

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        DatasetError: The file is empty or a record is malformed; the message names the file
            and, for a record, its line.
    """
    file = Path(path)
    name = str(file)
    records: list[PersonalRecord] = []
    lines: list[int] = []
    seen: dict[tuple[str, int], int] = {}
    for number, text in _read_lines(file, max_line_bytes):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"malformed JSON: {exc.msg} (column {exc.colno})", name, number
            ) from None
        record = parse_record(data, name, number)
        key = (record.user_id, record.turn)
        if key in seen:
            raise DatasetError(
                f"user '{record.user_id}' turn {record.turn} already appears on line {seen[key]}",
                name,
                number,
            )
        seen[key] = number
        records.append(record)
        lines.append(number)
    if not records:
        raise DatasetError("no records (the file is empty)", name)

    last_history: dict[str, int] = {}
    first_test: dict[str, int] = {}
    for record in records:
        if record.split == "history":
            last_history[record.user_id] = max(last_history.get(record.user_id, -1), record.turn)
        else:
            first_test[record.user_id] = min(
                first_test.get(record.user_id, record.turn), record.turn
            )
    for record, number in zip(records, lines, strict=True):
        user = record.user_id
        if user not in first_test or last_history.get(user, -1) < first_test[user]:
            continue
        if (record.split == "history" and record.turn > first_test[user]) or (
            record.split == "test" and record.turn < last_history[user]
        ):
            raise DatasetError(
                f"user '{user}': history turn {last_history[user]} comes after test turn "
                f"{first_test[user]}; history must precede test",
                name,
                number,
            )
    return records


def group_by_user(records: Sequence[PersonalRecord]) -> dict[str, UserRecords]:
    """Splits records per user into history and test lists, each sorted by turn.

    Args:
        records: Records of any number of users, in any order.

    Returns:
        ``{user_id: UserRecords}`` in order of each user's first appearance.
    """
    grouped: dict[str, UserRecords] = {}
    for record in records:
        entry = grouped.setdefault(record.user_id, UserRecords())
        (entry.history if record.split == "history" else entry.test).append(record)
    for entry in grouped.values():
        entry.history.sort(key=lambda r: r.turn)
        entry.test.sort(key=lambda r: r.turn)
    return grouped
