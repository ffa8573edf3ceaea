"""Ingest an AbdomenAtlas 3.0 root (real or the synthetic demo) into a manifest.

Layout under root:

    BDMAP_00000001/ct.nii.gz                     CT in HU
    BDMAP_00000001/segmentations/{class}.nii.gz  one binary mask per class, on the CT's grid
    AbdomenAtlas3.0MiniWithMeta.csv              "BDMAP ID", reports, lesion volumes, ...
    TrainTestIDS/IID_train.csv, IID_test.csv     optional official split (column case_id)

Cases come from the case folders and the metadata rows together: a row without a folder, or a folder
without ct.nii.gz, stays in the manifest with image_exists=False, so the step that needs the pixels
fails naming that case. AbdomenAtlas has no patient ids, so patient_id = volume_name.

The report column (structured or narrative) is chosen by the config. A case without a metadata row or with
an empty report stays in the manifest with has_report=False and the reason in `problems`: Stage 3 and
scoring leave it out, and the reconciliation lists it as rejected with that reason.

The lesion labels come from the masks (RadGPT rule, computed per shard by uvlm.labels.abdomen_shard);
`with_lesion_labels` merges them into the manifest that Stages 2 and 3 and scoring read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from uvlm.constants import ABDOMEN_LESION_LABELS
from uvlm.data.ct_rate import IngestError
from uvlm.data.manifest import with_label_set

log = logging.getLogger(__name__)

ANATOMY_CLASSES = (
    "spleen", "kidney_left", "kidney_right", "stomach", "pancreas_head", "pancreas_body", "pancreas_tail",
    "duodenum", "intestine", "colon", "rectum", "aorta", "postcava", "portal_vein_and_splenic_vein",
    "hepatic_vessel", "superior_mesenteric_artery", "celiac_trunk", "celiac_aa", "veins", "bladder",
    "esophagus", "adrenal_gland_left", "adrenal_gland_right", "gall_bladder", "common_bile_duct",
    "lung_left", "lung_right", "femur_left", "femur_right", "prostate",
    *(f"liver_segment_{i}" for i in range(1, 9)),
)
LESION_CLASSES = ("liver_lesion", "kidney_lesion", "pancreatic_lesion")
ALL_CLASSES = (*ANATOMY_CLASSES, *LESION_CLASSES)  # the 41 mask stems of AbdomenAtlas 3.0

META_CSV = "AbdomenAtlas3.0MiniWithMeta.csv"
ID_COLUMN = "BDMAP ID"
STRUCTURED, NARRATIVE = "structured report", "narrative report"
LESION_VOLUME_COLUMNS = {
    "liver_lesion": "total liver lesion volume (cm^3)",
    "kidney_lesion": "total kidney lesion volume (cm^3)",
    "pancreatic_lesion": "total pancreatic lesion volume (cm^3)",
}
SPLIT_FILES = {"train": "TrainTestIDS/IID_train.csv", "valid": "TrainTestIDS/IID_test.csv"}
REPORT_COLUMNS = (STRUCTURED, NARRATIVE)
COLUMNS = ("volume_name", "split", "patient_id", "image_path", "image_exists", "seg_dir", "seg_classes",
           "report_text", "has_report", "problems", "shard")


def _read_meta(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise IngestError(f"missing AbdomenAtlas metadata CSV: {path}")
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    if ID_COLUMN not in meta.columns:
        raise IngestError(f"{path}: no '{ID_COLUMN}' column (has {list(meta.columns)[:8]})")
    meta[ID_COLUMN] = meta[ID_COLUMN].str.strip()
    dupes = meta[ID_COLUMN][meta[ID_COLUMN].duplicated()].tolist()
    if dupes:
        raise IngestError(f"{path}: duplicate '{ID_COLUMN}' rows {dupes[:5]}")
    return meta.set_index(ID_COLUMN)


def _mask_stems(seg_dir: Path, case: str) -> list[str]:
    """Stems of segmentations/*.nii.gz; unknown stems are kept (the dataset grows) but logged."""
    if not seg_dir.is_dir():
        return []
    stems = sorted(p.name[: -len(".nii.gz")] for p in seg_dir.glob("*.nii.gz"))
    unknown = [s for s in stems if s not in ALL_CLASSES]
    if unknown:
        log.warning("case %s: masks %s are not AbdomenAtlas 3.0 classes", case, unknown)
    return stems


def _official_split(root: Path, cases: list[str]) -> dict[str, str] | None:
    """case -> split from TrainTestIDS, or None when the folder is absent."""
    paths = {split: root / rel for split, rel in SPLIT_FILES.items()}
    present = [p for p in paths.values() if p.is_file()]
    if not present:
        return None
    if len(present) != len(paths):
        raise IngestError(f"split file missing: {next(p for p in paths.values() if not p.is_file())}")
    split: dict[str, str] = {}
    for name, path in paths.items():
        ids = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "case_id" not in ids.columns:
            raise IngestError(f"{path}: no 'case_id' column")
        for case in ids["case_id"].str.strip():
            if split.setdefault(case, name) != name:
                raise IngestError(f"case {case} is listed in both {SPLIT_FILES['train']} and {SPLIT_FILES['valid']}")
    # Cases in neither file may belong to the out-of-distribution test sets: never train on them.
    unlisted = [c for c in cases if c not in split]
    if unlisted:
        log.warning("%d cases are in neither IID split file and are left out, e.g. %s", len(unlisted), unlisted[:3])
    return split


def _random_split(cases: list[str], valid_fraction: float, seed: int) -> dict[str, str]:
    """IID split by case: a seeded permutation of the sorted ids, round(fraction * n) (>= 1) valid."""
    n_valid = round(len(cases) * valid_fraction)
    if valid_fraction > 0 and len(cases) > 1:
        n_valid = max(n_valid, 1)
    order = np.random.default_rng(seed).permutation(len(cases))
    valid = {cases[i] for i in order[:n_valid]}
    return {c: "valid" if c in valid else "train" for c in cases}


def _problems(case: str, has_meta: bool, report: str, report_column: str, ct_found: bool, seg_found: bool) -> str:
    """Why a case is limited ("; "-joined), "" if it is not."""
    found = [] if ct_found else ["no ct.nii.gz in the case folder"]
    if not seg_found:
        found.append("no segmentations/ folder (no label maps, no lesion labels)")
    if not has_meta:
        found.append("no metadata row (no report)")
    elif not report:
        found.append(f"empty report (column '{report_column}')")
    return "; ".join(found)


def ingest_abdomen_atlas(root: str | Path, shard_size: int, meta_csv: str | Path | None = None,
                         valid_fraction: float = 0.1, seed: int = 0, report_column: str = STRUCTURED) -> pd.DataFrame:
    """Manifest of an AbdomenAtlas 3.0 root, one row per case (columns: COLUMNS), sorted by split, name.
    `report_column` is the metadata column whose text is the report (the training target and reference)."""
    if report_column not in REPORT_COLUMNS:
        raise IngestError(f"report column '{report_column}' is not one of AbdomenAtlas's {list(REPORT_COLUMNS)}")
    root = Path(root).resolve()
    meta_path = Path(meta_csv) if meta_csv else root / META_CSV
    meta = _read_meta(meta_path)
    folders = {p.name for p in root.glob("BDMAP_*") if p.is_dir()}
    cases = sorted(folders | set(meta.index))
    orphans = sorted(set(meta.index) - folders)
    if orphans:
        log.warning("%d metadata rows without a case folder under %s, e.g. %s", len(orphans), root, orphans[:3])
    no_meta = sorted(folders - set(meta.index))
    if no_meta:
        log.warning("%d case folders without a metadata row (no report), e.g. %s", len(no_meta), no_meta[:3])

    split = _official_split(root, cases) or _random_split(cases, valid_fraction, seed)
    rows = []
    for case in cases:
        if case not in split:
            continue
        ct, seg_dir = root / case / "ct.nii.gz", root / case / "segmentations"
        m = meta.loc[case] if case in meta.index else {}
        report = str(m.get(report_column, "")).strip()
        rows.append({
            "volume_name": case, "split": split[case], "patient_id": case,
            "image_path": str(ct) if ct.is_file() else "", "image_exists": ct.is_file(),
            "seg_dir": str(seg_dir) if seg_dir.is_dir() else "",
            "seg_classes": json.dumps(_mask_stems(seg_dir, case)),
            "report_text": report, "has_report": bool(report),
            "problems": _problems(case, case in meta.index, report, report_column, ct.is_file(), seg_dir.is_dir()),
        })
    missing = [r["volume_name"] for r in rows if not r["image_exists"]]
    if missing:
        log.warning("%d cases without ct.nii.gz, e.g. %s", len(missing), missing[:3])
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "shard"])
    df = df.sort_values(["split", "volume_name"], kind="stable").reset_index(drop=True)
    df["image_exists"] = df["image_exists"].astype(bool)
    df["has_report"] = df["has_report"].astype(bool)
    df["shard"] = np.arange(len(df)) // shard_size
    return df


def with_lesion_labels(manifest: pd.DataFrame, label_index: pd.DataFrame, label_errors: pd.DataFrame) -> pd.DataFrame:
    """The manifest Stages 2 and 3 and scoring read: every case with its three RadGPT lesion labels (0/1) from
    the label shards' index, `labels_known` where the label step produced them, and the reason in `problems`
    where it did not (the label step's error, or not labelled at all). Label set: 'abdomen_atlas'."""
    labels = list(ABDOMEN_LESION_LABELS)
    known = label_index[["volume_name", *labels]] if len(label_index) else pd.DataFrame(columns=["volume_name", *labels])
    df = manifest.drop(columns=[c for c in labels if c in manifest.columns]).merge(known, on="volume_name", how="left")
    df["labels_known"] = df[labels[0]].notna()
    for label in labels:
        df[label] = df[label].fillna(0).astype("int8")
    errors = dict(zip(label_errors["volume_name"], label_errors["error"], strict=True)) if len(label_errors) else {}
    reasons = [errors.get(case, "no lesion labels (not in any label shard)") if not ok else ""
               for case, ok in zip(df["volume_name"], df["labels_known"], strict=True)]
    df["problems"] = ["; ".join(p for p in (old, new) if p) for old, new in zip(df["problems"], reasons, strict=True)]
    return with_label_set(df, "abdomen_atlas", labels)
