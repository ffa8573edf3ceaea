"""File helpers every step uses: atomic writes, and volume reading with errors that name the file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


class VolumeError(RuntimeError):
    """A volume (or mask) could not be used; the message names the case and the file."""


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it onto `final` only if the block succeeds.

    Partial outputs therefore never look complete: a crash leaves a `.tmp` file, not `final`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=(suffix or "".join(final.suffixes)) + ".tmp",
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically, pretty-printed so that humans can diff it."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(df: Any, path: str | Path) -> None:
    """Write a pandas DataFrame as Parquet atomically."""
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def save_npy(arr: np.ndarray, path: str | Path) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def write_image(img: sitk.Image, path: str | Path) -> None:
    """Write a SimpleITK image (NIfTI by extension) atomically, compressed."""
    with atomic_path(path, suffix=".nii.gz") as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def read_image(path: str | Path, case: str = "") -> sitk.Image:
    """Read a volume; a missing, empty or truncated file raises VolumeError naming case and file."""
    path = Path(path)
    label = f"case {case}: " if case else ""
    if not path.is_file():
        raise VolumeError(f"{label}file not found: {path}")
    if path.stat().st_size == 0:
        raise VolumeError(f"{label}file is empty: {path}")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise VolumeError(f"{label}cannot read {path}: {first}") from None
    return img
