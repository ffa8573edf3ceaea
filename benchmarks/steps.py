"""One optimiser step of each stage, built from a config, for the CPU and GPU benchmarks.

Each `*_step(cfg, device, batch, ...)` returns (step function, info dict). Models are the real ones
(nnU-Net's ResEnc U-Net with its deep-supervision Dice+CE loss for Stage 1; our Stage 2 classifier;
our Stage 3 report generator) on random inputs of the config's sizes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from uvlm.experiments import Experiment
from uvlm.models.cls_head import ClsHeadConfig, QueryClassificationHead, Stage2Classifier
from uvlm.models.encoder import EncoderConfig, build_encoder, build_unet
from uvlm.models.report_factory import own_model_config
from uvlm.models.report_model import ReportGenerator
from uvlm.text.tokenizer import SpecialIds
from uvlm.train.stage3 import pad_batch

SPECIAL = SpecialIds(pad_id=0, unk_id=1, bos_id=2, eos_id=3, vision_start_id=4, vision_end_id=5)


def amp(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _n(params) -> float:
    return round(sum(p.numel() for p in params) / 1e6, 2)


def stage1_step(cfg: dict, device: torch.device, batch: int, n_classes: int = 22) -> tuple[Callable, dict]:
    """nnU-Net's ResEnc U-Net with deep supervision, Dice + CE (nnU-Net's own loss), SGD Nesterov 0.99."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    enc = EncoderConfig.from_config(cfg["encoder"])
    net = build_unet(enc, n_classes, deep_supervision=True).to(device)
    patch = tuple(cfg["stage1"]["patch_size"])
    n_stages = len(enc.strides)
    weights = np.array([1 / (2**i) for i in range(n_stages - 1)])
    weights[-1] = 0
    loss_fn = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                       weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss), weights / weights.sum())
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    x = torch.randn(batch, 1, *patch, device=device)
    strides = np.cumprod(np.array(enc.strides), axis=0)
    targets = [torch.randint(0, n_classes, (batch, 1, *(np.array(patch) // s)), device=device).float()
               for s in strides[: n_stages - 1]]

    def step() -> None:
        with amp(device):
            out = net(x)
            loss = loss_fn(out, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()

    return step, {"patch": list(patch), "batch": batch, "params_M": _n(net.parameters())}


def stage2_step(cfg: dict, device: torch.device, batch: int, finetune: bool = True) -> tuple[Callable, dict]:
    enc = build_encoder(EncoderConfig.from_config(cfg["encoder"]))
    head = QueryClassificationHead(ClsHeadConfig(cfg["encoder"]["features_per_stage"][-1], 18,
                                                 cfg["stage2"]["num_heads"]))
    model = Stage2Classifier(enc, head).to(device)
    enc.requires_grad_(finetune)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
    x = torch.randn(batch, 1, *cfg["preprocess"]["grid"], device=device)
    y = torch.randint(0, 2, (batch, 18), device=device).float()

    def step() -> None:
        with amp(device):
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 12.0)
        opt.step()

    return step, {"grid": cfg["preprocess"]["grid"], "batch": batch, "finetune_encoder": finetune,
                  "trainable_M": _n(params)}


def report_model(cfg: dict, device: torch.device, freeze: bool) -> ReportGenerator:
    """Our decoder with skip-connection injection and the deepest stage's visual tokens (the paper's best row)."""
    enc = EncoderConfig.from_config(cfg["encoder"])
    exp = Experiment("bench", "SC", None, False, multi_layer=True, frozen=freeze)
    mcfg = own_model_config(enc, tuple(cfg["preprocess"]["grid"]), cfg["stage3"]["decoder"],
                              cfg["stage3"]["vocab_size"], SPECIAL, exp, cfg["stage3"]["max_text_tokens"],
                              cfg["stage3"]["injection"]["stage_to_layer"])
    return ReportGenerator(mcfg, build_encoder(enc)).to(device)


def stage3_step(cfg: dict, device: torch.device, batch: int, freeze: bool = True,
                text_tokens: int | None = None, cached: bool = False) -> tuple[Callable, dict]:
    """Reports of the configured maximum length (max_text_tokens incl. bos/eos) unless text_tokens is given.
    cached: a frozen encoder's stored features instead of the encoder (what uvlm.train.feature_cache stores:
    every stage aligned to the visual tokens), as Stage 3 trains from them."""
    from uvlm.models.injection import align_stages

    text_tokens = text_tokens or cfg["stage3"]["max_text_tokens"] - 2
    model = report_model(cfg, device, freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5)
    x = torch.randn(batch, 1, *cfg["preprocess"]["grid"], device=device)
    vocab = cfg["stage3"]["vocab_size"]
    ids = pad_batch([[2] + [6 + i % (vocab - 6) for i in range(text_tokens)] + [3]] * batch, 0).to(device)
    info = {}
    aligned = None
    if cached:
        with torch.no_grad(), amp(device):
            aligned = align_stages(list(model.encoder(x)), model.injector.ref_stage)  # {stage: (B, N, C_s)}
        per_volume = sum(t[0].numel() for t in aligned.values())
        info = {"feature_values_per_volume": per_volume, "feature_mb_per_volume_bf16": round(per_volume * 2 / 1e6, 3),
                "preprocessed_volume_mb_fp16": round(x[0].numel() * 2 / 1e6, 1)}
        x = None

    def step() -> None:
        with amp(device):
            loss = model.loss(x, ids, aligned=aligned)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step, {"batch": batch, "frozen_encoder": freeze, "cached_features": cached, "text_tokens": text_tokens,
                  "visual_tokens": model.config.n_visual_tokens, "trainable_M": _n(params), **info}


def generation_rates(cfg: dict, device: torch.device, batch: int, new_tokens: int) -> dict:
    """Tokens/s of greedy decoding with and without the KV cache (and 4-beam search), same run: with the
    encoder pass each call makes, and for decoding alone (on a CPU at paper scale the encoder dominates)."""
    from uvlm.models.decoding import DecodingConfig

    model = report_model(cfg, device, True).eval()
    model.config.eos_id = -1  # never stop early: every report gets exactly new_tokens
    x = torch.randn(batch, 1, *cfg["preprocess"]["grid"], device=device)
    runs = {"cache": (True, None), "no_cache": (False, None),
            "beam4_cache": (True, DecodingConfig(strategy="beam", num_beams=4, max_new_tokens=new_tokens))}

    def measure() -> dict:
        res = {}
        for name, (use_cache, dec) in runs.items():
            with torch.no_grad(), amp(device):
                model.generate(x, 2, use_cache=use_cache)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                seqs = model.generate(x, new_tokens, use_cache=use_cache, decoding=dec)
                sync(device)
            dt = time.perf_counter() - t0
            res[name] = {"tokens_per_s": round(sum(map(len, seqs)) / dt, 1), "seconds": round(dt, 2)}
        res["cache_speedup"] = round(res["cache"]["tokens_per_s"] / res["no_cache"]["tokens_per_s"], 2)
        return res

    out = {"with_encoder": measure()}
    with torch.no_grad(), amp(device):  # decoding alone: the encoder's output is computed once and reused
        injected = model.encode(x)
    model.encode = lambda images: injected
    out["decode_only"] = measure()
    out["batch"], out["new_tokens"] = batch, new_tokens
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable, device: torch.device, warm: int, n: int) -> dict:
    """Mean seconds per step after warm-up; peak GPU memory on CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warm):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    out = {"step_s": round((time.perf_counter() - t0) / n, 4)}
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out
