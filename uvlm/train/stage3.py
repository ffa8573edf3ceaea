"""Stage 3: report generation: the (pretrained) encoder feeds a decoder through visual injection."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from uvlm.data.volumes import VolumeDataset, balanced_batches, collate, random_batches
from uvlm.experiments import Experiment
from uvlm.models.decoder import DecoderConfig
from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder, load_encoder_config, save_encoder
from uvlm.models.injection import InjectionConfig
from uvlm.models.report_model import ReportGenerator, ReportModelConfig
from uvlm.text.tokenizer import SpecialIds, encode_report, load_tokenizer
from uvlm.train.feature_cache import FeatureCache
from uvlm.train.fit import Checkpointing, fingerprint, finish, fit
from uvlm.train.loop import (
    OptimConfig,
    adamw,
    autocast,
    setup_runtime,
    teardown,
    wrap_ddp,
    write_model_folder,
)

log = logging.getLogger(__name__)


@dataclass
class Stage3Config(OptimConfig):
    max_text_tokens: int = 288  # reports are cut to this many tokens (bos/eos included)
    sampling: str = "balanced"  # "balanced" (rarest positive label, as the authors balance) or "shuffle"
    eval_every: int = 100       # steps between hold-out loss checks; the lowest-loss weights are kept (0: last)
    feature_cache_gb: float = 4.0  # Frz: encode every volume once if its features fit (0 = encoder every step)


def n_visual_tokens(enc_cfg: EncoderConfig, grid: tuple[int, int, int], reference_stage: int) -> int:
    """Visual tokens = voxels of the reference stage's feature map (paper: deepest 6x8x8 = 384, next 3072)."""
    return math.prod(enc_cfg.stage_shapes(grid)[reference_stage])


def injection_config(enc_cfg: EncoderConfig, lm_dim: int, exp: Experiment,
                     stage_to_layer: dict | None = None) -> InjectionConfig:
    """The experiment's visual tokens and injection; `stage_to_layer` (config `stage3.injection`) maps
    stages to decoder layers for SC experiments ({} or None: deepest stage to layer 0, and so on)."""
    mapping = {int(k): int(v) for k, v in stage_to_layer.items()} if exp.multi_layer and stage_to_layer else None
    return InjectionConfig(stage_channels=list(enc_cfg.features_per_stage), lm_dim=lm_dim, mode=exp.injection,
                           reference_stage=exp.reference_stage, stage_to_layer=mapping)


def build_model_config(enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict, vocab_size: int,
                       special: SpecialIds, exp: Experiment, max_text_tokens: int,
                       stage_to_layer: dict | None = None) -> ReportModelConfig:
    """Our report model's config for one experiment (SC, Frz, visual tokens) from pipeline settings."""
    n_visual = n_visual_tokens(enc_cfg, grid, exp.reference_stage)
    dec = DecoderConfig(vocab_size=vocab_size, dim=decoder["dim"], n_layers=decoder["n_layers"],
                        n_heads=decoder["n_heads"], dropout=decoder.get("dropout", 0.0),
                        max_seq_len=n_visual + 2 + max_text_tokens + 8)
    return ReportModelConfig(decoder=dec, injection=injection_config(enc_cfg, decoder["dim"], exp, stage_to_layer),
                             n_visual_tokens=n_visual, freeze_encoder=exp.frozen, **special.model_kwargs())


class LossOf(torch.nn.Module):
    """forward(images, ids, skips) = model.loss(images, ids, skips=skips), so DDP can wrap the loss."""

    def __init__(self, model: ReportGenerator):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor | None, ids: torch.Tensor,
                skips: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        return self.model.loss(images, ids, skips=skips)


def pad_batch(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists to one (B, T) tensor."""
    t = max(len(s) for s in seqs)
    return torch.tensor([s + [pad_id] * (t - len(s)) for s in seqs], dtype=torch.long)


def _hf_model(hf: dict, tokenizer_path: str | Path, enc_cfg: EncoderConfig, grid: tuple[int, int, int],
              encoder: torch.nn.Module, exp: Experiment, max_text_tokens: int, stage_to_layer: dict | None):
    """The alternative decoder: a Hugging Face causal LM (Qwen3 in the paper) from a local folder, with the
    experiment's fine-tuning (LoRA or full).

    Returns (model, its config, tokenizer file to hand on, encode(text) -> ids, pad id).
    """
    from uvlm.models.hf_decoder import (
        HFDecoderConfig,
        HFReportGenerator,
        HFReportModelConfig,
        encode_text,
        load_hf_tokenizer,
        special_ids,
    )

    own_tok = hf.get("tokenizer", "hf") == "bpe"  # our BPE only with a from-scratch LM (vocabulary must match)
    tok = load_tokenizer(tokenizer_path) if own_tok else load_hf_tokenizer(hf["model_dir"])
    tok_file = Path(tokenizer_path) if own_tok else Path(hf["model_dir"]) / "tokenizer.json"
    ids = special_ids(tok)
    settings = {**hf, "finetune": exp.hf_finetune}
    dcfg = HFDecoderConfig(**{k: v for k, v in settings.items() if k in HFDecoderConfig.__dataclass_fields__},
                           vocab_size=tok.get_vocab_size() if own_tok and hf["from_scratch"] else None)
    lm_dim = json.loads((Path(hf["model_dir"]) / "config.json").read_text())["hidden_size"]
    mcfg = HFReportModelConfig(decoder=dcfg, injection=injection_config(enc_cfg, lm_dim, exp, stage_to_layer),
                               n_visual_tokens=n_visual_tokens(enc_cfg, grid, exp.reference_stage),
                               freeze_encoder=exp.frozen, **ids.model_kwargs())
    model = HFReportGenerator(mcfg, encoder)
    return model, mcfg, tok_file, lambda text: encode_text(tok, text, ids, max_text_tokens), ids.pad_id


def batch_inputs(data: VolumeDataset, cache: FeatureCache | None, idx: list[int],
                 device: torch.device) -> tuple[torch.Tensor | None, list[torch.Tensor | None] | None]:
    """(images, None) read from disk, or (None, cached encoder stages) when the features are cached."""
    if cache is not None:
        return None, cache.skips(idx, device)
    return collate([data[i] for i in idx])["image"].to(device), None


@torch.no_grad()
def holdout_loss(model: torch.nn.Module, data: VolumeDataset, texts: list[list[int]], pad_id: int,
                 device: torch.device, batch_size: int, cache: FeatureCache | None = None) -> float:
    """Token-mean next-token cross-entropy over the hold-out reports (what the authors select on)."""
    model.eval()
    total = tokens = 0.0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        images, skips = batch_inputs(data, cache, idx, device)
        ids = pad_batch([texts[i] for i in idx], pad_id).to(device)
        n = float(sum(len(texts[i]) - 1 for i in idx))  # targets: every token after bos
        with autocast(device):
            total += float(model.loss(images, ids, skips=skips)) * n
        tokens += n
    return total / max(tokens, 1.0)


def train_stage3(train: VolumeDataset, holdout: VolumeDataset, tokenizer_path: str | Path,
                 init_dir: str | Path | None, enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict,
                 cfg: Stage3Config, exp: Experiment, out_dir: str | Path, device_name: str, threads: int,
                 seed: int, hf: dict | None = None, stage_to_layer: dict | None = None) -> None:
    """Train the experiment's report generator on `train`, keep the weights with the lowest loss on
    `holdout` (patients held out of the training split), and write its folder (model, config, tokenizer,
    log, curve). The split the reports are scored on is not an argument: it cannot influence the weights.

    hf: config `stage3.hf` (the Hugging Face decoder), needed when the experiment's decoder is hf_*.
    stage_to_layer: config `stage3.injection.stage_to_layer`.
    """
    rt = setup_runtime(device_name, threads, seed)
    encoder = load_encoder(init_dir, expected=enc_cfg)[0] if init_dir else build_encoder(enc_cfg)
    if exp.hf_finetune:
        if not hf:
            raise ValueError(f"experiment '{exp.name}' uses decoder {exp.decoder}: stage3.hf settings are needed")
        model, mcfg, tok_file, encode, pad_id = _hf_model(hf, tokenizer_path, enc_cfg, grid, encoder, exp,
                                                          cfg.max_text_tokens, stage_to_layer)
    else:
        tok = load_tokenizer(tokenizer_path)
        special = SpecialIds.from_tokenizer(tok)
        mcfg = build_model_config(enc_cfg, grid, decoder, tok.get_vocab_size(), special, exp, cfg.max_text_tokens,
                                  stage_to_layer)
        model = ReportGenerator(mcfg, encoder)
        tok_file, pad_id = Path(tokenizer_path), special.pad_id

        def encode(text: str) -> list[int]:
            return encode_report(tok, text, cfg.max_text_tokens)
    model = model.to(rt.device)
    enc_params = list(model.encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    trainable = [p for p in model.parameters() if id(p) not in enc_ids and p.requires_grad]
    optimizer = adamw(trainable, enc_params, cfg, exp.frozen)
    texts = [encode(t) for t in train.texts]
    held_texts = [encode(t) for t in holdout.texts]
    if cfg.sampling == "balanced":
        batches = balanced_batches(train.labels, cfg.batch_size, seed, rt.rank, rt.world)
    else:
        batches = random_batches(len(train), cfg.batch_size, seed, rt.rank, rt.world)
    cache = held_cache = None
    if exp.frozen:  # the encoder's output never changes: encode every volume once
        cache = FeatureCache.build(model.encoder, train, model.used_stages, rt.device, cfg.batch_size,
                                   cfg.feature_cache_gb, "stage 3 training features")
        if cache is not None:
            held_cache = FeatureCache.build(model.encoder, holdout, model.used_stages, rt.device, cfg.batch_size,
                                            cfg.feature_cache_gb, "stage 3 hold-out features")

    def micro_loss(module: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        images, skips = batch_inputs(train, cache, idx, rt.device)
        # pad may equal eos (HF tokenizers without a pad token): model.loss finds the real tokens
        return module(images, pad_batch([texts[i] for i in idx], pad_id).to(rt.device), skips)

    def evaluate() -> float:  # higher is better for fit()
        return -holdout_loss(model, holdout, held_texts, pad_id, rt.device, cfg.batch_size, held_cache)

    ck = Checkpointing(Path(str(out_dir) + ".work"), cfg.checkpoint_every,
                       fingerprint(asdict(cfg), mcfg.to_dict(), str(init_dir or ""), seed, len(train),
                                   len(holdout), rt.world))
    # DDP syncs gradients only through forward(), hence the LossOf wrapper
    result = fit(model, wrap_ddp(LossOf(model), rt), optimizer, cfg, rt, batches, micro_loss, "stage 3", ck,
                 evaluate=evaluate if len(holdout) else None, eval_every=cfg.eval_every)
    if result.best:  # hand over the weights with the lowest hold-out loss
        model.load_state_dict(result.best["state"])
    if rt.is_main:
        config = {"stage": 3, "kind": "hf" if exp.hf_finetune else "own", "model": mcfg.to_dict(),
                  "train": asdict(cfg), "grid": list(grid), "init": str(init_dir or ""), "experiment": asdict(exp),
                  "seed": seed, "best_step": result.best.get("step", cfg.steps),
                  "holdout_loss": -result.best["value"] if result.best else None,
                  "n_train": len(train), "n_holdout": len(holdout)}

        def finalize(folder: Path) -> None:
            shutil.copyfile(tok_file, folder / "tokenizer.json")
            save_encoder(None, enc_cfg, folder, extra={"stage": 3})

        weights = model.state_dict_for_save() if exp.hf_finetune else model.state_dict()
        write_model_folder(out_dir, weights, config, result.progress, "Stage 3 report generation",
                           finalize=finalize)
    finish(ck, rt)
    teardown(rt)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def load_report_model(folder: str | Path, device: torch.device,
                      expected: ReportModelConfig | None = None) -> tuple[ReportGenerator, dict]:
    """Rebuild a Stage 3 model from its folder alone (config.json + model.safetensors).

    With `expected`, a folder of another architecture is an error listing every mismatched key.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("kind") == "hf":  # the alternative decoder (a LoRA folder also needs its base model_dir)
        from uvlm.models.hf_decoder import HFReportGenerator, HFReportModelConfig

        model = HFReportGenerator(HFReportModelConfig.from_dict(config["model"]),
                                  build_encoder(load_encoder_config(folder)))
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        return model.to(device).eval(), config
    mcfg = ReportModelConfig.from_dict(config["model"])
    if expected is not None:
        have, want = _flat(mcfg.to_dict()), _flat(expected.to_dict())
        diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
        if diff:
            raise ValueError(f"{folder}: model config differs from the requested architecture "
                             f"(key: (checkpoint, requested)): {diff}")
    model = ReportGenerator(mcfg, build_encoder(load_encoder_config(folder)))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.to(device).eval(), config
