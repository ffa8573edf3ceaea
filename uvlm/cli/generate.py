"""Generate phase: reports for the scored split (DVC stage `generate`)."""

from __future__ import annotations

import argparse


def cmd_generate(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.holdout import split_volumes
    from uvlm.generate import decoding_from_config, generate_reports

    g = cfg["generate"]
    generate_reports(a.model, split_volumes(a.manifest, a.preprocessed, a.split), a.out, g["max_new_tokens"],
                     g["batch_size"], cfg["device"], cfg["threads"], decoding_from_config({**g, "seed": cfg["seed"]}))
