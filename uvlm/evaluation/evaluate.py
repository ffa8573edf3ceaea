"""Score generated reports: labels extracted from text vs the dataset's label file, BLEU and ROUGE-L,
with 95% bootstrap intervals over reports for macro F1 and BLEU-mean.

Two label comparisons are reported: generated-report labels against the dataset's label file (the
paper's protocol), and against the same extractor run on the reference reports (which removes the
extractor's own errors from the comparison). Reports whose extraction failed (-1) are left out of
the label metrics and counted.

BLEU: `bleu1`..`bleu4`, `bleu_mean` and `bleu_mean_ci` follow the authors' convention (light cleaning,
case and punctuation kept, pycocoevalcap Bleu(4); see `uvlm.evaluation.metrics`), named in
`bleu_convention`; the lowercase, punctuation-free variant is written next to it as `bleu1_lower`..
`bleu4_lower`, `bleu_mean_lower`, named in `bleu_lower_convention`. `rouge_l` scores the authors'
cleaned text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from uvlm.data.manifest import label_set, usable
from uvlm.evaluation.metrics import (
    BLEU_CONVENTION,
    BLEU_LOWER_CONVENTION,
    bleu_mean_ci,
    bleu_scores,
    bleu_scores_lowercase,
    label_scores,
    macro_f1_ci,
    rouge_l,
)


def scorable(manifest: pd.DataFrame) -> pd.Series:
    """Volumes a report can be scored on: labels known (F1) and a non-empty reference report (BLEU).
    The others are left out and counted, never scored against invented negatives or empty text."""
    return usable(manifest, "scoring")


def score(volume_names: list[str], generated: list[str], manifest: pd.DataFrame, extractor: str = "rules",
          settings: dict | None = None, cache_dir: str | Path = "results/extraction",
          n_resamples: int = 1000, seed: int = 0) -> dict:
    """Metrics of generated texts against the manifest's reference labels and reports (its label set's labels,
    extracted from the text by the extractor's rules or prompt for that label set)."""
    from uvlm.evaluation.extractors import extract

    vocabulary, labels = label_set(manifest)
    ref = manifest.set_index("volume_name").loc[volume_names]
    left_out = {"no labels": int((~ref["labels_known"]).sum()),
                "empty reference report": int((ref["labels_known"] & ~ref["has_report"]).sum())}
    keep = scorable(ref).to_numpy()
    ref = ref[keep]
    generated = [g for g, k in zip(generated, keep, strict=True) if k]
    references = ref["report_text"].tolist()
    y_true = ref[labels].to_numpy(dtype=int)
    y_pred = extract(list(generated), vocabulary, extractor, settings or {}, cache_dir, labels)
    y_ref_text = extract(references, vocabulary, extractor, settings or {}, cache_dir, labels)
    ok = (y_pred >= 0).all(1) & (y_ref_text >= 0).all(1)
    out = {"n_reports": len(ref), "n_left_out": left_out, "n_extraction_failures": int((~ok).sum()),
           "label_source": "dataset label file", "extractor": extractor}
    out.update(label_scores(y_true[ok], y_pred[ok], labels))
    out.update(bleu_scores(generated, references))  # the authors' convention
    out["bleu_convention"] = BLEU_CONVENTION
    out.update(bleu_scores_lowercase(generated, references))
    out["bleu_lower_convention"] = BLEU_LOWER_CONVENTION
    out["rouge_l"] = rouge_l(generated, references)
    out["macro_f1_ci"] = list(macro_f1_ci(y_true[ok], y_pred[ok], n_resamples=n_resamples, seed=seed))
    out["bleu_mean_ci"] = list(bleu_mean_ci(generated, references, n_resamples=n_resamples, seed=seed))
    vs_ref = label_scores(y_ref_text[ok], y_pred[ok], labels)
    out["vs_reference_extraction"] = {k: vs_ref[k] for k in ("macro_f1", "macro_precision", "macro_recall")}
    # The extractor's own error: it run on the reference reports, against the label file.
    out["extractor_on_reference_macro_f1"] = label_scores(y_true[ok], y_ref_text[ok], labels)["macro_f1"]
    out.update(grounding(generated, y_true[ok], y_pred[ok], seed=seed))
    return out


def grounding(generated: list[str], y_true: np.ndarray, y_pred: np.ndarray, n_shuffles: int = 20,
              seed: int = 0) -> dict:
    """Is each report about its own image? Two checks a template-writing decoder fails:

    distinct_reports: how many different texts were generated (whitespace-normalised);
    shuffled_macro_f1: macro F1 when every report is scored against another volume's labels (a random
    permutation of the volumes, mean over n_shuffles). A grounded model loses F1 under the shuffle; one that
    writes the same findings for every image does not.
    """
    out = {"distinct_reports": len({" ".join(str(t).split()) for t in generated}),
           "shuffled_macro_f1": float("nan"), "shuffled_macro_f1_range": []}
    if len(y_pred):
        rng = np.random.default_rng(seed)
        shuffled = [label_scores(y_true, y_pred[rng.permutation(len(y_pred))])["macro_f1"] for _ in range(n_shuffles)]
        out.update(shuffled_macro_f1=float(np.mean(shuffled)),
                   shuffled_macro_f1_range=[float(np.min(shuffled)), float(np.max(shuffled))])
    return out


def evaluate_reports(reports_path: str | Path, manifest_path: str | Path, extractor: str = "rules",
                     settings: dict | None = None, cache_dir: str | Path = "results/extraction",
                     n_resamples: int = 1000, seed: int = 0) -> dict:
    reports = pd.read_parquet(reports_path)
    manifest = pd.read_parquet(manifest_path)
    return score(reports["volume_name"].tolist(), reports["generated"].tolist(), manifest, extractor, settings,
                 cache_dir, n_resamples, seed)


def label_sets(frame: pd.DataFrame, labels: list[str]) -> pd.Series:
    """Each row's labels as one 0/1 string in label order."""
    return frame[labels].astype(int).astype(str).agg("".join, axis=1)


def most_frequent(sets: pd.Series) -> str:
    """The most frequent label set (ties: the lexicographically first, so baselines are deterministic)."""
    return sets.value_counts().sort_index(kind="stable").idxmax()


def most_frequent_baseline(manifest_path: str | Path, split: str = "valid", **score_kwargs) -> dict:
    """Always predict the training split's most frequent label set (and a training report with it)."""
    manifest = pd.read_parquet(manifest_path)
    labels = label_set(manifest)[1]
    train = manifest[(manifest["split"] == "train") & scorable(manifest)]
    sets = label_sets(train, labels)
    top = most_frequent(sets)
    example = train[sets == top].sort_values("volume_name").iloc[0]
    in_split = manifest[(manifest["split"] == split) & manifest["image_exists"]]
    out = score(in_split["volume_name"].tolist(), [example["report_text"]] * len(in_split), manifest, **score_kwargs)
    evaluated = in_split[scorable(in_split)].sort_values("volume_name")
    names = evaluated["volume_name"].tolist()
    # The baseline's label prediction is the label set itself, not text-extracted labels.
    y_true = evaluated[labels].to_numpy(dtype=int)
    y_pred = np.tile(np.array([int(c) for c in top]), (len(names), 1))
    out.update(label_scores(y_true, y_pred, labels))
    out["macro_f1_ci"] = list(macro_f1_ci(y_true, y_pred, n_resamples=score_kwargs.get("n_resamples", 1000),
                                          seed=score_kwargs.get("seed", 0)))
    out["label_set"] = [n for n, c in zip(labels, top, strict=True) if c == "1"]
    out["report_of"] = example["volume_name"]
    return out


def abdomen_reference_scores(manifest_path: str | Path, extractor: str = "rules", settings: dict | None = None,
                             cache_dir: str | Path = "results/extraction") -> dict[str, dict]:
    """AbdomenAtlas rows of Table 3 that need no trained model, over every case with lesion labels and a
    report (the manifest Stages 2-3 read, its labels the RadGPT rule's on the masks): the extractor on the
    reference reports, and the training split's most frequent label set."""
    from uvlm.evaluation.extractors import extract

    df = pd.read_parquet(manifest_path)
    name, labels = label_set(df)
    rows = df[usable(df, "scoring")].sort_values("volume_name")
    y_ref = extract(rows["report_text"].tolist(), name, extractor, settings or {}, cache_dir, labels)
    ok = (y_ref >= 0).all(1)
    rows, y_ref = rows[ok], y_ref[ok]
    y_true = rows[labels].to_numpy(dtype=int)
    top = most_frequent(label_sets(rows[rows["split"] == "train"], labels))
    y_base = np.tile(np.array([int(c) for c in top]), (len(rows), 1))
    out = {}
    for title, y_pred in ((f"Reference reports, {extractor} extractor", y_ref), ("Most frequent label set", y_base)):
        out[title] = {"n_reports": len(rows), **label_scores(y_true, y_pred, labels)}
    return out
