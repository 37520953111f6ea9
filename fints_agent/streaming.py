"""A streamed turn as LangChain message chunks: text as it is written, each tool call as
``tool_call_chunks`` while it is generated.

:class:`TurnChunks` reads the text of a turn as the engine yields it, in the call format of
:mod:`fints_agent.calls.format`, and turns it into the pieces of ``AIMessageChunk`` objects:

- text outside call blocks as ``content``;
- a call, once its name is complete, as a tool-call chunk with its ``name``, ``id`` and
  ``index`` (0, 1, ... in the order of the calls), then chunks with the same ``index`` whose
  ``args`` are the next pieces of its arguments' JSON text as it is generated (``name`` and
  ``id`` ``None``);
- at the end (:meth:`TurnChunks.finish`), what the finished turn adds: calls that could not
  be followed while they were written and the arguments' end of an invalid call, then a last
  chunk with text held back, usage and response metadata.

The chunks of a turn add up (``chunk + chunk + ...``) to the message the turn gives unstreamed:
the same ``content``, the same ``tool_calls`` (names, arguments; the ids are the ones its chunks
carry) and the same calls in ``invalid_tool_calls``.

Invalid calls. LangChain reads an added-up message's calls from its merged tool-call chunks: a
call whose ``args`` text parses (leniently, as partial JSON) into a JSON object goes to
``tool_calls``, any other to ``invalid_tool_calls``. A call's arguments are sent while they are
generated, before the call can be checked against its tool's schema, so they may already read as
an object when the finished call turns out invalid (an argument out of its schema's bounds, a
block left unclosed). The end of the stream then sends, as the end of that call's ``args``, a
closing bracket that does not match the innermost open one (or comes when none is open; after a
quote when the text stops inside a string), followed by ``<invalid: ERROR>``: at such a bracket
LangChain's partial-JSON reader gives up (no end of text would repair it), so the call is read
as invalid (:func:`unreadable_suffix`); so does the strict JSON reading of LangChain's
content-block events (``stream_events(version="v3")``). The added-up ``args`` of an invalid
call are therefore its arguments text, that bracket and the error (LangChain itself sets
``error`` to ``None`` for calls read from chunks).

What the stream follows. Text written in the call format (what the grammar of a turn with tools
writes) streams as it comes. Text outside it (a turn without a grammar writing a call block by
hand, spacing that differs from the format) stops the streaming of calls and of the text after
them: the end of the stream carries all of it. One difference remains possible there: an answer
that starts with white space, then text, then a call block has that white space in its streamed
``content`` (sent before the call could be foreseen) but not unstreamed, where the text around
calls is stripped. A turn with a grammar never writes text and calls in one answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fints_agent.calls.format import ARGUMENTS_INFIX, CALL_OPEN, CALL_SUFFIX, NAME_PREFIX
from fints_agent.calls.parsing import InvalidToolCall, ToolCall, new_call_id
from fints_agent.calls.tracker import CallBlock, call_blocks, text_before_calls
from fints_agent.messages import dumps_args, usage_metadata

if TYPE_CHECKING:
    from langchain_core.messages import AIMessageChunk
    from langchain_core.messages.tool import ToolCallChunk

    from fints_agent.turn import TurnResult

__all__ = ["TurnChunks", "unreadable_suffix"]

_DECODER = json.JSONDecoder(strict=False)


@dataclass
class _Call:
    """A call block followed while it is written: what its chunks have sent so far."""

    index: int
    start: int
    name: str
    id: str
    args: str = ""
    args_at: int | None = None  # where its arguments' text starts in the turn's text
    # the state of the scan of its arguments: end of the scan, depth, in a string, escaped
    scanned: int = 0
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    args_end: int | None = None


@dataclass
class _Pending:
    """The pieces of one chunk."""

    content: str = ""
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def call(self, index: int) -> dict[str, Any]:
        return self.calls.setdefault(index, {"name": None, "args": "", "id": None})


class TurnChunks:
    """The chunks of one streamed turn (see the module docstring for their form).

    Feed each text delta of the turn to :meth:`feed` and send the chunks it returns; once the
    turn is done, send :meth:`finish`'s chunks, the last of them last.

    Args:
        calls: Whether the text may hold call blocks. ``False`` for an answer constrained to a
            JSON schema: its text is all content.
    """

    def __init__(self, *, calls: bool = True) -> None:
        self._text = ""
        self._pos = 0  # the text before it is read: shown, held back, or in a settled block
        self._shown = ""  # the content sent
        self._space = ""  # white space at the end of the text outside calls, held back
        self._calls: list[_Call] = []
        self._open: int | None = None  # the start of the call block being read
        self._frozen = False  # text outside the format was met: the rest goes at the end
        self._plain = not calls

    # -- while the turn is generated ---------------------------------------------------------
    def feed(self, delta: str) -> list[AIMessageChunk]:
        """Read the next piece of the turn's text.

        Returns:
            The chunks to send now: none when the piece adds nothing that can be sent yet (a
            possible start of a call block, white space, ...), else one with text, one with
            tool-call chunks, or both in that order (LangChain reads the tool-call chunks of
            a chunk as content blocks only when it has no text).
        """
        if not delta:
            return []
        self._text += delta
        pending = _Pending()
        if self._plain:
            pending.content = delta
            self._shown += delta
        else:
            self._advance(pending)
        return _chunks(pending.content, _call_chunks(pending))

    def _advance(self, pending: _Pending) -> None:
        text = self._text
        while not self._frozen:
            if self._open is None:
                start = text.find(CALL_OPEN, self._pos)
                if start < 0:
                    piece, _ = text_before_calls(text[self._pos :])
                    self._outside(piece, pending)
                    self._pos += len(piece)
                    return
                self._outside(text[self._pos : start], pending)
                self._pos = self._open = start
            if not self._read_block(pending):
                return

    def _outside(self, piece: str, pending: _Pending) -> None:
        """Text outside call blocks: sent, but white space that may end the content held back
        (and white space that starts it once a call came first, dropped)."""
        if not piece:
            return
        text = self._space + piece
        if not self._shown and self._calls:
            text = text.lstrip()  # content around calls is stripped
        body = text.rstrip()
        self._space = text[len(body) :]
        if body:
            pending.content += body
            self._shown += body

    def _read_block(self, pending: _Pending) -> bool:
        """Follow the call block that opens at ``self._open``.

        Returns:
            True when the block is complete and settled (reading goes on after it); False when
            it needs more text, or the text left the format (then everything stops).
        """
        text, start = self._text, self._open
        assert start is not None
        call = self._calls[-1] if self._calls and self._calls[-1].start == start else None
        if call is None:
            state = _expect(text, start, NAME_PREFIX)
            if state is not True:
                self._frozen = state is None
                return False
            name_at = start + len(NAME_PREFIX)
            name_end = text.find('"', name_at)
            if "\\" in text[name_at : name_end if name_end >= 0 else len(text)]:
                self._frozen = True  # an escaped name: read from the finished text only
                return False
            if name_end < 0:
                return False
            call = _Call(len(self._calls), start, text[name_at:name_end], new_call_id())
            self._calls.append(call)
            head = pending.call(call.index)
            head["name"], head["id"] = call.name, call.id
            infix_at = name_end
        else:
            infix_at = start + len(NAME_PREFIX) + len(call.name)
        if call.args_at is None:
            state = _expect(text, infix_at, ARGUMENTS_INFIX + "{")
            if state is not True:
                self._frozen = state is None
                return False
            call.args_at = call.scanned = infix_at + len(ARGUMENTS_INFIX)
        if call.args_end is None:
            _scan_arguments(call, text)
            end = call.args_end if call.args_end is not None else len(text)
            piece = text[call.args_at + len(call.args) : end]
            if piece:
                call.args += piece
                pending.call(call.index)["args"] += piece
            if call.args_end is None:
                return False
        state = _expect(text, call.args_end, CALL_SUFFIX)
        if state is not True:
            self._frozen = state is None
            return False
        end = call.args_end + len(CALL_SUFFIX)
        if not _settled(text, start, end):
            self._frozen = True
            return False
        self._pos, self._open = end, None
        return True

    # -- once the turn is done ---------------------------------------------------------------
    def finish(self, result: TurnResult, metadata: dict[str, Any]) -> list[AIMessageChunk]:
        """The chunks that end the turn: what its calls still need (when they need anything),
        then the last chunk (``chunk_position="last"``) with the content not sent yet, usage
        and response metadata.

        The calls' ends travel in a chunk of their own, not in the last one: LangChain reads
        the tool-call chunks of a last chunk as whole calls by themselves (when it turns a
        stream into content blocks), not as the ends of the calls streamed before.

        Args:
            result: The finished turn (its text is the text fed).
            metadata: The response metadata.
        """
        calls_made = bool(result.calls or result.invalid_calls)
        content = result.content if calls_made else result.text
        rest = content[len(self._shown) :] if content.startswith(self._shown) else ""
        calls = [] if self._plain else self._final_calls(result)
        last = _chunk(rest, [], usage=usage_metadata(result), metadata=metadata, last=True)
        return [*_chunks("", calls), last]

    def _final_calls(self, result: TurnResult) -> list[ToolCallChunk]:
        from langchain_core.messages.tool import tool_call_chunk

        blocks = call_blocks(result.text)
        outcomes = _outcomes(blocks, result)
        chunks: list[ToolCallChunk] = []
        extra: list[ToolCall | InvalidToolCall] = []
        if outcomes is None:  # the blocks do not read back to the calls: send them anew
            outcomes, extra = [None] * len(blocks), [*result.calls, *result.invalid_calls]
        for index, (block, outcome) in enumerate(zip(blocks, outcomes, strict=True)):
            sent = index < len(self._calls) and self._calls[index].start == block.start
            if not sent:
                if outcome is not None:
                    chunks.append(_whole(outcome, index))
                continue
            call = self._calls[index]
            if isinstance(outcome, ToolCall) and outcome.name == call.name:
                rest = _arguments_rest(call.args, outcome.arguments)
                if rest is not None:
                    if rest:
                        chunks.append(tool_call_chunk(name=None, args=rest, id=None, index=index))
                    continue
            if isinstance(outcome, ToolCall) or outcome is None:
                # What was sent is not this call (text outside the format): the sent call
                # reads as invalid, the call itself comes after the others.
                if outcome is not None:
                    extra.append(outcome)
                error = "not the call the text reads as"
            else:
                error = outcome.error
            suffix = unreadable_suffix(call.args, error)
            chunks.append(tool_call_chunk(name=None, args=suffix, id=None, index=index))
        first = len(blocks)
        chunks += [_whole(outcome, first + i) for i, outcome in enumerate(extra)]
        return chunks


def _expect(text: str, at: int, expected: str) -> bool | None:
    """Whether ``text`` has ``expected`` at ``at``: True, False (not enough text yet to
    tell), None (it has something else)."""
    have = text[at : at + len(expected)]
    if have == expected:
        return True
    return False if expected.startswith(have) else None


def _scan_arguments(call: _Call, text: str) -> None:
    """Scan the arguments' JSON text from where the last scan ended; set ``args_end`` (after
    the brace that closes it) once it is complete."""
    depth, in_string, escaped = call.depth, call.in_string, call.escaped
    i = call.scanned
    while i < len(text):
        char = text[i]
        i += 1
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                call.args_end = i
                break
    call.scanned, call.depth, call.in_string, call.escaped = i, depth, in_string, escaped


def _settled(text: str, start: int, end: int) -> bool:
    """Whether the block ``text[start:end]`` reads as the one closed block it looks like, and
    so stays what it is whatever text comes after it (its body is one JSON value, read as
    :func:`~fints_agent.calls.tracker.call_blocks` reads it)."""
    body_at = start + len(CALL_OPEN)
    try:
        _, json_end = _DECODER.raw_decode(text, body_at)
    except json.JSONDecodeError:
        return False
    return json_end == end - len(CALL_SUFFIX) + 1


def _outcomes(
    blocks: list[CallBlock], result: TurnResult
) -> list[ToolCall | InvalidToolCall | None] | None:
    """The call each block became, in the order of the blocks (``result`` holds the valid and
    the invalid ones apart); None when the blocks do not read back to the result's calls."""
    if len(blocks) != len(result.calls) + len(result.invalid_calls):
        return None
    valid, invalid = iter(result.calls), iter(result.invalid_calls)
    next_valid = next(valid, None)
    out: list[ToolCall | InvalidToolCall | None] = []
    for block in blocks:
        if next_valid is not None and block.closed and _reads_as(block.body, next_valid):
            out.append(next_valid)
            next_valid = next(valid, None)
            continue
        bad = next(invalid, None)
        if bad is None:
            return None
        out.append(bad)
    return out if next_valid is None else None


def _reads_as(body: str, call: ToolCall) -> bool:
    """Whether a block's body is ``call`` (the same name and arguments)."""
    try:
        data = json.loads(body.strip(), strict=False)
    except json.JSONDecodeError:
        return False
    if not isinstance(data, dict):
        return False
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, strict=False)
        except json.JSONDecodeError:
            return False
    return bool(data.get("name") == call.name and arguments == call.arguments)


def _arguments_rest(sent: str, arguments: dict[str, Any]) -> str | None:
    """What completes the arguments text ``sent`` so far into ``arguments`` ("" when it reads
    as them already), or None when nothing can."""
    if sent:
        try:
            if json.loads(sent, strict=False) == arguments:
                return ""
        except json.JSONDecodeError:
            pass
    whole = dumps_args(arguments)
    return whole[len(sent) :] if whole.startswith(sent) else None


def unreadable_suffix(args: str, error: str) -> str:
    """What to add to the arguments text ``args`` of an invalid call so that LangChain reads the
    added-up call as invalid: a closing bracket that matches nothing open (after a quote that
    ends a string left open), then ``<invalid: ERROR>``.

    LangChain's partial-JSON reader (``parse_partial_json``) gives up at a closing bracket that
    does not match the innermost open one, or that comes when nothing is open: this follows its
    reading of strings and escapes to find one.
    """
    stack: list[str] = []
    in_string = escaped = False
    for char in args:
        if in_string:
            if char == '"' and not escaped:
                in_string = False
            elif char == "\\":
                escaped = not escaped
            else:
                escaped = False
        elif char == '"':
            in_string, escaped = True, False
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack or stack[-1] != char:
                return f" <invalid: {error}>"  # it reads as invalid already
            stack.pop()
    close_string = ("\\" if escaped else "") + '"' if in_string else ""
    bracket = "]" if not stack or stack[-1] == "}" else "}"
    return f"{close_string}{bracket} <invalid: {error}>"


def _whole(outcome: ToolCall | InvalidToolCall, index: int) -> ToolCallChunk:
    """A call not followed while it was written, in one tool-call chunk."""
    from langchain_core.messages.tool import tool_call_chunk

    if isinstance(outcome, ToolCall):
        args = dumps_args(outcome.arguments)
    else:
        args = outcome.args + unreadable_suffix(outcome.args, outcome.error)
    return tool_call_chunk(name=outcome.name, args=args, id=outcome.id, index=index)


def _call_chunks(pending: _Pending) -> list[ToolCallChunk]:
    from langchain_core.messages.tool import tool_call_chunk

    return [
        tool_call_chunk(name=piece["name"], args=piece["args"], id=piece["id"], index=index)
        for index, piece in sorted(pending.calls.items())
    ]


def _chunks(content: str, calls: list[ToolCallChunk]) -> list[AIMessageChunk]:
    """The chunks of text and tool-call chunks: text first, each in a chunk of its own."""
    out = [_chunk(content, [])] if content else []
    return [*out, _chunk("", calls)] if calls else out


def _chunk(
    content: str,
    calls: list[ToolCallChunk],
    *,
    usage: Any = None,
    metadata: dict[str, Any] | None = None,
    last: bool = False,
) -> AIMessageChunk:
    from langchain_core.messages import AIMessageChunk

    return AIMessageChunk(
        content=content,
        tool_call_chunks=calls,
        usage_metadata=usage,
        response_metadata=metadata or {},
        chunk_position="last" if last else None,
    )
