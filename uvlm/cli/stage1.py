"""Stage 1 phase: nnU-Net export and segmentation pretraining (DVC stage `stage1`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("uvlm")


def cmd_nnunet_export(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.shards import read_shard_indexes
    from uvlm.train.nnunet_export import export_nnunet_dataset, load_class_table, select_cases

    rows = select_cases(pd.read_parquet(a.manifest), read_shard_indexes(a.labels), a.granularity)
    if rows.empty:
        raise SystemExit(f"no Stage 1 case has {a.granularity} labels; nothing to export")
    out = export_nnunet_dataset(rows, a.granularity, load_class_table(a.labels, a.granularity),
                                cfg["stage1"]["dataset_ids"][a.granularity], a.out, seed=cfg["seed"])
    log.info("nnU-Net raw dataset with %d cases -> %s", len(rows), out)


def cmd_stage1(a: argparse.Namespace, cfg: dict) -> None:
    import torch

    from uvlm.device import pick_device
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage1 import Stage1Config, run_stage1

    torch.set_num_threads(cfg["threads"])
    datasets = sorted(Path(a.raw).glob("Dataset*"))
    if len(datasets) != 1:
        raise SystemExit(f"{a.raw}: expected one nnU-Net Dataset folder, found {[d.name for d in datasets]}")
    run_stage1(datasets[0], a.work, a.out, EncoderConfig.from_config(cfg["encoder"]),
               Stage1Config.from_config(cfg["stage1"]), pick_device(cfg["device"]), cfg["seed"])


def cmd_stage1_import(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage1 import import_stage1

    import_stage1(a.checkpoint, a.out, EncoderConfig.from_config(cfg["encoder"]))
    log.info("Stage 1 encoder imported from %s -> %s", a.checkpoint, a.out)
