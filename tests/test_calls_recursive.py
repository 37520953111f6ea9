"""Recursive tool schemas: refused when no call could be complete, bounded when one can.

A schema whose required property refers back to the schema (``{"me": {"$ref": "#"}}``) has no
finite valid value; the grammar's jump-forward string then grows without end (an unchecked
grammar took 13 GB in 35 s). The end-to-end check runs in a subprocess under an address-space
cap, so a regression fails the test instead of exhausting the host's memory.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tiny import has_smollm2_tokenizer, smollm2_tokenizer_or_skip

from fints_agent.calls import (
    MAX_INSTANCE_CHARS,
    CallGrammar,
    ConstrainedDecoder,
    ToolSchemaError,
    check_instance_size,
    example_value,
    get_compiler,
    smallest_instance_chars,
    to_tool_specs,
    validate_arguments,
)

TESTS = Path(__file__).resolve().parent
LOOP = {"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}
TREE = {
    "type": "object",
    "properties": {
        "value": {"type": "integer", "minimum": 0, "maximum": 9},
        "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2},
    },
    "required": ["value", "children"],
    "additionalProperties": False,
}
HEADROOM_BYTES = 2 << 30
"""The subprocess's address space may grow this much past what its imports and model take
(the unchecked grammar took 13 GB)."""

SCRIPT = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from tiny import has_smollm2_tokenizer, random_llama, smollm2_tokenizer, tiny_lm
from fints_agent.models import wrap_model
from fints_agent.calls import CallGrammar, ToolSchemaError, ToolSpec, get_compiler, to_tool_specs
from fints_agent.chat_model import FintsChatModel
from fints_agent.engine import TurnEngine
from fints_agent.turn import TurnRequest

LOOP = json.loads(sys.argv[3])
TREE = json.loads(sys.argv[4])
smol = has_smollm2_tokenizer()  # the tiny word vocabulary cannot spell a call
if smol:
    tokenizer = smollm2_tokenizer()
    model = random_llama(tokenizer, hidden_size=32, layers=2, max_positions=1024)
    lm = wrap_model(model, tokenizer, name="tiny-smol")
else:
    lm = tiny_lm()
engine = TurnEngine(lm)
compiler = get_compiler(lm.tokenizer, lm.model.config.vocab_size)
messages = [{"role": "user", "content": "hello"}]
tool = {"type": "function", "function": {"name": "loop", "description": "x", "parameters": LOOP}}
# The cap counts from what the imports and the model take (it differs between torch builds).
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
cap = size + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def attempt(label, run):
    start = time.monotonic()
    try:
        outcome = {"result": run()}
    except ToolSchemaError as exc:
        outcome = {"schema_error": str(exc)}
    except BaseException as exc:  # MemoryError, std::bad_alloc: the regression
        outcome = {"other_error": f"{type(exc).__name__}: {exc}"[:300]}
    outcome.update(step=label, seconds=round(time.monotonic() - start, 2))
    print(json.dumps(outcome), flush=True)


attempt("to_tool_specs", lambda: len(to_tool_specs([tool])))
attempt("bind_tools", lambda: type(FintsChatModel(model="unused").bind_tools([tool])).__name__)
attempt("grammar", lambda: CallGrammar.build(compiler, [ToolSpec("loop", "", LOOP)], "required")
        is not None)
attempt("json_schema", lambda: CallGrammar.for_json_schema(compiler, LOOP) is not None)
attempt("engine", lambda: engine.complete(TurnRequest(
    messages, tools=[ToolSpec("loop", "", LOOP)], tool_choice="required", max_new_tokens=48)
).text)


def tree_calls():
    tools = to_tool_specs([{"name": "tree", "parameters": TREE}])
    out = []
    for seed in range(3):
        request = TurnRequest(
            messages, tools=tools, tool_choice="required", max_new_tokens=96, temperature=1.0,
            seed=seed,
        )
        result = engine.complete(request)
        out.append({
            "calls": [[c.name, c.arguments] for c in result.calls],
            "invalid": [c.error for c in result.invalid_calls],
            "tokens": result.completion_tokens,
        })
    return out


if smol:
    attempt("engine_tree", tree_calls)
"""


def test_self_referencing_schema_is_refused_under_a_memory_cap() -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(HEADROOM_BYTES),
            str(TESTS),
            json.dumps(LOOP),
            json.dumps(TREE),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    elapsed = time.monotonic() - start
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            steps[data["step"]] = data
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in ("to_tool_specs", "bind_tools", "grammar", "json_schema", "engine"):
        outcome = steps[step]
        assert "schema_error" in outcome, outcome
        assert "no finite value" in outcome["schema_error"], outcome
        assert outcome["seconds"] < 10, outcome
    for step in ("to_tool_specs", "bind_tools", "grammar", "engine"):
        assert "'loop'" in steps[step]["schema_error"], steps[step]
    # A recursive schema with finite values works: every call is valid and within budget.
    if "engine_tree" not in steps:
        assert not has_smollm2_tokenizer()
        return
    tree = steps["engine_tree"]
    assert "result" in tree, tree
    spec = to_tool_specs([{"name": "tree", "parameters": TREE}])[0]
    for turn in tree["result"]:
        assert turn["tokens"] <= 96 and not turn["invalid"] and turn["calls"], tree
        for name, arguments in turn["calls"]:
            assert name == "tree" and validate_arguments(spec, arguments) is None
    assert elapsed < 120


# -- the analysis ------------------------------------------------------------------------------


def _chain(levels: int) -> dict[str, Any]:
    """Each level holds two of the level below: the smallest value doubles per level."""
    defs: dict[str, Any] = {"L0": {"type": "integer"}}
    for i in range(1, levels + 1):
        below = {"$ref": f"#/$defs/L{i - 1}"}
        defs[f"L{i}"] = {
            "type": "object",
            "properties": {"a": below, "b": below},
            "required": ["a", "b"],
        }
    return {
        "type": "object",
        "properties": {"x": {"$ref": f"#/$defs/L{levels}"}},
        "required": ["x"],
        "$defs": defs,
    }


def _chain_value(levels: int) -> str:
    """The smallest value of level ``levels`` of :func:`_chain`, as compact JSON."""
    value = "1"
    for _ in range(levels):
        value = '{"a":' + value + ',"b":' + value + "}"
    return value


MUTUAL = {
    "type": "object",
    "properties": {"a": {"$ref": "#/$defs/A"}},
    "required": ["a"],
    "$defs": {
        "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}, "required": ["b"]},
        "B": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "string", "minLength": 3}]},
    },
}


@pytest.mark.parametrize(
    ("schema", "size"),
    [
        (LOOP, math.inf),
        ({"type": "object", "properties": {"me": {"$ref": "#"}}}, 2),  # {}
        (TREE, len('{"value":1,"children":[]}')),
        ({"type": "object", "allOf": [{"$ref": "#"}]}, math.inf),
        (
            {"type": "object", "properties": {"n": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
             "required": ["n"]},
            len('{"n":null}'),
        ),
        (
            {"type": "object", "properties": {"me": {"$ref": "#"}}, "minProperties": 1,
             "additionalProperties": False},
            math.inf,
        ),
        (MUTUAL, len('{"a":{"b":"abc"}}')),
        (_chain(3), len('{"x":' + _chain_value(3) + "}")),
    ],
)  # fmt: skip
def test_smallest_instance(schema: dict[str, Any], size: float) -> None:
    assert smallest_instance_chars(schema) == size


def test_example_values_terminate_and_validate() -> None:
    for name, schema in [("tree", TREE), ("mutual", MUTUAL), ("chain", _chain(4))]:
        (spec,) = to_tool_specs([{"name": name, "parameters": schema}])
        value = example_value(schema)
        assert validate_arguments(spec, value) is None, (name, value)
    # A property of a larger schema: its references resolve against the whole.
    assert example_value(MUTUAL["properties"]["a"], "abc", root=MUTUAL) == {"b": "abc"}
    with pytest.raises(ToolSchemaError, match="no finite value"):
        example_value(LOOP)


def test_exponential_and_infinite_schemas_are_refused_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(ToolSchemaError, match=r"tool 'doubling'.*more than the limit"):
        to_tool_specs([{"name": "doubling", "parameters": _chain(200)}])
    with pytest.raises(ToolSchemaError, match=r"tool 'loop'.*no finite value"):
        to_tool_specs([{"name": "loop", "parameters": LOOP}])
    assert time.monotonic() - start < 5
    assert check_instance_size(_chain(10)) <= MAX_INSTANCE_CHARS
    with pytest.raises(ToolSchemaError, match="more than the limit of 1,000"):
        check_instance_size(_chain(10), limit=1000)


def test_forced_tokens_stay_within_the_limit() -> None:
    compiler = get_compiler(smollm2_tokenizer_or_skip(), 49152)
    words = " ".join(["hello world"] * 40)
    schema = {
        "type": "object",
        "properties": {"a": {"const": words}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    grammar = CallGrammar.for_json_schema(compiler, schema)
    decoder = ConstrainedDecoder(grammar, 1)
    everything = decoder.forced_tokens(0)
    assert len(everything) > 40
    assert decoder.forced_tokens(0, limit=5) == everything[:5]
    assert decoder.forced_tokens(0, limit=0) == []
    # A limit far below the forced text: only its start is tokenized, the same tokens.
    assert decoder.forced_tokens(0, limit=1) == everything[:1]
