"""A CT volume as every consumer sees it: read, checked, and in Hounsfield units.

Preprocessing, the pseudo-labelers and the nnU-Net export all call `load_ct`, so they see the same
voxels and the same volumes are rejected, each with a VolumeError that names the case, the file and
the problem. Real collections are messy; what is checked here and why:

- the file itself (in `uvlm.io.read_image`): missing, empty, truncated, gzip CRC, NIfTI size;
- 3 dimensions (a 4-D export with one time point is squeezed: a documented repair), one component,
  at least `MIN_SLICES` slices and 2 voxels along every axis;
- spacing finite, positive, at most `MAX_SPACING_MM`, and within `SPACING_TOLERANCE` of the metadata's
  XYSpacing / ZSpacing when those are given; an orthonormal direction matrix;
- finite voxels; not constant;
- HU judged from the data: scanners pad outside the field of view with their own value (-1024, -2000,
  -3024, or 0 before rescaling); that padding is found first, left out when air is measured, and set to
  air (a documented repair). Then whichever of {as stored, rescaled, un-rescaled} puts air nearest
  -1000 HU, with tissue present, is applied (see `choose_correction`); if none does, the volume is
  rejected.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from uvlm.io import VolumeError, read_image

AIR_HU = -1000.0
AIR_TOLERANCE_HU = 300.0     # air (1st percentile of the body's field of view) must land within this of -1000
TISSUE_HU = -100.0           # the 99th percentile must be at least this (fat): a body holds tissue and bone
MIN_SLICES = 8               # fewer slices cannot be resampled to a volume grid meaningfully
MAX_SPACING_MM = 20.0        # no diagnostic CT has thicker voxels
SPACING_TOLERANCE = 0.1      # relative difference allowed between the header's and the metadata's spacing
PADDING_MIN_FRACTION = 0.001  # the minimum value counts as padding when it fills at least this share...
PADDING_GAP = 50.0           # ...and sits at least this far (stored units) below the next-darkest voxels


def _nan(x: object) -> bool:
    return x is None or (isinstance(x, float) and np.isnan(x))


def check_geometry(img: sitk.Image, case: str, path: str | Path, xy_spacing: float = float("nan"),
                   z_spacing: float = float("nan"), min_slices: int = MIN_SLICES) -> sitk.Image:
    """Dimension, size, spacing and direction checks; returns the image (4-D with one time point squeezed)."""
    where = f"case {case}: {path}"
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise VolumeError(f"{where} has {img.GetDimension()} dimensions {img.GetSize()}, expected 3")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{where} has {img.GetNumberOfComponentsPerPixel()} components per voxel "
                          "(a colour export?), expected 1")
    size = img.GetSize()  # (x, y, z)
    if min(size[:2]) < 2 or size[2] < min_slices:
        raise VolumeError(f"{where} has size {size} (x, y, z): at least 2 x 2 x {min_slices} voxels are needed")
    spacing = np.array(img.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0) or np.any(spacing > MAX_SPACING_MM):
        raise VolumeError(f"{where} has implausible spacing {tuple(spacing)} mm "
                          f"(each must be > 0 and <= {MAX_SPACING_MM})")
    for axis, meta in (("x", xy_spacing), ("y", xy_spacing), ("z", z_spacing)):
        if _nan(meta) or meta <= 0:
            continue
        got = spacing["xyz".index(axis)]
        if abs(got - meta) > SPACING_TOLERANCE * meta:
            raise VolumeError(f"{where}: {axis} spacing {got:.4g} mm in the header, {meta:.4g} mm in the metadata")
    direction = np.array(img.GetDirection()).reshape(3, 3)
    if not np.allclose(direction @ direction.T, np.eye(3), atol=1e-3):
        raise VolumeError(f"{where} has a direction matrix that is not orthonormal: {direction.round(4).tolist()}")
    return img


def _sample(arr: np.ndarray, target: int = 2_000_000) -> np.ndarray:
    """A strided sample of about `target` voxels (all of a small volume): percentiles without a full copy."""
    step = max(1, int((arr.size / target) ** (1 / 3)))
    return arr[::step, ::step, ::step]


def find_padding(arr: np.ndarray) -> float | None:
    """The stored value a scanner padded the field of view with, or None.

    Padding is the volume's minimum value when it fills a noticeable share and sits clearly below
    every real voxel (air in the body is noisy, padding is one exact value)."""
    return _padding_in(_sample(arr))[0]


def _small_int(sample: np.ndarray) -> bool:
    """Whether percentiles may be taken on the sample as int32: np.percentile interpolates in float64, so
    int32 gives exactly what the stored type and float32 give for 8- and 16-bit voxels, faster."""
    return sample.dtype.kind in "iu" and sample.itemsize <= 2


def _padding_in(sample: np.ndarray) -> tuple[float | None, tuple[float, float] | None]:
    """(padding or None, the 1st and 99th percentiles without it when they came with the same partition)."""
    low = sample.min()
    is_low = sample == low
    if is_low.mean() < PADDING_MIN_FRACTION or is_low.all():
        return None, None
    rest = sample[~is_low]
    if _small_int(rest):  # the gap test and the air/tissue reading share one partition
        gap_at, air, tissue = (float(v) for v in np.percentile(rest.astype(np.int32), [0.1, 1, 99]))
    else:
        gap_at, air, tissue = float(np.percentile(rest, 0.1)), None, None
    if gap_at - float(low) < PADDING_GAP:
        return None, None
    return float(low), None if air is None else (air, tissue)


def _corrections(intercept: float, slope: float) -> dict:
    return {"none": lambda v: v, "rescaled": lambda v: v * slope + intercept,
            "unrescaled": lambda v: (v - intercept) / slope}


def choose_correction(arr: np.ndarray, intercept: float, slope: float, case: str) -> tuple[str, float | None]:
    """(correction, padding value or None) that make the volume plausible CT: air (1st percentile) within
    AIR_TOLERANCE_HU of -1000 and tissue (99th percentile) denser than TISSUE_HU; the nearest air wins.

    The reading with the padding left out is tried first: -2000 padding un-rescaled would pass as air
    otherwise. If it fits no correction, the minimum is taken as real (clipped) air after all.
    """
    fixes = _corrections(intercept, slope)
    whole = np.ascontiguousarray(_sample(arr))  # one sample, gathered once, serves every reading
    padding, without_padding = _padding_in(whole)
    tried = []
    for pad in ([padding] if padding is not None else []) + [None]:
        if pad is not None and without_padding is not None:
            air, tissue = without_padding
        else:
            sample = whole[whole != pad] if pad is not None else whole.ravel()
            air, tissue = (float(v) for v in np.percentile(
                sample.astype(np.int32 if _small_int(sample) else np.float32), [1, 99]))
        fits = [(abs(f(air) - AIR_HU), name) for name, f in fixes.items()
                if abs(f(air) - AIR_HU) <= AIR_TOLERANCE_HU and f(tissue) >= TISSUE_HU]
        if fits:
            return min(fits)[1], pad
        tried.append(f"air {air:.0f} and tissue {tissue:.0f} (1st/99th percentile"
                     f"{'' if pad is None else f', padding {pad:g} left out'})")
    raise VolumeError(f"case {case}: stored values with {' or '.join(tried)}: no correction (as stored, "
                      f"rescaled, un-rescaled with intercept {intercept}, slope {slope}) puts air near "
                      f"-1000 HU and tissue above {TISSUE_HU:.0f} HU")


def harmonize_hu(arr: np.ndarray, intercept: float, slope: float, case: str) -> tuple[np.ndarray, str, float | None]:
    """(HU float32, the correction applied, the padding value found) judged from the data.

    CT-RATE's *_fixed volumes already hold HU; applying RescaleIntercept/Slope again double-rescales
    them. Padding voxels become air.
    """
    intercept, slope = rescale_or_identity(intercept, slope)
    correction, padding = choose_correction(arr, intercept, slope, case)
    return to_hu(arr, correction, padding, intercept, slope), correction, padding


def rescale_or_identity(intercept: float, slope: float) -> tuple[float, float]:
    """(intercept, slope) with missing metadata read as the identity (0, 1)."""
    return (0.0 if _nan(intercept) else float(intercept)), (1.0 if _nan(slope) or slope == 0 else float(slope))


def to_hu(arr: np.ndarray, correction: str, padding: float | None, intercept: float, slope: float) -> np.ndarray:
    """The stored voxels as HU float32 under `correction` (rescale metadata already normalised), padding -> air."""
    hu = _corrections(intercept, slope)[correction](arr.astype(np.float32)).astype(np.float32)
    if padding is not None:
        hu[arr == padding] = AIR_HU
    return hu


def hu_line(correction: str, intercept: float, slope: float) -> tuple[float, float]:
    """(scale, offset) with HU = stored * scale + offset for `correction`: every correction is linear, so it
    commutes with any averaging whose weights sum to 1 (the fast preprocessing path applies it afterwards)."""
    intercept, slope = rescale_or_identity(intercept, slope)
    return {"none": (1.0, 0.0), "rescaled": (slope, intercept), "unrescaled": (1 / slope, -intercept / slope)}[correction]


def check_voxels(arr: np.ndarray, case: str, path: str | Path) -> None:
    """Finite and not constant (a failed export or an all-padding volume)."""
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise VolumeError(f"case {case}: {path} holds {int((~np.isfinite(arr)).sum())} NaN or infinite voxels")
    sample = np.ascontiguousarray(_sample(arr))
    if sample.min() != sample.max():  # a varying sample settles it without two passes over the volume
        return
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        raise VolumeError(f"case {case}: {path} is constant (every voxel is {lo})")


def voxel_fingerprint(arr: np.ndarray, spacing: tuple[float, ...]) -> str:
    """A short hash of a strided sample of the stored voxels, shape and spacing: two names for the same
    scan share it (a split leak), different scans practically never do."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((arr.shape, str(arr.dtype), tuple(round(s, 4) for s in spacing))).encode())
    h.update(np.ascontiguousarray(arr[::3, ::3, ::3]))  # the same bytes, without a second copy
    return h.hexdigest()


def load_ct(path: str | Path, case: str, intercept: float = float("nan"), slope: float = float("nan"),
            xy_spacing: float = float("nan"), z_spacing: float = float("nan"),
            min_slices: int = MIN_SLICES) -> tuple[sitk.Image, dict]:
    """Read and check one CT volume -> (float32 HU image with the file's geometry, facts about it).

    Facts: hu_correction, padding (stored value or None), fingerprint, source_size, source_spacing."""
    img, arr, info = inspect_ct(read_image(path, case), case, path, intercept, slope, xy_spacing, z_spacing,
                                min_slices)
    out = sitk.GetImageFromArray(to_hu(arr, info["hu_correction"], info["padding"],
                                       *rescale_or_identity(intercept, slope)))
    out.CopyInformation(img)
    return out, info


def inspect_ct(img: sitk.Image, case: str, path: str | Path, intercept: float = float("nan"),
               slope: float = float("nan"), xy_spacing: float = float("nan"), z_spacing: float = float("nan"),
               min_slices: int = MIN_SLICES) -> tuple[sitk.Image, np.ndarray, dict]:
    """Every check of `load_ct` on a read image, without converting a voxel -> (the checked image, its stored
    voxels as a (z, y, x) view that lives as long as the image, the facts `load_ct` reports)."""
    img = check_geometry(img, case, path, xy_spacing, z_spacing, min_slices)
    arr = sitk.GetArrayViewFromImage(img)  # (z, y, x), the stored type, no copy
    check_voxels(arr, case, path)
    correction, padding = choose_correction(arr, *rescale_or_identity(intercept, slope), case)
    info = {"hu_correction": correction, "padding": padding, "fingerprint": voxel_fingerprint(arr, img.GetSpacing()),
            "source_size": list(img.GetSize()), "source_spacing": list(img.GetSpacing())}
    return img, arr, info


def load_ct_row(row, min_slices: int = MIN_SLICES) -> tuple[sitk.Image, dict]:
    """`load_ct` for a manifest row (its image path, rescale metadata and spacing metadata)."""
    case = row["volume_name"]
    if not row.get("image_exists", True) or not row.get("image_path"):
        raise VolumeError(f"case {case}: volume file {case}.nii.gz not found under the dataset folder")
    return load_ct(row["image_path"], case, row.get("rescale_intercept", float("nan")),
                   row.get("rescale_slope", float("nan")), row.get("xy_spacing", float("nan")),
                   row.get("z_spacing", float("nan")), min_slices)


def holds_hu(info: dict) -> bool:
    """Whether the file on disk already holds what `load_ct` returns (HU, no padding to replace), so that
    tools reading files themselves (TotalSegmentator, nnU-Net) may read it directly."""
    return info["hu_correction"] == "none" and info["padding"] is None


@contextlib.contextmanager
def hu_file(image: sitk.Image, facts: dict, image_path: str | Path, folder: Path, case: str) -> Iterator[Path]:
    """The file a tool that reads files itself (TotalSegmentator, nnU-Net) is given for a `load_ct` image: the
    volume file when it already holds those HU, else a temporary HU copy in `folder` (removed afterwards).
    A DICOM series folder always gets the copy."""
    source = Path(image_path)
    if holds_hu(facts) and source.is_file():
        yield source
        return
    copy = folder / f"{case}.nii"
    write_hu_image(image, copy)
    try:
        yield copy
    finally:
        copy.unlink(missing_ok=True)


def write_hu_image(image: sitk.Image, path: str | Path) -> None:
    """Write a `load_ct` image as int16 HU (what CT tools expect), atomically; .nii or .nii.gz by name."""
    from uvlm.io import atomic_path

    as_int = sitk.Cast(sitk.Clamp(sitk.Round(image), sitk.sitkFloat32, -32768, 32767), sitk.sitkInt16)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        sitk.WriteImage(as_int, str(tmp), useCompression=suffix == ".nii.gz")
