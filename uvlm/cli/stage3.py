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
                 stage_to_layer=s3["injection"]["stage_to_layer"], features=a.features or None,
                 loader_workers=cfg["loader_workers"])


def cmd_stage3_features(a: argparse.Namespace, cfg: dict) -> None:
    """One split's stored features of a frozen encoder (uvlm.train.feature_cache): the training split's volumes
    with a report (what Stage 3 fits and selects on) or the scored split's (what generation reads)."""
    from uvlm.data.holdout import split_volumes
    from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder
    from uvlm.train.feature_cache import write_features
    from uvlm.train.runtime import setup_runtime

    enc_cfg = EncoderConfig.from_config(cfg["encoder"])
    rt = setup_runtime(cfg["device"], cfg["threads"], cfg["seed"])  # then the same random encoder as Stage 3's
    encoder = load_encoder(a.init, expected=enc_cfg)[0] if a.init else build_encoder(enc_cfg)
    data = split_volumes(a.manifest, a.preprocessed, a.split, "report" if a.split == "train" else None)
    s3 = cfg["stage3"]
    meta = write_features(encoder.to(rt.device), [data], -a.depth, a.out, rt.device, s3["batch_size"],
                          s3["feature_cache_gb"], f"{a.split} features", mixed_precision=a.split == "train")
    log.info("%s features of %d volumes: %.2f MB each, %.2f GB in all%s -> %s", a.split, meta["volumes"],
             meta.get("bytes_per_volume", 0) / 1e6, meta.get("gb", 0.0),
             "" if meta["stored"] else f" (not stored: {meta['reason']})", a.out)
