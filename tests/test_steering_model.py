"""Steering on the real embedded default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest
import torch

from fints_agent.models import LoadedModel, load_model
from fints_agent.steering import contrastive_vectors, steer

pytestmark = pytest.mark.model

SYSTEM = (
    "You can call these tools: get_transit_directions(origin, destination) for public "
    "transport, and book_ride(pickup, dropoff) for a taxi. Answer with one tool call as JSON."
)
TRAIN = [
    "I need to get from the office to the airport.",
    "How do I get to the stadium from my hotel?",
    "Get me home from the train station.",
    "I have to be at the museum by noon, I'm at the library.",
    "Take me from the mall to the concert hall.",
]
HELD_OUT = [
    "I need to go from the park to the hospital.",
    "Get me from the university to the city center.",
    "How do I get from the beach to my apartment?",
]
PREFIX = '<tool_call>{"name": "'


def _prompt(lm: LoadedModel, request: str) -> str:
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": request}]
    return str(lm.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))


def _logodds(lm: LoadedModel, request: str) -> float:
    """log P(get_transit_directions) - log P(book_ride) as the call's name, teacher-forced."""
    scores = []
    for name in ("get_transit_directions", "book_ride"):
        prompt = lm.tokenizer(_prompt(lm, request) + PREFIX, add_special_tokens=False)["input_ids"]
        name_ids = lm.tokenizer(name + '"', add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + name_ids])
        with torch.inference_mode():
            logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].float(), -1)
        targets = ids[0, len(prompt) :]
        scores.append(float(logp[len(prompt) - 1 :].gather(1, targets[:, None]).sum()))
    return scores[0] - scores[1]


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    torch.manual_seed(0)
    return load_model()


def test_contrastive_vector_moves_tool_choice(lm: LoadedModel) -> None:
    prompts = [_prompt(lm, r) + PREFIX[: -len('{"name": "')] for r in TRAIN]
    chosen = ['{"name": "get_transit_directions", "arguments": {}}'] * len(TRAIN)
    rejected = [['{"name": "book_ride", "arguments": {}}']] * len(TRAIN)
    vectors = contrastive_vectors(lm, prompts, chosen, rejected, batch_size=5)
    mean = sum(vectors[1:], vectors[0]) / len(vectors)
    base = [_logodds(lm, r) for r in HELD_OUT]
    with steer(lm, mean, coefficients=2.0):
        up = [_logodds(lm, r) for r in HELD_OUT]
    with steer(lm, -mean, coefficients=2.0):
        down = [_logodds(lm, r) for r in HELD_OUT]
    for b, u, d in zip(base, up, down, strict=True):
        assert u > b + 1.0, (base, up)
        assert d < b - 1.0, (base, down)


def test_default_model_facts(lm: LoadedModel) -> None:
    assert lm.num_layers == 30 and lm.d_model == 576
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert load_model() is lm  # one shared copy per (name, dtype, device)
    # The shipped steering preset is keyed by this fingerprint (tests/test_config.py).
    assert lm.fingerprint == "4ec2bf9548155add"
