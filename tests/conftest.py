"""Shared fixtures: a tiny CT-RATE-layout root written from scratch (independent of uvlm.demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from hospital_data import hospital_entry, write_hospital
from micro_project import micro_config, project_copy, run_snakemake

from uvlm.cli.main import RECORD_READS
from uvlm.constants import CT_RATE_LABELS

# (VolumeName as written in the reports CSV, split). train_1 has two scans, scan a two reconstructions;
# one name is written without ".nii.gz".
VOLUMES = [
    ("train_1_a_1.nii.gz", "train"),
    ("train_1_a_2.nii.gz", "train"),
    ("train_1_b_1", "train"),
    ("train_2_a_1.nii.gz", "train"),
    ("valid_1_a_1.nii.gz", "valid"),
    ("valid_2_a_1.nii.gz", "valid"),
]


def small_ct(rng: np.random.Generator, shape=(12, 20, 20), spacing=(2.0, 1.5, 1.5)) -> sitk.Image:
    """A body-like ellipsoid of soft tissue in air (int16 HU), with (z, y, x) spacing."""
    d, h, w = shape
    z, y, x = np.mgrid[:d, :h, :w]
    body = ((y - h / 2) / (h * 0.4)) ** 2 + ((x - w / 2) / (w * 0.45)) ** 2 <= 1
    arr = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-5, 5, shape).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing[::-1])
    return img


def write_ct_rate_root(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    reports = {"train": [], "valid": []}
    labels = {"train": [], "valid": []}
    meta = {"train": [], "valid": []}
    for name, split in VOLUMES:
        stem = name.removesuffix(".nii.gz")
        parts = stem.split("_")
        folder = root / "dataset" / f"{split}_fixed" / "_".join(parts[:2]) / "_".join(parts[:3])
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(small_ct(rng), str(folder / f"{stem}.nii.gz"))
        reports[split].append({"VolumeName": name, "ClinicalInformation_EN": "Not given.",
                               "Technique_EN": "Non-contrast chest CT.", "Findings_EN": f"Findings of {stem}.",
                               "Impressions_EN": "Not given." if stem == "train_2_a_1" else "Normal."})
        labels[split].append({"VolumeName": f"{stem}.nii.gz", **{c: int(rng.integers(0, 2)) for c in CT_RATE_LABELS}})
        meta[split].append({"VolumeName": f"{stem}.nii.gz", "XYSpacing": "[1.5, 1.5]", "ZSpacing": "2.0",
                            "RescaleIntercept": "-1024", "RescaleSlope": "1", "Rows": 20, "Columns": 20})
    names = {"train": ("train_reports.csv", "train_metadata.csv", "train_predicted_labels.csv"),
             "valid": ("validation_reports.csv", "validation_metadata.csv", "valid_predicted_labels.csv")}
    for split, (rep, met, lab) in names.items():
        (root / "radiology_text_reports").mkdir(parents=True, exist_ok=True)
        (root / "metadata").mkdir(exist_ok=True)
        (root / "multi_abnormality_labels").mkdir(exist_ok=True)
        pd.DataFrame(reports[split]).to_csv(root / "radiology_text_reports" / rep, index=False)
        pd.DataFrame(meta[split]).to_csv(root / "metadata" / met, index=False)
        pd.DataFrame(labels[split]).to_csv(root / "multi_abnormality_labels" / lab, index=False)
    return root


@pytest.fixture
def ct_rate_root(tmp_path: Path) -> Path:
    return write_ct_rate_root(tmp_path / "CT-RATE")


def truncate_gzip(path: Path) -> None:
    """Cut a .nii.gz in half: a realistic 'download interrupted' file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro demo run once per session, in a project copy the tests share: they may add config files
    beside it, never change its results. Every `uvlm` call records the config keys it read and the modules
    it loaded in config_reads.jsonl (tests/test_steps.py)."""
    workdir = project_copy(tmp_path_factory.mktemp("workflow"))
    hospital = write_hospital(workdir / "hospital")  # your own data: a CSV with NIfTI and DICOM cases
    cfg = micro_config(workdir, {"csv_datasets": {"hospital": hospital_entry(hospital)}})
    res = run_snakemake(workdir, "--cores", "2", f"--configfile={cfg}", "all",
                        env={RECORD_READS: str(workdir / "config_reads.jsonl")})
    assert res.returncode == 0, res.stderr[-4000:]
    return workdir
