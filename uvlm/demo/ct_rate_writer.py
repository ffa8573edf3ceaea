"""Write a synthetic dataset in exactly the CT-RATE (+ ReXGroundingCT) on-disk layout.

The demo lets the whole pipeline (ingest, pseudo-labels, training, report evaluation) run on a
laptop and in CI, through the same readers as the real data. Layout under out_root:

    dataset/{train,valid}_fixed/{split}_{p}/{split}_{p}_{scan}/{split}_{p}_{scan}_{recon}.nii.gz
    radiology_text_reports/{train,validation}_reports.csv
    metadata/{train,validation}_metadata.csv
    multi_abnormality_labels/{train,valid}_predicted_labels.csv
    anatomy_masks/{VolumeName}.nii.gz + classes.json        (stands in for TotalSegmentator)
    ReXGroundingCT/dataset.json + segmentations/{VolumeName}.npz   (mask (F, X, Y, Z))
    demo_truth.parquet                                       (hidden ground truth)

Every file is written under a temporary name and renamed when complete; the index files (CSV,
JSON, parquet) are removed first and written last, so an interrupted run never looks like a
complete dataset. Volumes left by an earlier, larger demo in the same folder are not removed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import string
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from uvlm.constants import CT_RATE_LABELS, NOT_GIVEN
from uvlm.demo.phantom import ANATOMY_CLASSES, PatientAnatomy, PhantomConfig, make_reconstructions
from uvlm.demo.reports import make_report

__all__ = ["DemoConfig", "write_demo_ct_rate"]


@dataclass(frozen=True)
class DemoConfig:
    n_patients: int = 120
    valid_fraction: float = 0.2  # by patient, as in CT-RATE
    multi_scan_fraction: float = 0.25  # patients with a follow-up scan
    multi_recon_fraction: float = 0.3  # scans with a second reconstruction
    abnormality_prob: float = 0.3  # each label independently
    report_style: str = "varied"  # varied (CT-RATE-like) | structured (every label in a fixed place)
    seed: int = 0
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass(frozen=True)
class _Split:
    prefix: str  # volume names: train_1_a_1 / valid_1_a_1
    folder: str  # dataset/{folder}
    table: str  # {table}_reports.csv, {table}_metadata.csv
    labels: str  # {labels}_predicted_labels.csv
    rex: str  # ReXGroundingCT dataset.json key


SPLITS = (_Split("train", "train_fixed", "train", "train", "train"),
          _Split("valid", "valid_fixed", "validation", "valid", "val"))
MANUFACTURERS = ("SIEMENS", "PHILIPS", "GE MEDICAL SYSTEMS", "TOSHIBA")
COLUMNS = {
    "reports": ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"],
    "metadata": ["VolumeName", "Manufacturer", "XYSpacing", "ZSpacing", "RescaleIntercept", "RescaleSlope",
                 "Rows", "Columns", "NumberofSlices", "PatientSex", "PatientAge"],
    "labels": ["VolumeName", *CT_RATE_LABELS],
}
CLINICAL = ("Cough.", "Shortness of breath.", "Chest pain.", "Fever and cough.", "Follow-up.",
            "Known malignancy, staging.", "Dyspnea.")
TECHNIQUE = ("Contrast-enhanced thorax CT was performed in the axial plane with {z} mm slice thickness.",
             "Thorax CT with intravenous contrast, axial sections of {z} mm.")


@dataclass
class _Scan:
    split: _Split
    patient: int
    letter: str
    n_recons: int
    anatomy: PatientAnatomy
    abnormalities: set[str]
    previous: set[str]
    seed: list[int]


def _chosen(rng: np.random.Generator, n: int, fraction: float) -> set[int]:
    """ceil(fraction * n) distinct indices, so small demos still contain the case."""
    k = min(n, math.ceil(fraction * n)) if fraction > 0 else 0
    return {int(i) for i in rng.choice(n, size=k, replace=False)}


def _plan(cfg: DemoConfig) -> list[_Scan]:
    """Who gets which scans, reconstructions and abnormalities; cheap and deterministic."""
    n_valid = round(cfg.n_patients * cfg.valid_fraction)
    scans: list[_Scan] = []
    for s, (split, n) in enumerate(zip(SPLITS, (cfg.n_patients - n_valid, n_valid), strict=True)):
        rng = np.random.default_rng([cfg.seed, s])
        multi = _chosen(rng, n, cfg.multi_scan_fraction)
        first = len(scans)
        for p in range(n):
            prng = np.random.default_rng([cfg.seed, s, p])
            anatomy, previous = PatientAnatomy.sample(prng), set()
            for k in range(2 if p in multi else 1):
                if k:  # follow-up: each earlier finding persists with probability 0.6
                    anatomy = anatomy.follow_up(prng)
                kept = {x for x in sorted(previous) if prng.random() < 0.6}
                abn = kept | {x for x in CT_RATE_LABELS if prng.random() < cfg.abnormality_prob}
                scans.append(_Scan(split, p + 1, string.ascii_lowercase[k], 1, anatomy, abn, set(previous),
                                   [cfg.seed, s, p, k]))
                previous = abn
        for i in _chosen(rng, len(scans) - first, cfg.multi_recon_fraction):
            scans[first + i].n_recons = 2
    return scans


class _Stager:
    """Temporary files in out_root/.staging, moved into place only once completely written."""

    def __init__(self, root: Path) -> None:
        self.dir = root / ".staging"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0

    @contextmanager
    def path(self, final: Path) -> Iterator[Path]:
        self.count += 1
        tmp = self.dir / f"{self.count:07d}{''.join(final.suffixes)}"  # keep the suffix writers need
        yield tmp
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


def _write_nifti(stager: _Stager, path: Path, arr: np.ndarray, spacing_zyx, origin_xyz) -> None:
    img = sitk.GetImageFromArray(arr)  # numpy (D,H,W) -> image (x=W, y=H, z=D)
    img.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
    img.SetOrigin(tuple(float(v) for v in origin_xyz))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with stager.path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)


def _write_npz(stager: _Stager, path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed with fixed timestamps, so equal data gives equal bytes (DVC hashes)."""
    with stager.path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def _write_text(stager: _Stager, path: Path, text: str) -> None:
    with stager.path(path) as tmp:
        tmp.write_text(text)


def write_demo_ct_rate(out_root: Path, cfg: DemoConfig | None = None, progress: bool = True) -> None:
    """Write the synthetic CT-RATE-format dataset described in the module docstring to out_root."""
    cfg, out_root = cfg or DemoConfig(), Path(out_root)
    for old in _index_files(out_root):  # a rerun over an older demo must not look complete midway
        old.unlink(missing_ok=True)
    stager = _Stager(out_root)
    scans = _plan(cfg)
    rows: dict[str, dict[str, list[dict]]] = {
        s.prefix: {"reports": [], "metadata": [], "labels": [], "rex": []} for s in SPLITS}
    truth = []
    bar = tqdm(total=sum(s.n_recons for s in scans), desc="demo CT-RATE", unit="vol", disable=not progress)
    try:
        for scan in scans:
            rng = np.random.default_rng(scan.seed)
            phantoms = make_reconstructions(rng, cfg.phantom, scan.abnormalities, scan.anatomy,
                                            tuple(range(1, scan.n_recons + 1)))
            findings, impressions = make_report(rng, scan.abnormalities,
                                                {**phantoms[0].details, "previous": scan.previous}, cfg.report_style)
            clinical = NOT_GIVEN if rng.random() < 0.4 else str(rng.choice(CLINICAL))
            manufacturer = str(rng.choice(MANUFACTURERS))
            table_z = -round(float(rng.uniform(150, 350)), 1)
            sp, pre = scan.split, f"{scan.split.prefix}_{scan.patient}"
            for r, ph in enumerate(phantoms, start=1):
                name = f"{pre}_{scan.letter}_{r}"
                d, h, w = ph.hu.shape
                sz, sy, sx = ph.spacing_mm
                origin = (-(w / 2 - 0.5) * sx, -(h / 2 - 0.5) * sy, table_z)
                vol_dir = out_root / "dataset" / sp.folder / pre / f"{pre}_{scan.letter}"
                _write_nifti(stager, vol_dir / f"{name}.nii.gz", ph.hu, ph.spacing_mm, origin)
                _write_nifti(stager, out_root / "anatomy_masks" / f"{name}.nii.gz", ph.anatomy, ph.spacing_mm,
                             origin)
                if len(ph.lesions):
                    mask = np.ascontiguousarray(ph.lesions.transpose(0, 3, 2, 1))  # (F,D,H,W) -> (F,X,Y,Z)
                    seg_dir = out_root / "ReXGroundingCT" / "segmentations"
                    _write_npz(stager, seg_dir / f"{name}.npz", mask=mask)
                    rows[sp.prefix]["rex"].append({
                        "name": f"{name}.nii.gz", "findings": dict(enumerate(ph.lesion_texts)),
                        "categories": dict(enumerate(ph.lesion_categories)), "shape": list(mask.shape)})
                vol = f"{name}.nii.gz"
                rows[sp.prefix]["reports"].append({
                    "VolumeName": vol, "ClinicalInformation_EN": clinical,
                    "Technique_EN": str(rng.choice(TECHNIQUE)).format(z=sz), "Findings_EN": findings,
                    "Impressions_EN": impressions})
                rows[sp.prefix]["metadata"].append({
                    "VolumeName": vol, "Manufacturer": manufacturer, "XYSpacing": f"[{sy}, {sx}]",
                    "ZSpacing": sz, "RescaleIntercept": -1024, "RescaleSlope": 1, "Rows": h, "Columns": w,
                    "NumberofSlices": d, "PatientSex": scan.anatomy.sex,
                    "PatientAge": f"{scan.anatomy.age:03d}Y"})
                rows[sp.prefix]["labels"].append(
                    {"VolumeName": vol, **{x: int(x in scan.abnormalities) for x in CT_RATE_LABELS}})
                truth.append({"VolumeName": vol, "split": sp.prefix, "patient": pre,
                              "abnormalities": sorted(scan.abnormalities)})
                bar.update()
        bar.close()
        _write_index(stager, out_root, rows, truth)
    finally:
        shutil.rmtree(stager.dir, ignore_errors=True)


def _tables(root: Path) -> Iterator[tuple[_Split, str, Path]]:
    """(split, kind, path) of every CSV index file."""
    for s in SPLITS:
        yield s, "reports", root / "radiology_text_reports" / f"{s.table}_reports.csv"
        yield s, "metadata", root / "metadata" / f"{s.table}_metadata.csv"
        yield s, "labels", root / "multi_abnormality_labels" / f"{s.labels}_predicted_labels.csv"


def _index_files(root: Path) -> list[Path]:
    return [root / "anatomy_masks" / "classes.json", root / "ReXGroundingCT" / "dataset.json",
            *(path for *_, path in _tables(root)), root / "demo_truth.parquet"]


def _write_index(stager: _Stager, root: Path, rows: dict, truth: list[dict]) -> None:
    """Class table, ReXGroundingCT JSON and CSVs; demo_truth.parquet last (marks completion)."""
    classes = {str(k): v for k, v in ANATOMY_CLASSES.items()}
    _write_text(stager, root / "anatomy_masks" / "classes.json", json.dumps(classes, indent=1))
    rex = {s.rex: rows[s.prefix]["rex"] for s in SPLITS}
    _write_text(stager, root / "ReXGroundingCT" / "dataset.json", json.dumps(rex, indent=1))
    for s, kind, path in _tables(root):
        table = pd.DataFrame(rows[s.prefix][kind], columns=COLUMNS[kind])
        _write_text(stager, path, table.to_csv(index=False))
    with stager.path(root / "demo_truth.parquet") as tmp:
        pd.DataFrame(truth).to_parquet(tmp, index=False)
