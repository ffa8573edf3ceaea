"""Training machinery shared by Stages 2 and 3: device/DDP setup, AMP, poly LR, progress, outputs.

The loop itself (accumulation, checkpoints, resume) is uvlm.train.fit."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from uvlm.device import pick_device  # noqa: E402
from uvlm.io import atomic_dir, atomic_path, write_json  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device_name: str, threads: int, seed: int) -> Runtime:
    """Pick the device; join a DDP group when started by torchrun (WORLD_SIZE > 1)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            return Runtime(torch.device("cuda", local), dist.get_rank(), world)
        return Runtime(torch.device("cpu"), dist.get_rank(), world)
    return Runtime(pick_device(device_name))


def wrap_ddp(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    if rt.world == 1:
        return model
    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def teardown(rt: Runtime) -> None:
    if rt.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on CPU for determinism."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class OptimConfig:
    """Optimisation settings both report-side stages share (AdamW, poly LR, clipping)."""

    steps: int
    batch_size: int
    lr: float
    encoder_lr_mult: float   # encoder LR = lr * this; 0 freezes the encoder
    weight_decay: float
    grad_clip: float
    accum_steps: int = 1        # micro-batches per optimiser step (effective batch = batch_size * this)
    checkpoint_every: int = 100  # steps between resumable checkpoints (0 = none)

    @classmethod
    def from_config(cls, section: dict):
        return from_section(cls, section)


def adamw(head_params: list, encoder_params: list, cfg: OptimConfig,
          freeze_encoder: bool = False) -> torch.optim.AdamW:
    """AdamW with the encoder in its own group at lr * encoder_lr_mult (none if frozen or 0)."""
    groups = [{"params": head_params, "base_lr": cfg.lr}]
    if freeze_encoder or cfg.encoder_lr_mult == 0:
        for p in encoder_params:
            p.requires_grad_(False)
    else:
        groups.append({"params": encoder_params, "base_lr": cfg.lr * cfg.encoder_lr_mult})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def from_section(cls: type, section: dict):
    """Build a stage's config dataclass from its config section (keys the dataclass does not name
    are ignored; missing keys fall back to the dataclass defaults)."""
    return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


def poly_lr(base: float, step: int, total: int, exponent: float = 0.9) -> float:
    return base * (1 - step / max(total, 1)) ** exponent


def set_lr(optimizer: torch.optim.Optimizer, step: int, total: int) -> None:
    """Each param group keeps its own base LR (group['base_lr']) under one poly schedule."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["base_lr"], step, total)


@dataclass
class Progress:
    """Periodic log lines with loss, rate and ETA, and the rows for training_log.csv."""

    total: int
    every: int = 25
    name: str = "train"
    rows: list[dict] = field(default_factory=list)
    _start: float = field(default_factory=time.monotonic)

    def update(self, step: int, loss: float, lr: float, items: int) -> None:
        self.rows.append({"step": step, "loss": loss, "lr": lr})
        if step % self.every == 0 or step == self.total:
            elapsed = time.monotonic() - self._start
            rate = step / max(elapsed, 1e-9)
            eta = (self.total - step) / max(rate, 1e-9)
            log.info("%s step %d/%d loss %.4f lr %.2e | %.2f steps/s, %.1f items/s | ETA %.0f s",
                     self.name, step, self.total, loss, lr, rate, rate * items, eta)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def plot_curve(df: pd.DataFrame, path: Path, title: str) -> None:
    """Training-loss curve (raw and smoothed) as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(df["step"], df["loss"], alpha=0.3, label="loss")
    ax.plot(df["step"], df["loss"].rolling(max(1, len(df) // 20), min_periods=1).mean(), label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_model_folder(out_dir: str | Path, tensors: dict[str, torch.Tensor], config: dict,
                       progress: Progress, title: str, extra_files: dict[str, object] | None = None,
                       finalize: Callable[[Path], None] | None = None,
                       cases: dict[str, list[str]] | None = None) -> None:
    """model.safetensors + config.json + training_log.csv + training_curve.png (+ cases.csv: every volume the
    model was fitted or selected on, by role, so that no scored case can hide in it), renamed in at the end."""
    with atomic_dir(out_dir) as partial:
        save_file({k: v.detach().cpu().clone() for k, v in tensors.items()}, str(partial / "model.safetensors"))
        write_json(config, partial / "config.json")
        df = progress.frame()
        df.to_csv(partial / "training_log.csv", index=False)
        if len(df):
            plot_curve(df, partial / "training_curve.png", title)
        for name, obj in (extra_files or {}).items():
            write_json(obj, partial / name)
        if cases is not None:
            pd.DataFrame([(n, role) for role, names in cases.items() for n in names],
                         columns=["volume_name", "role"]).to_csv(partial / "cases.csv", index=False)
        if finalize is not None:
            finalize(partial)
