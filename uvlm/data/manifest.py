"""The manifest: one row per volume, the hand-over from ingest to every later step.

Columns (validated by `validate_manifest`):
  volume_name        str   CT-RATE VolumeName without ".nii.gz", e.g. "train_12_a_1"
  split              str   "train" or "valid" (CT-RATE's split is by patient)
  patient_id         str   e.g. "train_12"; a patient never appears in two splits
  scan_id            str   e.g. "train_12_a"
  reconstruction     int   the last name part
  image_path         str   absolute path of the volume, "" when the file is missing
  image_exists       bool  whether the file was found under dataset/
  clinical_information, technique, findings, impressions   str ("" where CT-RATE says "Not given.")
  report_text        str   "Findings: {findings} Impressions: {impressions}" (the authors' target text)
  xy_spacing, z_spacing, rescale_intercept, rescale_slope   float (NaN when metadata is absent)
  lesion_mask_path   str   ReXGroundingCT-style mask (.npz), "" if none
  lesion_categories  str   JSON list of the mask channels' category codes, "[]" if none
  labels_known       bool  whether the 18 CT-RATE labels were given, all 0 or 1 (else the volume is left out
                           of everything that reads labels: Stage 2, scoring)
  <18 label columns> int8  CT-RATE label names (uvlm.constants.CT_RATE_LABELS), 0/1 (0 if unknown)
  has_report         bool  findings or impressions non-empty (else left out of Stage 3 targets and scoring)
  problems           str   why the row is limited ("; "-joined: no labels row, empty report, ...), "" if not
  shard              int   index of the shard this volume belongs to (shard_size volumes per shard)

Every dataset's manifest (CT-RATE's, AbdomenAtlas's once its lesion labels are merged in, a CSV's) names its
label set in `df.attrs` (kept by Parquet): `label_set` (the vocabulary's name, which picks the text
extractor's rules and prompt) and `labels` (the label columns in order). Stage 2's head, the balanced
sampler and scoring read the labels from there, so no step assumes CT-RATE's 18.
"""

from __future__ import annotations

import pandas as pd

from uvlm.constants import CT_RATE_LABELS

STRING_COLUMNS = (
    "volume_name", "split", "patient_id", "scan_id", "image_path", "clinical_information", "technique",
    "findings", "impressions", "report_text", "lesion_mask_path", "lesion_categories",
)
FLOAT_COLUMNS = ("xy_spacing", "z_spacing", "rescale_intercept", "rescale_slope")
COLUMNS = (*STRING_COLUMNS, "reconstruction", "image_exists", *FLOAT_COLUMNS, "labels_known",
           *CT_RATE_LABELS, "has_report", "problems", "shard")


class ManifestError(ValueError):
    """The manifest violates its schema; the message names the column or the volumes."""


def with_label_set(df: pd.DataFrame, name: str, labels: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Name the manifest's label set (kept in df.attrs, and by Parquet): its label columns must exist."""
    missing = [c for c in labels if c not in df.columns]
    if missing:
        raise ManifestError(f"label set '{name}': the manifest lacks label columns {missing}")
    df.attrs.update(label_set=name, labels=list(labels))
    return df


def label_set(df: pd.DataFrame) -> tuple[str, list[str]]:
    """(name, label columns) of a manifest, or of rows taken from one (pandas keeps attrs through filters)."""
    if "labels" not in df.attrs or "label_set" not in df.attrs:
        raise ManifestError("the manifest names no label set (df.attrs 'label_set', 'labels'): it was written "
                            "by an older version or rewritten without its attributes; rerun its ingest step")
    return df.attrs["label_set"], list(df.attrs["labels"])


def validate_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Check columns, types and the split-by-patient invariant; return the frame unchanged."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks columns {missing}")
    dupes = df["volume_name"][df["volume_name"].duplicated()].tolist()
    if dupes:
        raise ManifestError(f"manifest has duplicate volumes: {dupes[:5]}")
    bad_split = sorted(set(df["split"]) - {"train", "valid"})
    if bad_split:
        raise ManifestError(f"manifest has unknown splits {bad_split}")
    splits_per_patient = df.groupby("patient_id")["split"].nunique()
    leaked = splits_per_patient[splits_per_patient > 1].index.tolist()
    if leaked:
        raise ManifestError(f"patients in more than one split: {leaked[:5]}")
    for col in label_set(df)[1]:
        if not df[col].isin([0, 1]).all():
            raise ManifestError(f"label column '{col}' holds values other than 0/1")
    return df


# What a consumer needs from a volume besides its pixels -> the manifest flags that say it has it. Stage 2
# needs labels, Stage 3 a report target, scoring both; volumes without are left out and counted.
NEEDS = {"labels": ("labels_known",), "report": ("has_report",), "scoring": ("labels_known", "has_report")}


def usable(df: pd.DataFrame, need: str) -> pd.Series:
    """True for the rows that have what `need` (a NEEDS key) requires."""
    ok = pd.Series(True, index=df.index)
    for column in NEEDS[need]:
        ok &= df[column].astype(bool)
    return ok


def has_masks(df: pd.DataFrame) -> pd.Series:
    """True for the rows of a dataset with per-class masks (AbdomenAtlas, a CSV with a mask folder column) that
    have both their CT and their mask folder: the rows the mask label step turns into label maps."""
    return df["image_exists"].astype(bool) & (df["seg_dir"].astype(str) != "")


def split_leaks(manifest: pd.DataFrame, preprocessed: pd.DataFrame) -> pd.DataFrame:
    """Volumes whose voxels are identical (same fingerprint) to a volume of another split: case, reason."""
    if "fingerprint" not in preprocessed.columns or preprocessed.empty:
        return pd.DataFrame(columns=["case", "reason"])
    df = preprocessed[["volume_name", "fingerprint"]].merge(manifest[["volume_name", "split"]], on="volume_name")
    rows = []
    for _, group in df.groupby("fingerprint"):
        if group["split"].nunique() > 1:
            for r in group.itertuples():
                others = [f"{o.volume_name} ({o.split})" for o in group.itertuples() if o.volume_name != r.volume_name]
                rows.append({"case": r.volume_name, "reason": f"split leak: same voxels as {', '.join(others)}"})
    return pd.DataFrame(rows, columns=["case", "reason"])


def n_shards(df: pd.DataFrame) -> int:
    return int(df["shard"].max()) + 1 if len(df) else 0


def shard_rows(df: pd.DataFrame, shard: int) -> pd.DataFrame:
    return df[df["shard"] == shard]


def stage1_cases(df: pd.DataFrame, lesions_complete: bool, max_cases: int, seed: int,
                 shard_size: int) -> pd.DataFrame:
    """The Stage 1 (segmentation) case list, the same for every granularity, so that C, C+L and F+L
    differ only in their labels (the paper pretrains on the 2,628 ReXGroundingCT cases).

    Training-split volumes whose image exists and whose lesions are known: those with a lesion mask, or
    all when `lesions_complete` (no mask then means no lesion). At most `max_cases` (0 = all), drawn with
    `seed`. Returned as a manifest of its own, with `shard` renumbered over these cases only, so that
    pseudo-labels and label maps are computed for Stage 1 cases and nothing else.
    """
    rows = df[(df["split"] == "train") & df["image_exists"]]
    if not lesions_complete:
        rows = rows[rows["lesion_mask_path"] != ""]
    rows = rows.sort_values("volume_name")
    if max_cases and len(rows) > max_cases:
        rows = rows.sample(n=max_cases, random_state=seed).sort_values("volume_name")
    rows = rows.reset_index(drop=True)
    rows["shard"] = rows.index // shard_size
    return rows
