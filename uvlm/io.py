"""File helpers every step uses: atomic writes, and volume reading with errors that name the file."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # SimpleITK is imported where it is used, so array-only callers do not need it
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
    # ".<name>.<random>.tmp<ext>": hidden, clearly temporary, and still ending in the real extension
    # so that writers choosing a format by extension (ITK, numpy) accept it.
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + (suffix or "".join(final.suffixes)),
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield `<final>.partial/` (emptied first); it replaces `final` only if the block succeeds.

    A killed or failed step leaves at most the `.partial` folder, which the next run clears: a folder
    under its final name is always complete."""
    final = Path(final)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


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


def write_csv(df: Any, path: str | Path) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def save_npy(arr: np.ndarray, path: str | Path) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def write_image(img: sitk.Image, path: str | Path) -> None:
    """Write a SimpleITK image (NIfTI by extension) atomically, compressed."""
    import SimpleITK as sitk

    with atomic_path(path, suffix=".nii.gz") as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def read_header(path: str | Path, case: str = "") -> sitk.ImageFileReader | sitk.Image:
    """The volume's geometry only (size, spacing, origin, direction; no voxels are decompressed);
    a missing, empty or unreadable file raises VolumeError naming case and file.

    A DICOM series folder has no single header: GDCM sorts its slices and measures the slice spacing
    only when it reads them, so a folder's geometry is that of its read image (an `sitk.Image` answers
    the same GetSize/GetSpacing/GetOrigin/GetDirection calls as the reader)."""
    label = f"case {case}: " if case else ""
    if Path(path).is_dir():
        return _read_dicom_series(Path(path), label)
    return _read_file_header(Path(path), label)


def read_image(path: str | Path, case: str = "") -> sitk.Image:
    """Read a volume; a missing, empty, truncated or corrupt file (gzip CRC, NIfTI size) raises
    VolumeError naming case and file. A folder is read as one DICOM series (voxels rescaled to HU)."""
    label = f"case {case}: " if case else ""
    if Path(path).is_dir():
        return _read_dicom_series(Path(path), label)
    reader = _read_file_header(Path(path), label)
    try:
        if str(path).endswith(".gz"):
            _check_gzip_size(Path(path), reader, label)
            _check_gzip_stream(Path(path), reader, label)
        elif str(path).endswith(".nii"):
            _check_nifti_size(Path(path), reader, label)
        _check_nifti_pixdim(Path(path), label)
        return reader.Execute()
    except VolumeError:
        raise
    except RuntimeError as err:  # ITK's own errors
        raise VolumeError(f"{label}cannot read {path}: {_last_line(err)}") from None


def _read_file_header(path: Path, label: str) -> sitk.ImageFileReader:
    import SimpleITK as sitk

    if not path.is_file():
        raise VolumeError(f"{label}file not found: {path}")
    if path.stat().st_size == 0:
        raise VolumeError(f"{label}file is empty: {path}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        if path.name.endswith(".gz"):  # say why when it is the compression: ITK only says it found no reader
            _check_gzip_stream(path, None, label)
        raise VolumeError(f"{label}cannot read {path}: {_last_line(err)}") from None
    return reader


def _read_dicom_series(folder: Path, label: str) -> sitk.Image:
    """The one DICOM series in `folder`, slices sorted by position (GDCM), Rescale Slope/Intercept applied.

    Several series in one folder (a scout, other kernels) cannot be told apart here: the user must point
    at one. Sub-folders are not searched, so that a path never silently means a different series."""
    import SimpleITK as sitk

    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:  # e.g. an unreadable folder
        raise VolumeError(f"{label}cannot list DICOM series in {folder}: {_last_line(err)}") from None
    if not uids:
        raise VolumeError(f"{label}no DICOM series in folder {folder} (sub-folders are not searched)")
    if len(uids) > 1:
        raise VolumeError(f"{label}folder {folder} holds {len(uids)} DICOM series ({', '.join(uids)}): "
                          "point the image path at a folder holding exactly one series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uids[0]))
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice tags, for the position check below
    try:
        img = reader.Execute()
    except RuntimeError as err:
        raise VolumeError(f"{label}cannot read DICOM series {uids[0]} in {folder}: {_last_line(err)}") from None
    _check_slice_positions(reader, img, folder, label)
    return img


def _check_slice_positions(reader: sitk.ImageSeriesReader, img: sitk.Image, folder: Path, label: str) -> None:
    """Slices evenly spaced along the slice normal: ITK only warns about a missing or doubled slice and
    then spreads the slices at their mean spacing, misplacing every voxel after the gap."""
    n = len(reader.GetFileNames())
    if n < 3 or not all(reader.HasMetaDataKey(i, "0020|0032") for i in range(n)):
        return  # one slice per file is needed to compare; a multi-frame file holds its own geometry
    try:
        pos = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(n)])
    except ValueError:
        return
    if pos.shape != (n, 3):
        return
    normal = np.asarray(img.GetDirection()).reshape(3, 3)[:, 2]  # slice axis in patient space
    steps = np.diff(pos @ normal)  # (n - 1,) mm between consecutive slices
    spacing = float(np.median(np.abs(steps)))
    if spacing <= 0 or np.any(np.abs(np.abs(steps) - spacing) > 0.1 * spacing):
        odd = np.flatnonzero(np.abs(np.abs(steps) - spacing) > 0.1 * spacing)[:5]
        raise VolumeError(f"{label}DICOM series in {folder} is unevenly spaced (missing or duplicate slices?): "
                          f"slice gaps {np.round(steps[odd], 3).tolist()} mm after slices {odd.tolist()}, "
                          f"median {spacing:.4g} mm")


def _last_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else "unreadable"


def _check_gzip_size(path: Path, reader: sitk.ImageFileReader, label: str) -> None:
    """Reject a truncated .gz before ITK reads it: ITK silently zero-fills missing voxels.

    A complete gzip file ends with the uncompressed size (mod 2**32); it must cover the voxel data
    plus a header of at most 1 MiB. Costs one 4-byte read instead of a full decompression.
    """
    n_bytes = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents() * _pixel_bytes(reader)
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    if not 0 <= (isize - n_bytes) % 2**32 < 2**20:
        raise VolumeError(f"{label}{path} is truncated or corrupt: the gzip stream does not hold the "
                          f"{n_bytes} bytes of voxel data its header announces")


def _check_gzip_stream(path: Path, reader: sitk.ImageFileReader | None, label: str) -> None:
    """Decompress the whole stream once and let gzip check its CRC-32: a few flipped bytes in the middle
    of a .gz keep its size right, and ITK reads them as plausible-looking garbage voxels."""
    keep = reader is not None and _is_float(reader)  # float voxels are checked for NaN below, so they are kept in memory
    chunks = []
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                if keep:
                    chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise VolumeError(f"{label}{path} is truncated or corrupt (gzip: {err})") from None
    if keep and reader is not None:
        _check_finite(b"".join(chunks), path, reader, label)


def _nifti_layout(head: bytes) -> tuple[int, str] | None:
    """(vox_offset, byte order '<' or '>') of a NIfTI-1/2 header, None if the bytes are no NIfTI header."""
    for order in "<>":
        size = int(np.frombuffer(head[:4], f"{order}i4")[0])
        if size == 348:  # NIfTI-1: vox_offset is a float32 at byte 108
            return int(np.frombuffer(head[108:112], f"{order}f4")[0]), order
        if size == 540 and len(head) >= 176:  # NIfTI-2: an int64 at byte 168
            return int(np.frombuffer(head[168:176], f"{order}i8")[0]), order
    return None


def _check_nifti_pixdim(path: Path, label: str) -> None:
    """Voxel sizes as the NIfTI header stores them: ITK reads a zero as 1 mm and a negative one as its
    absolute value, so a broken header would pass as a plausible volume."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(176)
    layout = _nifti_layout(head)
    if layout is None:
        return
    order = layout[1]
    nifti2 = int(np.frombuffer(head[:4], f"{order}i4")[0]) == 540
    pixdim = np.frombuffer(head, f"{order}f8", count=8, offset=104) if nifti2 else \
        np.frombuffer(head, f"{order}f4", count=8, offset=76)
    spacing = pixdim[1:4]
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise VolumeError(f"{label}{path} has implausible spacing {tuple(float(v) for v in spacing)} mm in its "
                          "NIfTI header (pixdim 1-3 must be positive)")


def _check_nifti_size(path: Path, reader: sitk.ImageFileReader, label: str) -> None:
    """An uncompressed NIfTI must hold vox_offset + the voxel bytes its header announces; ITK
    zero-fills a truncated one without complaint."""
    with open(path, "rb") as fh:
        head = fh.read(176)
    if len(head) < 176:
        raise VolumeError(f"{label}{path} is truncated: {len(head)} bytes, shorter than a NIfTI header")
    layout = _nifti_layout(head)
    if layout is None:
        return  # not NIfTI (e.g. Analyze): nothing to compare with
    offset = layout[0]
    n_bytes = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents() * _pixel_bytes(reader)
    have = path.stat().st_size
    if have < offset + n_bytes:
        raise VolumeError(f"{label}{path} is truncated: {have} bytes, its header announces "
                          f"{offset + n_bytes} ({n_bytes} bytes of voxels from byte {offset})")
    if _is_float(reader):
        _check_finite(path.read_bytes(), path, reader, label)


def _is_float(reader: sitk.ImageFileReader) -> bool:
    import SimpleITK as sitk

    return reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64)


def _check_finite(raw: bytes, path: Path, reader: sitk.ImageFileReader, label: str) -> None:
    """ITK's NIfTI reader turns NaN and infinite voxels into 0 without a word; count them in the file."""
    layout = _nifti_layout(raw[:176])
    if layout is None:
        return
    offset, order = layout
    n = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    voxels = np.frombuffer(raw, f"{order}f{_pixel_bytes(reader)}", count=n, offset=offset)
    bad = int(n - np.isfinite(voxels).sum())
    if bad:
        raise VolumeError(f"{label}{path} holds {bad} NaN or infinite voxels")


def _pixel_bytes(reader: sitk.ImageFileReader) -> int:
    import SimpleITK as sitk

    return {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkUInt32: 4,
            sitk.sitkInt32: 4, sitk.sitkFloat32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
            sitk.sitkFloat64: 8}.get(reader.GetPixelID(), 1)


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> list[str]:
    """Which of size/spacing/origin/direction differ between two images (first three axes)."""
    diffs = []
    if tuple(a.GetSize()[:3]) != tuple(b.GetSize()[:3]):
        diffs.append(f"size {a.GetSize()[:3]} vs {b.GetSize()[:3]}")
    if not np.allclose(a.GetSpacing()[:3], b.GetSpacing()[:3], rtol=tol, atol=tol):
        diffs.append(f"spacing {np.round(a.GetSpacing()[:3], 4).tolist()} vs {np.round(b.GetSpacing()[:3], 4).tolist()}")
    if not np.allclose(a.GetOrigin()[:3], b.GetOrigin()[:3], atol=max(tol, 1e-2)):
        diffs.append(f"origin {np.round(a.GetOrigin()[:3], 2).tolist()} vs {np.round(b.GetOrigin()[:3], 2).tolist()}")
    da = np.asarray(a.GetDirection()).reshape(a.GetDimension(), -1)[:3, :3]
    db = np.asarray(b.GetDirection()).reshape(b.GetDimension(), -1)[:3, :3]
    if not np.allclose(da, db, atol=tol):
        diffs.append(f"direction {np.round(da, 3).ravel().tolist()} vs {np.round(db, 3).ravel().tolist()}")
    return diffs
