"""Steering core on tiny random-config models of each supported family."""

from __future__ import annotations

import pytest
import torch
from tiny import FAMILIES, tiny_lm
from torch import nn

from fints_agent.models import wrap_model
from fints_agent.steering import (
    SiteLayout,
    SteeringVector,
    UnknownLayoutError,
    VectorMismatchError,
    capture_answer_means,
    contrastive_vectors,
    demonstration_vectors,
    find_sites,
    steer,
)

PROMPTS = ["get me the weather in oslo", "send a message to dana", "play a song"]
ANSWERS = ["celsius", "sms now", "music by bob please"]


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _random_vector(lm, layers, sites=("attn", "mlp"), seed=1) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(len(layers), len(sites), lm.d_model, generator=g)
    return SteeringVector(t, tuple(layers), tuple(sites), lm.fingerprint)


@pytest.mark.parametrize("family", FAMILIES)
def test_find_sites_every_family(family: str) -> None:
    lm = tiny_lm(family)
    sites = find_sites(lm.model)
    assert len(sites) == 3
    assert all(isinstance(m, nn.Module) for m in sites.attn + sites.mlp)
    assert sites.attn[0] is not sites.mlp[0]


def test_unknown_layout_names_model_class() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(UnknownLayoutError, match="Odd"):
        find_sites(Odd())


def test_explicit_layout_override() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = nn.Linear(4, 4)
            self.ffn = nn.Linear(4, 4)

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])

    found = find_sites(Odd(), SiteLayout("blocks", attn="mixer", mlp="ffn"))
    assert len(found) == 2 and found.module(1, "mlp") is found.layers[1].ffn
    with pytest.raises(UnknownLayoutError):
        find_sites(Odd(), SiteLayout("blocks", attn="nope", mlp="ffn"))


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_means_match_single_runs(family: str) -> None:
    """Batched capture (padded) equals the mean computed from an unbatched hooked run."""
    lm = tiny_lm(family)
    batched = capture_answer_means(lm, PROMPTS, ANSWERS, layers=[0, 2], batch_size=3)
    assert batched.shape == (3, 2, 2, lm.d_model)
    found = find_sites(lm.model)
    for i, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        ids = _ids(lm, p) + _ids(lm, a)
        start = len(_ids(lm, p))
        seen = {}
        hooks = [
            found.module(layer, site).register_forward_hook(
                lambda _m, _i, o, key=(li, si), seen=seen: seen.__setitem__(
                    key, o[0] if isinstance(o, tuple) else o
                )
            )
            for li, layer in enumerate([0, 2])
            for si, site in enumerate(("attn", "mlp"))
        ]
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([ids]))
        for h in hooks:
            h.remove()
        for (li, si), out in seen.items():
            expected = out[0, start:].mean(0)
            torch.testing.assert_close(batched[i, li, si], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_steered_forward_is_exact_shift(family: str) -> None:
    """At the first hooked site, steered output = unsteered output + c * vector, exactly."""
    lm = tiny_lm(family)
    found = find_sites(lm.model)
    ids = torch.tensor([_ids(lm, PROMPTS[0])])
    vec = _random_vector(lm, [1])
    for site in ("attn", "mlp"):
        seen: list[torch.Tensor] = []

        def grab(_m, _i, o, seen=seen):
            seen.append((o[0] if isinstance(o, tuple) else o).clone())

        # Registered after the steering hook, this hook sees the steered output.
        with torch.no_grad():
            h = found.module(1, site).register_forward_hook(grab)
            lm.model(input_ids=ids)
            h.remove()
            with steer(lm, vec, coefficients={(1, site): 2.5}):
                h = found.module(1, site).register_forward_hook(grab)
                lm.model(input_ids=ids)
                h.remove()
        si = vec.sites.index(site)
        expected_shift = 2.5 * vec.tensor[0, si]
        # Attention at layer 1 sees a changed residual only if layer 1 attn is after the hook.
        torch.testing.assert_close(
            seen[1] - seen[0], expected_shift.expand_as(seen[0]), atol=1e-5, rtol=1e-5
        )


def test_steering_changes_logits_and_hooks_are_removed() -> None:
    lm = tiny_lm("llama")
    ids = torch.tensor([_ids(lm, PROMPTS[1])])
    before = {id(m): len(m._forward_hooks) for m in lm.model.modules()}
    with torch.no_grad():
        base = lm.model(input_ids=ids).logits
        with steer(lm, _random_vector(lm, [0, 1, 2]), coefficients=3.0):
            steered = lm.model(input_ids=ids).logits
        after = lm.model(input_ids=ids).logits
    assert not torch.allclose(base, steered)
    assert torch.equal(base, after)
    assert before == {id(m): len(m._forward_hooks) for m in lm.model.modules()}


def test_hooks_removed_after_exception() -> None:
    lm = tiny_lm("qwen2")
    counts = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())
    with pytest.raises(RuntimeError, match="boom"), steer(lm, _random_vector(lm, [0, 2])):
        raise RuntimeError("boom")
    assert counts == sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules()
    )


def test_generated_tokens_only_and_generate() -> None:
    lm = tiny_lm("llama")
    ids = torch.tensor([_ids(lm, PROMPTS[0])])
    vec = _random_vector(lm, [0, 1, 2])
    with torch.no_grad():
        base = lm.model(input_ids=ids).logits
        with steer(lm, vec, coefficients=5.0, from_position=ids.shape[1]):
            prompt_only = lm.model(input_ids=ids).logits
        assert torch.equal(base, prompt_only)  # nothing at prompt positions is steered
        plain = lm.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        with steer(lm, vec, coefficients=5.0, from_position=ids.shape[1]) as h:
            gen = lm.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
            assert h.offset >= ids.shape[1] + 5
    assert torch.equal(plain[0, : ids.shape[1]], gen[0, : ids.shape[1]])
    assert not torch.equal(plain, gen)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_per_row_vectors_match_single_rows(family: str) -> None:
    lm = tiny_lm(family)
    tok = lm.tokenizer
    batch = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    # Left padding: absolute-position models (GPT-2) need positions that skip the pads.
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    vecs = [_random_vector(lm, [0, 1, 2], seed=s) for s in (1, 2)] + [None]
    with torch.no_grad(), steer(lm, vecs, coefficients=2.0):
        together = lm.model(**batch).logits[:, -1]
    for row, vec in enumerate(vecs):
        single = tok([PROMPTS[row]], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            if vec is None:
                alone = lm.model(**single).logits[:, -1]
            else:
                with steer(lm, vec, coefficients=2.0):
                    alone = lm.model(**single).logits[:, -1]
        torch.testing.assert_close(together[row], alone[0], atol=1e-4, rtol=1e-4)


def test_gate_switches_rows_off() -> None:
    lm = tiny_lm("llama")
    ids = torch.tensor([_ids(lm, PROMPTS[0])] * 2)
    with torch.no_grad():
        base = lm.model(input_ids=ids).logits
        with steer(lm, _random_vector(lm, [0, 1]), coefficients=3.0) as h:
            h.set_gate(torch.tensor([0.0, 1.0]))
            gated = lm.model(input_ids=ids).logits
    torch.testing.assert_close(gated[0], base[0])
    assert not torch.allclose(gated[1], base[1])


def test_channels_are_gated_separately() -> None:
    """A row of two channels steers with each channel's vector as far as its gate says."""
    lm = tiny_lm("llama")
    ids = torch.tensor([_ids(lm, PROMPTS[0])] * 2)
    a, b = _random_vector(lm, [0, 1], seed=1), _random_vector(lm, [0, 1], seed=2)

    def logits(vectors, gate=None):
        with torch.no_grad(), steer(lm, vectors, coefficients=2.0) as h:
            if gate is not None:
                h.set_gate(torch.tensor(gate))
            return lm.model(input_ids=ids).logits

    both = [(a, b), (a, b)]
    torch.testing.assert_close(logits(both, [[1.0, 0.0], [0.0, 1.0]])[0], logits(a)[0])
    torch.testing.assert_close(logits(both, [[1.0, 0.0], [0.0, 1.0]])[1], logits(b)[1])
    torch.testing.assert_close(
        logits(both, [[0.5, 0.5], [1.0, 1.0]])[0], logits((a + b) * 0.5)[0], atol=1e-5, rtol=1e-5
    )
    # Without a gate, or with one per row, the channels add up.
    torch.testing.assert_close(logits(both), logits(a + b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(both, [0.0, 1.0])[1], logits(a + b)[1], atol=1e-5, rtol=1e-5)
    # A bare vector next to channel rows is its first channel.
    torch.testing.assert_close(logits([a, (None, b)], [[1.0, 1.0], [1.0, 1.0]])[0], logits(a)[0])
    with steer(lm, both) as h, pytest.raises(ValueError, match="gate must have shape"):
        h.set_gate(torch.ones(2, 3))
    with pytest.raises(ValueError, match="channels"), steer(lm, [(a, b), (a, b, a)]):
        pass


def test_no_captured_tensor_changed_in_place() -> None:
    lm = tiny_lm("llama")
    found = find_sites(lm.model)
    kept: list[torch.Tensor] = []
    ids = torch.tensor([_ids(lm, PROMPTS[2])])
    with torch.no_grad(), steer(lm, _random_vector(lm, [1])):
        # A hook registered before steering keeps a reference to the raw output.
        h = found.module(1, "mlp").register_forward_hook(lambda _m, _i, o: kept.append(o))
        lm.model(input_ids=ids)
        h.remove()
    copy = kept[0].clone()
    with torch.no_grad():
        lm.model(input_ids=ids)
    assert torch.equal(kept[0], copy)


def test_contrastive_vector_is_chosen_minus_mean_rejected() -> None:
    lm = tiny_lm("llama")
    [vec] = contrastive_vectors(
        lm, [PROMPTS[0]], ["celsius"], [["fahrenheit", "today"]], layers=[0, 2]
    )
    means = capture_answer_means(
        lm, [PROMPTS[0]] * 3, ["celsius", "fahrenheit", "today"], layers=[0, 2]
    )
    torch.testing.assert_close(vec.tensor, means[0] - means[1:].mean(0))
    assert vec.layers == (0, 2) and vec.sites == ("attn", "mlp")


def test_capture_tails_leave_trailing_tokens_out() -> None:
    """``answer_offsets`` and ``answer_tails`` average exactly the tokens between them."""
    lm = tiny_lm("llama")
    answer = ANSWERS[2]
    n = len(_ids(lm, answer))
    assert n >= 4
    full = capture_answer_means(lm, [PROMPTS[2]], [answer], layers=[1])
    sliced = capture_answer_means(
        lm, [PROMPTS[2]], [answer], layers=[1], answer_offsets=[1], answer_tails=[2]
    )
    found = find_sites(lm.model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        found.module(1, site).register_forward_hook(
            lambda _m, _i, o, site=site: seen.__setitem__(site, o[0] if isinstance(o, tuple) else o)
        )
        for site in ("attn", "mlp")
    ]
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([_ids(lm, PROMPTS[2]) + _ids(lm, answer)]))
    for h in hooks:
        h.remove()
    start = len(_ids(lm, PROMPTS[2]))
    for si, site in enumerate(("attn", "mlp")):
        out = seen[site][0]
        torch.testing.assert_close(sliced[0, 0, si], out[start + 1 : start + n - 2].mean(0))
        torch.testing.assert_close(full[0, 0, si], out[start:].mean(0))
    # A tail covering the whole answer still keeps one token.
    one = capture_answer_means(lm, [PROMPTS[2]], [answer], layers=[1], answer_tails=[n + 5])
    torch.testing.assert_close(one[0, 0, 0], seen["attn"][0, start])
    with pytest.raises(ValueError, match="tails"):
        capture_answer_means(lm, [PROMPTS[2]], [answer], answer_tails=[0, 1])


def test_demonstration_vector_contrasts_the_deciding_position() -> None:
    """Chosen shown minus rejected shown, at the last token before the calls differ, averaged
    over the rejected calls (each with its own deciding position)."""
    lm = tiny_lm("llama")
    chosen = '{"name": "weather", "arguments": {"units": "celsius"}}'
    rejected = [
        '{"name": "weather", "arguments": {"units": "fahrenheit"}}',
        '{"name": "news", "arguments": {"units": "celsius"}}',
        '{"name": "weather", "arguments": {"units": "today"}}',  # the first one's position
    ]
    shown_c = "call weather celsius . weather in oslo ?"
    shown_r = [
        "call weather fahrenheit . weather in oslo ?",
        "call news . weather in oslo ?",
        "call weather today . weather in oslo ?",
    ]
    c_ids = _ids(lm, chosen)
    heads = [
        next(i for i, (a, b) in enumerate(zip(c_ids, _ids(lm, r), strict=False)) if a != b)
        for r in rejected
    ]
    assert heads[0] == heads[2] > heads[1] >= 1
    [vec] = demonstration_vectors(lm, [shown_c], [shown_r], [chosen], [rejected], layers=[0, 2])
    diffs = []
    for head, shown in zip(heads, shown_r, strict=True):
        means = capture_answer_means(
            lm,
            [shown_c, shown],
            [c_ids[:head]] * 2,
            layers=[0, 2],
            answer_offsets=[head - 1] * 2,
        )
        diffs.append(means[0] - means[1])
    torch.testing.assert_close(vec.tensor, sum(diffs) / 3)
    assert vec.metadata["kind"] == "demonstration" and vec.layers == (0, 2)
    # The same context on both sides contrasts nothing.
    [zero] = demonstration_vectors(lm, [shown_c], [[shown_c]], [chosen], [rejected[:1]])
    assert float(zero.tensor.abs().max()) == 0.0


def test_bad_demonstration_input() -> None:
    lm = tiny_lm("llama")
    with pytest.raises(ValueError, match="empty batch"):
        demonstration_vectors(lm, [], [], [], [])
    with pytest.raises(ValueError, match="rejected lists"):
        demonstration_vectors(lm, ["a"], [["b"]], ["c", "d"], [["e"]])
    with pytest.raises(ValueError, match="2 prompts for 1 rejected"):
        demonstration_vectors(lm, ["a"], [["b", "c"]], ["x y"], [["x z"]])
    # Calls differing at their first token leave no position that decides between them.
    first = _ids(lm, "apple pie")[0]
    other = next(t for t in range(5, 50) if t != first)
    with pytest.raises(ValueError, match="no position decides"):
        demonstration_vectors(lm, ["a"], [["b"]], ["apple pie"], [[[other, 7]]])  # type: ignore[list-item]


def test_vector_arithmetic_and_round_trip(tmp_path) -> None:
    lm = tiny_lm("llama")
    a, b = _random_vector(lm, [0, 1], seed=3), _random_vector(lm, [0, 1], seed=4)
    torch.testing.assert_close((a + b - b).tensor, a.tensor)
    torch.testing.assert_close((-a).tensor, -a.tensor)
    torch.testing.assert_close((2 * a / 4).tensor, a.tensor / 2)
    ws = SteeringVector.weighted_sum([a, b], [0.25, 0.75])
    torch.testing.assert_close(ws.tensor, 0.25 * a.tensor + 0.75 * b.tensor)
    path = tmp_path / "v.safetensors"
    a.like(a.tensor, note="x").save(path)
    loaded = SteeringVector.load(path)
    assert loaded == a and torch.equal(loaded.tensor, a.tensor)
    assert loaded.metadata["note"] == "x"
    assert SteeringVector.from_flat(a.flat(), a.header()) == a
    with pytest.raises(VectorMismatchError):
        _ = a + _random_vector(lm, [0, 2])
    (tmp_path / "junk").write_bytes(b"not a vector")
    with pytest.raises(ValueError, match="not a steering vector"):
        SteeringVector.load(tmp_path / "junk")


def test_mismatched_vectors_refused_before_generation() -> None:
    lm = tiny_lm("llama")
    other = tiny_lm("qwen2")
    calls = []
    h = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        wrong_model = _random_vector(other, [0])
        with pytest.raises(VectorMismatchError, match="not on this model"), steer(lm, wrong_model):
            pass
        wide = SteeringVector(torch.ones(1, 2, 48), (0,), ("attn", "mlp"), lm.fingerprint)
        with pytest.raises(VectorMismatchError, match="d_model"), steer(lm, wide):
            pass
        deep = SteeringVector(torch.ones(1, 2, 32), (7,), ("attn", "mlp"), lm.fingerprint)
        with pytest.raises(VectorMismatchError, match="layer 7"), steer(lm, deep):
            pass
    finally:
        h.remove()
    assert calls == []


def test_bad_capture_input() -> None:
    lm = tiny_lm("llama")
    with pytest.raises(ValueError, match="empty batch"):
        capture_answer_means(lm, [], [])
    with pytest.raises(ValueError, match="zero tokens"):
        capture_answer_means(lm, ["hello"], [""])
    with pytest.raises(IndexError, match="out of range"):
        capture_answer_means(lm, ["hello"], ["world"], layers=[3])
    with pytest.raises(ValueError, match="site"):
        capture_answer_means(lm, ["hello"], ["world"], sites=("resid",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no rejected"):
        contrastive_vectors(lm, ["hello"], ["world"], [[]])
    with pytest.raises(ValueError, match="no steering vectors"), steer(lm, []):
        pass
    with pytest.raises(ValueError, match="NaN"):
        SteeringVector(torch.full((1, 1, 32), float("nan")), (0,), ("mlp",), "x")


def test_wrap_model_fingerprint_differs_by_weights() -> None:
    assert tiny_lm("llama", 0).fingerprint != tiny_lm("llama", 1).fingerprint
    m = tiny_lm("llama", 0)
    assert wrap_model(m.model, m.tokenizer).fingerprint == m.fingerprint
