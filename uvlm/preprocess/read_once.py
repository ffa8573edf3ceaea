"""`uvlm.io.read_image` with one decompression instead of two, for the whole-volume preprocessing path.

`read_image` decompresses a .nii.gz once in Python to check its gzip CRC-32 (ITK reads a damaged stream
as plausible garbage) and once more in ITK. Here ITK decompresses once, and the CRC-32 of the header
bytes plus the voxel bytes ITK decoded is compared with the one in the gzip trailer. When they match,
ITK's voxels are the file's exactly, so the stream is intact. When they do not (a damaged stream, or a
file whose decoded buffer differs from its bytes: big-endian, NIfTI scl_slope, several gzip members),
`read_image`'s own full check decides, so the verdict and the messages are always `read_image`'s.
The CRC-32 can run while the caller works on the voxels (`read_image_deferred`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import SimpleITK as sitk

from uvlm.io import (
    VolumeError,
    _check_gzip_size,
    _check_gzip_stream,
    _check_nifti_pixdim,
    _is_float,
    _last_line,
    _nifti_layout,
    _read_file_header,
    read_image,
)


def read_image_once(path: str | Path, case: str = "") -> sitk.Image:
    """`read_image(path, case)`: the same image, the same checks and the same VolumeError messages."""
    img, verify = read_image_deferred(path, case)
    verify()
    return img


def read_image_deferred(path: str | Path, case: str = "") -> tuple[sitk.Image, Callable[[], None]]:
    """(the image, its integrity check): the CRC-32 of a .nii.gz runs on a thread (zlib releases the GIL) while
    the caller works on the voxels; verify() waits for it and raises what `read_image` would have raised.
    The caller must call verify() before using any result, and first when its own work fails."""
    path = Path(path)
    if path.is_dir() or not path.name.endswith(".gz"):
        return read_image(path, case), _verified  # DICOM folders and plain .nii are decompressed once already
    label = f"case {case}: " if case else ""
    reader = _read_file_header(path, label)
    if _is_float(reader):
        return read_image(path, case), _verified  # float voxels are counted for NaN in the raw bytes
    _check_gzip_size(path, reader, label)
    try:
        img = reader.Execute()
    except RuntimeError as err:
        _check_gzip_stream(path, None, label)  # a damaged stream is named as read_image names it
        raise VolumeError(f"{label}cannot read {path}: {_last_line(err)}") from None
    crc = ThreadPoolExecutor(1)
    matches = crc.submit(decoded_crc_matches, path, img)
    crc.shutdown(wait=False)

    def verify() -> None:
        if not matches.result():
            _check_gzip_stream(path, None, label)  # raises for a damaged stream; passes the other cases
        _check_nifti_pixdim(path, label)

    return img, verify


def _verified() -> None:
    """Nothing left to check."""


def decoded_crc_matches(path: Path, img: sitk.Image) -> bool:
    """Whether CRC-32(NIfTI header bytes + the voxel bytes ITK decoded) equals the gzip trailer's CRC-32."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        want = int.from_bytes(fh.read(4), "little")
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(540)  # the larger (NIfTI-2) header
            layout = _nifti_layout(head)
            if layout is None or layout[0] < 348:
                return False
            offset = layout[0]  # the voxels start here; extensions may sit between header and voxels
            head = head[:offset] if offset <= len(head) else head + fh.read(offset - len(head))
    except (OSError, EOFError, zlib.error):
        return False
    voxels = sitk.GetArrayViewFromImage(img)  # ITK's buffer, no copy
    return zlib.crc32(voxels, zlib.crc32(head)) == want
