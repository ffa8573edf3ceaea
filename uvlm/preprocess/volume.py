"""Whole-volume preprocessing for Stages 2 and 3: orientation, HU sanity, resampling, normalisation.

Output arrays are (D, H, W) float16, z-scored per volume after HU clipping, on a fixed grid that
covers the whole field of view (the paper resizes every volume to 192 x 256 x 256).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from uvlm.data.ct_volume import AIR_HU, load_ct
from uvlm.io import VolumeError, save_npy
from uvlm.shards import run_shard


def resample_to_grid(img: sitk.Image, grid_dhw: tuple[int, int, int], orientation: str) -> sitk.Image:
    """Reorient, then resample the whole field of view onto grid_dhw voxels (linear, anti-aliased)."""
    img = sitk.DICOMOrient(img, orientation)
    size_xyz = np.array(img.GetSize(), dtype=float)
    spacing_xyz = np.array(img.GetSpacing(), dtype=float)
    out_size_xyz = np.array(grid_dhw[::-1], dtype=float)
    out_spacing = size_xyz * spacing_xyz / out_size_xyz
    sigma = np.maximum(out_spacing / spacing_xyz - 1.0, 0.0) * spacing_xyz / 2.0
    if np.any(sigma > 0):  # Gaussian anti-aliasing before downsampling (sigma in mm per axis)
        img = sitk.SmoothingRecursiveGaussian(img, [max(float(s), 1e-3) for s in sigma])
    # Align the first output voxel's corner with the input's corner, so the field of view is kept.
    direction = np.array(img.GetDirection()).reshape(3, 3)
    corner = np.array(img.GetOrigin()) - direction @ (spacing_xyz / 2)
    origin = corner + direction @ (out_spacing / 2)
    return sitk.Resample(img, [int(s) for s in out_size_xyz], sitk.Transform(), sitk.sitkLinear,
                         origin.tolist(), out_spacing.tolist(), img.GetDirection(), AIR_HU, sitk.sitkFloat32)


def preprocess_volume(path: str, grid_dhw: tuple[int, int, int], hu_window: tuple[float, float],
                      orientation: str, intercept: float, slope: float, case: str,
                      xy_spacing: float = float("nan"), z_spacing: float = float("nan")) -> tuple[np.ndarray, dict]:
    """One volume -> ((D, H, W) float16 z-scored array, facts about what was done); see uvlm.data.ct_volume
    for the checks and the HU harmonisation."""
    hu_img, info = load_ct(path, case, intercept, slope, xy_spacing, z_spacing)
    out = sitk.GetArrayFromImage(resample_to_grid(hu_img, grid_dhw, orientation))  # (D, H, W)
    out = np.clip(out, hu_window[0], hu_window[1])
    mean, std = float(out.mean()), float(out.std())
    out = (out - mean) / max(std, 1e-6)
    return out.astype(np.float16), {**info, "hu_mean": mean, "hu_std": std}


def preprocess_shard(rows: pd.DataFrame, out_dir: str | Path, grid_dhw: tuple[int, int, int],
                     hu_window: tuple[float, float], orientation: str, on_error: str = "fail") -> pd.DataFrame:
    """Write <out>/<volume>.npy for every volume of the shard, plus index.parquet."""

    def work(row: pd.Series, out: Path) -> dict:
        case = row["volume_name"]
        if not row["image_exists"]:
            raise VolumeError(f"case {case}: no image to preprocess ({row.get('problems') or 'volume file not found'})")
        nan = float("nan")  # manifests without scanner metadata (AbdomenAtlas, CSV): HU judged from the data
        arr, info = preprocess_volume(row["image_path"], grid_dhw, hu_window, orientation,
                                      row.get("rescale_intercept", nan), row.get("rescale_slope", nan), case,
                                      row.get("xy_spacing", nan), row.get("z_spacing", nan))
        save_npy(arr, out / f"{case}.npy")
        return {"array_file": f"{case}.npy", "hu_correction": info["hu_correction"],
                "padding": float("nan") if info["padding"] is None else info["padding"],
                "fingerprint": info["fingerprint"], "hu_mean": info["hu_mean"], "hu_std": info["hu_std"]}

    return run_shard(rows, work, out_dir, on_error, desc="volumes preprocessed")
