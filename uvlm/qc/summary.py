"""Per-dataset QC tables of one labeler: voxels per class, cases missing a class, agreement with a reference.

Agreement compares two labelers through a label map granularity (by default the coarse one): both
are merged into the same output classes, then Dice is computed per class and case. Classes the
candidate labeler cannot produce (no source name matches) are left out rather than scored as zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from uvlm.labels.label_map import LabelMap
from uvlm.labels.merge import AnatomySource, matches, merge_labels
from uvlm.labels.shard import SourceShard
from uvlm.shards import read_shard_indexes


def _ml(index: pd.DataFrame, column: str = "voxels") -> pd.DataFrame:
    """(case x class) volumes in ml from the shard indexes' voxel counts."""
    voxels = pd.DataFrame([json.loads(v) for v in index[column]], index=index["volume_name"])
    return voxels.mul(index["voxel_ml"].to_numpy(), axis=0)


def class_summary(shard_dirs: list[str | Path], column: str = "voxels",
                  missing_column: str = "missing") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-class table, per-case table of missing classes) over every shard of one labeler."""
    index = read_shard_indexes(shard_dirs)
    if index.empty:
        return pd.DataFrame(), pd.DataFrame(columns=["volume_name", "missing"])
    ml = _ml(index, column)
    present = ml > 0
    table = pd.DataFrame({
        "cases_with_class": present.sum(), "cases_missing": (~present).sum(),
        "median_ml": ml.where(present).median().round(2), "mean_ml": ml.where(present).mean().round(2),
        "min_ml": ml.where(present).min().round(2), "max_ml": ml.where(present).max().round(2),
    })
    table.index.name = "class"
    missing = index.loc[index[missing_column] != "[]", ["volume_name", missing_column]].reset_index(drop=True)
    return table.reset_index(), missing


def _sources(shard_dirs: list[str | Path]) -> tuple[dict[str, Path], dict[int, str]]:
    """Every case's label map over all shards of one labeler, and its class table."""
    shards = [SourceShard.read(d) for d in shard_dirs]
    return {case: p for shard in shards for case, p in shard.paths.items()}, shards[0].classes


def agreement(candidate_dirs: list[str | Path], reference_dirs: list[str | Path],
              label_map: LabelMap) -> pd.DataFrame:
    """Dice per case and output class of `label_map` between a candidate and a reference labeler."""
    cand_paths, cand_classes = _sources(candidate_dirs)
    ref_paths, ref_classes = _sources(reference_dirs)
    scored = [c for c in label_map.classes if any(matches(n, c.anatomy) for n in cand_classes.values())]
    rows = []
    for case in sorted(set(cand_paths) & set(ref_paths)):
        maps = []
        for paths, classes, name in ((cand_paths, cand_classes, "candidate"), (ref_paths, ref_classes, "reference")):
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(paths[case])))
            maps.append(merge_labels([AnatomySource(name, arr, classes)], None, [], label_map))
        for c in scored:
            a, b = maps[0] == c.value, maps[1] == c.value
            denom = int(a.sum()) + int(b.sum())
            rows.append({"volume_name": case, "class": c.name,
                         "dice": 2.0 * int((a & b).sum()) / denom if denom else np.nan})
    return pd.DataFrame(rows, columns=["volume_name", "class", "dice"])


def agreement_table(per_case: pd.DataFrame) -> pd.DataFrame:
    g = per_case.groupby("class", sort=False)["dice"]
    return pd.DataFrame({"cases": g.count(), "mean_dice": g.mean().round(3), "median_dice": g.median().round(3),
                         "min_dice": g.min().round(3)}).reset_index()


def missing_class_table(index: pd.DataFrame) -> pd.DataFrame:
    """Cases lacking each class, one column per granularity (from the label shards' missing_<g>)."""
    cols = {c.removeprefix("missing_"): c for c in index.columns if c.startswith("missing_")}
    counts = {g: pd.Series([n for v in index[c].dropna() for n in json.loads(v)]).value_counts()
              for g, c in cols.items()}
    table = pd.DataFrame(counts).fillna(0).astype(int)
    table.index.name = "class"
    return table.reset_index()


def lesion_label_table(index: pd.DataFrame, labels: tuple[str, ...] = ("liver_lesion", "kidney_lesion",
                                                                         "pancreatic_lesion")) -> pd.DataFrame:
    """Positive cases per lesion label and split, and the number of cases."""
    g = index.groupby("split")
    table = g[list(labels)].sum().astype(int)
    table["cases"] = g.size()
    return table.reset_index()
