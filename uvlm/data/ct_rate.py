"""Ingest a CT-RATE-layout root (real or the synthetic demo) into the manifest.

Volumes are found by VolumeName anywhere under dataset/ (copies differ in nesting and in
train_fixed/train folder names). A report row whose file is missing stays in the manifest with
image_exists=False, so the step that needs the pixels fails naming that file.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from uvlm.constants import CT_RATE_LABELS, NOT_GIVEN
from uvlm.data.manifest import validate_manifest

log = logging.getLogger(__name__)

REPORT_FILES = {"train": "train_reports.csv", "valid": "validation_reports.csv"}
METADATA_FILES = {"train": "train_metadata.csv", "valid": "validation_metadata.csv"}
LABEL_FILES = {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"}
REPORT_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")


class IngestError(ValueError):
    """The CT-RATE root is not usable; the message names the file."""


def volume_stem(name: str) -> str:
    """'train_1_a_1.nii.gz' and 'train_1_a_1' both become 'train_1_a_1'."""
    name = str(name).strip()
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def clean_field(value: object) -> str:
    """CT-RATE stores empty fields as the literal 'Not given.'; we store ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).strip()
    return "" if text == NOT_GIVEN else text


def report_text(findings: str, impressions: str) -> str:
    """The target text the authors train on."""
    return f"Findings: {findings} Impressions: {impressions}".strip()


def find_volumes(dataset_dir: Path) -> dict[str, Path]:
    """Map VolumeName -> file for every .nii.gz under dataset_dir, at any depth."""
    found: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(dataset_dir):
        for f in files:
            if f.endswith((".nii.gz", ".nii")):
                found.setdefault(volume_stem(f), Path(dirpath) / f)
    return found


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise IngestError(f"missing CT-RATE file: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    lacking = [c for c in required if c not in df.columns]
    if lacking:
        raise IngestError(f"{path}: missing columns {lacking}")
    df["volume_name"] = df["VolumeName"].map(volume_stem)
    dupes = df["volume_name"][df["volume_name"].duplicated()].tolist()
    if dupes:
        raise IngestError(f"{path}: duplicate VolumeName rows {dupes[:5]}")
    return df.set_index("volume_name")


def _xy_spacing(value: str) -> float:
    try:
        parsed = ast.literal_eval(value) if value else None
    except (ValueError, SyntaxError):
        return float("nan")
    if isinstance(parsed, (list, tuple)) and parsed:
        return float(parsed[0])
    return float(parsed) if isinstance(parsed, (int, float)) else float("nan")


def _to_float(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _lesion_index(rex_root: Path | None) -> dict[str, list[str]]:
    """VolumeName -> list of channel category codes from ReXGroundingCT's dataset.json."""
    if rex_root is None or not (rex_root / "dataset.json").is_file():
        return {}
    meta = json.loads((rex_root / "dataset.json").read_text())
    entries = [e for split in meta.values() if isinstance(split, list) for e in split]
    index = {}
    for e in entries:
        cats = e.get("categories", {})
        index[volume_stem(e["name"])] = [cats[k] for k in sorted(cats, key=int)]
    return index


def _lesion_masks(folder: Path) -> dict[str, Path]:
    """VolumeName -> mask file (.npz or .nii.gz) anywhere under segmentations/ (copies nest by split)."""
    found: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if f.endswith((".npz", ".nii.gz")):
                found.setdefault(volume_stem(f.removesuffix(".npz")), Path(dirpath) / f)
    return found


def ingest_ct_rate(root: str | Path, shard_size: int, rex_root: str | Path | None = None) -> pd.DataFrame:
    """Build and validate the manifest of a CT-RATE root (see uvlm.data.manifest for the schema)."""
    root = Path(root).resolve()
    if not (root / "dataset").is_dir():
        raise IngestError(f"{root}: no dataset/ folder; is this a CT-RATE root?")
    volumes = find_volumes(root / "dataset")
    rex_root = Path(rex_root) if rex_root else root / "ReXGroundingCT"
    lesions = _lesion_index(rex_root)
    masks = _lesion_masks(rex_root / "segmentations") if lesions else {}

    frames = []
    for split in ("train", "valid"):
        reports = _read_csv(root / "radiology_text_reports" / REPORT_FILES[split], REPORT_COLUMNS)
        meta_path = root / "metadata" / METADATA_FILES[split]
        meta = _read_csv(meta_path, ("VolumeName",)) if meta_path.is_file() else pd.DataFrame()
        label_path = root / "multi_abnormality_labels" / LABEL_FILES[split]
        labels = _read_csv(label_path, ("VolumeName", *CT_RATE_LABELS)) if label_path.is_file() else None
        rows = []
        for name, rep in reports.iterrows():
            if not name.startswith(f"{split}_"):
                raise IngestError(f"{REPORT_FILES[split]}: volume {name} does not belong to split '{split}'")
            parts = name.split("_")
            if len(parts) != 4:
                raise IngestError(f"{REPORT_FILES[split]}: VolumeName {name} is not split_patient_scan_recon")
            path = volumes.get(name)
            m = meta.loc[name] if name in meta.index else {}
            findings, impressions = clean_field(rep["Findings_EN"]), clean_field(rep["Impressions_EN"])
            row = {
                "volume_name": name, "split": split, "patient_id": "_".join(parts[:2]),
                "scan_id": "_".join(parts[:3]), "reconstruction": int(parts[3]),
                "image_path": str(path) if path else "", "image_exists": path is not None,
                "clinical_information": clean_field(rep["ClinicalInformation_EN"]),
                "technique": clean_field(rep["Technique_EN"]),
                "findings": findings, "impressions": impressions,
                "report_text": report_text(findings, impressions),
                "xy_spacing": _xy_spacing(m.get("XYSpacing", "")),
                "z_spacing": _to_float(m.get("ZSpacing", "")),
                "rescale_intercept": _to_float(m.get("RescaleIntercept", "")),
                "rescale_slope": _to_float(m.get("RescaleSlope", "")),
                "lesion_mask_path": "", "lesion_categories": "[]",
                "labels_known": labels is not None and name in labels.index,
            }
            if name in lesions:
                row["lesion_mask_path"] = str(masks.get(name, rex_root / "segmentations" / f"{name}.npz"))
                row["lesion_categories"] = json.dumps(lesions[name])
            for label in CT_RATE_LABELS:
                row[label] = int(labels.loc[name, label]) if row["labels_known"] else 0
            rows.append(row)
        frames.append(pd.DataFrame(rows))
        missing = [r["volume_name"] for r in rows if not r["image_exists"]]
        if missing:
            log.warning("%s: %d report rows without a volume file, e.g. %s", split, len(missing), missing[:3])
    df = pd.concat(frames, ignore_index=True).sort_values(["split", "volume_name"], kind="stable")
    df = df.reset_index(drop=True)
    df["shard"] = np.arange(len(df)) // shard_size
    for label in CT_RATE_LABELS:
        df[label] = df[label].astype("int8")
    return validate_manifest(df)
