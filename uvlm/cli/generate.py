"""Generate phase: reports for the scored split, and lesion labels from Stage 1's segmentations (DVC stage
`generate`)."""

from __future__ import annotations

import argparse


def cmd_generate(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.holdout import split_volumes
    from uvlm.generate import decoding_from_config, generate_reports

    g = cfg["generate"]
    generate_reports(a.model, split_volumes(a.manifest, a.preprocessed, a.split), a.out, g["max_new_tokens"],
                     g["batch_size"], cfg["device"], cfg["threads"], decoding_from_config({**g, "seed": cfg["seed"]}),
                     features=a.features or None)


def cmd_seg_detect(a: argparse.Namespace, cfg: dict) -> None:
    from pathlib import Path

    import pandas as pd
    import torch

    from uvlm.data.manifest import usable
    from uvlm.device import pick_device
    from uvlm.evaluation.seg_detection import detect_cases
    from uvlm.experiments import NNUNET_MODEL
    from uvlm.labels.label_map import load_label_map

    torch.set_num_threads(cfg["threads"])
    df = pd.read_parquet(a.manifest)
    rows = df[(df["split"] == a.split) & df["image_exists"] & usable(df, "scoring")]  # the report rows' cases
    detect_cases(rows, Path(a.model) / NNUNET_MODEL, load_label_map(a.label_map, a.granularity), a.out,
                 pick_device(cfg["device"]).type, cfg["abdomen_atlas"]["lesion_min_mm3"], cfg["on_volume_error"])
