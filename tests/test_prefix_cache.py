"""The prompt-prefix KV cache, and capture that shares prefixes, on tiny random models."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny import FAMILIES, generate_text, tiny_lm

from fints_agent.prefix_cache import PastBatch, PrefixCache, common_prefix
from fints_agent.steering import capture_answer_means, find_sites

SYSTEM = (
    "<|im_start|> system \n the weather tool get weather in oslo paris . the ride tool book a "
    "ride from home to the airport . the message tool send a message to dana or alex . "
    "<|im_end|> \n"
)
PROMPTS = [
    SYSTEM + "<|im_start|> user \n get me the weather in oslo <|im_end|> \n <|im_start|> assistant",
    SYSTEM + "<|im_start|> user \n send a message to dana <|im_end|> \n <|im_start|> assistant",
    SYSTEM + "<|im_start|> user \n book a ride to the airport <|im_end|> \n <|im_start|> assistant",
]


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _single_run_means(lm, prompt: str, answer: str, layers, offset=0) -> torch.Tensor:
    """The mean over answer tokens from one plain forward pass of the whole sequence."""
    found = find_sites(lm.model)
    p, a = _ids(lm, prompt), _ids(lm, answer)
    seen: dict = {}
    hooks = [
        found.module(layer, site).register_forward_hook(
            lambda _m, _i, o, key=(li, si): seen.__setitem__(
                key, o[0] if isinstance(o, tuple) else o
            )
        )
        for li, layer in enumerate(layers)
        for si, site in enumerate(("attn", "mlp"))
    ]
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([p + a]))
    for h in hooks:
        h.remove()
    out = torch.zeros(len(layers), 2, lm.d_model)
    for (li, si), o in seen.items():
        out[li, si] = o[0, len(p) + offset :].mean(0)
    return out


@pytest.fixture
def fresh_cache():
    """Each test gets the tiny models with empty prefix caches."""
    saved = {f: tiny_lm(f).prefix_cache for f in FAMILIES}
    for f in FAMILIES:
        tiny_lm(f).prefix_cache = PrefixCache()
    yield
    for f, cache in saved.items():
        tiny_lm(f).prefix_cache = cache


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_capture_equals_whole_sequences(family: str, fresh_cache) -> None:
    """Groups sharing their common prefix, prefixes from the cache, two calls: every mean
    equals the one from a plain forward pass over the whole sequence."""
    lm = tiny_lm(family)
    answers = [
        ["celsius today", "fahrenheit today", "celsius tomorrow"],
        ["sms now", "email now"],
        # Own tails of very different lengths run in separate passes.
        ["car", "bus to the airport from home please now to the office today and then " * 2],
    ]
    prompts = [p for p, group in zip(PROMPTS, answers, strict=True) for _ in group]
    flat = [a for group in answers for a in group]
    groups = [i for i, group in enumerate(answers) for _ in group]
    offsets = [0, 1, 0, 0, 1, 0, 1]
    for _ in range(2):  # the second call takes the prefix from the cache
        means = capture_answer_means(
            lm,
            prompts,
            flat,
            layers=[0, 2],
            batch_size=4,
            answer_offsets=offsets,
            groups=groups,
            prefixes=[SYSTEM] * len(flat),
        )
        for i, (p, a) in enumerate(zip(prompts, flat, strict=True)):
            expected = _single_run_means(lm, p, a, [0, 2], offsets[i])
            torch.testing.assert_close(means[i], expected, atol=1e-5, rtol=1e-4)
    stats = lm.prefix_cache.stats()
    if lm.prefix_cache.usable(lm):
        assert stats["entries"] == 1 and stats["hits"] >= 1 and stats["misses"] == 1
    # Prompts with a worked example between the prefix and the request share it too.
    shown = [SYSTEM.replace("<|im_end|>", f"{x} <|im_end|>") for x in ("yes", "no")]
    shown = [s + PROMPTS[0][len(SYSTEM) :] for s in shown]
    means = capture_answer_means(
        lm, shown, ["celsius", "celsius"], layers=[1], groups=[0, 0], prefixes=[SYSTEM] * 2
    )
    for i in range(2):
        torch.testing.assert_close(
            means[i], _single_run_means(lm, shown[i], "celsius", [1]), atol=1e-5, rtol=1e-4
        )


def test_cache_off_gives_the_same_means(fresh_cache) -> None:
    lm = tiny_lm("llama")
    args = ([PROMPTS[0]] * 2, ["celsius", "fahrenheit"])
    on = capture_answer_means(lm, *args, groups=[0, 0], prefixes=[SYSTEM] * 2)
    lm.prefix_cache = PrefixCache(max_bytes=0)
    off = capture_answer_means(lm, *args, groups=[0, 0], prefixes=[SYSTEM] * 2)
    assert lm.prefix_cache.stats()["entries"] == 0
    torch.testing.assert_close(on, off, atol=1e-5, rtol=1e-4)


def test_capture_rejects_bad_per_pair_lists() -> None:
    lm = tiny_lm("llama")
    with pytest.raises(ValueError, match="groups"):
        capture_answer_means(lm, [PROMPTS[0]], ["celsius"], groups=[0, 1])
    with pytest.raises(ValueError, match="prefixes"):
        capture_answer_means(lm, [PROMPTS[0]], ["celsius"], prefixes=[])


def _kv(n: int, fill: float = 0.0) -> tuple:
    return ((torch.full((1, 2, n, 4), fill), torch.full((1, 2, n, 4), fill)),)


def test_prefix_cache_keys_bounds_and_longer_entries() -> None:
    cache = PrefixCache(max_bytes=2 * 2 * 8 * 4 * 4 * 2)  # two 8-token entries of this shape
    assert cache.get([1, 2, 3]) is None
    cache.put([1, 2, 3, 4, 5, 6, 7, 8], _kv(8, 1.0))
    cut = cache.get([1, 2, 3])
    assert cut is not None and cut[0][0].shape[2] == 3  # a longer entry serves its prefixes
    assert cache.get([1, 2, 4]) is None
    cache.put([1, 2, 3, 4, 5, 6, 7, 8, 9], _kv(9, 2.0))  # too big with the other: evicts it
    assert (
        cache.stats()["entries"] == 1 and cache.stats()["evictions"] == 0
    )  # replaced, not evicted
    cache.put([5] * 8, _kv(8))
    assert cache.stats()["entries"] == 1 and cache.stats()["evictions"] == 1
    assert cache.get([1, 2, 3]) is None and cache.get([5] * 8) is not None
    cache.put(list(range(100)), _kv(100))  # larger than the whole bound: not kept
    assert cache.get(list(range(100))) is None
    assert cache.stats()["bytes"] <= cache.max_bytes
    cache.clear()
    assert cache.stats()["entries"] == 0
    with pytest.raises(ValueError):
        PrefixCache(max_bytes=-1)
    assert not PrefixCache(max_bytes=0).enabled


def test_prefill_is_safe_under_concurrent_users(fresh_cache) -> None:
    """Threads asking for the same and different prefixes get what a lone call gets."""
    lm = tiny_lm("llama")
    prefixes = [_ids(lm, p)[:40] for p in PROMPTS] + [_ids(lm, SYSTEM)]
    alone = [PrefixCache().prefill(lm, [p])[0] for p in prefixes]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = lm.prefix_cache.prefill(lm, [prefixes[i % 4], prefixes[(i + 1) % 4]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (a, b) in results.items():
        for got, want in ((a, alone[i % 4]), (b, alone[(i + 1) % 4])):
            assert got is not None and want is not None
            for (k1, v1), (k2, v2) in zip(got, want, strict=True):
                torch.testing.assert_close(k1, k2)
                torch.testing.assert_close(v1, v2)


def test_past_batch_right_aligns_prefixes(fresh_cache) -> None:
    lm = tiny_lm("llama")
    a, b = _ids(lm, PROMPTS[0])[:30], _ids(lm, PROMPTS[1])[:20]
    kvs = lm.prefix_cache.prefill(lm, [a, b, []])
    assert kvs[2] is None
    past = PastBatch.of(lm, kvs)
    assert past.lengths == [30, 20, 0]
    assert past.mask.sum(1).tolist() == [30, 20, 0] and past.mask[1, :10].sum() == 0
    assert common_prefix(a, b) == common_prefix(b, a)


@pytest.mark.parametrize("steer_prompt", [False, True])
def test_decode_from_cached_prefixes_equals_whole_prompts(steer_prompt: bool, fresh_cache) -> None:
    """Rows continued from cached prefixes (one of them steered) generate what whole prompts
    do; with ``steer_prompt`` the steered row encodes its whole prompt."""
    from fints_agent.decoding import DecodeStats, Steering
    from fints_agent.steering import SteeringVector

    lm = tiny_lm("llama")
    g = torch.Generator().manual_seed(3)
    vector = SteeringVector(
        torch.randn(3, 2, lm.d_model, generator=g), (0, 1, 2), ("attn", "mlp"), lm.fingerprint
    )
    kwargs = dict(
        max_new_tokens=12,
        stop_at_eos=False,
        steering=Steering([None, vector, None], 0.5, steer_prompt),
    )
    whole = generate_text(lm, PROMPTS, **kwargs)
    for _ in range(2):
        stats = DecodeStats()
        cached = generate_text(lm, PROMPTS, prefixes=[SYSTEM] * 3, stats=stats, **kwargs)
        assert cached == whole
        n = len(_ids(lm, SYSTEM))
        assert stats.cached_tokens == [n, 0 if steer_prompt else n, n]
    assert generate_text(lm, PROMPTS[:1], prefixes=[SYSTEM], max_new_tokens=12) == (
        generate_text(lm, PROMPTS[:1], max_new_tokens=12)
    )
    with pytest.raises(ValueError, match="prefixes"):
        generate_text(lm, PROMPTS, prefixes=[SYSTEM])
