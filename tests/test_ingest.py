"""CT-RATE ingest: layout, name forms, 'Not given.', split by patient, and broken volumes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import truncate_gzip

from uvlm.constants import CT_RATE_LABELS
from uvlm.data.ct_rate import IngestError, ingest_ct_rate
from uvlm.data.manifest import ManifestError, validate_manifest
from uvlm.preprocess.volume import preprocess_shard
from uvlm.shards import ShardError


def test_manifest_rows_and_fields(ct_rate_root: Path) -> None:
    df = ingest_ct_rate(ct_rate_root, shard_size=4)
    assert len(df) == 6
    assert df["image_exists"].all()
    row = df.set_index("volume_name").loc["train_1_a_2"]
    assert (row["patient_id"], row["scan_id"], row["reconstruction"]) == ("train_1", "train_1_a", 2)
    # train_1 has two scans and scan a has two reconstructions; all in one split.
    assert (df["patient_id"] == "train_1").sum() == 3
    assert df.loc[df["volume_name"] == "train_1_b_1", "image_exists"].item()  # written without .nii.gz
    assert (df["clinical_information"] == "").all()  # "Not given." -> ""
    assert df.set_index("volume_name").loc["train_2_a_1", "report_text"] == "Findings: Findings of train_2_a_1. Impressions:"
    assert row["xy_spacing"] == 1.5 and row["z_spacing"] == 2.0 and row["rescale_intercept"] == -1024
    assert list(df["shard"]) == [0, 0, 0, 0, 1, 1]


def test_labels_match_label_file(ct_rate_root: Path) -> None:
    df = ingest_ct_rate(ct_rate_root, shard_size=4).set_index("volume_name")
    lab = pd.read_csv(ct_rate_root / "multi_abnormality_labels" / "valid_predicted_labels.csv")
    for _, r in lab.iterrows():
        name = r["VolumeName"].removesuffix(".nii.gz")
        assert [int(df.loc[name, c]) for c in CT_RATE_LABELS] == [int(r[c]) for c in CT_RATE_LABELS]


def test_missing_volume_is_flagged_and_preprocess_names_it(ct_rate_root: Path, tmp_path: Path) -> None:
    victim = next((ct_rate_root / "dataset").rglob("train_2_a_1.nii.gz"))
    victim.unlink()
    df = ingest_ct_rate(ct_rate_root, shard_size=4)
    assert not df.loc[df["volume_name"] == "train_2_a_1", "image_exists"].item()
    shard = df[df["shard"] == 0]
    with pytest.raises(ShardError, match="train_2_a_1"):
        preprocess_shard(shard, tmp_path / "pre", (8, 8, 8), (-1000, 1000), "LPS", on_error="fail")
    assert not (tmp_path / "pre").exists()  # a failed shard leaves no complete-looking output
    index = preprocess_shard(shard, tmp_path / "pre", (8, 8, 8), (-1000, 1000), "LPS", on_error="skip")
    assert sorted(index["volume_name"]) == ["train_1_a_1", "train_1_a_2", "train_1_b_1"]
    errors = pd.read_csv(tmp_path / "pre" / "errors.csv")
    assert errors["volume_name"].tolist() == ["train_2_a_1"]


def test_truncated_volume_error_names_file(ct_rate_root: Path, tmp_path: Path) -> None:
    victim = next((ct_rate_root / "dataset").rglob("train_1_a_2.nii.gz"))
    truncate_gzip(victim)
    df = ingest_ct_rate(ct_rate_root, shard_size=4)
    with pytest.raises(ShardError, match=r"train_1_a_2.*train_1_a_2\.nii\.gz"):
        preprocess_shard(df[df["shard"] == 0], tmp_path / "pre", (8, 8, 8), (-1000, 1000), "LPS")
    # The other volumes of the shard are still processed before the shard reports failure.
    index = preprocess_shard(df[df["shard"] == 0], tmp_path / "pre", (8, 8, 8), (-1000, 1000), "LPS", "skip")
    assert len(index) == 3


def test_missing_reports_file_is_named(ct_rate_root: Path) -> None:
    (ct_rate_root / "radiology_text_reports" / "validation_reports.csv").unlink()
    with pytest.raises(IngestError, match="validation_reports.csv"):
        ingest_ct_rate(ct_rate_root, shard_size=4)


def test_manifest_rejects_patient_in_two_splits(ct_rate_root: Path) -> None:
    df = ingest_ct_rate(ct_rate_root, shard_size=4)
    df.loc[df["volume_name"] == "train_1_a_1", "split"] = "valid"
    with pytest.raises(ManifestError, match="train_1"):
        validate_manifest(df)


def test_rexgrounding_masks_found_at_any_depth_in_either_format(ct_rate_root: Path) -> None:
    """dataset.json lists the findings; masks may be .npz or .nii.gz, nested by split or not."""
    rex = ct_rate_root / "ReXGroundingCT"
    (rex / "segmentations" / "train").mkdir(parents=True)
    (rex / "segmentations" / "train" / "train_1_a_1.nii.gz").write_bytes(b"x")
    (rex / "segmentations" / "train_2_a_1.npz").write_bytes(b"x")
    entries = [{"name": "train_1_a_1.nii.gz", "categories": {"0": "2d", "1": "1c"}},
               {"name": "train_2_a_1.nii.gz", "categories": {"0": "2b"}}]
    (rex / "dataset.json").write_text(json.dumps({"train": entries, "val": []}))
    df = ingest_ct_rate(ct_rate_root, shard_size=4).set_index("volume_name")
    assert df.loc["train_1_a_1", "lesion_mask_path"].endswith("segmentations/train/train_1_a_1.nii.gz")
    assert json.loads(df.loc["train_1_a_1", "lesion_categories"]) == ["2d", "1c"]
    assert df.loc["train_2_a_1", "lesion_mask_path"].endswith("segmentations/train_2_a_1.npz")
    assert df.loc["train_1_b_1", "lesion_mask_path"] == "" and df.loc["train_1_b_1", "lesion_categories"] == "[]"
