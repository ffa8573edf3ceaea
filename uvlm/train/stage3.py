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


def build_model_config(enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict, vocab_size: int,
                       special: SpecialIds, freeze: bool, injection: str, max_text_tokens: int) -> ReportModelConfig:
    """The report model's config from pipeline settings; visual tokens = the deepest stage's voxels."""
    n_visual = math.prod(enc_cfg.stage_shapes(grid)[-1])
    dec = DecoderConfig(vocab_size=vocab_size, dim=decoder["dim"], n_layers=decoder["n_layers"],
                        n_heads=decoder["n_heads"], dropout=decoder.get("dropout", 0.0),
                        max_seq_len=n_visual + 2 + max_text_tokens + 8)
    inj = InjectionConfig(stage_channels=list(enc_cfg.features_per_stage), lm_dim=decoder["dim"], mode=injection)
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


def train_stage3(train: VolumeDataset, tokenizer_path: str | Path, init_dir: str | Path | None,
                 enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict, cfg: Stage3Config,
                 freeze_encoder: bool, injection: str, out_dir: str | Path, device_name: str, threads: int,
                 seed: int) -> None:
    """Train the report generator and write its folder (model, config, tokenizer, log, curve)."""
    rt = setup_runtime(device_name, threads, seed)
    tok = load_tokenizer(tokenizer_path)
    special = SpecialIds.from_tokenizer(tok)
    encoder = load_encoder(init_dir, expected=enc_cfg)[0] if init_dir else build_encoder(enc_cfg)
    mcfg = build_model_config(enc_cfg, grid, decoder, tok.get_vocab_size(), special, freeze_encoder, injection,
                              cfg.max_text_tokens)
    model = ReportGenerator(mcfg, encoder).to(rt.device)
    enc_params = list(model.encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    optimizer = adamw([p for p in model.parameters() if id(p) not in enc_ids], enc_params, cfg, freeze_encoder)
    texts = [encode_report(tok, t, cfg.max_text_tokens) for t in train.texts]
    batches = random_batches(len(train), cfg.batch_size, seed, rt.rank, rt.world)

    def micro_loss(module: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        images = collate([train[i] for i in idx])["image"].to(rt.device)
        return module(images, pad_batch([texts[i] for i in idx], special.pad_id).to(rt.device))

    ck = Checkpointing(Path(str(out_dir) + ".work"), cfg.checkpoint_every,
                       fingerprint(asdict(cfg), mcfg.to_dict(), str(init_dir or ""), seed, len(train), rt.world))
    # DDP syncs gradients only through forward(), hence the LossOf wrapper
    result = fit(model, wrap_ddp(LossOf(model), rt), optimizer, cfg, rt, batches, micro_loss, "stage 3", ck)
    progress = result.progress
    if rt.is_main:
        config = {"stage": 3, "model": mcfg.to_dict(), "train": asdict(cfg), "grid": list(grid),
                  "init": str(init_dir or ""), "injection": injection, "seed": seed}

        def finalize(folder: Path) -> None:
            shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
            save_encoder(None, enc_cfg, folder, extra={"stage": 3})

        write_model_folder(out_dir, model.state_dict(), config, progress, "Stage 3 report generation",
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
