"""Random-weight nnU-Net model folders of the real architectures, and per-tile costs, for the pseudo-label
cost benchmark (benchmarks/pseudolabel_bench.py).

The weights of TotalSegmentator, ATM22 and HiPaS are on gated hubs, so their plans.json cannot be read
here. The architecture is the one nnU-Net's default `ExperimentPlanner` (what TotalSegmentator's training
guide uses) gives for the model's spacing: a 6-stage plain U-Net [32..320] with 2 convs per stage and the
planner's patch. Inference cost does not depend on the weight values, so random weights cost the same.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from uvlm.pseudolabel.random_model import random_plans

TOTALSEG_TRAINER = "nnUNetTrainerNoMirroring"  # TotalSegmentator 2.x task total, 1.5 mm (map_tasks_config)
NNUNET_TRAINER = "nnUNetTrainer"               # a stock nnU-Net model: mirroring TTA allowed on axes (0, 1, 2)


def _clean(x):
    """numpy scalars and tuples -> JSON types (plans.json)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def planned_config(spacing: tuple[float, float, float], median_shape: tuple[int, int, int], n_labels: int) -> dict:
    """The 3d_fullres configuration nnU-Net's default planner makes for this spacing and median shape (z, y, x)."""
    from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner as dep

    name = "Dataset999_PlanOnly"
    with tempfile.TemporaryDirectory() as tmp:
        raw, pre = Path(tmp, "raw"), Path(tmp, "pre")
        (raw / name / "imagesTr").mkdir(parents=True)
        (pre / name).mkdir(parents=True)
        labels = {"background": 0, **{f"class_{i}": i for i in range(1, n_labels + 1)}}
        (raw / name / "dataset.json").write_text(json.dumps(
            {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}))
        # a fingerprint with only what get_plans_for_configuration reads (CT: no mask for normalisation)
        (pre / name / "dataset_fingerprint.json").write_text(json.dumps({"median_relative_size_after_cropping": 1.0}))
        with mock.patch.object(dep, "nnUNet_raw", str(raw)), mock.patch.object(dep, "nnUNet_preprocessed", str(pre)):
            planner = dep.ExperimentPlanner(name)
            cfg = planner.get_plans_for_configuration(spacing, median_shape, "bench", 1e10, {})
    return _clean(cfg)


def tiny_config(cfg: dict) -> dict:
    """The same patch, spacing and topology with 4 features and 1 conv per stage: a network whose forward is
    almost free, so a full-volume run measures everything but the network (reading, resampling, Gaussian
    accumulation, argmax, export)."""
    out = json.loads(json.dumps(cfg))
    kw = out["architecture"]["arch_kwargs"]
    kw["features_per_stage"] = [4] * kw["n_stages"]
    kw["n_conv_per_stage"] = [1] * kw["n_stages"]
    kw["n_conv_per_stage_decoder"] = [1] * (kw["n_stages"] - 1)
    return out


def build_net(cfg: dict, n_out: int, seed: int = 0) -> torch.nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = cfg["architecture"]
    torch.manual_seed(seed)
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1,
                                  n_out, allow_init=True, deep_supervision=False)


def write_model_folder(folder: Path, labels: dict[int, str], cfg: dict, trainer: str, seed: int = 0) -> Path:
    """A trained-looking nnU-Net result folder (plans.json, dataset.json, fold_0) with random weights."""
    folder.mkdir(parents=True, exist_ok=True)
    plans = random_plans(folder.parent.name, "nnUNetPlans", tuple(cfg["spacing"]), tuple(cfg["patch_size"]))
    conf = plans["configurations"]["3d_fullres"]
    conf.update({k: cfg[k] for k in ("patch_size", "spacing", "batch_size", "architecture")})
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{n: v for v, n in sorted(labels.items())}},
               "numTraining": 0, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    net = build_net(cfg, max(labels) + 1, seed)
    (folder / "fold_0").mkdir(exist_ok=True)
    axes = () if "NoMirroring" in trainer else (0, 1, 2)
    torch.save({"network_weights": net.state_dict(), "trainer_name": trainer, "current_epoch": 1,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset,
                              "device": "cpu"}, "inference_allowed_mirroring_axes": axes},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


def totalseg_parts() -> list[tuple[str, dict[int, str]]]:
    """(weights folder, class table) of the 5 models TotalSegmentator's task total (not fast) runs."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.map_to_binary import class_map_5_parts, map_taskid_to_partname_ct
    from totalsegmentator.python_api import get_task_config

    ids = get_task_config("total", fast=False, quiet=True)["task_id"]
    return [(f"{TASK_ID_WEIGHTS_CONFIGS[i]['foldername']}/{TOTALSEG_TRAINER}__nnUNetPlans__3d_fullres",
             {int(k): v for k, v in class_map_5_parts[map_taskid_to_partname_ct[i]].items()}) for i in ids]


def resampled_shape(shape_zyx: tuple[int, ...], spacing_zyx: tuple[float, ...], target: tuple[float, ...]) -> list[int]:
    """nnU-Net's / TotalSegmentator's size after resampling to the model's spacing."""
    return [int(round(s * a / b)) for s, a, b in zip(shape_zyx, spacing_zyx, target, strict=True)]


def n_tiles(image_zyx: list[int], patch: list[int], step: float) -> int:
    """Sliding-window tiles nnU-Net runs over an image (its own step rule; images smaller than the patch are
    padded to it, one tile on that axis)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    padded = [max(i, p) for i, p in zip(image_zyx, patch, strict=True)]
    return int(np.prod([len(s) for s in compute_steps_for_sliding_window(padded, patch, step)]))


def forward_flops(net: torch.nn.Module, patch: list[int]) -> float:
    """FLOPs of one forward pass over one (1, 1, *patch) tile, counted on the meta device (nothing runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(net).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 1, *patch, device="meta"))
    return float(counter.get_total_flops())


def stage1_resenc_flops(cfg_path: Path, n_classes: int = 22) -> tuple[float, list[int]]:
    """Forward FLOPs of one Stage 1 patch of our ResEnc U-Net (the network timed on the H200)."""
    import yaml

    from uvlm.config import with_defaults
    from uvlm.models.encoder import EncoderConfig, build_unet

    cfg = with_defaults(yaml.safe_load(cfg_path.read_text()))
    net = build_unet(EncoderConfig.from_config(cfg["encoder"]), n_classes, deep_supervision=False)
    patch = list(cfg["stage1"]["patch_size"])
    return forward_flops(net, patch), patch
