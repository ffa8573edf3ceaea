"""The training loop Stages 2 and 3 share: accumulation, NaN stop, checkpoints, resume, best model.

A run keeps `<out>.work/checkpoint_latest.pt` (model, optimiser, step, RNG states, log rows, best
model so far), written atomically every `checkpoint_every` steps. Rerunning the same command after a
kill resumes from it and reaches the same weights as an uninterrupted run: the LR schedule is a
function of the step, the batch order is replayed from the seed, and every RNG state is restored.
The file is our own and is read with torch's weights-only loader. Under DDP rank 0 writes it (the
weights are the same on every rank); on resume every rank restores rank 0's RNG states. A checkpoint from another config
is not resumed (its fingerprint differs); it is set aside as `checkpoint_stale.pt`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from uvlm.train.runtime import OptimConfig, Progress, Runtime, autocast, set_lr

log = logging.getLogger(__name__)


@dataclass
class Checkpointing:
    work_dir: Path           # <out>.work: survives a failed job (Snakemake removes only declared outputs)
    every: int               # steps between checkpoints (0 = never)
    fingerprint: str         # hash of everything that defines the run; a mismatch means "start afresh"

    @property
    def path(self) -> Path:
        return self.work_dir / "checkpoint_latest.pt"


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rng_state(gens: list[torch.Generator]) -> dict[str, object]:
    state = {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in gens]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gens: list[torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for g, s in zip(gens, state["generators"], strict=True):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ck: Checkpointing, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    progress: Progress, gens: list[torch.Generator], best: dict,
                    smoothed: float | None = None) -> None:
    ck.work_dir.mkdir(parents=True, exist_ok=True)
    tmp = ck.work_dir / f".checkpoint.{os.getpid()}.tmp"
    # a LoRA-wrapped LM saves only what trains (its frozen base is rebuilt from the model folder)
    weights = model.state_dict_for_save() if hasattr(model, "state_dict_for_save") else model.state_dict()
    torch.save({"fingerprint": ck.fingerprint, "step": step, "model": weights,
                "optimizer": optimizer.state_dict(), "rng": _rng_state(gens), "rows": progress.rows,
                "best": best, "smoothed": smoothed}, tmp)
    tmp.replace(ck.path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def load_checkpoint(ck: Checkpointing) -> dict | None:
    if not ck.path.is_file():
        return None
    state = torch.load(ck.path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != ck.fingerprint:
        log.warning("%s was written by another configuration; starting afresh (kept as checkpoint_stale.pt)",
                    ck.path)
        ck.path.replace(ck.work_dir / "checkpoint_stale.pt")
        return None
    return state


@dataclass
class FitResult:
    progress: Progress
    best: dict               # {"step", "value", "state"} of the best evaluation, or {} without evaluation


def fit(model: torch.nn.Module, train_module: torch.nn.Module, optimizer: torch.optim.Optimizer,
        cfg: OptimConfig, rt: Runtime, batches: Iterator[list[int]],
        micro_loss: Callable[[torch.nn.Module, list[int]], torch.Tensor], stage: str, ck: Checkpointing,
        generators: list[torch.Generator] | None = None,
        evaluate: Callable[[], float] | None = None, eval_every: int = 0, ema: float = 0.0) -> FitResult:
    """Train for cfg.steps optimiser steps of cfg.accum_steps micro-batches each.

    micro_loss(train_module, indices) -> scalar loss of one micro-batch (forward under autocast).
    evaluate() -> a hold-out score where higher is better (hold-out AUC, minus hold-out loss), every
    eval_every steps and at the last; the weights with the best smoothed score are kept. Smoothing is the
    authors' exponential moving average, smoothed = ema * previous + (1 - ema) * score (ema 0: none).
    """
    gens = generators or []
    progress = Progress(cfg.steps, name=stage)
    best: dict = {}
    smoothed: float | None = None
    start = last_saved = 0
    state = load_checkpoint(ck)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], gens)
        progress.rows = list(state["rows"])
        best, start = dict(state["best"]), int(state["step"])
        smoothed = state.get("smoothed")
        last_saved = start
        for _ in range(start * cfg.accum_steps):  # replay the batch order up to the checkpoint
            next(batches)
        log.info("%s: resuming from %s at step %d/%d", stage, ck.path, start, cfg.steps)
    accum = max(cfg.accum_steps, 1)
    model.train()
    for step in range(start + 1, cfg.steps + 1):
        set_lr(optimizer, step - 1, cfg.steps)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(accum):
            idx = next(batches)
            sync = micro == accum - 1 or not hasattr(train_module, "no_sync")
            with nullcontext() if sync else train_module.no_sync():  # DDP all-reduces on the last one only
                with autocast(rt.device):
                    loss = micro_loss(train_module, idx)
                if not torch.isfinite(loss):
                    kept = f"the last good checkpoint (step {last_saved}) stays at {ck.path}" if last_saved else \
                        "no checkpoint was written yet"
                    raise FloatingPointError(f"{stage}: loss is {loss.item()} at step {step}; stopped before "
                                             f"updating the weights; {kept}")
                (loss.float() / accum).backward()
            total += loss.item() / accum
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        progress.update(step, total, optimizer.param_groups[0]["lr"], cfg.batch_size * accum)
        if evaluate is not None and eval_every and (step % eval_every == 0 or step == cfg.steps):
            raw = evaluate()
            if raw == raw:  # a NaN (e.g. one class only in the hold-out) leaves the average as it was
                smoothed = raw if smoothed is None else ema * smoothed + (1 - ema) * raw
            score = float("-inf") if smoothed is None else smoothed
            progress.rows[-1].update(holdout=raw, holdout_smoothed=score)
            model.train()
            if not best or score > best["value"]:
                best = {"step": step, "value": score,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            log.info("%s step %d: hold-out score %.4f, smoothed %.4f (best %.4f at step %d)", stage, step, raw,
                     score, best["value"], best["step"])
        if ck.every and (step % ck.every == 0 or step == cfg.steps) and rt.is_main:
            save_checkpoint(ck, model, optimizer, step, progress, gens, best, smoothed)
            last_saved = step
    return FitResult(progress, best)


def finish(ck: Checkpointing, rt: Runtime) -> None:
    """The model folder is written: the resume state is no longer needed."""
    if rt.is_main:
        shutil.rmtree(ck.work_dir, ignore_errors=True)
