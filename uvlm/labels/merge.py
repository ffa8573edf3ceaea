"""Merge anatomy and lesion masks into one label map per granularity, with explicit priority."""

from __future__ import annotations

import numpy as np

from uvlm.labels.label_map import LabelMap


def merge_labels(anatomy: np.ndarray, anatomy_classes: dict[int, str], lesions: np.ndarray | None,
                 lesion_codes: list[str], label_map: LabelMap) -> np.ndarray:
    """Paint each output class from its sources, lowest priority first.

    anatomy: (D, H, W) integer label map whose values are named by anatomy_classes.
    lesions: (F, D, H, W) binary channels, channel f of category lesion_codes[f]; None = no lesions.
    Returns a (D, H, W) uint8 label map with the label_map's values (0 = background).
    """
    if lesions is not None and lesions.shape[1:] != anatomy.shape:
        raise ValueError(f"lesion mask shape {lesions.shape[1:]} differs from anatomy shape {anatomy.shape}")
    if lesions is not None and len(lesion_codes) != lesions.shape[0]:
        raise ValueError(f"{lesions.shape[0]} lesion channels but {len(lesion_codes)} category codes")
    value_of = {name: value for value, name in anatomy_classes.items()}
    out = np.zeros(anatomy.shape, dtype=np.uint8)
    for cls in label_map.paint_order():
        values = [value_of[n] for n in cls.anatomy if n in value_of]
        mask = np.isin(anatomy, values) if values else np.zeros(anatomy.shape, dtype=bool)
        if lesions is not None:
            for f, code in enumerate(lesion_codes):
                if code in cls.lesions:
                    mask |= lesions[f] > 0
        out[mask] = cls.value
    return out


def class_voxel_counts(label: np.ndarray, label_map: LabelMap) -> dict[str, int]:
    """Voxels per class, so that a class missing from a case is recorded rather than silently zero."""
    counts = np.bincount(label.ravel(), minlength=len(label_map.classes) + 1)
    return {c.name: int(counts[c.value]) for c in label_map.classes}
