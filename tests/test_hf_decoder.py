"""HF causal-LM decoder (Qwen3 architecture) behind the ReportGenerator interface.

A tiny Qwen3 (vocab 300, width 64, 3 layers) is written to tmp_path with save_pretrained: config.json
plus random weights stand in for a pretrained folder; nothing is downloaded. Tiny real ResEnc encoder:
4 stages [4, 8, 16, 16], input (1, 16, 32, 32) -> deepest 2x4x4 = 32 visual tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from safetensors.torch import load_file, save_file
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from uvlm.models.hf_decoder import (  # noqa: E402
    HFDecoderConfig,
    HFReportGenerator,
    HFReportModelConfig,
    encode_text,
    load_hf_tokenizer,
    special_ids,
)
from uvlm.models.injection import InjectionConfig, VisualFeatures  # noqa: E402

torch.set_num_threads(1)
# peft 0.21 still calls the name transformers 5 deprecated; nothing to fix on our side
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

FEATURES = [4, 8, 16, 16]
SHAPE = (16, 32, 32)
N_VIS = 32
NV = N_VIS + 2  # vision block
BOS, EOS, PAD = 2, 3, 0
IDS = torch.tensor([[BOS, 7, 8, 9, 10, EOS], [BOS, 11, 12, EOS, PAD, PAD]])


def qwen_config() -> transformers.Qwen3Config:
    return transformers.Qwen3Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("qwen3")
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(qwen_config()).save_pretrained(d)
    return d


def tiny_encoder() -> nn.Module:
    return ResidualEncoderUNet(
        input_channels=1, n_stages=4, features_per_stage=FEATURES, conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 1, 1, 1], num_classes=2, n_conv_per_stage_decoder=1,
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True, "eps": 1e-5},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    ).encoder


def build(qwen_dir: Path, finetune: str = "lora", mapping: dict[int, int] | None = None, seed: int = 0,
          noise: float = 0.0, freeze: bool = True, ids: tuple[int, int, int] = (BOS, EOS, PAD),
          **decoder) -> HFReportGenerator:
    torch.manual_seed(seed)
    dec = HFDecoderConfig(str(qwen_dir), finetune=finetune, lora_r=4, lora_alpha=8, **decoder)
    cfg = HFReportModelConfig(decoder=dec, injection=InjectionConfig(FEATURES, 64, stage_to_layer=mapping),
                              n_visual_tokens=N_VIS, bos_id=ids[0], eos_id=ids[1], pad_id=ids[2],
                              freeze_encoder=freeze)
    model = HFReportGenerator(cfg, tiny_encoder())
    if noise:  # small random init repeats one token greedily; larger weights give varied output
        g = torch.Generator().manual_seed(seed + 3)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("encoder"):
                    p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * noise)
    return model


def images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 1, *SHAPE, generator=torch.Generator().manual_seed(1))


def one_step(model: HFReportGenerator) -> dict[str, torch.Tensor]:
    """One AdamW step on the trainable groups; returns the parameters from before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = model.trainable_parameter_groups()
    opt = torch.optim.AdamW([{"params": groups.lm}, {"params": groups.visual}], lr=1e-2)
    model.train()
    loss = model.loss(images(), IDS)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    return before


# ----------------------------------------------------------------------------- training
def test_lora_step_trains_adapters_and_wrapper_only(qwen_dir: Path) -> None:
    model = build(qwen_dir, "lora")
    lm_trainable = [n for n, p in model.lm.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    before = one_step(model)
    assert not model.encoder.training  # frozen encoder kept in eval mode by train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {n for n in before if "lora_B" in n} <= changed
    assert "vision_marks" in changed and any(n.startswith("injector") for n in changed)
    assert not any(n.startswith("encoder") for n in changed)
    assert not any(n.startswith("lm.") and "lora_" not in n for n in changed)  # base LM untouched


def test_full_finetune_step_changes_base_weights(qwen_dir: Path) -> None:
    model = build(qwen_dir, "full")
    assert all(p.requires_grad for p in model.lm.parameters())
    before = one_step(model)
    for name in ("lm.model.embed_tokens.weight", "lm.model.layers.0.self_attn.q_proj.weight",
                 "lm.model.layers.2.mlp.down_proj.weight"):
        assert not torch.equal(dict(model.named_parameters())[name], before[name])


def test_gradient_checkpointing_same_gradients(qwen_dir: Path) -> None:
    grads = []
    for ckpt in (False, True):
        model = build(qwen_dir, "full", noise=0.1, gradient_checkpointing=ckpt).train()
        model.loss(images(), IDS).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert float(grads[1]["injector.proj.2.1.weight"].abs().sum()) > 0  # injection at layer 1 is in the graph
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, msg=n)


def test_bfloat16_lm_trains(qwen_dir: Path) -> None:
    model = build(qwen_dir, "lora", dtype="bfloat16")
    assert model.causal_lm.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.vision_marks.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.injector.parameters())
    one_step(model)


# ----------------------------------------------------------------------------- hybrid mask
def final_hidden(model: HFReportGenerator, run) -> torch.Tensor:
    seen = []
    h = model.causal_lm.model.norm.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        run()
    finally:
        h.remove()
    return seen[0]


# Runs on other inputs (other tokens, another length) are different computations: the CPU kernels may
# block and sum them in another order, so float32 results agree to a few ulps (eps 1.2e-7), not bit for
# bit (1.7e-6 apart on an AMD EPYC). These are torch's float32 defaults; a mask that lets a position see
# what it must not (everything, text after it, or the text from the vision block) moves them by 0.4 to 3.
F32 = {"rtol": 1.3e-6, "atol": 1e-5}


@torch.no_grad()
def test_hybrid_mask_is_applied(qwen_dir: Path) -> None:
    model = build(qwen_dir, "lora", noise=0.5).eval()
    imgs = images()
    a = torch.tensor([[BOS, 7, 8, 9, 10, 11]] * 2)
    b = a.clone()
    b[:, 4] = 20
    la, lb = model(imgs, a), model(imgs, b)
    torch.testing.assert_close(la[:, :4], lb[:, :4], **F32)  # earlier text ignores later tokens
    assert not torch.allclose(la[:, 4:], lb[:, 4:])

    # visual states ignore the text entirely (other tokens, other length)
    ha = final_hidden(model, lambda: model(imgs, a))
    hc = final_hidden(model, lambda: model(imgs, torch.tensor([[BOS, 30, 31]] * 2)))
    torch.testing.assert_close(ha[:, :NV], hc[:, :NV], **F32)

    # bidirectional inside the vision block: the first visual token sees the last one (not causal)
    visual = model.encode(imgs)
    moved = VisualFeatures(visual.tokens.clone(), visual.injected)
    moved.tokens[:, -1] += 1.0
    hv = final_hidden(model, lambda: model._run(moved, a, None, keep=a.shape[1]))
    assert not torch.allclose(hv[:, :2], ha[:, :2])

    # text sees the visual block
    moved.tokens[:, 0] += 1.0
    assert not torch.allclose(model._run(moved, a, None, keep=a.shape[1]).logits, la)


@torch.no_grad()
def test_sdpa_and_eager_agree(qwen_dir: Path) -> None:
    sdpa = build(qwen_dir, "full", noise=0.5).eval()
    eager = build(qwen_dir, "full", noise=0.5, attn_implementation="eager").eval()
    torch.testing.assert_close(sdpa(images(), IDS), eager(images(), IDS), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- injection
def _streams(model: HFReportGenerator, visual: VisualFeatures) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: its input, and the residual stream entering its MLP norm (after attention + injection)."""
    ins: list[torch.Tensor] = []
    mids: list[torch.Tensor] = []
    hooks = []
    for lay in model.causal_lm.model.layers:
        hooks.append(lay.register_forward_pre_hook(
            lambda m, a, k: ins.append((a[0] if a else k["hidden_states"]).clone()), with_kwargs=True))
        hooks.append(lay.post_attention_layernorm.register_forward_pre_hook(
            lambda m, a: mids.append(a[0].clone())))
    try:
        model._run(visual, IDS, None, keep=1)
    finally:
        for h in hooks:
            h.remove()
    return ins, mids


@torch.no_grad()
def test_injection_after_attention_at_visual_positions_of_mapped_layers(qwen_dir: Path) -> None:
    model = build(qwen_dir, "lora", mapping={3: 0, 2: 2}, noise=0.5).eval()  # layer 1 not mapped
    visual = model.encode(images())
    assert sorted(visual.injected) == [0, 2]
    torch.testing.assert_close(visual.tokens, visual.injected[0])  # the deepest stage is the input and layer 0's
    ins, mids = _streams(model, visual)
    vis = model.vis_slice
    torch.testing.assert_close(ins[0][:, vis], visual.tokens)  # the visual tokens are the input, nothing added
    for layer, other in ((0, {2: visual.injected[2]}), (2, {0: visual.injected[0]})):
        ins_w, mids_w = _streams(model, VisualFeatures(visual.tokens, other))  # the same without this layer's
        assert all(torch.equal(a, b) for a, b in zip(ins_w[:layer + 1], ins[:layer + 1], strict=True))
        diff = mids[layer] - mids_w[layer]  # added after the layer's attention, before its MLP
        torch.testing.assert_close(diff[:, vis], visual.injected[layer], atol=1e-4, rtol=1e-4)  # (a + b) - a
        assert torch.count_nonzero(diff[:, :vis.start]) == 0 and torch.count_nonzero(diff[:, vis.stop:]) == 0


def test_injection_survives_gradient_checkpointing(qwen_dir: Path) -> None:
    """The backward pass recomputes checkpointed layers after the forward has returned: the injection
    must be added again there, or the gradients would silently differ."""
    grads = []
    for ckpt in (False, True):
        model = build(qwen_dir, "full", mapping={3: 0, 1: 1}, noise=0.1, gradient_checkpointing=ckpt).train()
        model.loss(images(), IDS).backward()
        grads.append(model.injector.proj["1"][1].weight.grad.clone())
    assert float(grads[0].abs().sum()) > 0
    torch.testing.assert_close(grads[1], grads[0])


# ----------------------------------------------------------------------------- generation
def test_generate_contract(qwen_dir: Path) -> None:
    model = build(qwen_dir, "lora", noise=0.5).eval()
    imgs = images()
    out = model.generate(imgs, 8)
    assert all(isinstance(t, int) for row in out for t in row) and all(len(r) <= 8 for r in out)
    assert all(EOS not in row for row in out)
    assert model.generate(imgs, 8, use_cache=False) == out
    assert [model.generate(imgs[i:i + 1], 8)[0] for i in range(2)] == out  # batched == single

    tok = out[0][-1]  # declare a token eos: every row is cut at its first occurrence
    model.config.eos_id = tok
    cut = [row[: row.index(tok)] if tok in row else row for row in out]
    assert model.generate(imgs, 8) == cut == model.generate(imgs, 8, use_cache=False)
    model.config.eos_id = EOS

    bias = torch.zeros(300)
    bias[EOS] = 1e4
    h = model.causal_lm.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        assert model.generate(imgs, 8) == [[], []]  # eos first: nothing, bos/eos never returned
    finally:
        h.remove()


# ----------------------------------------------------------------------------- saving
@pytest.mark.parametrize("finetune, scratch", [("lora", False), ("full", False), ("lora", True)])
def test_save_load_round_trip(qwen_dir: Path, tmp_path: Path, finetune: str, scratch: bool) -> None:
    model = build(qwen_dir, finetune, from_scratch=scratch)
    one_step(model)
    model.eval()
    with torch.no_grad():
        logits = model(images(), IDS)
    sd = model.state_dict_for_save()
    lm_keys = [k for k in sd if k.startswith("lm.")]
    if finetune == "lora" and not scratch:
        assert lm_keys and all("lora_" in k for k in lm_keys)  # base weights come from model_dir
    else:
        assert any("embed_tokens" in k for k in lm_keys) and not any("lm_head" in k for k in lm_keys)  # tied
    assert "vision_marks" in sd and any(k.startswith("encoder.") for k in sd)
    save_file(sd, str(tmp_path / "model.safetensors"))

    fresh = build(qwen_dir, finetune, seed=1, from_scratch=scratch).eval()
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    with torch.no_grad():
        assert torch.equal(fresh(images(), IDS), logits)
    with pytest.raises(RuntimeError, match="missing"):
        fresh.load_state_dict({k: v for k, v in sd.items() if k != "vision_marks"})


# ----------------------------------------------------------------------------- tokenizer, ids
def test_tokenizer_ids_and_pad_equal_to_eos(qwen_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate("abcdefgh")}}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    qwen_config().save_pretrained(tmp_path)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=wl, eos_token="<|endoftext|>")
    hf_tok.save_pretrained(tmp_path)
    tok = load_hf_tokenizer(tmp_path)
    ids = special_ids(tok)
    assert (ids.bos_id, ids.eos_id, ids.pad_id) == (0, 0, 0)  # no bos, no pad: both fall back to eos
    assert encode_text(tok, "a b c", ids) == [0, 2, 3, 4, 0]
    assert encode_text(tok, "a b c", ids, max_len=3) == [0, 2, 3]  # cut: no eos

    model = build(qwen_dir, "lora", noise=0.5, ids=(0, 0, 0)).eval()
    row = encode_text(tok, "a b c", ids)
    padded = torch.tensor([row + [0, 0]])
    assert model.real_tokens(padded).tolist() == [[True] * 5 + [False] * 2]  # eos stays a target
    with torch.no_grad():
        torch.testing.assert_close(model.loss(images(1), padded), model.loss(images(1), torch.tensor([row])))

    from uvlm.text.tokenizer import SPECIAL_TOKENS  # our BPE tokenizer's layout works too

    ours_vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, "a"])}
    ours = Tokenizer(models.WordLevel(ours_vocab, unk_token="<unk>"))
    ours.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe_ids = special_ids(ours)
    assert (bpe_ids.bos_id, bpe_ids.eos_id, bpe_ids.pad_id) == (2, 3, 0)
    assert encode_text(ours, "a a", bpe_ids) == [2, 6, 6, 3]


def test_config_errors_and_json_round_trip(qwen_dir: Path, tmp_path: Path) -> None:
    model = build(qwen_dir, "lora", mapping={-1: 0, 0: 2})
    cfg = HFReportModelConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    assert cfg == model.config
    with pytest.raises(FileNotFoundError):
        HFReportGenerator(HFReportModelConfig(HFDecoderConfig(str(tmp_path)), InjectionConfig(FEATURES, 64),
                                              N_VIS, BOS, EOS, PAD), tiny_encoder())
    with pytest.raises(ValueError, match="lm_dim"):
        HFReportGenerator(HFReportModelConfig(HFDecoderConfig(str(qwen_dir)), InjectionConfig(FEATURES, 32),
                                              N_VIS, BOS, EOS, PAD), tiny_encoder())
