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
from uvlm.data.manifest import validate_manifest, with_label_set

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
    """Map VolumeName -> file for every .nii.gz / .nii under dataset_dir, at any depth.

    Two files for one VolumeName (a second download, a .nii beside its .nii.gz) fail ingest naming both:
    picking one silently could train on the wrong copy."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirs, files in os.walk(dataset_dir):
        dirs.sort()
        for f in sorted(files):
            if f.endswith((".nii.gz", ".nii")) and not f.startswith("."):
                found.setdefault(volume_stem(f), []).append(Path(dirpath) / f)
    dupes = {name: paths for name, paths in found.items() if len(paths) > 1}
    if dupes:
        lines = "\n".join(f"  {name}: {', '.join(map(str, paths))}" for name, paths in sorted(dupes.items())[:20])
        raise IngestError(f"{dataset_dir}: {len(dupes)} VolumeNames have more than one file; keep one of each:\n{lines}")
    return {name: paths[0] for name, paths in found.items()}


def parse_labels(labels: pd.DataFrame | None, name: str) -> tuple[dict[str, int] | None, str]:
    """(the 18 labels of a volume, or None, and why not): a missing row or a value other than 0/1
    makes the volume's labels unknown; they are never guessed as negatives."""
    if labels is None:
        return None, "no labels file"
    if name not in labels.index:
        return None, "no labels row"
    values = {}
    for label in CT_RATE_LABELS:
        raw = str(labels.loc[name, label]).strip()
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if value not in (0.0, 1.0):
            return None, f"label '{label}' is '{raw}', not 0 or 1"
        values[label] = int(value)
    return values, ""


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


def ingest_ct_rate(root: str | Path, shard_size: int, rex_root: str | Path | None = None,
                   volumes: dict[str, Path] | None = None) -> pd.DataFrame:
    """Build and validate the manifest of a CT-RATE root (see uvlm.data.manifest for the schema).

    volumes: `find_volumes(<root>/dataset)` of the resolved root, when the caller has walked the folder already
    (50,000 files)."""
    root = Path(root).resolve()
    if not (root / "dataset").is_dir():
        raise IngestError(f"{root}: no dataset/ folder; is this a CT-RATE root?")
    volumes = find_volumes(root / "dataset") if volumes is None else volumes
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
            }
            if name in lesions:
                row["lesion_mask_path"] = str(masks.get(name, rex_root / "segmentations" / f"{name}.npz"))
                row["lesion_categories"] = json.dumps(lesions[name])
            values, label_problem = parse_labels(labels, name)
            row["labels_known"] = values is not None
            row.update({label: (values or {}).get(label, 0) for label in CT_RATE_LABELS})
            row["has_report"] = bool(findings or impressions)
            problems = [p for p in (label_problem,
                                    "" if row["has_report"] else "empty findings and impressions",
                                    "" if path else "volume file not found") if p]
            row["problems"] = "; ".join(problems)
            rows.append(row)
        frames.append(pd.DataFrame(rows))
        missing = [r["volume_name"] for r in rows if not r["image_exists"]]
        if missing:
            log.warning("%s: %d report rows without a volume file, e.g. %s", split, len(missing), missing[:3])
    listed = {name for frame in frames for name in frame["volume_name"]}
    unlisted = sorted(set(volumes) - listed)
    if unlisted:
        log.warning("%d volume files have no report row and are left out, e.g. %s", len(unlisted), unlisted[:3])
    df = pd.concat(frames, ignore_index=True).sort_values(["split", "volume_name"], kind="stable")
    df = df.reset_index(drop=True)
    df["shard"] = np.arange(len(df)) // shard_size
    for label in CT_RATE_LABELS:
        df[label] = df[label].astype("int8")
    return validate_manifest(with_label_set(df, "ct_rate", CT_RATE_LABELS))


def unlisted_volume_files(volumes: dict[str, Path], manifest: pd.DataFrame) -> pd.DataFrame:
    """Volume files (`find_volumes`) that no report row names, left out of the manifest: volume_name, file."""
    names = sorted(set(volumes) - set(manifest["volume_name"]))
    return pd.DataFrame({"volume_name": names, "file": [str(volumes[n]) for n in names]})
