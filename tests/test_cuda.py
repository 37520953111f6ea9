"""On a CUDA device: steered, grammar-constrained turns give the same calls as on the CPU.

The steering hooks, the per-row gate, the grammar's token masks and canonical spelling all act on
device tensors there; these tests run the same random-weight model on both devices and compare.
They are skipped where no CUDA device is present (the test command's usual machine).

The tokenizer is the embedded model's (from its package), or a saved Hugging Face tokenizer
folder named by ``FINTS_TEST_TOKENIZER`` on machines without the package.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from tiny import SHORT, bounded_tool, has_smollm2_tokenizer, random_llama, smollm2_tokenizer

from fints_agent.calls import to_tool_specs
from fints_agent.config import Preset
from fints_agent.engine import TurnEngine
from fints_agent.models import LoadedModel, wrap_model
from fints_agent.steering import SteeringVector
from fints_agent.steering.capture import capture_answer_means
from fints_agent.turn import TurnRequest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def models() -> tuple[LoadedModel, LoadedModel]:
    """The same random-weight Llama, float32, on the CPU and on the GPU."""
    if not has_smollm2_tokenizer():
        pytest.skip("no tokenizer: install the embedded model or set FINTS_TEST_TOKENIZER")
    tok = smollm2_tokenizer()
    model = random_llama(tok, hidden_size=64, layers=4, max_positions=2048)
    cpu = wrap_model(model, tok, name="tiny-llama")
    gpu = wrap_model(copy.deepcopy(model).to("cuda"), tok, name="tiny-llama")
    assert gpu.device.type == "cuda" and cpu.fingerprint == gpu.fingerprint
    return cpu, gpu


TOOLS = to_tool_specs(
    [
        bounded_tool(
            "get_weather",
            {"city": SHORT, "units": {"enum": ["celsius", "fahrenheit"]}},
            ["city", "units"],
        ),
        bounded_tool(
            "book_ride", {"pickup": SHORT, "seats": {"type": "integer"}}, ["pickup", "seats"]
        ),
        bounded_tool("play_song", {"query": SHORT, "shuffle": {"type": "boolean"}}, ["query"]),
    ]
)
ASKS = ["Weather in Oslo?", "Get me a ride to the airport.", "Play some jazz.", "Hello."]


@dataclass
class _Retrieval:
    vector: SteeringVector | None
    trajectory_ids: list[str] = field(default_factory=lambda: ["t1"])
    weights: list[float] = field(default_factory=lambda: [1.0])
    similarities: list[float] = field(default_factory=lambda: [1.0])
    examples: list[tuple[list[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)


class _FixedMemory:
    """Gives every user one fixed vector: the engine's steering, not retrieval, is under test."""

    def __init__(self, vector: SteeringVector) -> None:
        self.vector = vector

    def retrieve(
        self,
        user_id: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        **_: Any,
    ) -> _Retrieval:
        return _Retrieval(self.vector)


def _vector(lm: LoadedModel, seed: int = 1) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    layers = tuple(range(lm.num_layers))
    t = 2.0 * torch.randn(len(layers), 2, lm.d_model, generator=g)
    return SteeringVector(t, layers, ("attn", "mlp"), lm.fingerprint)


def _requests(steered: bool) -> list[TurnRequest]:
    return [
        TurnRequest(
            messages=[{"role": "user", "content": ask}],
            tools=TOOLS,
            tool_choice="any",
            user_id="u1" if steered else None,
            max_new_tokens=48,
        )
        for ask in ASKS
    ]


def _engine(lm: LoadedModel, **config: Any) -> TurnEngine:
    preset = Preset().replace(coefficient=4.0, **config)
    return TurnEngine(lm, _FixedMemory(_vector(lm)), preset)  # type: ignore[arg-type]


def _calls(results: Sequence[Any]) -> list[list[tuple[str, Any]]]:
    return [[(c.name, c.arguments) for c in r.calls] for r in results]


@pytest.mark.parametrize(
    "config",
    [
        {"gate": "choices"},
        {"gate": "all"},
        {"gate": "decisions", "canonical_choices": True},
    ],
    ids=["choices", "all", "decisions+canonical"],
)
def test_steered_turns_on_cuda_match_the_cpu(
    models: tuple[LoadedModel, LoadedModel], config: dict[str, Any]
) -> None:
    cpu, gpu = models
    for steered in (False, True):
        on_cpu = [_engine(cpu, **config).complete(r) for r in _requests(steered)]
        on_gpu = [_engine(gpu, **config).complete(r) for r in _requests(steered)]
        assert [r.text for r in on_gpu] == [r.text for r in on_cpu], (steered, config)
        assert all(r.calls and not r.invalid_calls for r in on_gpu)
        assert all(r.steering["steered"] is steered for r in on_gpu)


def test_steering_changes_the_cuda_calls(models: tuple[LoadedModel, LoadedModel]) -> None:
    """The check above cannot pass by steering doing nothing on the device."""
    _, gpu = models
    plain = [_engine(gpu, gate="all").complete(r) for r in _requests(False)]
    steered = [_engine(gpu, gate="all").complete(r) for r in _requests(True)]
    assert [r.text for r in plain] != [r.text for r in steered]


def test_cuda_batch_matches_single_turns(models: tuple[LoadedModel, LoadedModel]) -> None:
    """Rows of one padded batch on the device: steered and unsteered, each its own grammar."""
    _, gpu = models
    engine = _engine(gpu, gate="decisions", canonical_choices=True)
    requests = [r for pair in zip(_requests(True), _requests(False), strict=True) for r in pair]
    requests[1].tools = TOOLS[:1]
    # Every row of a batch feeds its grammar-forced tokens in one pass (jump-forward), as a
    # single turn does: a batch row gives the text of its turn run alone.
    alone = [engine.complete(r) for r in requests]
    together = engine.complete_batch(requests)
    assert [r.text for r in together] == [r.text for r in alone]
    assert _calls(together) == _calls(alone)


def test_captured_activations_on_cuda_match_the_cpu(
    models: tuple[LoadedModel, LoadedModel],
) -> None:
    cpu, gpu = models
    prompts = ["<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n"] * 2
    answers = ['{"name": "get_weather"}', '{"name": "book_ride"}']
    a = capture_answer_means(cpu, prompts, answers)
    b = capture_answer_means(gpu, prompts, answers)
    assert b.device.type == "cpu"  # vectors leave the device for the store
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
