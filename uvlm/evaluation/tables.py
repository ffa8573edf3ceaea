"""Paper-shaped result tables (CSV + Markdown) regenerated from results/metrics/*.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from uvlm.io import write_text

COLUMNS = ["method", "f1", "precision", "recall", "bleu1", "bleu2", "bleu3", "bleu4", "bleu_mean", "source"]
HEADERS = {"method": "Method", "f1": "F1", "precision": "Prec.", "recall": "Rec.", "bleu1": "B-1", "bleu2": "B-2",
           "bleu3": "B-3", "bleu4": "B-4", "bleu_mean": "B-mean", "source": "Source"}


def _our_row(title: str, metrics: dict, source: str) -> dict:
    return {"method": title, "f1": metrics["macro_f1"], "precision": metrics["macro_precision"],
            "recall": metrics["macro_recall"], **{f"bleu{n}": metrics[f"bleu{n}"] for n in range(1, 5)},
            "bleu_mean": metrics["bleu_mean"], "source": source}


def main_table(published_path: str | Path, experiments: dict[str, tuple[str, str | Path]],
               baseline_path: str | Path, dataset_label: str) -> pd.DataFrame:
    """Table 2 layout: the paper's rows, then a trivial baseline and our experiments (macro F1/P/R)."""
    published = yaml.safe_load(Path(published_path).read_text())["ct_rate_table2"]
    rows = [{**r, "source": "paper (CT-RATE)"} for r in published]
    rows.append(_our_row("Most frequent label set (baseline)", json.loads(Path(baseline_path).read_text()),
                         f"ours ({dataset_label})"))
    for title, path in experiments.values():
        rows.append(_our_row(title, json.loads(Path(path).read_text()), f"ours ({dataset_label})"))
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(df: pd.DataFrame, caption: str) -> str:
    shown = df.rename(columns=HEADERS)
    body = shown.to_markdown(index=False, floatfmt=".3f", missingval="")
    return f"{caption}\n\n{body}\n"


def write_table(df: pd.DataFrame, csv_path: str | Path, md_path: str | Path, caption: str) -> None:
    write_text(df.to_csv(index=False, float_format="%.4f"), csv_path)
    write_text(to_markdown(df, caption), md_path)
