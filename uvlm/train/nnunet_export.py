"""Export one label granularity as an nnU-Net v2 raw dataset (dataset.json, imagesTr, labelsTr).

Only training-split volumes are exported (no leakage into the validation split the reports are
scored on). nnU-Net's own validation fold is a held-out set of training *patients*, written as
uvlm_split.json and turned into splits_final.json by Stage 1.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from uvlm.data.ct_volume import holds_hu, load_ct_row, write_hu_image
from uvlm.data.holdout import holdout_mask
from uvlm.io import atomic_dir, write_json


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def select_cases(cases: pd.DataFrame, label_index: pd.DataFrame, granularity: str) -> pd.DataFrame:
    """The Stage 1 cases (`uvlm.data.manifest.stage1_cases`) whose label map of this granularity was made."""
    has = label_index[label_index.get(f"has_{granularity}", False) == True]  # noqa: E712
    rows = cases.merge(has[["volume_name", "shard_dir"]], on="volume_name")
    return rows[rows["split"] == "train"].sort_values("volume_name").reset_index(drop=True)


def patient_split(rows: pd.DataFrame, val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Hold out whole patients for nnU-Net's validation fold."""
    held = holdout_mask(rows, val_fraction, seed)
    return {"train": rows.loc[~held, "volume_name"].tolist(), "val": rows.loc[held, "volume_name"].tolist()}


def export_nnunet_dataset(rows: pd.DataFrame, granularity: str, class_table: dict[str, str], dataset_id: int,
                          out_dir: str | Path, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write <out_dir>/DatasetXXX_UVLM<gran>/ and return that folder (built in .partial, then renamed)."""
    name = f"Dataset{dataset_id:03d}_UVLM{granularity}"
    final = Path(out_dir) / name
    with atomic_dir(final) as partial:
        for _, row in rows.iterrows():
            case = row["volume_name"]
            image, facts = load_ct_row(row)  # checked; nnU-Net trains on the HU volume preprocessing sees
            if holds_hu(facts) and row["image_path"].endswith(".nii.gz"):
                _link_or_copy(Path(row["image_path"]), partial / "imagesTr" / f"{case}_0000.nii.gz")
            else:
                write_hu_image(image, partial / "imagesTr" / f"{case}_0000.nii.gz")
            _link_or_copy(Path(row["shard_dir"]) / granularity / f"{case}.nii.gz",
                          partial / "labelsTr" / f"{case}.nii.gz")
        labels = {"background": 0, **{n: int(v) for v, n in class_table.items() if v != "0"}}
        write_json({
            "channel_names": {"0": "CT"},
            "labels": labels,
            "numTraining": len(rows),
            "file_ending": ".nii.gz",
            "name": name,
            "description": f"U-VLM Stage 1 labels, granularity {granularity}",
        }, partial / "dataset.json")
        write_json(patient_split(rows, val_fraction, seed), partial / "uvlm_split.json")
    return final


def load_class_table(shard_dirs: list[str | Path], granularity: str) -> dict[str, str]:
    return json.loads((Path(shard_dirs[0]) / f"classes_{granularity}.json").read_text())
