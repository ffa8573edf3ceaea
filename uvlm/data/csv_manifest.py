"""Bring your own data: a hospital's CSV of CT volumes and reports -> the pipeline's manifest.

CSV layout, one row per volume (column names are configurable, see `CsvDatasetConfig`):

    case_id     unique volume id; becomes volume_name
    patient_id  the split is by patient, so that no patient's scans are both trained on and scored
    split       e.g. train / valid / test / val, mapped by `split_values` to "train" or "valid"
    image       a NIfTI file or a folder holding one DICOM series; relative paths are resolved against
                `base_dir` (default: the CSV's folder)
    report      the report text (the Stage 3 target)
    <labels>    optional 0/1 columns, one per finding named in `labels`; empty = unknown
    <masks>     optional folder of per-class masks, one `<class>.nii.gz` each on the CT's grid (TotalSegmentator's
                and AbdomenAtlas's layout; only when `mask_column` is set); `label_map` merges them into
                Stage 1's granularities. Rows without one still go through Stages 2 and 3.

Errors (CsvManifestError, naming the CSV and the rows, cases or columns) are mistakes in the table that
would silently corrupt training or scoring: missing columns, an empty or duplicate case id, an empty
patient id, a patient in two splits (a leak), an unknown split value, a label that is not 0/1/empty.

Limited rows are not errors: a missing image or mask folder, an empty report or unknown labels leave the row in
the manifest with image_exists / has_report / labels_known False and the reason in `problems`, so that
later steps list it as rejected with that reason and the counts of every step reconcile with the CSV.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from uvlm.data.manifest import with_label_set

log = logging.getLogger(__name__)

SPLITS = ("train", "valid")
# "valid" is the scored split: test and val rows are scored, never trained on.
DEFAULT_SPLIT_VALUES = {"train": "train", "valid": "valid", "test": "valid", "val": "valid"}
UNKNOWN_LABEL = {"", "nan", "na", "n/a", "none", "null"}  # empty cells as spreadsheets and pandas write them
FLOAT_COLUMNS = ("xy_spacing", "z_spacing", "rescale_intercept", "rescale_slope")
BASE_COLUMNS = ("volume_name", "split", "patient_id", "image_path", "image_exists", "seg_dir",
                "report_text", "has_report", "labels_known", *FLOAT_COLUMNS, "problems", "shard")
MAX_LISTED = 10  # offending cases named in one message


class CsvManifestError(ValueError):
    """The CSV cannot become a manifest; the message names the CSV and the rows, cases or columns."""


@dataclass(frozen=True)
class CsvDatasetConfig:
    """Where the CSV is and which of its columns mean what.

    `split_values` maps the CSV's split values (matched case-insensitively) to "train" or "valid";
    "valid" is the scored split, so test / val rows land there by default."""

    csv: str
    case_column: str = "case_id"
    patient_column: str = "patient_id"
    split_column: str = "split"
    image_column: str = "image"
    report_column: str = "report"
    mask_column: str = ""  # a folder of per-class masks per row; "" = the dataset has no masks
    label_map: str = ""  # the label map (config/labels/*.yaml format) that merges the masks into granularities
    labels: tuple[str, ...] = ()  # names of the 0/1 label columns: the dataset's label set
    label_set: str = ""  # the label vocabulary's name (picks the extractor's rules or prompt); "" = the dataset's
    split_values: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPLIT_VALUES), hash=False)
    base_dir: str = ""  # relative image/mask paths are resolved against this; "" = the CSV's folder

    def __post_init__(self) -> None:
        if isinstance(self.labels, str):  # a bare string would become one label per character
            raise ValueError(f"labels must be a list of column names, not the string {self.labels!r}")
        object.__setattr__(self, "labels", tuple(self.labels))
        bad = {k: v for k, v in self.split_values.items() if v not in SPLITS}
        if bad:
            raise ValueError(f"split_values must map to 'train' or 'valid', got {bad}")
        lowered = [str(k).strip().lower() for k in self.split_values]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"split_values has keys that differ only in case: {list(self.split_values)}")
        dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
        clash = sorted(set(self.labels) & set(BASE_COLUMNS))
        if dupes or clash:
            raise ValueError(f"labels {dupes or clash} are repeated or clash with manifest columns")
        if bool(self.mask_column) != bool(self.label_map):
            raise ValueError("mask_column and label_map go together: the label map says how the mask folder's "
                             f"classes make each Stage 1 granularity (mask_column={self.mask_column!r}, "
                             f"label_map={self.label_map!r})")

    def label_set_name(self, dataset: str) -> str:
        """The name the manifest gives its label set: `label_set`, else the dataset's name."""
        return self.label_set or dataset

    @classmethod
    def from_config(cls, entry: dict) -> CsvDatasetConfig:
        """From a plain dict (a YAML config entry); unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in the CSV dataset config (known: {sorted(known)})")
        if not entry.get("csv"):
            raise ValueError("the CSV dataset config needs 'csv', the path of the CSV")
        kwargs = dict(entry)
        if "labels" in kwargs and not isinstance(kwargs["labels"], str):
            kwargs["labels"] = tuple(kwargs["labels"] or ())
        if "split_values" in kwargs:
            kwargs["split_values"] = dict(kwargs["split_values"] or {})
        return cls(**kwargs)


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def _read(cfg: CsvDatasetConfig) -> pd.DataFrame:
    path = Path(cfg.csv)
    if not path.is_file():
        raise CsvManifestError(f"CSV not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)  # pandas drops Excel's byte-order mark
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CsvManifestError(f"{path}: cannot parse the CSV: {err}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise CsvManifestError(f"{path}: the CSV holds no rows")
    return df.apply(lambda col: col.str.strip())


def _check_columns(df: pd.DataFrame, cfg: CsvDatasetConfig) -> None:
    required = [cfg.case_column, cfg.patient_column, cfg.split_column, cfg.image_column, cfg.report_column]
    missing = [c for c in [*required, *([cfg.mask_column] if cfg.mask_column else [])] if c not in df.columns]
    if missing:
        raise CsvManifestError(f"{cfg.csv}: missing columns {missing}; the CSV has {list(df.columns)}")
    missing_labels = [c for c in cfg.labels if c not in df.columns]
    if missing_labels:
        raise CsvManifestError(f"{cfg.csv}: missing label columns {missing_labels}; the CSV has {list(df.columns)}")


def _check_ids(df: pd.DataFrame, cfg: CsvDatasetConfig) -> None:
    """Case ids present and unique, patient ids present: every later check and step names rows by them."""
    lines = df.index + 2  # CSV line numbers: the header is line 1
    for column, what in ((cfg.case_column, "case id"), (cfg.patient_column, "patient id")):
        empty = lines[df[column] == ""].astype(str).tolist()
        if empty:
            hint = "" if what == "case id" else (" (if every case is its own patient, set patient_column to "
                                                 "the case column)")
            raise CsvManifestError(f"{cfg.csv}: empty {what} ('{column}') on lines {_listed(empty)}{hint}")
    dupes = sorted(set(df.loc[df[cfg.case_column].duplicated(), cfg.case_column]))
    if dupes:
        raise CsvManifestError(f"{cfg.csv}: duplicate case ids in '{cfg.case_column}': {_listed(dupes)}")


def _check_leak(df: pd.DataFrame, split: pd.Series, cfg: CsvDatasetConfig) -> None:
    """Every patient in one split (after mapping): a patient scored on scans it was trained on inflates scores."""
    per_patient = split.groupby(df[cfg.patient_column]).nunique()
    leaked = sorted(per_patient[per_patient > 1].index)
    if leaked:
        detail = [f"patient {p}: " + ", ".join(f"{case} ({s})" for case, s in
                                              zip(df.loc[df[cfg.patient_column] == p, cfg.case_column],
                                                  split[df[cfg.patient_column] == p], strict=True))
                  for p in leaked]
        raise CsvManifestError(f"{cfg.csv}: split leak, patients in more than one split: {_listed(detail)}")


def _map_splits(df: pd.DataFrame, cfg: CsvDatasetConfig) -> pd.Series:
    mapping = {str(k).strip().lower(): v for k, v in cfg.split_values.items()}
    mapped = df[cfg.split_column].str.lower().map(mapping)
    bad = df[mapped.isna()]
    if len(bad):
        values = sorted(set(bad[cfg.split_column]))
        raise CsvManifestError(f"{cfg.csv}: split values {values} in '{cfg.split_column}' are not in split_values "
                               f"{sorted(cfg.split_values)}; cases {_listed(bad[cfg.case_column].tolist())}")
    return mapped


def _parse_labels(df: pd.DataFrame, cfg: CsvDatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(int8 0/1 per label, 0 where unknown; bool per label, whether it was given) per row."""
    values, known, bad = {}, {}, []
    for col in cfg.labels:
        raw = df[col]
        unknown = raw.str.lower().isin(UNKNOWN_LABEL)
        number = pd.to_numeric(raw.where(~unknown), errors="coerce")  # "1.0" (a pandas export) counts as 1
        wrong = ~unknown & ~number.isin([0, 1])
        bad += [f"{case} ({col}={v!r})" for case, v in zip(df.loc[wrong, cfg.case_column], raw[wrong], strict=True)]
        values[col] = number.fillna(0).astype("int8")
        known[col] = ~unknown
    if bad:
        raise CsvManifestError(f"{cfg.csv}: label values other than 0, 1 or empty: {_listed(bad)}")
    return pd.DataFrame(values, index=df.index), pd.DataFrame(known, index=df.index)


def _resolve(value: str, base: Path) -> Path | None:
    """Absolute path without following symlinks: a DVC-cached file must keep its name and extension."""
    if not value:
        return None
    return Path(os.path.normpath(base / Path(value).expanduser()))


def ingest_csv(cfg: CsvDatasetConfig, shard_size: int, name: str = "csv") -> pd.DataFrame:
    """Manifest of a CSV dataset: one row per CSV row, sorted by (split, volume_name).

    Columns: BASE_COLUMNS plus one int8 column per label in `cfg.labels`, which are its label set, named
    `cfg.label_set` or else `name` (it picks the extractor's rules or prompt for scoring)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    df = _read(cfg)
    _check_columns(df, cfg)
    _check_ids(df, cfg)
    split = _map_splits(df, cfg)
    _check_leak(df, split, cfg)
    labels, known = _parse_labels(df, cfg)
    base = Path(cfg.base_dir or Path(cfg.csv).parent).absolute()

    rows = []
    for i, r in df.iterrows():
        problems = []
        image = _resolve(r[cfg.image_column], base)
        exists = image is not None and (image.is_file() or image.is_dir())
        if image is None:
            problems.append("no image path")
        elif not exists:
            problems.append(f"image missing: {image}")
        masks = _resolve(r[cfg.mask_column], base) if cfg.mask_column else None
        if masks is not None and not masks.is_dir():
            problems.append(f"mask folder missing: {masks}" if not masks.exists() else f"masks not a folder: {masks}")
            masks = None
        report = r[cfg.report_column]
        if not report:
            problems.append("no report")
        unknown = [c for c in cfg.labels if not known.at[i, c]]
        if unknown:
            problems.append(f"labels not given: {', '.join(unknown)}")
        rows.append({
            "volume_name": r[cfg.case_column], "split": split[i], "patient_id": r[cfg.patient_column],
            "image_path": str(image) if exists else "", "image_exists": exists,
            "seg_dir": str(masks) if masks is not None else "", "report_text": report, "has_report": bool(report),
            **{c: labels.at[i, c] for c in cfg.labels}, "labels_known": not unknown,
            **dict.fromkeys(FLOAT_COLUMNS, float("nan")),  # unknown here: later steps judge HU from the data
            "problems": "; ".join(problems),
        })
    out = pd.DataFrame(rows, columns=[*BASE_COLUMNS[:8], *cfg.labels, *BASE_COLUMNS[8:-1]])
    out = out.sort_values(["split", "volume_name"], kind="stable").reset_index(drop=True)
    out = out.astype({"image_exists": bool, "has_report": bool, "labels_known": bool,
                      **dict.fromkeys(FLOAT_COLUMNS, "float64"), **dict.fromkeys(cfg.labels, "int8")})
    out["shard"] = np.arange(len(out)) // shard_size
    limited = out[out["problems"] != ""]
    if len(limited):
        log.warning("%s: %d of %d rows are limited, e.g. %s: %s", cfg.csv, len(limited), len(out),
                    limited["volume_name"].iloc[0], limited["problems"].iloc[0])
    return with_label_set(out, cfg.label_set_name(name), cfg.labels)
