"""Score generated reports: labels extracted from text vs the dataset's label file, and BLEU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from uvlm.constants import CT_RATE_LABELS
from uvlm.evaluation.extract_rules import extract_label_matrix
from uvlm.evaluation.metrics import bleu_scores, label_scores


def score(volume_names: list[str], generated: list[str], manifest: pd.DataFrame) -> dict:
    """Metrics of generated texts against the manifest's reference labels and reports."""
    ref = manifest.set_index("volume_name").loc[volume_names]
    y_true = ref[list(CT_RATE_LABELS)].to_numpy(dtype=int)
    y_pred = extract_label_matrix(generated)
    y_ref_text = extract_label_matrix(ref["report_text"].tolist())
    out = {"n_reports": len(volume_names), "label_source": "dataset label file", "extractor": "rules"}
    out.update(label_scores(y_true, y_pred))
    out.update(bleu_scores(generated, ref["report_text"].tolist()))
    # Sanity: the same extractor on the reference reports, against the label file.
    out["extractor_on_reference_macro_f1"] = label_scores(y_true, y_ref_text)["macro_f1"]
    return out


def evaluate_reports(reports_path: str | Path, manifest_path: str | Path) -> dict:
    reports = pd.read_parquet(reports_path)
    manifest = pd.read_parquet(manifest_path)
    return score(reports["volume_name"].tolist(), reports["generated"].tolist(), manifest)


def most_frequent_baseline(manifest_path: str | Path, split: str = "valid") -> dict:
    """Always predict the training split's most frequent label set (and a training report with it)."""
    manifest = pd.read_parquet(manifest_path)
    train = manifest[manifest["split"] == "train"]
    label_sets = train[list(CT_RATE_LABELS)].astype(str).agg("".join, axis=1)
    top = label_sets.value_counts().sort_index(kind="stable").idxmax()
    example = train[label_sets == top].sort_values("volume_name").iloc[0]
    evaluated = manifest[(manifest["split"] == split) & manifest["image_exists"]].sort_values("volume_name")
    names = evaluated["volume_name"].tolist()
    out = score(names, [example["report_text"]] * len(names), manifest)
    # The baseline's label prediction is the label set itself, not text-extracted labels.
    y_true = evaluated[list(CT_RATE_LABELS)].to_numpy(dtype=int)
    y_pred = np.tile(np.array([int(c) for c in top]), (len(names), 1))
    out.update(label_scores(y_true, y_pred))
    out["label_set"] = [n for n, c in zip(CT_RATE_LABELS, top, strict=True) if c == "1"]
    out["report_of"] = example["volume_name"]
    return out


def abdomen_reference_scores(manifest_path: str | Path, label_shards: list[str | Path],
                             extractor: str = "rules") -> dict[str, dict]:
    """AbdomenAtlas rows of Table 3 that need no trained model, over every case with labels:
    the extractor on the reference reports, and the training split's most frequent label set,
    both against the RadGPT labels derived from the masks."""
    from uvlm.constants import ABDOMEN_LESION_LABELS
    from uvlm.shards import read_shard_indexes

    labels = list(ABDOMEN_LESION_LABELS)
    index = read_shard_indexes(label_shards)[["volume_name", *labels]]
    rows = pd.read_parquet(manifest_path).merge(index, on="volume_name").sort_values("volume_name")
    y_true = rows[labels].to_numpy(dtype=int)
    if extractor != "rules":
        raise ValueError(f"extractor '{extractor}' for AbdomenAtlas runs through `uvlm extract`; rules here")
    y_ref = extract_label_matrix(rows["report_text"].tolist(), "abdomen_atlas")
    sets = rows.loc[rows["split"] == "train", labels].astype(str).agg("".join, axis=1)
    top = sets.value_counts().sort_index(kind="stable").idxmax()
    y_base = np.tile(np.array([int(c) for c in top]), (len(rows), 1))
    out = {}
    for title, y_pred in (("Reference reports, rules extractor", y_ref), ("Most frequent label set", y_base)):
        out[title] = {"n_reports": len(rows), **label_scores(y_true, y_pred, labels)}
    return out
