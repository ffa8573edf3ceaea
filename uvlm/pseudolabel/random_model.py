"""Write an nnU-Net v2 model folder with randomly initialised weights.

Model weights (TotalSegmentator's, the airway and vessel models') live on gated hubs. A folder with
the same structure (plans.json, dataset.json, fold_X/checkpoint_final.pth) and a tiny random
network runs the real inference code end to end offline: the masks are meaningless, the plumbing
(reading, resampling, sliding window, export, class tables, geometry) is real. Used by the tests and
the benchmarks; never by the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def random_plans(dataset_name: str, plans_name: str, spacing: tuple[float, float, float],
                 patch_size: tuple[int, int, int], features: tuple[int, ...] = (4, 8, 16)) -> dict:
    """nnU-Net plans with one 3d_fullres configuration of a small plain U-Net (CT normalisation)."""
    n = len(features)
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    return {
        "dataset_name": dataset_name, "plans_name": plans_name,
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": f"{plans_name}_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
            "spacing": list(spacing), "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * n, "strides": strides, "n_conv_per_stage": [1] * n,
                    "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": False}},
        "experiment_planner_used": "random_model (uvlm tests)", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3000.0, "mean": 0.0, "median": 0.0, "min": -1024.0, "percentile_00_5": -1000.0,
            "percentile_99_5": 1000.0, "std": 400.0}},
    }


def write_random_model_folder(folder: str | Path, labels: dict[int, str], spacing: tuple[float, float, float],
                              patch_size: tuple[int, int, int] = (32, 32, 32), trainer: str = "nnUNetTrainer",
                              plans_name: str = "nnUNetPlans", folds: tuple[int, ...] = (0,), seed: int = 0) -> Path:
    """Create `folder` as a trained-looking nnU-Net result folder; labels: value -> name (no background)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plans = random_plans(folder.parent.name or "Dataset999_random", plans_name, spacing, patch_size)
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{n: v for v, n in sorted(labels.items())}},
               "numTraining": 0, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(seed)
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 1, max(labels) + 1, allow_init=True, deep_supervision=False)
    for fold in folds:
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "trainer_name": trainer, "current_epoch": 1,
                    "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold,
                                  "dataset_json": dataset, "device": "cpu"},
                    "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
