"""Where each dataset's files are (the configured copy, or the demo the workflow generates) and its manifests."""

from __future__ import annotations

from pathlib import Path

CT_RATE_DEMO = "results/demo/ct_rate"
ABDOMEN_DEMO = "results/demo/abdomen_atlas"


def manifest_path(dataset: str) -> str:
    """The manifest a dataset's ingest checkpoint writes (relative to the project root)."""
    return f"results/manifest/{dataset}.parquet"


CT_RATE_MANIFEST = manifest_path("ct_rate")
UNLISTED_VOLUMES = "results/manifest/ct_rate_unlisted.csv"  # volume files no report row names
# The Stage 1 case list (a manifest of its own, sharded anew): pseudo-labels and label maps cover only these.
STAGE1_CASES = "results/labels/ct_rate_stage1_cases.parquet"
ABDOMEN_MANIFEST = manifest_path("abdomen_atlas")
ABDOMEN_CASES = "results/labels/abdomen_atlas_cases.parquet"  # with the RadGPT lesion labels (`abdomen-cases`)


def training_manifest_path(dataset: str) -> str:
    """The manifest Stages 2 and 3, generation and scoring read; it names its label set. CT-RATE's and a CSV
    dataset's labels come with the data (the ingested manifest); AbdomenAtlas's from its masks, merged in by
    the `abdomen-cases` step."""
    return ABDOMEN_CASES if dataset == "abdomen_atlas" else manifest_path(dataset)


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
