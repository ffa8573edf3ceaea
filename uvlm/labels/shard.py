"""The chest label step over one shard: anatomy from the labelers' shards + lesions -> each granularity."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from uvlm.io import VolumeError, read_header, read_image, same_geometry, write_image, write_json
from uvlm.labels.label_map import LabelMap
from uvlm.labels.merge import AnatomySource, class_voxel_counts, merge_labels
from uvlm.labels.rexgrounding import read_lesions
from uvlm.pseudolabel.run import resolve_label_path
from uvlm.shards import run_shard


@dataclass
class SourceShard:
    """One labeler's output for this shard: where each case's map is, and the class table."""

    labeler: str
    paths: dict[str, Path]
    classes: dict[int, str]

    @classmethod
    def read(cls, shard_dir: str | Path) -> SourceShard:
        shard_dir = Path(shard_dir)
        meta = json.loads((shard_dir / "labeler.json").read_text())
        classes = {int(k): v for k, v in json.loads((shard_dir / "classes.json").read_text()).items()}
        index = pd.read_parquet(shard_dir / "index.parquet")
        paths = {r.volume_name: resolve_label_path(r.label_path, shard_dir) for r in index.itertuples()} if len(index) else {}
        return cls(meta["labeler"], paths, classes)


def read_source(src: SourceShard, case: str, image: sitk.Image) -> AnatomySource:
    if case not in src.paths:
        raise VolumeError(f"case {case}: labeler {src.labeler} made no label map (see its shard's errors.csv)")
    path = src.paths[case]
    img = read_image(path, case)
    diffs = same_geometry(img, image)
    if diffs:
        raise VolumeError(f"case {case}: {src.labeler} label map {path} does not match the image: {'; '.join(diffs)}")
    return AnatomySource(src.labeler, sitk.GetArrayFromImage(img), src.classes)


def label_shard(rows: pd.DataFrame, label_maps: list[LabelMap], source_dirs: list[str | Path], out_dir: str | Path,
                lesions_complete: bool, on_error: str = "fail") -> pd.DataFrame:
    """Write <out>/<granularity>/<volume>.nii.gz for every training volume; return the index.

    A granularity that needs lesions is written only for volumes whose lesions are known: those with
    a mask, or every volume when lesions_complete (no mask then means no lesion).
    Optional classes (e.g. F+L airway and pulmonary vessels) that no source's class name feeds are
    dropped first, so classes_<granularity>.json lists exactly the classes these sources can fill.
    """
    rows = rows[rows["split"] == "train"]
    sources = [SourceShard.read(d) for d in source_dirs]
    available = {name for s in sources for name in s.classes.values()}
    label_maps = [lm.for_sources(available) for lm in label_maps]

    def work(row: pd.Series, out: Path) -> dict:
        case = row["volume_name"]
        reader = read_header(row["image_path"], case)
        anatomy = [read_source(s, case, reader) for s in sources]
        codes = json.loads(row["lesion_categories"])
        lesions = read_lesions(row["lesion_mask_path"], codes, reader, case) if row["lesion_mask_path"] else None
        rec: dict = {}
        for lm in label_maps:
            known = lesions is not None or lesions_complete or not lm.needs_lesions
            rec[f"has_{lm.granularity}"] = known
            if not known:
                continue
            merged = merge_labels(anatomy, lesions, codes, lm)
            label_img = sitk.GetImageFromArray(merged)
            label_img.SetSpacing(reader.GetSpacing())
            label_img.SetOrigin(reader.GetOrigin())
            label_img.SetDirection(reader.GetDirection())
            write_image(label_img, out / lm.granularity / f"{case}.nii.gz")
            missing = [n for n, v in class_voxel_counts(merged, lm).items() if v == 0]
            rec[f"missing_{lm.granularity}"] = json.dumps(missing)
        return rec

    def finalize(partial: Path) -> None:
        for lm in label_maps:
            write_json(lm.class_table(), partial / f"classes_{lm.granularity}.json")

    return run_shard(rows, work, out_dir, on_error, desc="label maps", finalize=finalize)
