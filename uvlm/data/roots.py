"""Where each dataset's files are (the configured copy, or the demo the workflow generates) and its manifests."""

from __future__ import annotations

from pathlib import Path

CT_RATE_DEMO = "results/demo/ct_rate"
ABDOMEN_DEMO = "results/demo/abdomen_atlas"
# The files the workflow's checkpoints write (relative to the project root).
CT_RATE_MANIFEST = "results/manifest/ct_rate.parquet"
UNLISTED_VOLUMES = "results/manifest/ct_rate_unlisted.csv"  # volume files no report row names
# The Stage 1 case list (a manifest of its own, sharded anew): pseudo-labels and label maps cover only these.
STAGE1_CASES = "results/labels/ct_rate_stage1_cases.parquet"
ABDOMEN_MANIFEST = "results/manifest/abdomen_atlas.parquet"
# The manifests Stages 2 and 3, generation and scoring read: each names its label set (CT-RATE's labels come
# with the data; AbdomenAtlas's from the masks, merged in by the `abdomen-cases` step).
TRAINING_MANIFESTS = {"ct_rate": CT_RATE_MANIFEST, "abdomen_atlas": "results/labels/abdomen_atlas_cases.parquet"}


def ct_rate_root(cfg: dict) -> Path:
    """The CT-RATE root in use (config `ct_rate_root`, "" = the generated demo)."""
    return Path(cfg["ct_rate_root"]) if cfg["ct_rate_root"] else Path(CT_RATE_DEMO)


def abdomen_root(cfg: dict) -> Path:
    """The AbdomenAtlas 3.0 root in use (config `abdomen_atlas.root`, "" = the generated demo)."""
    root = cfg["abdomen_atlas"]["root"]
    return Path(root) if root else Path(ABDOMEN_DEMO)


def dataset_label(cfg: dict) -> str:
    """How tables and the report name the CT-RATE-layout data in use."""
    return "CT-RATE" if cfg["ct_rate_root"] else "synthetic demo"


def abdomen_label(cfg: dict) -> str:
    """How Table 3 names the AbdomenAtlas data in use."""
    return "AbdomenAtlas 3.0" if cfg["abdomen_atlas"]["root"] else "AbdomenAtlas demo"
