"""Data phase: demo datasets and manifests (DVC stage `data`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from uvlm.data.roots import abdomen_root, ct_rate_root

log = logging.getLogger("uvlm")


def cmd_demo_data(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.demo.ct_rate_writer import DemoConfig, write_demo_ct_rate
    from uvlm.demo.phantom import PhantomConfig

    d = cfg["demo"]
    phantom = PhantomConfig(shape=tuple(d["shape"]), spacing_mm=tuple(d["spacing_mm"]))
    write_demo_ct_rate(Path(a.out), DemoConfig(n_patients=d["n_patients"], valid_fraction=d["valid_fraction"],
                                               abnormality_prob=d["abnormality_prob"], seed=cfg["seed"],
                                               report_style=d["report_style"], phantom=phantom))


def cmd_demo_abdomen(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.demo.abdomen_writer import write_demo_abdomen_atlas

    d = cfg["abdomen_atlas"]["demo"]
    write_demo_abdomen_atlas(Path(a.out), d["n_cases"], cfg["seed"], tuple(d["shape"]), tuple(d["spacing_mm"]))


def cmd_ingest(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.ct_rate import find_volumes, ingest_ct_rate, unlisted_volume_files
    from uvlm.io import write_csv, write_parquet

    root = (Path(a.root) if a.root else ct_rate_root(cfg)).resolve()  # absolute image paths in the manifest
    volumes = find_volumes(root / "dataset")  # walked once, for the manifest and the unlisted files
    df = ingest_ct_rate(root, cfg["shard_size"], cfg["rexgrounding_root"] or None, volumes=volumes)
    unlisted = unlisted_volume_files(volumes, df)
    write_parquet(df, a.out)
    write_csv(unlisted, a.unlisted)
    log.info("manifest: %d volumes (%d missing files, %d without labels, %d with empty reports), %d shards -> %s; "
             "%d volume files without a report row -> %s", len(df), int((~df["image_exists"]).sum()),
             int((~df["labels_known"]).sum()), int((~df["has_report"]).sum()), int(df["shard"].max()) + 1, a.out,
             len(unlisted), a.unlisted)


def cmd_ingest_abdomen(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.abdomen_atlas import ingest_abdomen_atlas
    from uvlm.io import write_parquet

    root = Path(a.root) if a.root else abdomen_root(cfg)
    aa = cfg["abdomen_atlas"]
    df = ingest_abdomen_atlas(root, cfg["shard_size"], valid_fraction=aa["valid_fraction"], seed=cfg["seed"],
                              report_column=aa["report_column"])
    write_parquet(df, a.out)
    log.info("AbdomenAtlas manifest: %d cases (%d train), %d shards -> %s", len(df),
             int((df["split"] == "train").sum()), int(df["shard"].max()) + 1, a.out)


def cmd_ingest_csv(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.csv_manifest import CsvDatasetConfig, CsvManifestError, ingest_csv
    from uvlm.io import write_parquet

    source = CsvDatasetConfig.from_config(cfg["csv_datasets"][a.dataset]["source"])
    try:
        df = ingest_csv(source, cfg["shard_size"], a.dataset)
    except CsvManifestError as err:
        raise SystemExit(f"dataset {a.dataset}: {err}") from None
    write_parquet(df, a.out)
    log.info("%s manifest: %d cases (%d train), %d limited, %d with masks, %d shards -> %s", a.dataset, len(df),
             int((df["split"] == "train").sum()), int((df["problems"] != "").sum()), int((df["seg_dir"] != "").sum()),
             int(df["shard"].max()) + 1, a.out)
