"""ReXGroundingCT lesion masks: one channel per finding, aligned with the CT-RATE volume.

Two on-disk forms are read:
- `.npz` holding one array (key `mask`, or the only array) of shape (F, H, W, D), i.e. the NIfTI
  voxel axes (x, y, z) of the CT-RATE volume after the finding axis; it has no geometry of its own,
  so only its shape is checked against the image.
- `.nii.gz` 4-D NIfTI (x, y, z, F); its spacing, origin and direction must match the image.
Every failure names the case and the file, so one bad mask never hides which volume it belongs to.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from uvlm.constants import REXGROUNDING_CATEGORIES
from uvlm.io import VolumeError, read_image, same_geometry


def check_categories(codes: list[str], case: str, path: str | Path) -> None:
    unknown = sorted({c for c in codes if c not in REXGROUNDING_CATEGORIES})
    if unknown:
        raise VolumeError(f"case {case}: lesion file {path} lists unknown ReXGroundingCT categories {unknown} "
                          f"(known: {sorted(REXGROUNDING_CATEGORIES)})")


def _load_npz(p: Path, case: str) -> np.ndarray:
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.keys())
            key = "mask" if "mask" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise VolumeError(f"case {case}: lesion mask {p} holds arrays {keys}, expected one named 'mask'")
            return npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise VolumeError(f"case {case}: cannot read lesion mask {p} (empty or truncated?): {err}") from None


def read_lesions(path: str | Path, codes: list[str], image: sitk.Image, case: str) -> np.ndarray:
    """Lesion channels as (F, D, H, W) uint8, aligned with sitk.GetArrayFromImage(image)."""
    p = Path(path)
    if not p.is_file():
        raise VolumeError(f"case {case}: lesion mask not found: {p}")
    check_categories(codes, case, p)
    dhw = tuple(reversed(image.GetSize()))
    if p.name.endswith(".npz"):
        mask = _load_npz(p, case)
        if mask.ndim != 4:
            raise VolumeError(f"case {case}: lesion mask {p} has shape {mask.shape}, expected (F, H, W, D)")
        mask = np.transpose(mask, (0, 3, 2, 1))  # (F, x, y, z) -> (F, z, y, x) = (F, D, H, W)
    else:
        img = read_image(p, case)
        if img.GetDimension() == 3 and len(codes) == 1:
            img = sitk.JoinSeries([img])
        if img.GetDimension() != 4:
            raise VolumeError(f"case {case}: lesion mask {p} is {img.GetDimension()}-D, expected 4-D (x, y, z, F)")
        diffs = same_geometry(img, image)
        if diffs:
            raise VolumeError(f"case {case}: lesion mask {p} does not match its image: {'; '.join(diffs)}")
        mask = sitk.GetArrayFromImage(img)  # (F, D, H, W)
    if mask.shape[1:] != dhw:
        raise VolumeError(f"case {case}: lesion mask {p} spatial shape {mask.shape[1:]} differs from the "
                          f"image's {dhw} (D, H, W); wrong volume or axis order")
    if mask.shape[0] != len(codes):
        raise VolumeError(f"case {case}: lesion mask {p} has {mask.shape[0]} channels, its JSON lists {len(codes)}")
    return (mask > 0).astype(np.uint8)
