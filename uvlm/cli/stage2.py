"""Stage 2 phase: classification pretraining (DVC stage `stage2`)."""

from __future__ import annotations

import argparse


def cmd_stage2(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.holdout import fit_and_holdout, split_volumes
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage2 import Stage2Config, train_stage2

    train, holdout = fit_and_holdout(a.manifest, a.preprocessed, "labels",
                                     cfg["model_selection"]["holdout_fraction"], cfg["seed"])
    scored = split_volumes(a.manifest, a.preprocessed, "valid", "labels")  # Table 4: scores the selected weights
    train_stage2(train, holdout, scored, a.init or None, EncoderConfig.from_config(cfg["encoder"]),
                 Stage2Config.from_config(cfg["stage2"]), a.out, cfg["device"], cfg["threads"], cfg["seed"],
                 loader_workers=cfg["loader_workers"])
