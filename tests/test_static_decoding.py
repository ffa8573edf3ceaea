"""Fixed-shape KV cache (uvlm.models.static_decoding): the same tokens as the dynamic cache and as full
recomputation, step logits equal to the dynamic step's, in-place beam reordering, reuse of its buffers
between calls, and the compiled step (inductor on the CPU; CUDA graphs only run in benchmarks/gpu_check.py).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from test_decoding import images, tiny_generator

from uvlm.models.decoder import KVCache
from uvlm.models.decoding import DecodingConfig
from uvlm.models.static_decoding import StaticKVCache, StaticStepper

torch.set_num_threads(1)


def run(model, imgs, strategy: str = "greedy", static: str = "none", use_cache: bool = True, n: int = 20,
        beams: int = 3) -> list[list[int]]:
    cfg = DecodingConfig(strategy, n, num_beams=beams, seed=5, static_cache=static)
    return model.generate(imgs, use_cache=use_cache, decoding=cfg)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_static_cache_gives_the_tokens_of_the_dynamic_cache_and_of_no_cache(strategy: str) -> None:
    model = tiny_generator()
    imgs = images(3)
    dynamic = run(model, imgs, strategy)
    assert run(model, imgs, strategy, "eager") == dynamic == run(model, imgs, strategy, use_cache=False)
    lengths = [len(r) for r in dynamic]
    assert len(set(map(tuple, dynamic))) == 3 and min(lengths) >= 1  # distinct, non-trivial rows
    if strategy == "greedy":
        assert min(lengths) < 20 == max(lengths)  # one row stops at eos while others run to the limit


def test_static_step_logits_and_cache_equal_the_dynamic_step() -> None:
    model = tiny_generator()
    imgs = images(2)
    nv, steps = model.n_vision_block, 7
    ids = torch.randint(6, 40, (2, steps), generator=torch.Generator().manual_seed(0))  # forced tokens
    with torch.no_grad():
        first, dyn = model.prefill(imgs, torch.full((2, 1), model.config.bos_id), max_len=nv + 1 + steps)
        _, pre = model.prefill(imgs, torch.full((2, 1), model.config.bos_id), max_len=nv + 1)
        stepper = StaticStepper(model.decoder, 2, nv + 1 + steps, imgs.device, torch.float32, compiled=False)
        for buf in (*stepper.cache.k, *stepper.cache.v):
            buf.fill_(float("nan"))  # stale contents must be overwritten or masked, never read
        stepper.cache.load(pre)
        for t in range(steps):
            want = model.decode_step(ids[:, t:t + 1], dyn)  # (2, V)
            got = stepper(ids[:, t:t + 1])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    c = stepper.cache
    assert c.length == dyn.length == nv + 1 + steps and int(c.pos) == c.length
    for layer in range(model.config.decoder.n_layers):
        torch.testing.assert_close(c.k[layer], dyn.k[layer], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(c.v[layer], dyn.v[layer], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="full"):
        stepper(ids[:, :1])


def test_key_mask_covers_the_filled_positions_and_the_one_written() -> None:
    cfg = tiny_generator().config.decoder
    cache = StaticKVCache(cfg, 2, 10, torch.device("cpu"), torch.float32)
    cache.length = 4
    cache.pos.fill_(4)
    assert cache.key_mask().flatten().tolist() == [True] * 5 + [False] * 5
    k = torch.randn(2, cfg.n_heads, 1, cfg.dim // cfg.n_heads)
    full_k, _ = cache.update(1, k, -k)
    assert full_k.shape == (2, cfg.n_heads, 10, cfg.dim // cfg.n_heads)
    torch.testing.assert_close(cache.k[1][:, :, 4:5], k)
    torch.testing.assert_close(cache.v[1][:, :, 4:5], -k)
    assert cache.k[1][:, :, 5:].abs().sum() == 0 and cache.k[0].abs().sum() == 0  # nothing else written


def test_select_and_load_expand_like_the_dynamic_cache() -> None:
    cfg = tiny_generator().config.decoder
    dev = torch.device("cpu")
    dyn = KVCache(cfg, 2, 6, dev, torch.float32)
    g = torch.Generator().manual_seed(1)
    for buf in (*dyn.k, *dyn.v):
        buf[:, :, :4] = torch.randn(buf[:, :, :4].shape, generator=g)
    dyn.length = 4
    expand = torch.tensor([0, 0, 1, 1, 1])  # 2 images -> 5 rows
    static = StaticKVCache(cfg, 5, 9, dev, torch.float32)
    static.load(dyn, expand)
    parents = torch.tensor([4, 0, 0, 2, 3])
    static.select(parents)
    for layer in range(cfg.n_layers):
        want = dyn.k[layer][:, :, :4][expand][parents]  # independent: plain fancy indexing
        torch.testing.assert_close(static.k[layer][:, :, :4], want)
        assert static.k[layer][:, :, 4:].abs().sum() == 0
    assert static.length == 4 and int(static.pos) == 4


def test_buffers_are_reused_between_calls_without_leaking() -> None:
    model = tiny_generator()
    long_imgs, other = images(3, seed=1), images(3, seed=7)
    first = run(model, long_imgs, static="eager")
    pool = model.__dict__["_static_steppers"]
    stepper = next(iter(pool.steppers.values()))
    second = run(model, other, static="eager")
    assert next(iter(pool.steppers.values())) is stepper and len(pool.steppers) == 1  # same shape: reused
    assert second == run(model, other) and first == run(model, long_imgs)
    assert second != first


def test_static_cache_config_and_argument_checks() -> None:
    with pytest.raises(ValueError, match="static_cache"):
        DecodingConfig(static_cache="graphs")
    model = tiny_generator()
    with pytest.raises(ValueError, match="use_cache"):
        run(model, images(1), static="eager", use_cache=False)
    assert run(model, images(1), static="eager", n=0) == [[]]


def _inductor_works() -> str | None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler for inductor's CPU code"
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as err:  # noqa: BLE001  # any failure means: cannot check the compiled path here
        return f"torch.compile fails here: {type(err).__name__}: {err}"
    return None


@pytest.mark.slow
def test_compiled_static_step_gives_the_same_tokens() -> None:
    """One compile (about 30 s on one CPU core): greedy on 3 images, sampling on 3 and beam search with
    3 beams on 1 image all have 3 rows and the same length, so they share one compiled graph."""
    reason = _inductor_works()
    if reason:
        pytest.skip(reason)
    from torch._dynamo.utils import counters

    model = tiny_generator()
    imgs = images(3)
    graphs_before = counters["stats"]["unique_graphs"]
    assert run(model, imgs, static="compile") == run(model, imgs)
    assert run(model, imgs, "sample", "compile") == run(model, imgs, "sample")
    assert run(model, imgs[:1], "beam", "compile") == run(model, imgs[:1], "beam")
    assert counters["stats"]["unique_graphs"] - graphs_before == 1  # no recompilation per step or per call
