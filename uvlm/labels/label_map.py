"""Label maps (config/labels/*.yaml) as typed objects: which sources make each output class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class LabelClass:
    value: int                       # output label value (1-based; 0 is background)
    name: str
    anatomy: tuple[str, ...] = ()    # anatomy structure names feeding this class
    lesions: tuple[str, ...] = ()    # ReXGroundingCT category codes feeding this class
    priority: int = 0                # higher wins where classes overlap


@dataclass(frozen=True)
class LabelMap:
    granularity: str
    title: str
    needs_lesions: bool
    classes: tuple[LabelClass, ...] = field(default_factory=tuple)

    def class_table(self) -> dict[str, str]:
        """{"0": "background", "1": name, ...}: the JSON written next to every label map."""
        return {"0": "background", **{str(c.value): c.name for c in self.classes}}

    def paint_order(self) -> list[LabelClass]:
        """Lowest priority first, so later (higher-priority) classes overwrite earlier ones."""
        return sorted(self.classes, key=lambda c: (c.priority, c.value))


def _flatten(items: list) -> list[dict]:
    out: list[dict] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def load_label_map(path: str | Path, granularity: str) -> LabelMap:
    """Read one granularity of a label-map YAML (YAML anchors nest lists; they are flattened)."""
    data = yaml.safe_load(Path(path).read_text())
    grans = data.get("granularities", {})
    if granularity not in grans:
        raise KeyError(f"{path}: no granularity '{granularity}' (has {sorted(grans)})")
    g = grans[granularity]
    entries = _flatten(g["classes"])
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: granularity {granularity} repeats class names")
    classes = tuple(
        LabelClass(value=i + 1, name=e["name"], anatomy=tuple(e.get("anatomy", ())),
                   lesions=tuple(e.get("lesions", ())), priority=int(e.get("priority", 0)))
        for i, e in enumerate(entries)
    )
    if len(classes) > 255:
        raise ValueError(f"{path}: granularity {granularity} has more than 255 classes")
    return LabelMap(granularity, g.get("title", granularity), bool(g.get("needs_lesions", False)), classes)


def granularity_names(path: str | Path) -> list[str]:
    return list(yaml.safe_load(Path(path).read_text())["granularities"])
