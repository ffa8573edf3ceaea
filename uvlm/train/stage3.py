"""Stage 3: report generation: the (pretrained) encoder feeds a decoder through visual injection."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from uvlm.data.volumes import VolumeDataset, collate, random_batches
from uvlm.models.decoder import DecoderConfig
from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder, load_encoder_config, save_encoder
from uvlm.models.injection import InjectionConfig
from uvlm.models.report_model import ReportGenerator, ReportModelConfig
from uvlm.text.tokenizer import SpecialIds, encode_report, load_tokenizer
from uvlm.train.fit import Checkpointing, fingerprint, finish, fit
from uvlm.train.loop import OptimConfig, adamw, setup_runtime, teardown, wrap_ddp, write_model_folder

log = logging.getLogger(__name__)


@dataclass
class Stage3Config(OptimConfig):
    max_text_tokens: int = 288  # reports are cut to this many tokens (bos/eos included)


def injection_config(enc_cfg: EncoderConfig, grid: tuple[int, int, int], lm_dim: int, mode: str,
                     settings: dict | None) -> tuple[InjectionConfig, int]:
    """(InjectionConfig, visual token count) from config `stage3.injection`; the visual tokens are the
    reference stage's voxels (paper: the deepest stage, 6x8x8 = 384; the next one gives 3072)."""
    settings = settings or {}
    mapping = settings.get("stage_to_layer") or None
    inj = InjectionConfig(stage_channels=list(enc_cfg.features_per_stage), lm_dim=lm_dim, mode=mode,
                          reference_stage=int(settings.get("reference_stage", -1)),
                          stage_to_layer=None if mode == "input_only" or mapping is None
                          else {int(k): int(v) for k, v in mapping.items()})
    return inj, math.prod(enc_cfg.stage_shapes(grid)[inj.ref_index()])


def build_model_config(enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict, vocab_size: int,
                       special: SpecialIds, freeze: bool, injection: str, max_text_tokens: int,
                       injection_settings: dict | None = None) -> ReportModelConfig:
    """The report model's config from pipeline settings."""
    inj, n_visual = injection_config(enc_cfg, grid, decoder["dim"], injection, injection_settings)
    dec = DecoderConfig(vocab_size=vocab_size, dim=decoder["dim"], n_layers=decoder["n_layers"],
                        n_heads=decoder["n_heads"], dropout=decoder.get("dropout", 0.0),
                        max_seq_len=n_visual + 2 + max_text_tokens + 8)
    return ReportModelConfig(decoder=dec, injection=inj, n_visual_tokens=n_visual, freeze_encoder=freeze,
                             **special.model_kwargs())


class LossOf(torch.nn.Module):
    """forward(images, ids) = model.loss(images, ids), so DDP can wrap the loss computation."""

    def __init__(self, model: ReportGenerator):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.model.loss(images, ids)


def pad_batch(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists to one (B, T) tensor."""
    t = max(len(s) for s in seqs)
    return torch.tensor([s + [pad_id] * (t - len(s)) for s in seqs], dtype=torch.long)


def _hf_model(hf: dict, tokenizer_path: str | Path, enc_cfg: EncoderConfig, grid: tuple[int, int, int],
              encoder: torch.nn.Module, freeze: bool, injection: str, max_text_tokens: int,
              injection_settings: dict | None):
    """The alternative decoder: a Hugging Face causal LM (Qwen3 in the paper) from a local folder.

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
    dcfg = HFDecoderConfig(**{k: v for k, v in hf.items() if k in HFDecoderConfig.__dataclass_fields__},
                           vocab_size=tok.get_vocab_size() if own_tok and hf["from_scratch"] else None)
    lm_dim = json.loads((Path(hf["model_dir"]) / "config.json").read_text())["hidden_size"]
    inj, n_visual = injection_config(enc_cfg, grid, lm_dim, injection, injection_settings)
    mcfg = HFReportModelConfig(decoder=dcfg, injection=inj, n_visual_tokens=n_visual, freeze_encoder=freeze,
                               **ids.model_kwargs())
    model = HFReportGenerator(mcfg, encoder)
    return model, mcfg, tok_file, lambda text: encode_text(tok, text, ids, max_text_tokens), ids.pad_id


def train_stage3(train: VolumeDataset, tokenizer_path: str | Path, init_dir: str | Path | None,
                 enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict, cfg: Stage3Config,
                 freeze_encoder: bool, injection: str, out_dir: str | Path, device_name: str, threads: int,
                 seed: int, hf: dict | None = None, injection_settings: dict | None = None) -> None:
    """Train the report generator and write its folder (model, config, tokenizer, log, curve).

    hf: settings of a Hugging Face decoder (config `stage3.hf`) to use instead of our own decoder.
    injection_settings: config `stage3.injection` (reference stage, stage-to-layer mapping).
    """
    rt = setup_runtime(device_name, threads, seed)
    encoder = load_encoder(init_dir, expected=enc_cfg)[0] if init_dir else build_encoder(enc_cfg)
    if hf:
        model, mcfg, tok_file, encode, pad_id = _hf_model(hf, tokenizer_path, enc_cfg, grid, encoder,
                                                          freeze_encoder, injection, cfg.max_text_tokens,
                                                          injection_settings)
    else:
        tok = load_tokenizer(tokenizer_path)
        special = SpecialIds.from_tokenizer(tok)
        mcfg = build_model_config(enc_cfg, grid, decoder, tok.get_vocab_size(), special, freeze_encoder, injection,
                                  cfg.max_text_tokens, injection_settings)
        model = ReportGenerator(mcfg, encoder)
        tok_file, pad_id = Path(tokenizer_path), special.pad_id

        def encode(text: str) -> list[int]:
            return encode_report(tok, text, cfg.max_text_tokens)
    model = model.to(rt.device)
    enc_params = list(model.encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    trainable = [p for p in model.parameters() if id(p) not in enc_ids and p.requires_grad]
    optimizer = adamw(trainable, enc_params, cfg, freeze_encoder)
    texts = [encode(t) for t in train.texts]
    batches = random_batches(len(train), cfg.batch_size, seed, rt.rank, rt.world)

    def micro_loss(module: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        images = collate([train[i] for i in idx])["image"].to(rt.device)
        # pad may equal eos (HF tokenizers without a pad token): model.loss finds the real tokens
        return module(images, pad_batch([texts[i] for i in idx], pad_id).to(rt.device))

    ck = Checkpointing(Path(str(out_dir) + ".work"), cfg.checkpoint_every,
                       fingerprint(asdict(cfg), mcfg.to_dict(), str(init_dir or ""), seed, len(train), rt.world))
    # DDP syncs gradients only through forward(), hence the LossOf wrapper
    result = fit(model, wrap_ddp(LossOf(model), rt), optimizer, cfg, rt, batches, micro_loss, "stage 3", ck)
    progress = result.progress
    if rt.is_main:
        config = {"stage": 3, "kind": "hf" if hf else "own", "model": mcfg.to_dict(), "train": asdict(cfg),
                  "grid": list(grid), "init": str(init_dir or ""), "injection": injection, "seed": seed}

        def finalize(folder: Path) -> None:
            shutil.copyfile(tok_file, folder / "tokenizer.json")
            save_encoder(None, enc_cfg, folder, extra={"stage": 3})

        weights = model.state_dict_for_save() if hf else model.state_dict()
        write_model_folder(out_dir, weights, config, progress, "Stage 3 report generation", finalize=finalize)
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
