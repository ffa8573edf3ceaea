"""Stage 2: classification pretraining of the encoder with a learnable-query head (BCE), one query per label of
the dataset's label set (CT-RATE's 18 abnormalities, AbdomenAtlas's 3 lesions: the manifest names them)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from uvlm.data.prefetch import Prefetched
from uvlm.data.volumes import VolumeDataset, balanced_batches, collate, random_batches
from uvlm.models.cls_head import ClsHeadConfig, QueryClassificationHead, Stage2Classifier
from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder, save_encoder
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
class Stage2Config(OptimConfig):
    num_heads: int = 4      # cross-attention heads of the query head
    augment: bool = True    # label-preserving augmentation (see augment())
    sampling: str = "balanced"  # "balanced" (rarest positive label, see balanced_batches) or "shuffle"
    eval_every: int = 100   # steps between hold-out AUC checks; the weights of the best smoothed AUC are kept
    auc_ema: float = 0.9    # smoothing of the hold-out AUC (the authors' EMA); 0 = the raw AUC
    pos_weight: bool = True  # BCE pos_weight neg/pos per class; False = 1 for every class (the authors)


@dataclass
class AugmentDraw:
    """The random numbers of one micro-batch's augmentation, drawn on the CPU generator."""
    flip: torch.Tensor   # (B,) bool: mirror the last (left-right) axis
    shifts: list[int]    # voxels to roll the (D, H, W) axes by, the same for the whole batch
    scale: torch.Tensor  # (B, 1, 1, 1, 1) float32 intensity factors in [0.9, 1.1]


def draw_augment(b: int, gen: torch.Generator) -> AugmentDraw:
    """Draw in the main process on a CPU generator, in a fixed order, so the numbers (and the resume state)
    do not depend on where the batch was loaded or on which device it is augmented."""
    flip = torch.rand(b, generator=gen) < 0.5
    shifts = torch.randint(-2, 3, (3,), generator=gen).tolist()
    scale = 1 + 0.1 * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1)
    return AugmentDraw(flip, shifts, scale)


def apply_augment(images: torch.Tensor, d: AugmentDraw) -> torch.Tensor:
    """Apply a draw on the images' own device (a GPU does it in microseconds, not in the loader)."""
    images = torch.stack([x.flip(-1) if f else x for x, f in zip(images, d.flip.tolist(), strict=True)])
    images = torch.roll(images, shifts=d.shifts, dims=(2, 3, 4))
    return images * d.scale.to(images.device)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation for whole-volume classification (B, 1, D, H, W).

    Left-right flips (none of CT-RATE's 18 or AbdomenAtlas's 3 labels is lateralised), shifts of up to 2 voxels per axis and
    +-10% intensity scaling. Not used for report generation, where 'left'/'right' are in the text.
    """
    return apply_augment(images, draw_augment(images.shape[0], gen))


def pos_weight(labels: np.ndarray) -> torch.Tensor:
    """neg/pos per class (clipped to [1, 100]), so rare findings are not drowned by negatives."""
    pos = labels.sum(0)
    return torch.tensor(np.clip((len(labels) - pos) / np.maximum(pos, 1), 1.0, 100.0), dtype=torch.float32)


@torch.no_grad()
def predict(model: torch.nn.Module, data: VolumeDataset, device: torch.device, batch_size: int = 8) -> np.ndarray:
    """Sigmoid probabilities (N, L) for every volume of `data`."""
    model.eval()
    probs = []
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        with autocast(device):
            probs.append(torch.sigmoid(model(batch["image"].to(device)).float()).cpu().numpy())
    return np.concatenate(probs)


def classification_metrics(y: np.ndarray, p: np.ndarray, names: list[str]) -> dict:
    """Macro AUC over classes with both outcomes present, and macro P/R/F1 (and per-class F1, by `names`) at 0.5."""
    aucs = [roc_auc_score(y[:, c], p[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    pred = (p >= 0.5).astype(int)
    return {"macro_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "macro_precision": float(precision_score(y, pred, average="macro", zero_division=0)),
            "macro_recall": float(recall_score(y, pred, average="macro", zero_division=0)),
            "per_class_f1": dict(zip(names, f1_score(y, pred, average=None, zero_division=0).tolist(),
                                     strict=True))}


def train_stage2(train: VolumeDataset, holdout: VolumeDataset, scored: VolumeDataset | None,
                 init_dir: str | Path | None, enc_cfg: EncoderConfig, cfg: Stage2Config, out_dir: str | Path,
                 device_name: str, threads: int, seed: int, loader_workers: int = 0) -> dict:
    """Train encoder + head on `train`, keep the weights with the best (smoothed) AUC on `holdout` (patients
    held out of the training split), then score those weights on `scored` (the evaluation split, Table 4;
    it never influences the weights). Writes model.safetensors (encoder.* and head.*) and metrics.json.

    loader_workers: processes that read the training batches ahead (uvlm.data.prefetch; 0 = in this process);
    the weights do not depend on it."""
    rt = setup_runtime(device_name, threads, seed)
    encoder = load_encoder(init_dir, expected=enc_cfg)[0] if init_dir else build_encoder(enc_cfg)
    names = train.label_names
    head = QueryClassificationHead(ClsHeadConfig(enc_cfg.features_per_stage[-1], len(names), cfg.num_heads))
    model = Stage2Classifier(encoder, head).to(rt.device)
    optimizer = adamw(list(head.parameters()), list(encoder.parameters()), cfg)
    weights = pos_weight(train.labels) if cfg.pos_weight else torch.ones(len(names))
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=weights.to(rt.device))
    if cfg.sampling == "balanced":
        batches = balanced_batches(train.labels, cfg.batch_size, seed, rt.rank, rt.world)
    else:
        batches = random_batches(len(train), cfg.batch_size, seed, rt.rank, rt.world)
    gen = torch.Generator().manual_seed(seed + rt.rank)
    loader = Prefetched(train, batches, loader_workers, pin_memory=rt.device.type == "cuda")

    def micro_loss(module: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        batch = loader.get(idx)
        images = batch["image"].to(rt.device, non_blocking=True)  # (B, 1, D, H, W)
        if cfg.augment:  # numbers drawn here on the CPU generator, applied on the device
            images = apply_augment(images, draw_augment(len(idx), gen))
        return criterion(module(images).float(), batch["labels"].to(rt.device))

    def evaluate() -> float:
        return classification_metrics(holdout.labels, predict(model, holdout, rt.device), names)["macro_auc"]

    ck = Checkpointing(Path(str(out_dir) + ".work"), cfg.checkpoint_every,
                       fingerprint(asdict(cfg), asdict(enc_cfg), str(init_dir or ""), seed, len(train),
                                   len(holdout), rt.world))
    with loader:
        result = fit(model, wrap_ddp(model, rt), optimizer, cfg, rt, loader, micro_loss, "stage 2", ck, [gen],
                     evaluate if len(holdout) else None, cfg.eval_every, cfg.auc_ema)
    if result.best:  # hand over the weights with the best smoothed hold-out AUC
        model.load_state_dict(result.best["state"])
    metrics = {"holdout": classification_metrics(holdout.labels, predict(model, holdout, rt.device), names)
               if len(holdout) else {}}
    if scored is not None and len(scored):  # Table 4: the selected weights on the evaluation split
        metrics.update(classification_metrics(scored.labels, predict(model, scored, rt.device), names))
    metrics.update(best_step=result.best.get("step", cfg.steps), steps=cfg.steps, n_train=len(train),
                   n_holdout=len(holdout), n_scored=len(scored) if scored is not None else 0)
    log.info("stage 2: weights of step %d (hold-out macro AUC %.3f); evaluation split: macro AUC %.3f, "
             "macro F1 %.3f", metrics["best_step"], metrics["holdout"].get("macro_auc", float("nan")),
             metrics.get("macro_auc", float("nan")), metrics.get("macro_f1", float("nan")))
    if rt.is_main:
        config = {"stage": 2, "train": asdict(cfg), "head": asdict(head.config), "init": str(init_dir or ""),
                  "label_set": train.label_set, "labels": names, "seed": seed}
        write_model_folder(out_dir, model.state_dict(), config, result.progress, "Stage 2 classification",
                           extra_files={"metrics.json": metrics}, cases={"fit": train.names, "holdout": holdout.names},
                           finalize=lambda d: save_encoder(None, enc_cfg, d, extra={"stage": 2}))
    finish(ck, rt)
    teardown(rt)
    return metrics
