"""Decoding strategies: filters, beam search against brute force, cache vs recompute, sampling seeds.

Two kinds of model: a hand-made Markov "language model" (next-token logits depend only on the image
and the last token), small enough to enumerate every output, and a tiny random ReportGenerator
(ResEnc encoder [4, 8, 16, 16] on (16, 32, 32) inputs -> 32 visual tokens, 3-layer decoder, vocab 40).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import Tensor, nn

from uvlm.models.decoder import DecoderConfig
from uvlm.models.decoding import (
    DecodingConfig,
    banned_ngram_mask,
    beam_search,
    filter_top_k,
    filter_top_p,
    greedy_or_sample,
)
from uvlm.models.injection import InjectionConfig
from uvlm.models.report_model import ReportGenerator, ReportModelConfig

torch.set_num_threads(1)

FEATURES = [4, 8, 16, 16]
SHAPE = (16, 32, 32)


def tiny_generator(seed: int = 3) -> ReportGenerator:
    torch.manual_seed(seed)
    enc = ResidualEncoderUNet(
        input_channels=1, n_stages=4, features_per_stage=FEATURES, conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 1, 1, 1], num_classes=2, n_conv_per_stage_decoder=1,
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True, "eps": 1e-5},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    ).encoder
    cfg = ReportModelConfig(
        decoder=DecoderConfig(vocab_size=40, dim=32, n_layers=3, n_heads=4, max_seq_len=64),
        injection=InjectionConfig(stage_channels=FEATURES, lm_dim=32), n_visual_tokens=2 * 4 * 4,
    )
    model = ReportGenerator(cfg, enc).eval()
    with torch.no_grad():  # GPT init repeats one token; larger weights give varied, eos-ending output
        g = torch.Generator().manual_seed(seed + 3)
        for name, p in model.named_parameters():
            if not name.startswith("encoder"):
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def images(b: int = 2, seed: int = 1) -> Tensor:
    return torch.randn(b, 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


def seq_logprob(model: ReportGenerator, image: Tensor, ids: list[int], max_new_tokens: int) -> float:
    """Summed log-probability of ids (+ eos if it stopped early) by one full forward pass."""
    c = model.config
    full = torch.tensor([[c.bos_id, *ids, *([c.eos_id] if len(ids) < max_new_tokens else [])]])
    with torch.no_grad():
        logits = model(image[None], full, attention_mask=torch.ones_like(full))  # (1, T, V)
    logp = torch.log_softmax(logits[0, :-1].double(), -1)
    return float(logp.gather(1, full[0, 1:, None]).sum())


# ----------------------------------------------------------------------------- hand-made Markov model
class Markov:
    """Logits table[image, last token] (B, V, V); ``first[image]`` (B, V) follows bos."""

    def __init__(self, first: Tensor, table: Tensor, rows_per_image: int = 1) -> None:
        self.first, self.table, self.k = first, table, rows_per_image
        self.image = torch.arange(first.shape[0]).repeat_interleave(rows_per_image)  # (R,)

    def first_logits(self) -> Tensor:
        return self.first[self.image]  # (R, V)

    def __call__(self, tokens: Tensor, parents: Tensor | None) -> Tensor:
        return self.table[self.image, tokens]  # the state is the last token only: parents don't matter


def brute_force_best(first: Tensor, table: Tensor, eos: int, max_len: int, alpha: float) -> list[int]:
    """Enumerate every output of one image: non-eos tokens then eos, or max_len non-eos tokens."""
    v = first.shape[0]
    lp_first, lp = torch.log_softmax(first.double(), -1), torch.log_softmax(table.double(), -1)
    best, best_score = None, float("-inf")
    for n in range(max_len + 1):
        for body in itertools.product([t for t in range(v) if t != eos], repeat=n):
            scored = list(body) if n == max_len else [*body, eos]
            s = float(lp_first[scored[0]]) + sum(float(lp[a, b]) for a, b in itertools.pairwise(scored))
            score = s / len(scored) ** alpha
            if score > best_score:
                best, best_score = list(body), score
    return best


def test_beam_search_is_exact_when_beams_cover_every_prefix() -> None:
    """V = 4, 4 tokens: at most 27 open prefixes x 4 extensions, so 128 beams prune nothing and
    beam search must return the brute-force optimum under every length penalty."""
    eos, v, t = 1, 4, 4
    g = torch.Generator().manual_seed(3)
    first, table = torch.randn(4, v, generator=g), torch.randn(4, v, v, generator=g)
    bests = set()
    for alpha in (0.0, 1.0, 3.0):
        cfg = DecodingConfig(strategy="beam", num_beams=128, max_new_tokens=t, length_penalty=alpha)
        lm = Markov(first, table, cfg.num_beams)
        got = beam_search(lm.first_logits(), lm, cfg, eos)
        want = [brute_force_best(first[i], table[i], eos, t, alpha) for i in range(4)]
        assert got == want
        bests.add(str(want))
    assert len(bests) == 3  # each length penalty changes some optimum, so all are really tested


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_eos_stops_one_row_others_continue(strategy: str) -> None:
    """Image 0: token 2 after bos, then eos almost surely. Image 1: never eos."""
    eos, v = 1, 6
    first = torch.zeros(2, v)
    first[0, 2] = 10.0
    table = torch.randn(2, v, v, generator=torch.Generator().manual_seed(0))
    table[0, :, eos] = 30.0
    table[1, :, eos] = -30.0
    first[1, eos] = -30.0
    cfg = DecodingConfig(strategy=strategy, max_new_tokens=7, num_beams=3)
    if strategy == "beam":
        lm = Markov(first, table, 3)
        out = beam_search(lm.first_logits(), lm, cfg, eos)
    else:
        lm = Markov(first, table)
        out = greedy_or_sample(lm.first_logits(), lm, cfg, eos, pad_id=0)
    assert out[0] == [2]
    assert len(out[1]) == 7 and eos not in out[1]


# ----------------------------------------------------------------------------- filters
def test_top_p_keeps_smallest_prefix_reaching_p() -> None:
    probs = torch.tensor([0.10, 0.40, 0.05, 0.30, 0.15])  # sorted: .40 .30 .15 .10 .05, cum .4 .7 .85 .95 1
    logits = probs.log()
    for p, kept in [(0.2, {1}), (0.5, {1, 3}), (0.8, {1, 3, 4}), (0.9, {0, 1, 3, 4}), (0.99, set(range(5))),
                    (1.0, set(range(5)))]:
        out = filter_top_p(logits[None], p)[0]
        assert set(torch.isfinite(out).nonzero().flatten().tolist()) == kept, p
        assert torch.equal(out[list(kept)], logits[list(kept)])  # survivors unchanged


def test_top_k_and_ngram_ban() -> None:
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0], [5.0, 0.0, 1.0, 2.0]])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [[False, True, False, True], [True, False, False, True]]
    hist = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4]])
    assert banned_ngram_mask(hist, 3, 6).nonzero().tolist() == [[0, 3], [1, 4]]  # (1, 2) -> 3; (4, 4) -> 4
    assert banned_ngram_mask(hist, 1, 6)[0].nonzero().flatten().tolist() == [1, 2, 3]
    assert not banned_ngram_mask(hist[:, :2], 3, 6).any()


def test_config_validation_and_length_override() -> None:
    for bad in ({"strategy": "nucleus"}, {"num_beams": 0}, {"top_p": 0.0}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            DecodingConfig(**bad)
    model = tiny_generator()
    imgs = images()
    for strategy in ("greedy", "sample", "beam"):
        cfg = DecodingConfig(strategy=strategy, max_new_tokens=3, num_beams=2)
        assert all(len(r) <= 3 for r in model.generate(imgs, decoding=cfg))
        assert all(len(r) <= 1 for r in model.generate(imgs, 1, decoding=cfg))  # argument wins
        assert model.generate(imgs, 0, decoding=cfg) == [[], []]


# ----------------------------------------------------------------------------- real tiny model
def test_beam_cache_matches_full_recompute_and_single_images() -> None:
    model = tiny_generator()
    imgs = images(3)
    cfg = DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=10)
    cached = model.generate(imgs, use_cache=True, decoding=cfg)
    assert cached == model.generate(imgs, use_cache=False, decoding=cfg)
    assert cached == [model.generate(imgs[i:i + 1], decoding=cfg)[0] for i in range(3)]
    assert len({tuple(r) for r in cached}) == 3 and all(len(r) <= 10 for r in cached)


def test_one_beam_is_greedy() -> None:
    model = tiny_generator(seed=2)
    imgs = images(3)
    greedy = model.generate(imgs, 12)
    for use_cache in (True, False):
        cfg = DecodingConfig(strategy="beam", num_beams=1, max_new_tokens=12, length_penalty=1.0)
        assert model.generate(imgs, use_cache=use_cache, decoding=cfg) == greedy


def test_beam_log_probability_at_least_greedy() -> None:
    """Not a theorem for beam search, but on these random models it must hold, and it fails if the
    scores, the reordering or the hypothesis bookkeeping are wrong. length_penalty=0: raw sums."""
    n_new, better = 10, 0
    for seed in (0, 1, 5):  # seed 5: beam search prefers stopping at once over greedy's 10 tokens
        model = tiny_generator(seed)
        imgs = images(2, seed=seed + 10)
        greedy = model.generate(imgs, n_new)
        beam = model.generate(imgs, decoding=DecodingConfig("beam", n_new, num_beams=4, length_penalty=0.0))
        for i in range(2):
            g, b = (seq_logprob(model, imgs[i], ids, n_new) for ids in (greedy[i], beam[i]))
            assert b >= g - 1e-4, (seed, i, g, b)
            better += b > g + 1e-4
    assert better > 0  # beam search found something greedy missed at least once


def test_top_k_one_sampling_is_greedy() -> None:
    model = tiny_generator(seed=1)
    imgs = images(3)
    cfg = DecodingConfig(strategy="sample", max_new_tokens=12, top_k=1, temperature=2.0, seed=5)
    assert model.generate(imgs, decoding=cfg) == model.generate(imgs, 12)


def test_sampling_reproducible_per_seed() -> None:
    model = tiny_generator()
    imgs = images(2)
    cfg = DecodingConfig(strategy="sample", max_new_tokens=12, temperature=3.0, top_p=0.95, seed=7)
    a = model.generate(imgs, decoding=cfg)
    assert a == model.generate(imgs, decoding=cfg)
    assert a == model.generate(imgs, use_cache=False, decoding=cfg)
    other = DecodingConfig(strategy="sample", max_new_tokens=12, temperature=3.0, top_p=0.95, seed=8)
    assert a != model.generate(imgs, decoding=other)
    assert a != model.generate(imgs, 12)  # not greedy in disguise


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_no_repeat_ngram(strategy: str) -> None:
    model = tiny_generator()
    cfg = DecodingConfig(strategy=strategy, max_new_tokens=20, num_beams=2, no_repeat_ngram_size=2)
    out = model.generate(images(2), decoding=cfg)
    for row in out:
        grams = list(itertools.pairwise(row))
        assert len(grams) == len(set(grams))
    plain = model.generate(images(2), decoding=DecodingConfig(strategy=strategy, max_new_tokens=20, num_beams=2))
    assert any(len(set(itertools.pairwise(r))) < len(r) - 1 for r in plain)  # the ban had work to do


def test_kv_cache_select_reorders_and_expands() -> None:
    model = tiny_generator()
    imgs = images(2)
    bos = torch.full((2, 1), model.config.bos_id)
    tok = torch.tensor([[7], [9], [11]])
    with torch.no_grad():
        _, cache = model.prefill(imgs, bos, max_len=model.n_vision_block + 2)
        cache.select(torch.tensor([1, 0, 1]))  # 2 rows -> 3 rows
        got = model.decode_step(tok, cache)
        _, ref = model.prefill(imgs[[1, 0, 1]], torch.full((3, 1), model.config.bos_id),
                               max_len=model.n_vision_block + 2)
        want = model.decode_step(tok, ref)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
