"""Label maps (config/labels/*.yaml) as typed objects: which sources make each output class.

A class marked `optional: true` exists only where some configured labeler can fill it: it is kept when
at least one anatomy class name the sources provide matches one of its patterns, and dropped
otherwise, the kept classes being renumbered consecutively. Optional classes are listed last, so the
fixed classes keep their values whichever labelers run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path

import yaml


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a labeler's class name matches any of a class's anatomy patterns (fnmatch, case-sensitive)."""
    return any(fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class LabelClass:
    value: int                       # output label value (1-based; 0 is background)
    name: str
    anatomy: tuple[str, ...] = ()    # anatomy structure names (fnmatch patterns) feeding this class
    lesions: tuple[str, ...] = ()    # ReXGroundingCT category codes feeding this class
    priority: int = 0                # higher wins where classes overlap
    optional: bool = False           # kept only when a source provides a matching anatomy name


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

    def for_sources(self, available: Iterable[str] | None) -> LabelMap:
        """This map without the optional classes that none of the `available` anatomy names feeds;
        values are renumbered consecutively in list order. None keeps every class."""
        if available is None:
            return self
        names = set(available)
        kept = [c for c in self.classes if not c.optional or any(matches(n, c.anatomy) for n in names)]
        return replace(self, classes=tuple(replace(c, value=i + 1) for i, c in enumerate(kept)))


def _flatten(items: list) -> list[dict]:
    out: list[dict] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def load_label_map(path: str | Path, granularity: str, available: Iterable[str] | None = None) -> LabelMap:
    """Read one granularity of a label-map YAML (YAML anchors nest lists; they are flattened).

    available: the anatomy class names the configured labelers provide (union of their class tables);
    optional classes no name matches are dropped. None keeps every optional class.
    """
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
                   lesions=tuple(e.get("lesions", ())), priority=int(e.get("priority", 0)),
                   optional=bool(e.get("optional", False)))
        for i, e in enumerate(entries)
    )
    if len(classes) > 255:
        raise ValueError(f"{path}: granularity {granularity} has more than 255 classes")
    optional = [c.value for c in classes if c.optional]
    if optional and optional != list(range(len(classes) - len(optional) + 1, len(classes) + 1)):
        raise ValueError(f"{path}: granularity {granularity} lists a fixed class after an optional one "
                         "(optional classes come last, so dropping them keeps the others' values)")
    lm = LabelMap(granularity, g.get("title", granularity), bool(g.get("needs_lesions", False)), classes)
    return lm.for_sources(available)


def granularity_names(path: str | Path) -> list[str]:
    return list(yaml.safe_load(Path(path).read_text())["granularities"])
