"""Segmentation-based lesion detection (Table 3's nnU-Net rows, RadGPT-style): a trained Stage 1 network
segments each test case, and the RadGPT lesion rule (uvlm.labels.radgpt.detect_lesions) turns its predicted
label map into the three lesion labels, scored like the labels extracted from generated reports.

The network runs through nnU-Net's own predictor (uvlm.pseudolabel.nnunet_model: its preprocessing and
sliding window), on the CT as the other steps see it (uvlm.data.ct_volume: checked, in HU). One case that
fails is listed with its reason in errors.csv and left out of the scores (on_volume_error "skip"), or fails
the step naming it ("fail"). metrics.json scores the labels against the cases' RadGPT labels from the masks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from uvlm.data.ct_volume import hu_file, load_ct_row
from uvlm.data.manifest import label_set
from uvlm.evaluation.metrics import label_scores
from uvlm.io import write_json
from uvlm.labels.label_map import LabelMap
from uvlm.labels.radgpt import detect_lesions
from uvlm.pseudolabel.nnunet_model import NnunetLabeler
from uvlm.shards import run_shard


def detect_cases(rows: pd.DataFrame, model_dir: str | Path, label_map: LabelMap, out_dir: str | Path,
                 device: str = "cpu", min_volume_mm3: float = 10.0, on_error: str = "fail") -> pd.DataFrame:
    """Write <out>/maps/<case>.nii.gz (the predicted label map), index.parquet (volume_name, one 0/1 column and
    one surviving-volume column per lesion class) and metrics.json for every row (a manifest's rows, with
    their label set's labels as the truth); return the index."""
    vocabulary, labels = label_set(rows)
    network = NnunetLabeler(model_dir, folds=[0], device=device)
    names = {c.value: c.name for c in label_map.classes}
    if network.classes != names:
        raise ValueError(f"{model_dir}: the network's classes {network.classes} are not those of granularity "
                         f"{label_map.granularity} {names}")

    def work(row: pd.Series, out: Path) -> dict:
        case = row["volume_name"]
        image, facts = load_ct_row(row)
        predicted = out / "maps" / f"{case}.nii.gz"
        predicted.parent.mkdir(parents=True, exist_ok=True)
        with hu_file(image, facts, row["image_path"], out / ".hu", case) as source:  # the network reads files
            network.predict(source, predicted, out)
        found = detect_lesions(sitk.ReadImage(str(predicted)), label_map, min_volume_mm3)
        return {**{k: label for k, (label, _) in found.items()}, **{f"{k}_mm3": v for k, (_, v) in found.items()}}

    def finalize(partial: Path) -> None:
        shutil.rmtree(partial / ".hu", ignore_errors=True)
        index = pd.read_parquet(partial / "index.parquet")
        scores = {}
        if len(index):  # the predicted labels of each segmented case against its RadGPT labels from the masks
            truth = rows.set_index("volume_name").loc[index["volume_name"], labels].to_numpy(dtype=int)
            scores = label_scores(truth, index[labels].to_numpy(dtype=int), labels)
        write_json({"label_set": vocabulary, "granularity": label_map.granularity, "n_cases": len(rows),
                    "n_scored": len(index), "n_failed": len(rows) - len(index), **scores}, partial / "metrics.json")

    return run_shard(rows, work, out_dir, on_error, desc="cases segmented", finalize=finalize)
