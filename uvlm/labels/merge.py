"""Merge anatomy maps from several labelers and lesion masks into one label map per granularity.

Each output class names its anatomy sources by pattern (`vertebrae*` matches TotalSegmentator's
vertebrae_T1 ... and the demo's and classical labeler's `vertebrae`), so one label map serves every
labeler. Overlaps are resolved by the class's explicit priority: every voxel gets the highest-ranked
class that claims it, which equals painting the classes lowest priority first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uvlm.labels.label_map import LabelMap, matches

__all__ = ["AnatomySource", "class_voxel_counts", "matches", "merge_labels"]


@dataclass(frozen=True)
class AnatomySource:
    """One labeler's map for one volume: integer (D, H, W) array and its value -> name table."""

    labeler: str
    array: np.ndarray
    classes: dict[int, str]


def merge_labels(sources: list[AnatomySource], lesions: np.ndarray | None, lesion_codes: list[str],
                 label_map: LabelMap) -> np.ndarray:
    """Combine every source into one (D, H, W) uint8 map with the label map's values (0 = background).

    lesions: (F, D, H, W) binary channels, channel f of ReXGroundingCT category lesion_codes[f]; None = none.
    Cost is one table look-up per source and one pass per lesion channel, not one pass per class.
    """
    shape = sources[0].array.shape if sources else (lesions.shape[1:] if lesions is not None else None)
    if shape is None:
        raise ValueError("nothing to merge: no anatomy source and no lesions")
    for s in sources:
        if s.array.shape != shape:
            raise ValueError(f"anatomy from {s.labeler} has shape {s.array.shape}, expected {shape}")
    if lesions is not None and lesions.shape[1:] != shape:
        raise ValueError(f"lesion mask shape {lesions.shape[1:]} differs from anatomy shape {shape}")
    if lesions is not None and len(lesion_codes) != lesions.shape[0]:
        raise ValueError(f"{lesions.shape[0]} lesion channels but {len(lesion_codes)} category codes")

    ranked = label_map.paint_order()  # rank = position + 1 (0 = background); the higher rank wins
    rank = np.zeros(shape, dtype=np.uint8)
    for s in sources:
        lut = np.zeros(max(s.classes, default=0) + 1, dtype=np.uint8)  # source value -> best rank
        for value, name in s.classes.items():
            claims = [r for r, c in enumerate(ranked, start=1) if matches(name, c.anatomy)]
            lut[value] = max(claims, default=0)
        values = np.clip(s.array, 0, len(lut) - 1)  # values absent from the table stay background
        np.maximum(rank, lut[values], out=rank)
    if lesions is not None:
        for f, code in enumerate(lesion_codes):
            claims = [r for r, c in enumerate(ranked, start=1) if code in c.lesions]
            if claims:
                np.maximum(rank, np.where(lesions[f] > 0, np.uint8(max(claims)), np.uint8(0)), out=rank)
    rank_to_value = np.array([0] + [c.value for c in ranked], dtype=np.uint8)
    return rank_to_value[rank]


def class_voxel_counts(label: np.ndarray, label_map: LabelMap) -> dict[str, int]:
    """Voxels per class, so that a class missing from a case is recorded rather than silently zero."""
    counts = np.bincount(label.ravel(), minlength=len(label_map.classes) + 1)
    return {c.name: int(counts[c.value]) for c in label_map.classes}
