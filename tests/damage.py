"""Helpers that damage a small CT-RATE-layout root one way (tests/bad_inputs.py names the kinds)."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

VICTIM = "train_1_a_1"  # the volume most kinds damage (a training volume: every step reads it)
SPACING_XYZ = (1.5, 1.5, 2.0)  # what conftest.write_ct_rate_root writes, in the header and the metadata

def volume_path(root: Path, name: str = VICTIM) -> Path:
    return next((root / "dataset").rglob(f"{name}.nii.gz"))


def body_hu(shape=(12, 20, 20), seed: int = 0) -> np.ndarray:
    """Noisy air around a body of soft tissue with a bone, in HU (z, y, x)."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    _, y, x = np.mgrid[:d, :h, :w]
    body = ((y - h / 2) / (h * 0.4)) ** 2 + ((x - w / 2) / (w * 0.45)) ** 2 <= 1
    arr = np.where(body, 40.0, -1000.0) + rng.normal(0, 8, shape)
    arr[:, int(h * 0.7), w // 2] = 700.0
    return arr


def fov(shape=(12, 20, 20)) -> np.ndarray:
    """The circular field of view of a scanner (True inside)."""
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (shape[1] / 2 - 1) ** 2


def write_volume(root: Path, arr: np.ndarray, dtype=np.int16, spacing=SPACING_XYZ, name: str = VICTIM,
                 suffix: str = ".nii.gz") -> Path:
    """Replace a volume's file with arr (z, y, x); a different suffix replaces the .nii.gz."""
    target = volume_path(root, name)
    img = sitk.GetImageFromArray(np.asarray(arr).astype(dtype))
    img.SetSpacing(spacing)
    out = target.with_name(f"{name}{suffix}")
    target.unlink()
    sitk.WriteImage(img, str(out))
    return out


def write_image(root: Path, img: sitk.Image, name: str = VICTIM) -> None:
    sitk.WriteImage(img, str(volume_path(root, name)))


def edit_csv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(df).to_csv(path, index=False)


def set_cell(path: Path, name: str, column: str, value: str) -> None:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[df["VolumeName"].str.startswith(name), column] = value
        return df

    edit_csv(path, edit)


def reports(root: Path) -> Path:
    return root / "radiology_text_reports" / "train_reports.csv"


def metadata(root: Path) -> Path:
    return root / "metadata" / "train_metadata.csv"


def labels(root: Path) -> Path:
    return root / "multi_abnormality_labels" / "train_predicted_labels.csv"


def rewrite_gz(path: Path, edit: Callable[[bytes], bytes]) -> None:
    path.write_bytes(edit(path.read_bytes()))


def set_pixdim(path: Path, axis: int, value: float) -> None:
    """Overwrite pixdim[axis] (1 = x) of a NIfTI-1 .nii.gz header, as a broken exporter would."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * axis: 80 + 4 * axis] = struct.pack("<f", value)
    path.write_bytes(gzip.compress(bytes(raw)))


def corrupt_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 16]) + data[mid + 16:]


def add_lesions(root: Path, mask: np.ndarray | None, categories: dict[str, str], name: str = VICTIM,
                file_bytes: bytes | None = None, nifti: sitk.Image | None = None) -> None:
    """A ReXGroundingCT entry for one volume: dataset.json + segmentations/<name>.npz (F, X, Y, Z) or .nii.gz."""
    rex = root / "ReXGroundingCT"
    (rex / "segmentations").mkdir(parents=True, exist_ok=True)
    entry = {"name": f"{name}.nii.gz", "categories": categories, "findings": dict.fromkeys(categories, "a finding")}
    (rex / "dataset.json").write_text(json.dumps({"train": [entry]}))
    if nifti is not None:
        sitk.WriteImage(nifti, str(rex / "segmentations" / f"{name}.nii.gz"))
    elif file_bytes is not None:
        (rex / "segmentations" / f"{name}.npz").write_bytes(file_bytes)
    elif mask is not None:
        np.savez_compressed(rex / "segmentations" / f"{name}.npz", mask=mask)


def lesion_mask(channels: int = 1, shape_xyz=(20, 20, 12)) -> np.ndarray:
    mask = np.zeros((channels, *shape_xyz), np.uint8)
    mask[:, 8:12, 8:12, 4:8] = 1
    return mask


def npz_bytes(**arrays: np.ndarray) -> bytes:
    import io  # the standard library's, not uvlm.io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def hu_with_padding(pad: float, stored: str = "hu") -> np.ndarray:
    hu = body_hu()
    values = np.round(hu + (1024 if stored == "raw" else 0))
    return np.where(fov(), values, pad)


def image_of(arr: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(np.round(arr).astype(np.int16))
    img.SetSpacing(SPACING_XYZ)
    return img


def set_voxels(arr: np.ndarray, index, value: float) -> np.ndarray:
    arr = arr.copy()
    arr[index] = value
    return arr


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def remove_tree(path: Path) -> None:
    shutil.rmtree(path)
