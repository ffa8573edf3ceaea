"""Stage 3 phase: the report tokenizer and report-generation training (DVC stage `stage3`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("uvlm")


def cmd_tokenizer(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.text.tokenizer import from_hf_folder, train_bpe

    if cfg["stage3"]["tokenizer_dir"]:
        tok = from_hf_folder(cfg["stage3"]["tokenizer_dir"], Path(a.out))
        log.info("tokenizer from %s: %d tokens -> %s", cfg["stage3"]["tokenizer_dir"], tok.get_vocab_size(), a.out)
        return
    df = pd.read_parquet(a.manifest)
    texts = df.loc[(df["split"] == "train") & df["has_report"], "report_text"].tolist()  # training split only
    tok = train_bpe(texts, cfg["stage3"]["vocab_size"], Path(a.out))
    log.info("BPE tokenizer: %d tokens from %d training reports -> %s", tok.get_vocab_size(), len(texts), a.out)


def cmd_stage3(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.holdout import fit_and_holdout
    from uvlm.experiments import experiment
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage3 import Stage3Config, train_stage3

    exp = experiment(cfg, a.experiment)
    s3 = cfg["stage3"]
    train, holdout = fit_and_holdout(a.manifest, a.preprocessed, "report",
                                     cfg["model_selection"]["holdout_fraction"], cfg["seed"])
    train_stage3(train, holdout, a.tokenizer, a.init or None, EncoderConfig.from_config(cfg["encoder"]),
                 tuple(cfg["preprocess"]["grid"]), s3["decoder"], Stage3Config.from_config(s3), exp, a.out,
                 cfg["device"], cfg["threads"], cfg["seed"], hf=s3["hf"],
                 stage_to_layer=s3["injection"]["stage_to_layer"])
