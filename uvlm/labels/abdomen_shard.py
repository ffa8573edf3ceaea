"""The AbdomenAtlas label step over one shard: per-class masks -> each granularity + RadGPT labels.

Every mask must lie on the CT's grid (checked against the CT header, so the CT's voxels are never
decompressed here); a mask on another grid, an empty or a truncated mask fails its case, naming the
case and the file. Every split is processed: Stage 1 trains on the train label maps, but the
lesion labels are needed for every case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from uvlm.data.manifest import has_masks
from uvlm.io import VolumeError, read_header, read_image, same_geometry, write_image, write_json
from uvlm.labels.label_map import LabelMap
from uvlm.labels.merge import AnatomySource, class_voxel_counts, merge_labels
from uvlm.labels.radgpt import LESION_ORGANS, lesion_findings
from uvlm.qc.montage import legend, montage
from uvlm.shards import run_shard

RADGPT_MASKS = {*LESION_ORGANS, *(o for organs in LESION_ORGANS.values() for o in organs)}


def read_masks(seg_dir: Path, ct: sitk.ImageFileReader, case: str) -> dict[str, sitk.Image]:
    """{stem: mask} of segmentations/*.nii.gz, each checked against the CT grid."""
    masks = {}
    for path in sorted(seg_dir.glob("*.nii.gz")):
        img = read_image(path, case)
        diffs = same_geometry(ct, img) if img.GetDimension() == 3 else [f"{img.GetDimension()}-D image"]
        if diffs:
            raise VolumeError(f"case {case}: mask {path.name} does not match ct.nii.gz: {'; '.join(diffs)}")
        masks[path.name[: -len(".nii.gz")]] = img
    return masks


def label_abdomen_shard(rows: pd.DataFrame, label_maps: list[LabelMap], out_dir: str | Path,
                        on_error: str = "fail", min_volume_mm3: float = 10.0, montages: bool = True) -> pd.DataFrame:
    """Write <out>/<granularity>/<case>.nii.gz for every case; return the index.

    Index columns: volume_name, split, has_<g>, missing_<g> (JSON list of classes with no voxel),
    voxels_<g> (JSON class -> voxels), voxel_ml, liver_lesion / kidney_lesion / pancreatic_lesion
    (0/1, RadGPT rule) and <lesion>_mm3 (surviving volume). With montages, qc/<case>.png shows the
    finest granularity over the CT.
    """
    finest = max(label_maps, key=lambda lm: len(lm.classes))
    rows = rows[has_masks(rows)]  # the others carry their reason (no CT, no mask folder) from ingest

    def work(row: pd.Series, out: Path) -> dict:
        case = row["volume_name"]
        ct = read_header(row["image_path"], case)
        seg_dir = Path(row["seg_dir"])
        if not seg_dir.is_dir():
            raise VolumeError(f"case {case}: mask folder {seg_dir} is gone")
        masks = read_masks(seg_dir, ct, case)
        findings = lesion_findings({k: v for k, v in masks.items() if k in RADGPT_MASKS}, min_volume_mm3)
        shape = tuple(reversed(ct.GetSize()))  # (D, H, W)
        sources = []
        for stem in list(masks):  # pop as we go: holds one copy of the masks, not two
            mask = masks.pop(stem)  # a named reference: a view of a temporary image reads freed memory
            arr = sitk.GetArrayViewFromImage(mask) > 0  # (D, H, W) bool
            del mask
            if arr.any():  # empty masks (absent structures) add nothing
                sources.append(AnatomySource(stem, arr.view(np.uint8), {1: stem}))
        rec: dict = {"split": row["split"]}
        for lm in label_maps:
            merged = merge_labels(sources, None, [], lm) if sources else np.zeros(shape, np.uint8)
            label_img = sitk.GetImageFromArray(merged)
            label_img.SetSpacing(ct.GetSpacing())
            label_img.SetOrigin(ct.GetOrigin())
            label_img.SetDirection(ct.GetDirection())
            write_image(label_img, out / lm.granularity / f"{case}.nii.gz")
            rec[f"has_{lm.granularity}"] = True
            counts = class_voxel_counts(merged, lm)
            rec[f"voxels_{lm.granularity}"] = json.dumps(counts)
            rec[f"missing_{lm.granularity}"] = json.dumps([n for n, v in counts.items() if v == 0])
            if montages and lm is finest:
                classes = {c.value: c.name for c in lm.classes}
                montage(read_image(row["image_path"], case), label_img, classes, out / "qc" / f"{case}.png")
        rec["voxel_ml"] = float(np.prod(ct.GetSpacing())) / 1000.0
        for name, (label, volume) in findings.items():
            rec[name], rec[f"{name}_mm3"] = label, volume
        return rec

    def finalize(partial: Path) -> None:
        for lm in label_maps:
            write_json(lm.class_table(), partial / f"classes_{lm.granularity}.json")
        if montages:
            legend({c.value: c.name for c in finest.classes}, partial / "qc" / "legend.png")

    return run_shard(rows, work, out_dir, on_error, desc="abdomen label maps", finalize=finalize)
