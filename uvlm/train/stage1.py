"""Stage 1: segmentation pretraining with nnU-Net v2's own planner, preprocessor and trainer.

Our config decides the architecture, spacing, patch size, batch size and schedule: the plans are
written from it (starting from nnU-Net's ResEnc planner for everything else: normalisation,
resampling, intensity properties), and the stock nnUNetTrainer gets its schedule as attributes
(no trainer subclass per hyperparameter). The trained encoder is handed on as safetensors.
Multi-GPU: start this under torchrun; nnU-Net's trainer then runs DDP itself.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from uvlm.experiments import NNUNET_MODEL
from uvlm.io import atomic_dir, write_json
from uvlm.models.encoder import EncoderConfig, save_encoder

log = logging.getLogger(__name__)
PLANS_NAME = "uvlmPlans"
CONFIGURATION = "3d_fullres"


@dataclass
class Stage1Config:
    spacing_mm: list[float]            # (z, y, x)
    patch_size: list[int]              # (D, H, W)
    batch_size: int
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    initial_lr: float
    augmentation_workers: int = 0
    trainer: str = "nnUNetTrainer"     # any stock nnU-Net v2 trainer class, by name (as nnUNetv2_train -tr)

    @classmethod
    def from_config(cls, cfg: dict) -> Stage1Config:
        from uvlm.train.runtime import from_section

        return from_section(cls, cfg)


def _set_nnunet_paths(work_dir: Path, raw_root: Path) -> None:
    """nnU-Net reads its folders from the environment (lazily in 2.8); we set them from our config."""
    os.environ["nnUNet_raw"] = str(raw_root)
    os.environ["nnUNet_preprocessed"] = str(work_dir / "preprocessed")
    os.environ["nnUNet_results"] = str(work_dir / "results")


def write_plans(dataset_id: int, enc: EncoderConfig, cfg: Stage1Config) -> dict:
    """Run nnU-Net's ResEnc planner, then overwrite 3d_fullres from our config; save as uvlmPlans."""
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncM,
    )
    from nnunetv2.paths import nnUNet_preprocessed

    planner = nnUNetPlannerResEncM(dataset_id, plans_name=PLANS_NAME,
                                   overwrite_target_spacing=[float(s) for s in cfg.spacing_mm])
    plans = planner.plan_experiment()
    full = plans["configurations"][CONFIGURATION]
    full.update({
        "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}",
        "spacing": [float(s) for s in cfg.spacing_mm],
        "patch_size": [int(p) for p in cfg.patch_size],
        "batch_size": int(cfg.batch_size),
        "architecture": enc.arch_kwargs(),
    })
    plans["configurations"] = {CONFIGURATION: full}
    plans["transpose_forward"] = [0, 1, 2]   # our (D, H, W) order is the plans' order
    plans["transpose_backward"] = [0, 1, 2]
    plans["uvlm_note"] = "written by uvlm.train.stage1 from the uvlm config; edit the config, not this file"
    write_json(plans, Path(nnUNet_preprocessed.require()) / planner.dataset_name / f"{PLANS_NAME}.json")
    return plans


def prepare(dataset_dir: Path, dataset_id: int, enc: EncoderConfig, cfg: Stage1Config) -> dict:
    """Fingerprint, plans and preprocessing (nnU-Net's code, single process)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    extract_fingerprint_dataset(dataset_id, num_processes=1, check_dataset_integrity=True, clean=True,
                                verbose=False, show_progress_bar=False)
    plans = write_plans(dataset_id, enc, cfg)
    DefaultPreprocessor(verbose=False).run(dataset_id, CONFIGURATION, PLANS_NAME, num_processes=1)
    split = json.loads((dataset_dir / "uvlm_split.json").read_text())
    write_json([split], Path(nnUNet_preprocessed.require()) / dataset_dir.name / "splits_final.json")
    return plans


def find_trainer(name: str) -> type:
    """A stock nnU-Net v2 trainer class by name, found the way nnUNetv2_train -tr finds it."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"), name,
                                        "nnunetv2.training.nnUNetTrainer")
    if found is None:
        raise ValueError(f"stage1.trainer: no nnU-Net v2 trainer class named '{name}' (e.g. nnUNetTrainer, "
                         "nnUNetTrainerAdam)")
    return found


def _training_log(trainer) -> pd.DataFrame:
    """Per-epoch losses, pseudo Dice and LR from nnU-Net's own logger."""
    cols = ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice", "lrs")
    values = {c: [float(v) for v in trainer.logger.get_value(c, step=None)] for c in cols}
    n = len(values["train_losses"])
    df = pd.DataFrame({c: v[:n] for c, v in values.items() if len(v) >= n})
    df.insert(0, "epoch", range(n))
    return df


def run_stage1(dataset_dir: str | Path, work_dir: str | Path, out_dir: str | Path, enc: EncoderConfig,
               cfg: Stage1Config, device: torch.device, seed: int = 0) -> None:
    """Prepare, train with nnUNetTrainer, and export the encoder to out_dir."""
    dataset_dir, work_dir, out_dir = Path(dataset_dir).resolve(), Path(work_dir).resolve(), Path(out_dir)
    dataset_id = int(dataset_dir.name[len("Dataset"):len("Dataset") + 3])
    _set_nnunet_paths(work_dir, dataset_dir.parent)
    # The planner sizes torch's thread pool from this variable (must be > 0); training reads it
    # as the number of augmentation processes (0 = in-process, deterministic).
    os.environ["nnUNet_n_proc_DA"] = str(max(1, torch.get_num_threads()))
    # nnU-Net's data loader and augmentation draw from numpy's and Python's global generators.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    rank = dist.get_rank() if distributed else 0
    if rank == 0:
        plans = prepare(dataset_dir, dataset_id, enc, cfg)
    if distributed:
        dist.barrier()
    os.environ["nnUNet_n_proc_DA"] = str(cfg.augmentation_workers)
    from nnunetv2.paths import nnUNet_preprocessed

    trainer_class = find_trainer(cfg.trainer)
    pre = Path(nnUNet_preprocessed.require()) / dataset_dir.name
    plans = json.loads((pre / f"{PLANS_NAME}.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = trainer_class(plans={**plans, "continue_training": True}, configuration=CONFIGURATION, fold=0,
                            dataset_json=dataset_json, device=device)
    trainer.num_epochs = cfg.epochs
    trainer.num_iterations_per_epoch = cfg.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = cfg.val_iterations_per_epoch
    trainer.initial_lr = cfg.initial_lr
    trainer.save_every = 1  # checkpoint_latest every epoch, so a killed job resumes where it stopped
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    if latest.is_file():  # written by this same step earlier (our own file), resume from it
        log.info("resuming nnU-Net training from %s", latest)
        trainer.load_checkpoint(str(latest))
    trainer.run_training()

    if rank == 0:
        net = trainer.network.module if hasattr(trainer.network, "module") else trainer.network
        net = getattr(net, "_orig_mod", net)
        classes = {str(v): k for k, v in dataset_json["labels"].items()}
        with atomic_dir(out_dir) as partial:
            save_encoder(net.encoder, enc, partial, extra={
                "stage": 1, "dataset": dataset_dir.name, "classes": classes, "spacing_mm": cfg.spacing_mm,
                "patch_size": cfg.patch_size, "epochs": cfg.epochs, "trainer": cfg.trainer,
            })
            _training_log(trainer).to_csv(partial / "training_log.csv", index=False)
            shutil.copyfile(pre / f"{PLANS_NAME}.json", partial / "plans.json")
            # the whole segmentation network as an nnU-Net model folder, for segmentation-based detection
            # (uvlm.evaluation.seg_detection): plans.json, dataset.json, fold_0/checkpoint_final.pth
            model = partial / NNUNET_MODEL
            (model / "fold_0").mkdir(parents=True)
            shutil.copyfile(pre / f"{PLANS_NAME}.json", model / "plans.json")
            shutil.copyfile(pre / "dataset.json", model / "dataset.json")
            shutil.copyfile(Path(trainer.output_folder) / "checkpoint_final.pth", model / "fold_0" / "checkpoint_final.pth")
            progress = Path(trainer.output_folder) / "progress.png"
            if progress.is_file():
                shutil.copyfile(progress, partial / "training_curve.png")
    if distributed:
        dist.destroy_process_group()


def import_stage1(checkpoint: str | Path, out_dir: str | Path, enc: EncoderConfig) -> None:
    """Use the encoder of a standalone nnU-Net v2 run (its checkpoint_final.pth) as the Stage 1 result.

    The checkpoint is read with the weights-only loader; its plans must describe the architecture
    our config asks for (an error lists every differing key), and its encoder weights must load
    strictly. Written like a trained Stage 1 folder: encoder.safetensors, encoder_config.json, plans.json, and
    the whole network as an nnU-Net model folder (nnunet_model/: plans.json, dataset.json from the checkpoint's
    own init args or the run folder, fold_0/checkpoint_final.pth) for segmentation-based detection.
    """
    from uvlm.models.encoder import build_encoder
    from uvlm.pseudolabel.nnunet_model import load_checkpoint

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    ckpt = load_checkpoint(checkpoint)
    plans, configuration = ckpt["init_args"]["plans"], ckpt["init_args"]["configuration"]
    arch = plans["configurations"][configuration]["architecture"]
    want = enc.arch_kwargs()
    diff = {k: (arch["arch_kwargs"].get(k), v) for k, v in want["arch_kwargs"].items()
            if arch["arch_kwargs"].get(k) != v}
    if arch["network_class_name"] != want["network_class_name"]:
        diff["network_class_name"] = (arch["network_class_name"], want["network_class_name"])
    if diff:
        raise ValueError(f"{checkpoint}: its architecture differs from config 'encoder' "
                         f"(key: (checkpoint, config)): {diff}")
    state = {k[len("encoder."):]: v for k, v in ckpt["network_weights"].items() if k.startswith("encoder.")}
    encoder = build_encoder(enc)
    encoder.load_state_dict(state, strict=True)
    with atomic_dir(out_dir) as partial:
        save_encoder(encoder, enc, partial, extra={"stage": 1, "imported_from": str(checkpoint.resolve()),
                                                   "trainer": ckpt["trainer_name"],
                                                   "epochs": int(ckpt.get("current_epoch", 0))})
        write_json(plans, partial / "plans.json")
        dataset_json = ckpt["init_args"].get("dataset_json")
        beside = checkpoint.parent.parent / "dataset.json"  # <run>/fold_X/checkpoint_final.pth
        if dataset_json is None and beside.is_file():
            dataset_json = json.loads(beside.read_text())
        if dataset_json is None:
            log.warning("%s: no dataset.json in the checkpoint or beside its fold folder: no %s/, so no "
                        "segmentation-based detection from this Stage 1", checkpoint, NNUNET_MODEL)
            return
        model = partial / NNUNET_MODEL
        (model / "fold_0").mkdir(parents=True)
        write_json(plans, model / "plans.json")
        write_json(dataset_json, model / "dataset.json")
        shutil.copyfile(checkpoint, model / "fold_0" / "checkpoint_final.pth")
