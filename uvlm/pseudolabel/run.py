"""The pseudo-label step over one shard: run one labeler on every volume, check and record what it made.

Output folder of a shard (renamed from `.partial` only when complete):
    {VolumeName}.nii.gz   label map on the image's grid (not for the `folder` backend, which points
                          at existing maps instead of copying them)
    qc/{VolumeName}.png   axial/coronal/sagittal overlay; qc/legend.png names the colours
    classes.json          value -> class name of this labeler
    labeler.json          the labeler's settings and tool versions
    index.parquet         volume_name, label_path, voxels per class (JSON), missing classes (JSON), seconds
    errors.csv            volumes that failed (with on_error: skip)
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import SimpleITK as sitk

from uvlm.data.ct_volume import hu_file, load_ct_row
from uvlm.io import VolumeError, read_image, same_geometry, write_image, write_json
from uvlm.pseudolabel.classical import CLASSES as CLASSICAL_CLASSES
from uvlm.pseudolabel.classical import ClassicalConfig, label_image
from uvlm.qc.montage import legend, montage
from uvlm.shards import run_shard

log = logging.getLogger(__name__)

BACKENDS = ("classical", "totalsegmentator", "nnunet", "folder")


class Labeler(Protocol):
    classes: dict[int, str]

    def write(self, case: str, image_path: str, image: sitk.Image, out_dir: Path) -> Path:
        """Make (or find) the label map of one case; return its path."""


class ClassicalLabeler:
    def __init__(self, cfg: ClassicalConfig) -> None:
        self.cfg, self.classes = cfg, dict(CLASSICAL_CLASSES)

    def write(self, case: str, image_path: str, image: sitk.Image, out_dir: Path) -> Path:
        out = out_dir / f"{case}.nii.gz"
        write_image(label_image(image, self.cfg), out)
        return out


class FolderLabeler:
    """Label maps that already exist ({VolumeName}.nii.gz + classes.json), e.g. from an earlier run."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        table = self.folder / "classes.json"
        if not table.is_file():
            raise FileNotFoundError(f"label folder {self.folder} has no classes.json (value -> class name)")
        self.classes = {int(k): v for k, v in json.loads(table.read_text()).items() if int(k) != 0}

    def write(self, case: str, image_path: str, image: sitk.Image, out_dir: Path) -> Path:
        return (self.folder / f"{case}.nii.gz").resolve()


class _ModelLabeler:
    """TotalSegmentator or nnU-Net: a predictor object with predict(image_path, out_path, ...)."""

    def __init__(self, predictor, needs_work_dir: bool) -> None:
        self.predictor, self.needs_work_dir, self.classes = predictor, needs_work_dir, dict(predictor.classes)

    def write(self, case: str, image_path: str, image: sitk.Image, out_dir: Path) -> Path:
        out = out_dir / f"{case}.nii.gz"
        if self.needs_work_dir:
            self.predictor.predict(image_path, out, out_dir)
        else:
            self.predictor.predict(image_path, out)
        return out


def build_labeler(spec: dict, device: str, threads: int, home_dir: Path, default_folder: str = "") -> Labeler:
    """A labeler from its config entry (see `pseudolabels.labelers` in config/config.yaml)."""
    backend = spec["backend"]
    if backend == "classical":
        return ClassicalLabeler(ClassicalConfig(**spec.get("params", {})))
    if backend == "folder":
        return FolderLabeler(spec.get("path") or default_folder)
    if backend == "totalsegmentator":
        from uvlm.pseudolabel.totalseg import TotalSegmentatorLabeler

        return _ModelLabeler(TotalSegmentatorLabeler(spec.get("task", "total"), bool(spec.get("fast", False)),
                                                     spec["weights_dir"], home_dir, device, threads), False)
    if backend == "nnunet":
        from uvlm.pseudolabel.nnunet_model import NnunetLabeler

        return _ModelLabeler(NnunetLabeler(spec["model_dir"], spec.get("folds", [0]),
                                           spec.get("checkpoint", "checkpoint_final.pth"), spec.get("classes"),
                                           device, mirroring=bool(spec.get("mirroring", True))), True)
    raise ValueError(f"unknown labeler backend '{backend}' (known: {', '.join(BACKENDS)})")


def tool_versions() -> dict[str, str]:
    out = {}
    for pkg in ("totalsegmentator", "nnunetv2", "SimpleITK", "scipy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def resolve_label_path(value: str, shard_dir: str | Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else Path(shard_dir) / p


def pseudolabel_shard(rows: pd.DataFrame, name: str, spec: dict, out_dir: str | Path, on_error: str = "fail",
                      device: str = "cpu", threads: int = 1, default_folder: str = "",
                      montages: bool = True) -> pd.DataFrame:
    """Label every row with labeler `name`; write the shard folder described in the module docstring."""
    out_dir = Path(out_dir)
    home = out_dir.with_name(out_dir.name + ".home")  # private TotalSegmentator home of this job
    labeler = build_labeler(spec, device, threads, home, default_folder)
    n_classes = max(labeler.classes, default=0)  # values above it are rejected below

    def work(row: pd.Series, partial: Path) -> dict:
        case = row["volume_name"]
        start = time.monotonic()
        image, facts = load_ct_row(row)  # the same checked HU volume preprocessing sees
        with hu_file(image, facts, row["image_path"], partial / ".hu", case) as source:
            path = labeler.write(case, str(source), image, partial)  # tools reading files get the HU volume too
        labels = read_image(path, case)
        diffs = same_geometry(labels, image)
        if diffs:
            raise VolumeError(f"case {case}: label map {path} does not match its image {row['image_path']}: "
                              + "; ".join(diffs))
        arr = sitk.GetArrayViewFromImage(labels)
        counts = np.bincount(np.asarray(arr, dtype=np.int64).ravel(), minlength=n_classes + 1)
        unknown = sorted(set(np.nonzero(counts)[0].tolist()) - set(labeler.classes) - {0})
        if unknown:
            raise VolumeError(f"case {case}: label map {path} holds values {unknown} not in the class table")
        voxels = {n: int(counts[v]) for v, n in labeler.classes.items()}
        if montages:
            montage(image, labels, labeler.classes, partial / "qc" / f"{case}.png")
        rel = path.name if path.parent == partial else str(path)
        return {"label_path": rel, "voxel_ml": float(np.prod(image.GetSpacing())) / 1000.0,
                "voxels": json.dumps(voxels), "missing": json.dumps([n for n, c in voxels.items() if c == 0]),
                "seconds": round(time.monotonic() - start, 3)}

    def finalize(partial: Path) -> None:
        shutil.rmtree(partial / ".hu", ignore_errors=True)
        write_json({str(k): v for k, v in sorted(labeler.classes.items())}, partial / "classes.json")
        if montages:
            legend(labeler.classes, partial / "qc" / "legend.png")
        write_json({"labeler": name, "spec": spec, "device": device, "versions": tool_versions()},
                   partial / "labeler.json")

    try:
        return run_shard(rows, work, out_dir, on_error, desc=f"{name} labels", finalize=finalize)
    finally:
        shutil.rmtree(home, ignore_errors=True)
