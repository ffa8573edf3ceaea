"""Stage 3: report generation: the (pretrained) encoder feeds a decoder through visual injection."""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from uvlm.data.prefetch import Prefetched
from uvlm.data.volumes import VolumeDataset, balanced_batches, collate, random_batches
from uvlm.experiments import Experiment
from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder, save_encoder
from uvlm.models.report_factory import build_report_model
from uvlm.train.feature_cache import FeatureStore, FeatureView, write_features
from uvlm.train.fit import Checkpointing, fingerprint, finish, fit
from uvlm.train.runtime import (
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
    # (the workflow builds them once per encoder in rule stage3_features; a run given none builds its own)


class LossOf(torch.nn.Module):
    """forward(images, ids, aligned) = model.loss(images, ids, aligned=aligned), so DDP can wrap the loss."""

    def __init__(self, model: torch.nn.Module):  # ReportGenerator or HFReportGenerator
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor | None, ids: torch.Tensor,
                aligned: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        return self.model.loss(images, ids, aligned=aligned)


def pad_batch(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists to one (B, T) tensor."""
    t = max(len(s) for s in seqs)
    return torch.tensor([s + [pad_id] * (t - len(s)) for s in seqs], dtype=torch.long)


def batch_inputs(data: VolumeDataset, cache: FeatureView | None, idx: list[int],
                 device: torch.device) -> tuple[torch.Tensor | None, dict[int, torch.Tensor] | None]:
    """(images, None) read from disk, or (None, the encoder's aligned stages) when the features are cached."""
    if cache is not None:
        return None, cache.aligned(idx, device)
    return collate([data[i] for i in idx])["image"].to(device), None


@torch.no_grad()
def holdout_loss(model: torch.nn.Module, data: VolumeDataset, texts: list[list[int]], pad_id: int,
                 device: torch.device, batch_size: int, cache: FeatureView | None = None) -> float:
    """Token-mean next-token cross-entropy over the hold-out reports (what the authors select on)."""
    model.eval()
    total = tokens = 0.0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        images, aligned = batch_inputs(data, cache, idx, device)
        ids = pad_batch([texts[i] for i in idx], pad_id).to(device)
        n = float(sum(len(texts[i]) - 1 for i in idx))  # targets: every token after bos
        with autocast(device):
            total += float(model.loss(images, ids, aligned=aligned)) * n
        tokens += n
    return total / max(tokens, 1.0)


def frozen_features(model: torch.nn.Module, exp: Experiment, cfg: Stage3Config, folder: str | Path | None,
                    datasets: list[VolumeDataset], own_folder: Path, device: torch.device) -> FeatureStore | None:
    """The features a frozen encoder's run reads instead of running the encoder (None: the encoder runs every
    step): the shared folder when given, else built once into own_folder. Checked against the model's encoder."""
    if not exp.frozen or cfg.feature_cache_gb <= 0:
        return None
    if folder is None:
        folder = own_folder
        write_features(model.encoder, datasets, model.injector.ref_stage, own_folder, device, cfg.batch_size,
                       cfg.feature_cache_gb, "stage 3 features")
    store = FeatureStore(folder)
    store.check(model.encoder, model.injector.ref_stage)
    return store if store.usable else None


def train_stage3(train: VolumeDataset, holdout: VolumeDataset, tokenizer_path: str | Path,
                 init_dir: str | Path | None, enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict,
                 cfg: Stage3Config, exp: Experiment, out_dir: str | Path, device_name: str, threads: int,
                 seed: int, hf: dict | None = None, stage_to_layer: dict | None = None,
                 features: str | Path | None = None, loader_workers: int = 0) -> None:
    """Train the experiment's report generator on `train`, keep the weights with the lowest loss on
    `holdout` (patients held out of the training split), and write its folder (model, config, tokenizer,
    log, curve). The split the reports are scored on is not an argument: it cannot influence the weights.

    hf: config `stage3.hf` (the Hugging Face decoder), needed when the experiment's decoder is hf_*.
    stage_to_layer: config `stage3.injection.stage_to_layer`.
    features: a frozen encoder's features folder (uvlm.train.feature_cache) shared with other experiments;
    without it a frozen run with stage3.feature_cache_gb > 0 builds its own in <out>.work/.
    loader_workers: processes that read the training volumes ahead when the encoder runs (uvlm.data.prefetch).
    """
    rt = setup_runtime(device_name, threads, seed)
    encoder = load_encoder(init_dir, expected=enc_cfg)[0] if init_dir else build_encoder(enc_cfg)
    built = build_report_model(exp, encoder, enc_cfg, grid, tokenizer_path, decoder, cfg.max_text_tokens, hf,
                               stage_to_layer)
    model, mcfg, encode, pad_id = built.model, built.config, built.encode, built.pad_id
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
    ck_dir = Path(str(out_dir) + ".work")
    # without a shared folder each DDP rank encodes into its own (no two processes write one folder)
    store = frozen_features(model, exp, cfg, features, [train, holdout], ck_dir / f"features_rank{rt.rank}",
                            rt.device)
    cache = store.view(train.names) if store else None
    held_cache = store.view(holdout.names) if store else None

    loader = Prefetched(train, batches, loader_workers if cache is None else 0, pin_memory=rt.device.type == "cuda")

    def micro_loss(module: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        if cache is None:  # volumes read ahead by the loader's workers
            images, aligned = loader.get(idx)["image"].to(rt.device, non_blocking=True), None
        else:
            images, aligned = None, cache.aligned(idx, rt.device)
        # pad may equal eos (HF tokenizers without a pad token): model.loss finds the real tokens
        return module(images, pad_batch([texts[i] for i in idx], pad_id).to(rt.device), aligned)

    def evaluate() -> float:  # higher is better for fit()
        return -holdout_loss(model, holdout, held_texts, pad_id, rt.device, cfg.batch_size, held_cache)

    ck = Checkpointing(ck_dir, cfg.checkpoint_every,
                       fingerprint(asdict(cfg), mcfg.to_dict(), str(init_dir or ""), seed, len(train),
                                   len(holdout), rt.world))
    # DDP syncs gradients only through forward(), hence the LossOf wrapper
    with loader:
        result = fit(model, wrap_ddp(LossOf(model), rt), optimizer, cfg, rt, loader, micro_loss, "stage 3", ck,
                     evaluate=evaluate if len(holdout) else None, eval_every=cfg.eval_every)
    if result.best:  # hand over the weights with the lowest hold-out loss
        model.load_state_dict(result.best["state"])
    if rt.is_main:
        config = {"stage": 3, "kind": built.kind, "model": mcfg.to_dict(),
                  "train": asdict(cfg), "grid": list(grid), "init": str(init_dir or ""), "experiment": asdict(exp),
                  "seed": seed, "best_step": result.best.get("step", cfg.steps),
                  "holdout_loss": -result.best["value"] if result.best else None,
                  "n_train": len(train), "n_holdout": len(holdout)}

        def finalize(folder: Path) -> None:
            shutil.copyfile(built.tokenizer_file, folder / "tokenizer.json")
            save_encoder(None, enc_cfg, folder, extra={"stage": 3})

        weights = model.state_dict_for_save() if exp.hf_finetune else model.state_dict()
        write_model_folder(out_dir, weights, config, result.progress, "Stage 3 report generation",
                           finalize=finalize, cases={"fit": train.names, "holdout": holdout.names})
    finish(ck, rt)
    teardown(rt)
