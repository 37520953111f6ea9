"""Tests for request-span copying: free string arguments restricted to spans of the request.

The pattern tests need nothing; the grammar tests use the real SmolLM2 tokenizer (as
``test_calls_constrain``), the shipped benchmark's calls and a tiny random model.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import random_llama, smollm2_tokenizer_or_skip

from fints_agent.calls import (
    CallCompiler,
    CallGrammar,
    ConstrainedDecoder,
    ToolSpec,
    get_compiler,
    parse_calls,
    render_call,
    request_span_pattern,
    request_text,
    restrict_to_request,
    to_tool_specs,
    validate_arguments,
)
from fints_agent.calls.spans import MAX_REQUEST_WORDS, MAX_SPAN_WORDS

VOCAB = 49152
DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "personal_webapi.jsonl"


def spans(text: str) -> re.Pattern[str]:
    pattern = request_span_pattern(text)
    assert pattern is not None
    return re.compile(pattern)


# --- the span pattern -------------------------------------------------------------------------


def test_spans_are_whole_words_in_order() -> None:
    p = spans("Send Luis a message: the package arrived.")
    for good in ("Luis", "Luis a message: the", "the package arrived", "the package arrived."):
        assert p.fullmatch(good), good
    assert not p.fullmatch("The package arrived")
    for bad in ("Lu", "uis", "message the", "arrived Luis", "a message:the", "", " Luis", "Luis "):
        assert not p.fullmatch(bad), bad


def test_case_is_kept_and_edge_punctuation_is_optional() -> None:
    p = spans('Play "Norah Jones" (live), please!')
    assert p.fullmatch("Norah Jones")
    assert not p.fullmatch("norah Jones") and not p.fullmatch("Please")
    assert p.fullmatch("please!") and p.fullmatch("please")
    assert p.fullmatch("live), please!")  # the text between words stays as written
    assert not p.fullmatch('Norah Jones" (live')  # a quote ends a span
    assert not p.fullmatch('"Norah Jones"')  # spans start at a word, not at its punctuation


def test_spans_keep_inner_punctuation() -> None:
    p = spans("Take me to St. Mary's Hospital, please")
    assert p.fullmatch("St. Mary's Hospital")
    assert p.fullmatch("Mary's Hospital,")
    assert not p.fullmatch("St Mary's Hospital")


def test_spans_do_not_cross_quotes_backslashes_or_line_breaks() -> None:
    p = spans('first line\nsecond "quoted" a\\b end')
    assert p.fullmatch("first line") and p.fullmatch("second") and p.fullmatch("quoted")
    assert not p.fullmatch("line\nsecond")
    assert not p.fullmatch('second "quoted')
    assert not p.fullmatch('quoted"')
    assert not p.fullmatch("a\\b")


def test_regex_metacharacters_are_literal() -> None:
    text = "a.*b (c)| [d] {e} ^f$ 50% x-y a/b +? 😀 émigré"
    p = spans(text)
    assert p.fullmatch("a.*b (c)| [d] {e} ^f$ 50% x-y a/b +? 😀 émigré")
    assert p.fullmatch("émigré") and not p.fullmatch("Émigré")
    assert not p.fullmatch("axxb")
    assert p.fullmatch("a.*b (c)|")  # "|" is not edge punctuation: the word is "c)|"
    assert not p.fullmatch("a.*b (c")


@pytest.mark.parametrize("text", ["", "   ", "... !!! ?", '"" \\\\', "\n\t"])
def test_no_span_gives_none(text: str) -> None:
    assert request_span_pattern(text) is None


def test_span_length_and_request_size_are_bounded() -> None:
    words = [f"w{i}" for i in range(5000)]
    text = " ".join(words)
    began = time.perf_counter()
    p = spans(text)
    assert time.perf_counter() - began < 1.0
    assert p.fullmatch(" ".join(words[:MAX_SPAN_WORDS]))
    assert not p.fullmatch(" ".join(words[: MAX_SPAN_WORDS + 1]))
    assert p.fullmatch(words[MAX_REQUEST_WORDS - 1])
    assert not p.fullmatch(words[MAX_REQUEST_WORDS + MAX_SPAN_WORDS + 5])
    assert len(p.pattern) < 200_000


# --- the request and the schema ---------------------------------------------------------------


def test_request_text_is_the_latest_user_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "play"}, {"type": "image"}, "jazz"]},
        {"role": "tool", "content": "done"},
    ]
    assert request_text(messages) == "play jazz"
    assert request_text(messages[:3]) == "first"
    assert request_text([{"role": "system", "content": "x"}]) == ""
    assert request_text([]) == ""
    assert request_text([{"role": "user", "content": None}]) == ""


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "free text"},
        "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "date": {"type": "string", "format": "date"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "short": {"type": "string", "maxLength": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
        "nested": {"type": "object", "properties": {"name": {"type": "string"}}},
        "count": {"type": "integer"},
        "maybe": {"type": ["string", "null"]},
    },
    "required": ["query"],
}


def test_only_free_strings_are_restricted() -> None:
    spec = ToolSpec("search", "Search.", json.loads(json.dumps(SCHEMA)))
    (restricted,) = restrict_to_request([spec], "find cheap flights")
    props = restricted.parameters["properties"]
    pattern = request_span_pattern("find cheap flights")
    assert props["query"]["pattern"] == pattern
    assert props["tags"]["items"]["pattern"] == pattern
    assert props["nested"]["properties"]["name"]["pattern"] == pattern
    for untouched in ("units", "date", "short", "count", "maybe"):
        assert props[untouched] == SCHEMA["properties"][untouched]
    assert props["code"]["pattern"] == "^[A-Z]{3}$"
    assert spec.parameters == SCHEMA  # the original spec, used for validation, is unchanged
    assert restricted.name == spec.name and restricted.description == spec.description


def test_no_span_leaves_the_tools_alone() -> None:
    spec = ToolSpec("search", "Search.", SCHEMA)
    assert restrict_to_request([spec], "  ?! ") == [spec]
    assert restrict_to_request([], "hello") == []


# --- grammars ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return smollm2_tokenizer_or_skip()


@pytest.fixture(scope="module")
def compiler(tokenizer: Any) -> CallCompiler:
    return get_compiler(tokenizer, VOCAB)


def accepts(grammar: CallGrammar, tokenizer: Any, text: str) -> bool:
    decoder = ConstrainedDecoder(grammar, 1)
    try:
        decoder.accept_tokens(0, list(tokenizer.encode(text, add_special_tokens=False)))
    except ValueError:
        return False
    return decoder.is_complete(0)


def test_the_benchmark_calls_are_spans_of_their_requests(
    compiler: CallCompiler, tokenizer: Any
) -> None:
    """The gold calls of the shipped benchmark (a sample of it) are still allowed: their graded
    free strings are copied from the request. Ungraded ones may differ in case (a message the
    dataset capitalizes), so those are replaced by a word of the request. A call with a made-up
    value is not allowed."""
    records = [json.loads(line) for line in DATA.read_text().splitlines()][::12]
    assert len(records) >= 50
    for record in records:
        specs = to_tool_specs(record["tools"])
        request = request_text(record["messages"])
        grammar = CallGrammar.build(
            compiler, restrict_to_request(specs, request), "required", parallel=False
        )
        assert grammar is not None
        spec = next(s for s in specs if s.name == record["chosen"]["name"])
        args = dict(record["chosen"]["arguments"])
        free = [
            k
            for k, v in spec.parameters["properties"].items()
            if v.get("type") == "string" and "enum" not in v and k in args
        ]
        for key in free:
            if key not in record["graded_args"] and args[key] not in request:
                args[key] = request.split()[0]
        assert all(args[k] in request for k in free)
        gold = render_call(spec.name, args, spec.parameters)
        assert accepts(grammar, tokenizer, gold), (request, gold)
        if free:
            made_up = dict(args, **{free[0]: "zqxv placeholder"})
            assert not accepts(grammar, tokenizer, render_call(spec.name, made_up, spec.parameters))


def test_sampled_strings_are_spans(compiler: CallCompiler, tokenizer: Any) -> None:
    """A tiny random model samples under the restricted grammar: every call validates against
    the original schema and every free string it wrote is a span of the request."""
    model = random_llama(tokenizer, hidden_size=32, layers=2, max_positions=1024)
    spec = ToolSpec("search", "Search.", SCHEMA)
    request = "Find me a quiet café near St. Mary's Hospital, open late tonight."
    grammar = CallGrammar.build(
        compiler, restrict_to_request([spec], request), "required", parallel=False
    )
    assert grammar is not None
    pattern = spans(request)
    prompt = list(tokenizer.encode(request, add_special_tokens=False))
    bias = torch.zeros(VOCAB)  # favour closers and stop tokens: random outputs then end soon
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    bias[[i for i, t in enumerate(vocab) if t and any(c in t for c in '"}]')]] = 6.0
    bias[list(compiler.stop_token_ids)] = 12.0
    strings = 0
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        decoder = ConstrainedDecoder(grammar, 1)
        ids, out = list(prompt), []
        with torch.inference_mode():
            for _ in range(300):
                logits = model(torch.tensor([ids])).logits[0, -1].float() * 5.0 + bias
                logits = logits[None]
                decoder.mask_logits(logits)
                token = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=generator))
                decoder.accept([token])
                ids.append(token)
                out.append(token)
                if decoder.finished(0):
                    break
        assert decoder.finished(0), "generation did not finish"
        text = tokenizer.decode(out, skip_special_tokens=True)
        calls, invalid, _ = parse_calls(text, [spec])
        assert invalid == [] and len(calls) == 1
        args = calls[0].arguments
        assert validate_arguments(spec, args) is None
        values = [args.get("query"), *(args.get("tags") or [])]
        values += [(args.get("nested") or {}).get("name")]
        for value in values:
            if value is not None:
                strings += 1
                assert pattern.fullmatch(value), value
    assert strings >= 4
