"""RadGPT's lesion-present rule for AbdomenAtlas 3.0 (the Stage 2 classification labels).

A lesion mask counts only where it lies inside its organ, and only if something survives one
3x3x3 erosion on a 1 mm isotropic grid: this drops annotation specks and one-voxel noise, and makes
the rule independent of the scan's voxel size. Positive when more than min_volume_mm3 survive.

The 1 mm grid covers the same physical extent as the input (the first output voxel starts at the
input's lower edge), so an integer spacing s turns every input voxel into exactly s samples per
axis. Only the part of that grid around the lesion is resampled; outside it everything is zero, so
the result equals resampling the whole volume.

Segmentation-based detection (Table 3's nnU-Net rows) applies the same rule to a Stage 1 model's
predicted label map (`detect_lesions`): there each voxel has one class, the lesion class painted over its
organ, so a lesion's organ is the classes its organ masks merge into at that granularity plus the lesion
class itself.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk

from uvlm.io import same_geometry
from uvlm.labels.label_map import LabelMap, matches

ISO_MM = 1.0
LESION_ORGANS: dict[str, list[str]] = {
    "liver_lesion": [f"liver_segment_{i}" for i in range(1, 9)],
    "kidney_lesion": ["kidney_left", "kidney_right"],
    "pancreatic_lesion": ["pancreas_head", "pancreas_body", "pancreas_tail"],
}


def _iso_crop_grid(img: sitk.Image, lo_xyz: np.ndarray, hi_xyz: np.ndarray) -> tuple[list[int], tuple]:
    """(size, origin) of the part of the full-extent 1 mm grid covering input voxels lo..hi (inclusive)."""
    s = np.asarray(img.GetSpacing(), float)
    full = np.maximum(np.round(np.asarray(img.GetSize()) * s / ISO_MM).astype(int), 1)
    k0 = np.maximum(np.floor(lo_xyz * s / ISO_MM).astype(int) - 1, 0)   # one empty voxel of margin
    k1 = np.minimum(np.ceil((hi_xyz + 1) * s / ISO_MM).astype(int) + 1, full)
    # output voxel k's centre lies (k + 0.5) mm above the input's lower edge (continuous index -0.5)
    origin = img.TransformContinuousIndexToPhysicalPoint(((k0 + 0.5) * ISO_MM / s - 0.5).tolist())
    return (k1 - k0).tolist(), origin


def lesion_present(lesion: sitk.Image, organ: sitk.Image, min_volume_mm3: float = 10.0) -> tuple[bool, float]:
    """(positive, surviving volume in mm^3) of lesion AND organ after 1 mm resampling and one erosion."""
    diffs = same_geometry(lesion, organ)
    if diffs:
        raise ValueError(f"lesion and organ masks differ: {'; '.join(diffs)}")
    inside = (sitk.GetArrayViewFromImage(lesion) > 0) & (sitk.GetArrayViewFromImage(organ) > 0)  # (D, H, W)
    if not inside.any():
        return False, 0.0
    nz = np.nonzero(inside)
    lo = np.array([a.min() for a in nz][::-1])  # (x, y, z)
    hi = np.array([a.max() for a in nz][::-1])
    img = sitk.GetImageFromArray(inside.astype(np.uint8))
    img.CopyInformation(lesion)
    size, origin = _iso_crop_grid(img, lo, hi)
    iso = sitk.Resample(img, size, sitk.Transform(), sitk.sitkNearestNeighbor, origin, (ISO_MM,) * 3,
                        img.GetDirection(), 0, sitk.sitkUInt8)
    eroded = ndi.binary_erosion(sitk.GetArrayViewFromImage(iso) > 0, structure=np.ones((3, 3, 3), bool),
                                iterations=1, border_value=0)
    volume = float(eroded.sum()) * ISO_MM**3
    return volume > min_volume_mm3, volume


def lesion_findings(masks: dict[str, sitk.Image], min_volume_mm3: float = 10.0) -> dict[str, tuple[int, float]]:
    """{lesion class: (0/1, surviving mm^3)} for the three AbdomenAtlas lesion classes.

    masks: mask stem -> image. A missing lesion mask means no lesion; a non-empty lesion mask whose
    organ masks are missing cannot be judged and raises ValueError naming them.
    """
    out: dict[str, tuple[int, float]] = {}
    for lesion_name, organ_names in LESION_ORGANS.items():
        lesion = masks.get(lesion_name)
        if lesion is None or not sitk.GetArrayViewFromImage(lesion).any():
            out[lesion_name] = (0, 0.0)
            continue
        absent = [o for o in organ_names if o not in masks]
        if absent:
            raise ValueError(f"{lesion_name} is not empty but organ masks {absent} are missing")
        organ = np.zeros(sitk.GetArrayViewFromImage(lesion).shape, bool)
        for o in organ_names:
            diffs = same_geometry(masks[o], lesion)
            if diffs:
                raise ValueError(f"organ mask {o} does not match {lesion_name}: {'; '.join(diffs)}")
            organ |= sitk.GetArrayViewFromImage(masks[o]) > 0
        organ_img = sitk.GetImageFromArray(organ.astype(np.uint8))
        organ_img.CopyInformation(lesion)
        positive, volume = lesion_present(lesion, organ_img, min_volume_mm3)
        out[lesion_name] = (int(positive), volume)
    return out


def lesion_labels(masks: dict[str, sitk.Image], min_volume_mm3: float = 10.0) -> dict[str, int]:
    """{liver_lesion, kidney_lesion, pancreatic_lesion: 0/1} by the RadGPT rule (see lesion_findings)."""
    return {k: label for k, (label, _) in lesion_findings(masks, min_volume_mm3).items()}


def organ_classes(label_map: LabelMap, lesion: str) -> list[str]:
    """The classes of a label map that make up a lesion's organ: those its organ masks (LESION_ORGANS) merge
    into at this granularity (liver at C+L, liver_segment_1..8 at F+L), and the lesion class painted over them."""
    return [c.name for c in label_map.classes
            if c.name == lesion or any(matches(o, c.anatomy) for o in LESION_ORGANS[lesion])]


def detect_lesions(label_img: sitk.Image, label_map: LabelMap,
                   min_volume_mm3: float = 10.0) -> dict[str, tuple[int, float]]:
    """{lesion class: (0/1, surviving mm^3)} of one label map (a Stage 1 prediction) by the RadGPT rule: each
    lesion class's voxels inside its organ (organ_classes), on the 1 mm grid, after one erosion."""
    names = {c.name: c.value for c in label_map.classes}
    absent = [lesion for lesion in LESION_ORGANS if lesion not in names]
    if absent:
        raise ValueError(f"granularity {label_map.granularity} has no classes {absent}: segmentation-based "
                         "detection needs a granularity with lesion classes (C+L or F+L)")
    arr = sitk.GetArrayViewFromImage(label_img)  # (D, H, W) class values
    out: dict[str, tuple[int, float]] = {}
    for lesion in LESION_ORGANS:
        masks = []
        for values in ([names[lesion]], [names[n] for n in organ_classes(label_map, lesion)]):
            img = sitk.GetImageFromArray(np.isin(arr, values).astype(np.uint8))
            img.CopyInformation(label_img)
            masks.append(img)
        positive, volume = lesion_present(*masks, min_volume_mm3)
        out[lesion] = (int(positive), volume)
    return out
