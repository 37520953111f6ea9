"""The block reading of :mod:`fints_agent.calls.tracker`: where call blocks open and close, what a
stream may show, and whether a text ends inside an unclosed block. One reading serves parsing,
streaming and the closing of calls near the token budget."""

from __future__ import annotations

import random

import pytest

from fints_agent.calls import (
    CALL_CLOSE,
    CALL_OPEN,
    CallBlock,
    CallPosition,
    CallTracker,
    call_blocks,
    in_open_call,
    parse_calls,
    render_call,
    text_before_calls,
    to_tool_specs,
)

SPECS = to_tool_specs(
    [
        {
            "name": "search",
            "description": "Search.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
)
CALL = render_call("search", {"q": "jazz"})
TRICKY = render_call("search", {"q": f"a {CALL_CLOSE} b {CALL_OPEN} c"})

FRAGMENTS = [
    CALL_OPEN,
    CALL_CLOSE,
    '{"name": "search", "arguments": {"q": "',
    '"}}',
    "}",
    "{",
    '"',
    "\\",
    "x",
    " ",
    "\n",
    "<tool",
    "_call>",
    "</tool",
    "<",
    CALL,
    TRICKY,
]


def random_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(FRAGMENTS, k=rng.randint(0, 9))) for _ in range(count)]


# --- call_blocks ------------------------------------------------------------------------------


def test_blocks_of_text_and_calls() -> None:
    text = f"Sure.\n{CALL}\n{TRICKY} and {CALL_OPEN}not json"
    blocks = call_blocks(text)
    assert [b.closed for b in blocks] == [True, True, False]
    assert blocks[0] == CallBlock(6, 6 + len(CALL), CALL[len(CALL_OPEN) : -len(CALL_CLOSE)], True)
    assert text[blocks[1].start : blocks[1].end] == TRICKY  # the JSON body holds both markers
    assert blocks[2].body == "not json" and blocks[2].end == len(text)
    assert call_blocks("no calls here") == []


def test_a_body_that_is_not_json_ends_at_the_first_closing_marker() -> None:
    text = f"{CALL_OPEN}oops {CALL_CLOSE} tail {CALL_CLOSE}"
    (block,) = call_blocks(text)
    assert block.body == "oops " and block.closed
    assert text[block.end :] == f" tail {CALL_CLOSE}"


def test_parse_calls_reads_the_same_blocks() -> None:
    for text in random_texts(400):
        calls, invalid, content = parse_calls(text, SPECS)
        blocks = call_blocks(text)
        assert len(calls) + len(invalid) == len(blocks)
        outside, position = [], 0
        for block in blocks:
            outside.append(text[position : block.start])
            position = block.end
        outside.append(text[position:])
        assert content == "".join(outside).strip()


# --- in_open_call -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        ("", False),
        ("plain text", False),
        (CALL_OPEN, True),
        (CALL[:-1], True),
        (CALL, False),
        (f"{CALL}\n{CALL_OPEN}" + '{"name": "se', True),
        (TRICKY[: TRICKY.index(CALL_CLOSE) + 3], True),
        (TRICKY[: TRICKY.index(CALL_CLOSE) + len(CALL_CLOSE)], False),
        (TRICKY, False),
    ],
)
def test_in_open_call(text: str, inside: bool) -> None:
    assert in_open_call(text) is inside
    assert in_open_call(text) is (text.rfind(CALL_OPEN) > text.rfind(CALL_CLOSE))


def test_in_open_call_is_the_block_reading() -> None:
    """The one-pass answer is the answer of call_blocks: its last block is unclosed."""
    texts = random_texts(4000)
    texts += [t[:cut] for t in texts[:300] for cut in range(len(t) + 1)]
    for text in texts:
        blocks = call_blocks(text)
        assert in_open_call(text) is (bool(blocks) and not blocks[-1].closed), text


# --- text_before_calls ------------------------------------------------------------------------


def test_text_before_calls() -> None:
    assert text_before_calls("") == ("", False)
    assert text_before_calls("Hello") == ("Hello", False)
    assert text_before_calls("Hello <tool") == ("Hello ", False)
    assert text_before_calls("a < b") == ("a < b", False)
    assert text_before_calls(f"Hi {CALL_OPEN}" + '{"na') == ("Hi ", True)
    assert text_before_calls(f"Hi {CALL}\nmore") == ("Hi ", True)
    assert text_before_calls(f"{CALL}") == ("", True)
    assert text_before_calls(f"x<{CALL}") == ("x<", True)


def _stream_shown(deltas: list[str]) -> list[str]:
    """The chunks a stream shows with text_before_calls (as the chat model's stream does)."""
    shown, held, in_call = [], "", False
    for delta in deltas:
        if in_call:
            continue
        held += delta
        emit, in_call = text_before_calls(held)
        held = held[len(emit) :]
        if emit:
            shown.append(emit)
    return shown


def _stream_reference(deltas: list[str]) -> list[str]:
    """A stream that scans for the opening marker itself (the reference)."""

    def split_held(text: str) -> tuple[str, str]:
        for k in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
            if CALL_OPEN.startswith(text[-k:]):
                return text[:-k], text[-k:]
        return text, ""

    shown, held, in_call = [], "", False
    for delta in deltas:
        if in_call:
            continue
        held += delta
        if CALL_OPEN in held:
            emit, held, in_call = held.split(CALL_OPEN, 1)[0], "", True
        else:
            emit, held = split_held(held)
        if emit:
            shown.append(emit)
    return shown


def test_streaming_with_text_before_calls_shows_what_a_marker_scan_shows() -> None:
    rng = random.Random(3)
    for text in random_texts(1500, seed=11):
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(1, 8))))
        deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        shown = _stream_shown(deltas)
        assert shown == _stream_reference(deltas), deltas
        # Chunk by chunk, the stream shows what the whole text shows at once.
        before, opened = text_before_calls(text)
        assert "".join(shown) == before
        if opened:
            assert before == text[: text.index(CALL_OPEN)]


# --- the tracker and the block reading agree on generated calls ---------------------------------


def test_tracker_is_outside_exactly_when_no_block_is_open() -> None:
    text = f"Let me look. {CALL}\n{render_call('search', {'q': 'blues'})}"
    tracker = CallTracker(SPECS)
    for end in range(len(text) + 1):
        if end:
            tracker.feed(text[end - 1])
        outside = tracker.position is CallPosition.OUTSIDE
        # The tracker leaves a block once its closing marker is complete, as the block reading.
        assert outside is not in_open_call(text[:end]), text[:end]
