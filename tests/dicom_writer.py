"""DICOM CT series written the way scanners store them, for the tests of the DICOM reader and of your own data."""

from __future__ import annotations

import contextlib
import locale
import random
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING = (0.7, 0.8, 2.5)  # (x, y, z) mm
ORIGIN = (-10.0, -20.0, 30.0)
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # else GDCM writes Secondary Capture, which has no PixelSpacing


def write_dicom_series(folder: Path, hu: np.ndarray, series: str = SERIES, spacing=SPACING, origin=ORIGIN,
                       skip: tuple[int, ...] = ()) -> list[Path]:
    """One CT slice per file, stored as HU + 1024 with RescaleIntercept -1024, in shuffled name order."""
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(hu)  # hu: (D, H, W) -> image (x, y, z)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    order = [k for k in range(hu.shape[0]) if k not in skip]
    random.Random(1).shuffle(order)  # file names must not give the slice order away
    paths = []
    for n, k in enumerate(order):
        sl = img[:, :, k]
        z = origin[2] + k * spacing[2]
        tags = {"0008|0060": "CT", "0008|0016": CT_IMAGE_STORAGE, "0020|000d": STUDY, "0020|000e": series,
                "0020|0032": f"{origin[0]}\\{origin[1]}\\{z}", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
                "0020|0013": str(k + 1), "0028|1052": "-1024", "0028|1053": "1"}
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        # ITK's DICOM writer takes the voxels as real-world values: it stores (HU - intercept) / slope.
        paths.append(folder / f"IM{n:04d}.dcm")
        writer.SetFileName(str(paths[-1]))
        with keep_locale():
            writer.Execute(sl)
    return paths


@contextlib.contextmanager
def keep_locale():
    """GDCM's DICOM writer sets the C locale for the whole process, after which Python reads text files as
    ASCII (later tests failed on config/labels/*.yaml); put the locale back."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)
