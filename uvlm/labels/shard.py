"""The label step over one shard: read anatomy + lesion masks, merge into each granularity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from uvlm.io import VolumeError, read_image, write_image, write_json
from uvlm.labels.label_map import LabelMap
from uvlm.labels.merge import class_voxel_counts, merge_labels
from uvlm.shards import run_shard


def read_anatomy(path: str, case: str) -> tuple[sitk.Image, np.ndarray, dict[int, str]]:
    """Anatomy label map + its class table (classes.json in the same folder)."""
    img = read_image(path, case)
    table_path = Path(path).parent / "classes.json"
    if not table_path.is_file():
        raise VolumeError(f"case {case}: no classes.json next to {path}")
    table = {int(k): v for k, v in json.loads(table_path.read_text()).items()}
    return img, sitk.GetArrayFromImage(img), table


def read_lesions(path: str, codes: list[str], shape_dhw: tuple[int, ...], case: str) -> np.ndarray:
    """ReXGroundingCT-style mask (F, X, Y, Z) -> (F, D, H, W) aligned with SimpleITK arrays."""
    p = Path(path)
    if not p.is_file():
        raise VolumeError(f"case {case}: lesion mask not found: {p}")
    try:
        with np.load(p) as npz:
            mask = npz["mask"]
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise VolumeError(f"case {case}: cannot read lesion mask {p}: {err}") from None
    if mask.ndim != 4:
        raise VolumeError(f"case {case}: lesion mask {p} has shape {mask.shape}, expected (F, X, Y, Z)")
    mask = np.transpose(mask, (0, 3, 2, 1))  # (F, X, Y, Z) -> (F, Z, Y, X) = (F, D, H, W)
    if mask.shape[1:] != tuple(shape_dhw):
        raise VolumeError(f"case {case}: lesion mask {p} spatial shape {mask.shape[1:]} differs from the "
                          f"image's {tuple(shape_dhw)} (D, H, W)")
    if mask.shape[0] != len(codes):
        raise VolumeError(f"case {case}: lesion mask {p} has {mask.shape[0]} channels, JSON lists {len(codes)}")
    return mask


def label_shard(rows: pd.DataFrame, label_maps: list[LabelMap], out_dir: str | Path,
                lesions_complete: bool, on_error: str = "fail") -> pd.DataFrame:
    """Write <out>/<granularity>/<volume>.nii.gz for every volume with anatomy; return the index.

    A granularity that needs lesions is written only for volumes whose lesions are known: those with
    a mask, or every volume when lesions_complete (no mask then means no lesion).
    """
    rows = rows[(rows["anatomy_path"] != "") & (rows["split"] == "train")]

    def work(row: pd.Series, out: Path) -> dict:
        case = row["volume_name"]
        img, anatomy, table = read_anatomy(row["anatomy_path"], case)
        codes = json.loads(row["lesion_categories"])
        lesions = read_lesions(row["lesion_mask_path"], codes, anatomy.shape, case) if row["lesion_mask_path"] else None
        rec: dict = {}
        for lm in label_maps:
            known = lesions is not None or lesions_complete or not lm.needs_lesions
            rec[f"has_{lm.granularity}"] = known
            if not known:
                continue
            merged = merge_labels(anatomy, table, lesions, codes, lm)
            label_img = sitk.GetImageFromArray(merged)
            label_img.CopyInformation(img)
            write_image(label_img, out / lm.granularity / f"{case}.nii.gz")
            missing = [n for n, v in class_voxel_counts(merged, lm).items() if v == 0]
            rec[f"missing_{lm.granularity}"] = json.dumps(missing)
        return rec

    def finalize(partial: Path) -> None:
        for lm in label_maps:
            write_json(lm.class_table(), partial / f"classes_{lm.granularity}.json")

    return run_shard(rows, work, out_dir, on_error, desc="label maps", finalize=finalize)
