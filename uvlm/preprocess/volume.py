"""Whole-volume preprocessing for Stages 2 and 3: orientation, HU sanity, resampling, normalisation.

Output arrays are (D, H, W) float16, z-scored per volume after HU clipping, on a fixed grid that
covers the whole field of view (the paper resizes every volume to 192 x 256 x 256).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from uvlm.data.ct_volume import AIR_HU, hu_line, inspect_ct, load_ct
from uvlm.io import VolumeError, save_npy
from uvlm.preprocess.area_resample import area_resample, dicom_orient_axes
from uvlm.preprocess.read_once import read_image_deferred

if TYPE_CHECKING:  # pandas is imported by the shard runner only: one volume needs SimpleITK and numpy
    import pandas as pd


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
                      xy_spacing: float = float("nan"), z_spacing: float = float("nan"),
                      method: str = "area") -> tuple[np.ndarray, dict]:
    """One volume -> ((D, H, W) float16 z-scored array, facts about what was done); see uvlm.data.ct_volume
    for the checks and the HU harmonisation, `resample_hu` for the methods."""
    out, info = resample_hu(path, grid_dhw, orientation, intercept, slope, case, xy_spacing, z_spacing, method)
    z, mean, std = clip_zscore(out, hu_window)
    return z, {**info, "hu_mean": mean, "hu_std": std}


def clip_zscore(out: np.ndarray, hu_window: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    """(D, H, W) float32 HU, clipped in place -> (float16 z-scores, mean, std of the clipped HU).

    Slice by slice, so each slice is clipped, summed and squared while in cache (float64 sums)."""
    total = squares = 0.0
    tmp = np.empty(out.shape[1:], np.float32)
    for s in out:
        np.clip(s, hu_window[0], hu_window[1], out=s)
        total += float(s.sum(dtype=np.float64))
        squares += float(np.square(s, out=tmp).sum(dtype=np.float64))
    mean = total / out.size
    std = float(np.sqrt(max(squares / out.size - mean * mean, 0.0)))
    z = np.empty(out.shape, np.float16)
    for s, zs in zip(out, z, strict=True):
        np.subtract(s, np.float32(mean), out=s)
        np.divide(s, np.float32(max(std, 1e-6)), out=zs, casting="same_kind")
    return z, mean, std


def resample_hu(path: str, grid_dhw: tuple[int, int, int], orientation: str, intercept: float, slope: float,
                case: str, xy_spacing: float = float("nan"), z_spacing: float = float("nan"),
                method: str = "area") -> tuple[np.ndarray, dict]:
    """One volume -> ((D, H, W) float32 HU on the grid, before clipping; the facts `load_ct` reports).

    "area" (default): exact area average in one chunked pass over the stored voxels, decoded once (see
    uvlm.preprocess.area_resample and read_once; the gzip CRC-32 runs on a thread meanwhile). "gaussian": the
    earlier path (float32 HU copy, Gaussian anti-aliasing, linear resampling), kept as a reference."""
    if method == "gaussian":
        hu_img, info = load_ct(path, case, intercept, slope, xy_spacing, z_spacing)
        return sitk.GetArrayFromImage(resample_to_grid(hu_img, grid_dhw, orientation)), info
    if method != "area":
        raise ValueError(f"unknown preprocessing method {method!r} (area or gaussian)")
    img, verify = read_image_deferred(path, case)  # the gzip CRC-32 is checked meanwhile
    try:
        img, arr, info = inspect_ct(img, case, path, intercept, slope, xy_spacing, z_spacing)
        scale, offset = hu_line(info["hu_correction"], intercept, slope)  # HU = stored * scale + offset
        perm, flips = dicom_orient_axes(img, orientation)
        out = area_resample(arr, perm, flips, grid_dhw, info["padding"], (AIR_HU - offset) / scale, (scale, offset))
    except Exception:
        verify()  # a damaged file is reported as damaged, not as the implausible volume it decoded to
        raise
    verify()
    return np.ascontiguousarray(out), info  # a copy only when the orientation moved an axis


def preprocess_shard(rows: pd.DataFrame, out_dir: str | Path, grid_dhw: tuple[int, int, int],
                     hu_window: tuple[float, float], orientation: str, on_error: str = "fail",
                     workers: int = 1) -> pd.DataFrame:
    """Write <out>/<volume>.npy for every volume of the shard, plus index.parquet; `workers` processes."""
    from uvlm.shards import run_shard

    work = partial(_preprocess_row, grid_dhw=tuple(grid_dhw), hu_window=tuple(hu_window), orientation=orientation)
    return run_shard(rows, work, out_dir, on_error, desc="volumes preprocessed", workers=workers)


def _preprocess_row(row: pd.Series, out: Path, grid_dhw: tuple[int, int, int], hu_window: tuple[float, float],
                    orientation: str) -> dict:
    """One manifest row -> <out>/<volume>.npy and its index record (module level: pool workers pickle it)."""
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
