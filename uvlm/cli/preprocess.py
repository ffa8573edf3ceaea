"""Preprocess phase: volumes resampled to the Stage 2/3 grid (DVC stage `preprocess`)."""

from __future__ import annotations

import argparse


def cmd_preprocess(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import shard_rows
    from uvlm.preprocess.volume import preprocess_shard

    p = cfg["preprocess"]
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)
    preprocess_shard(rows, a.out, tuple(p["grid"]), tuple(p["hu_window"]), p["orientation"], cfg["on_volume_error"],
                     workers=getattr(a, "workers", 1))
