"""Model parts: hybrid mask, KV cache, multi-layer injection, alignment, Stage 2 head.

Tiny real ResEnc encoder: 4 stages [4, 8, 16, 16], input (1, 16, 32, 32) -> deepest 16 x 2x4x4 = 32 tokens.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from safetensors.torch import load_file, save_file
from torch import nn

from uvlm.models.cls_head import ClsHeadConfig, QueryClassificationHead, Stage2Classifier
from uvlm.models.decoder import Decoder, DecoderConfig, hybrid_attention_mask
from uvlm.models.injection import InjectionConfig, VisualInjector, align_to_reference
from uvlm.models.report_model import ReportGenerator, ReportModelConfig

torch.set_num_threads(1)

FEATURES = [4, 8, 16, 16]
SHAPE = (16, 32, 32)
N_VIS = 2 * 4 * 4


def tiny_encoder() -> nn.Module:
    net = ResidualEncoderUNet(
        input_channels=1, n_stages=4, features_per_stage=FEATURES, conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 1, 1, 1], num_classes=2, n_conv_per_stage_decoder=1,
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True, "eps": 1e-5},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    )
    return net.encoder


def tiny_generator(mapping: dict[int, int] | None = None, mode: str = "multi_layer", seed: int = 3,
                   freeze: bool = True, reference_stage: int = -1) -> ReportGenerator:
    torch.manual_seed(seed)
    n_vis = N_VIS if reference_stage == -1 else 4 * 8 * 8  # the deepest stage, or the next (-2)
    dec = DecoderConfig(vocab_size=40, dim=32, n_layers=3, n_heads=4, max_seq_len=n_vis + 32)
    inj = InjectionConfig(stage_channels=FEATURES, lm_dim=32, stage_to_layer=mapping, mode=mode,
                          reference_stage=reference_stage)
    cfg = ReportModelConfig(decoder=dec, injection=inj, n_visual_tokens=n_vis, freeze_encoder=freeze)
    model = ReportGenerator(cfg, tiny_encoder()).eval()
    with torch.no_grad():  # GPT init repeats the last token greedily; larger weights give varied output
        g = torch.Generator().manual_seed(seed + 3)
        for name, p in model.named_parameters():
            if not name.startswith("encoder"):
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 1, *SHAPE, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- hybrid mask
def test_hybrid_mask_exact() -> None:
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0, 0],  # vision_start: whole vision block, no text
            [1, 1, 1, 0, 0, 0],  # visual token
            [1, 1, 1, 0, 0, 0],  # vision_end
            [1, 1, 1, 1, 0, 0],  # bos
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    got = hybrid_attention_mask(3, 3)
    assert got.dtype == torch.bool
    assert torch.equal(got, expected)


# ----------------------------------------------------------------------------- alignment
def test_align_pools_larger_stage() -> None:
    feat = torch.randn(2, 5, 4, 8, 8)  # 256 tokens = 8 x reference
    got = align_to_reference(feat, (2, 4, 4))
    ref = F.adaptive_avg_pool3d(feat, (2, 4, 4)).reshape(2, 5, 32).permute(0, 2, 1)
    assert got.shape == (2, 32, 5)
    torch.testing.assert_close(got, ref)
    manual = feat.reshape(2, 5, 2, 2, 4, 2, 4, 2).mean(dim=(3, 5, 7)).reshape(2, 5, 32).permute(0, 2, 1)
    torch.testing.assert_close(got, manual)  # 2x2x2 block means, independently


def test_align_zero_pads_smaller_stage() -> None:
    feat = torch.randn(2, 5, 1, 2, 2)  # 4 tokens < 32
    got = align_to_reference(feat, (2, 4, 4))
    assert got.shape == (2, 32, 5)
    torch.testing.assert_close(got[:, :4], feat.reshape(2, 5, 4).permute(0, 2, 1))
    assert torch.count_nonzero(got[:, 4:]) == 0


def test_default_and_input_only_mappings() -> None:
    cfg = InjectionConfig(stage_channels=[32, 64, 128, 256, 320, 320], lm_dim=512)
    assert cfg.resolve(8) == {5: 0, 4: 1, 3: 2, 2: 3, 1: 4, 0: 5}
    assert cfg.resolve(3) == {5: 0, 4: 1, 3: 2}
    only = InjectionConfig(stage_channels=[32, 64, 128, 256, 320, 320], lm_dim=512, mode="input_only")
    assert only.resolve(8) == {}  # SC off: the visual tokens enter at the input only
    explicit = InjectionConfig(stage_channels=[4, 8, 16], lm_dim=8, stage_to_layer={-1: 0, 0: 1})
    assert explicit.resolve(2) == {2: 0, 0: 1}
    with pytest.raises(ValueError):
        explicit.resolve(1)


def test_injector_sums_stages_on_same_layer() -> None:
    torch.manual_seed(0)
    inj = VisualInjector(InjectionConfig(stage_channels=[4, 8], lm_dim=6, stage_to_layer={0: 1, 1: 1}), 2)
    skips = [torch.randn(1, 4, 4, 4, 4), torch.randn(1, 8, 2, 2, 2)]
    out = inj(skips)
    assert list(out.injected) == [1] and out.injected[1].shape == (1, 8, 6)
    deep = inj.proj["1"](align_to_reference(skips[1], (2, 2, 2)))
    expect = inj.proj["0"](align_to_reference(skips[0], (2, 2, 2))) + deep
    torch.testing.assert_close(out.injected[1], expect)
    torch.testing.assert_close(out.tokens, deep)  # the reference (deepest) stage's projection is the input


def test_stage_projection_is_norm_mlp_norm() -> None:
    """Each stage's projection: LayerNorm(C), Linear(C, 2d), GELU, Linear(2d, d), LayerNorm(d) (the
    authors' layout), checked against the same computation written out."""
    torch.manual_seed(0)
    inj = VisualInjector(InjectionConfig(stage_channels=[4, 8], lm_dim=6, mode="input_only"), 2)
    assert list(inj.proj) == ["1"] and inj.mapping == {}  # SC off: only the reference stage is projected
    x = torch.randn(3, 8, 8)  # (B, N, C)
    ln1, fc1, _, fc2, ln2 = inj.proj["1"]
    h = F.layer_norm(x, (8,), ln1.weight, ln1.bias, 1e-5)
    h = F.linear(F.gelu(F.linear(h, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    torch.testing.assert_close(inj.proj["1"](x), F.layer_norm(h, (6,), ln2.weight, ln2.bias, 1e-6))
    assert fc1.out_features == 12 and float(fc1.bias.detach().abs().sum()) == 0.0


# ----------------------------------------------------------------------------- injection
def _inputs_of(modules, run) -> list[torch.Tensor]:
    """What each module received (its first argument) while `run()` ran."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone())) for m in modules]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _block_inputs(dec: Decoder, run) -> list[torch.Tensor]:
    return _inputs_of(dec.blocks, run)


def _mlp_inputs(dec: Decoder, run) -> list[torch.Tensor]:
    """Per block, the residual stream entering the MLP's LayerNorm (after attention and injection)."""
    return _inputs_of([b.ln2 for b in dec.blocks], run)


def test_decoder_injection_after_attention_at_visual_positions_of_mapped_layers() -> None:
    torch.manual_seed(0)
    dec = Decoder(DecoderConfig(vocab_size=20, dim=16, n_layers=3, n_heads=2, max_seq_len=32)).eval()
    n_vis, n_text = 6, 4  # vision block = start, 4 visual, end
    x = torch.randn(2, n_vis + n_text, 16)
    mask = hybrid_attention_mask(n_vis, n_text)
    vis = slice(1, 5)
    add = torch.randn(2, 4, 16)
    base_in, inj_in = _block_inputs(dec, lambda: dec(x, mask)), _block_inputs(dec, lambda: dec(x, mask, {2: add}, vis))
    base_mid = _mlp_inputs(dec, lambda: dec(x, mask))
    inj_mid = _mlp_inputs(dec, lambda: dec(x, mask, {2: add}, vis))
    for i in range(3):  # nothing reaches a layer's input, not even layer 2's: it is added inside it
        assert torch.equal(inj_in[i], base_in[i])
    assert torch.equal(inj_mid[0], base_mid[0]) and torch.equal(inj_mid[1], base_mid[1])
    diff = inj_mid[2] - base_mid[2]  # after layer 2's attention, before its MLP: exactly the features
    torch.testing.assert_close(diff[:, vis], add)
    assert torch.count_nonzero(diff[:, :1]) == 0 and torch.count_nonzero(diff[:, 5:]) == 0  # markers, text


def test_generator_visual_tokens_and_injection_at_mapped_layers_only() -> None:
    model = tiny_generator(mapping={3: 0, 2: 2})  # layer 1 not mapped
    imgs = images()
    ids = torch.tensor([[2, 7, 8, 9], [2, 10, 11, 3]])
    visual = model.encode(imgs)
    assert sorted(visual.injected) == [0, 2] and visual.tokens.shape == (2, N_VIS, 32)
    skips = model.encoder(imgs)
    torch.testing.assert_close(visual.tokens, model.injector.proj["3"](skips[3].flatten(2).transpose(1, 2)))
    torch.testing.assert_close(visual.injected[0], visual.tokens)  # the deepest stage feeds layer 0 again
    seen = _block_inputs(model.decoder, lambda: model(imgs, ids))
    emb = model.decoder.tok_emb
    # layer 0 input: embeddings at markers and text, the projected reference stage at visual positions
    torch.testing.assert_close(seen[0][:, 0], emb.weight[model.config.vision_start_id].expand(2, -1))
    torch.testing.assert_close(seen[0][:, N_VIS + 1], emb.weight[model.config.vision_end_id].expand(2, -1))
    torch.testing.assert_close(seen[0][:, N_VIS + 2:], emb(ids))
    torch.testing.assert_close(seen[0][:, 1:N_VIS + 1], visual.tokens)
    # with layer 2's features zeroed, its residual stream before the MLP differs only at visual positions
    zero = {0: visual.injected[0], 2: torch.zeros_like(visual.injected[2])}
    x, mask = model._inputs(visual.tokens, ids, None)
    with_it = _mlp_inputs(model.decoder, lambda: model.decoder(x, mask, visual.injected, model.vis_slice))
    plain = _mlp_inputs(model.decoder, lambda: model.decoder(x, mask, zero, model.vis_slice))
    diff = with_it[2] - plain[2]
    torch.testing.assert_close(diff[:, 1:N_VIS + 1], visual.injected[2])
    assert torch.count_nonzero(diff[:, :1]) == 0 and torch.count_nonzero(diff[:, N_VIS + 1:]) == 0


def test_input_only_and_second_deepest_reference() -> None:
    """SC off: no layer receives anything, the stages shallower than the reference do not matter; a
    reference one stage shallower (the paper's 3072 tokens) gives that stage's voxels as tokens."""
    only = tiny_generator(mode="input_only")
    imgs, ids = images(), torch.tensor([[2, 7, 8, 9], [2, 10, 11, 3]])
    assert only.encode(imgs).injected == {} and list(only.injector.proj) == ["3"]
    big = tiny_generator(mode="input_only", reference_stage=-2)
    visual = big.encode(imgs)
    assert visual.tokens.shape == (2, 4 * 8 * 8, 32) and big.n_vision_block == 4 * 8 * 8 + 2
    assert big(imgs, ids).shape == (2, 4, 40)
    skips = big.encoder(imgs)
    torch.testing.assert_close(visual.tokens, big.injector.proj["2"](skips[2].flatten(2).transpose(1, 2)))


# ----------------------------------------------------------------------------- KV cache, generate
def test_generate_cache_matches_full_recompute() -> None:
    model = tiny_generator()
    imgs = images()
    a = model.generate(imgs, max_new_tokens=12, use_cache=True)
    b = model.generate(imgs, max_new_tokens=12, use_cache=False)
    assert a == b and all(len(r) == 12 for r in a) and a[0] != a[1]
    # EOS handling: declare EOS a token that row 0 emits first at step k >= 2 and row 1 not by then
    k = next(i for i in range(2, 12) if a[0][i] not in a[0][:i] and a[0][i] not in a[1][: i + 1])
    eos = a[0][k]
    model.config.eos_id = eos
    a2 = model.generate(imgs, max_new_tokens=12, use_cache=True)
    b2 = model.generate(imgs, max_new_tokens=12, use_cache=False)
    assert a2 == b2
    assert a2[0] == a[0][:k] and len(a2[0]) < len(a2[1])  # row 0 stops, row 1 goes on
    assert a2[1] == (a[1][: a[1].index(eos)] if eos in a[1] else a[1])


def test_cached_step_logits_equal_full_logits() -> None:
    model = tiny_generator()
    imgs = images()
    gen = model.generate(imgs, max_new_tokens=8)
    ids = torch.tensor([[model.config.bos_id, *g] for g in gen])  # (2, 9)
    with torch.no_grad():
        full = model(imgs, ids, attention_mask=torch.ones_like(ids))  # (2, 9, V)
        logits, cache = model.prefill(imgs, ids[:, :1], max_len=model.n_vision_block + ids.shape[1])
        steps = [logits[:, -1]]
        for t in range(1, ids.shape[1]):
            steps.append(model.decode_step(ids[:, t:t + 1], cache))
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == model.n_vision_block + ids.shape[1]


def test_loss_ignores_pad_and_freezes_encoder() -> None:
    model = tiny_generator().train()
    imgs = images()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 10, 3, 0, 0]])
    loss = model.loss(imgs, ids)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.injector.proj["3"][1].weight.grad is not None and model.injector.proj["3"][1].weight.grad.abs().sum() > 0
    assert not model.encoder.training
    # right padding does not change the real tokens' logits
    with torch.no_grad():
        padded = model(imgs[1:], ids[1:])[:, :3]
        short = model(imgs[1:], ids[1:, :3])
    torch.testing.assert_close(padded, short, atol=1e-5, rtol=1e-5)


def test_wrong_input_size_is_refused() -> None:
    model = tiny_generator()
    with pytest.raises(ValueError, match="n_visual_tokens"):
        model.encode(torch.randn(1, 1, 16, 16, 16))


def test_state_dict_saves_with_safetensors(tmp_path) -> None:
    """The tied LM head adds no aliased entry, so plain save_file works for the non-encoder part.
    (The dynamic_network_architectures encoder aliases its own conv/norm weights: see all_modules.)"""
    model = tiny_generator()
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    assert "decoder.tok_emb.weight" in own and not any("lm_head" in k for k in own)
    save_file(own, str(tmp_path / "model.safetensors"))
    again = tiny_generator(seed=1)
    again.encoder.load_state_dict(model.encoder.state_dict())
    missing, unexpected = again.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=False)
    assert not unexpected and all(k.startswith("encoder.") for k in missing)
    ids = torch.tensor([[2, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(again(images(1), ids), model(images(1), ids))


def test_config_round_trip() -> None:
    cfg = tiny_generator(mapping={3: 0, 2: 2}).config
    again = ReportModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


# ----------------------------------------------------------------------------- Stage 2 head
def test_cls_head_shape_and_gradients() -> None:
    torch.manual_seed(0)
    head = QueryClassificationHead(ClsHeadConfig(in_channels=16, num_classes=5))
    model = Stage2Classifier(tiny_encoder(), head)
    logits = model(images())
    assert logits.shape == (2, 5)
    F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert head.queries.grad is not None and head.queries.grad.abs().sum() > 0
    first_conv = next(p for p in model.encoder.parameters() if p.dim() == 5)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_parameter_table_matches_built_models() -> None:
    """The meta-device counts equal those of really built modules; embeddings are vocab x dim."""
    from uvlm.config import REPO_ROOT, load_config
    from uvlm.models.encoder import EncoderConfig, build_unet
    from uvlm.param_count import parameter_table

    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    df = parameter_table(cfg).set_index("part")["parameters"]
    unet = build_unet(EncoderConfig.from_config(cfg["encoder"]), num_classes=2)
    assert df["U-Net encoder (ResEnc)"] == sum(p.numel() for p in unet.encoder.parameters())
    dec = cfg["stage3"]["decoder"]
    emb = [k for k in df.index if k.startswith("token embeddings")][0]
    assert df[emb] == cfg["stage3"]["vocab_size"] * dec["dim"]
    parts = [k for k in df.index if k not in ("report decoder total (without encoder)",)]
    stage3 = df[[k for k in parts if k.startswith(("token", "decoder layers", "visual"))]].sum()
    assert df["report decoder total (without encoder)"] == stage3
