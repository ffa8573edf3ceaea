"""Paper-shaped result tables (CSV + Markdown) regenerated from results/metrics/*.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from uvlm.io import write_text

COLUMNS = ["method", "f1", "precision", "recall", "bleu1", "bleu2", "bleu3", "bleu4", "bleu_mean", "f1_ci",
           "bleu_mean_ci", "rouge_l", "weighted_f1", "source"]
HEADERS = {"method": "Method", "f1": "F1", "precision": "Prec.", "recall": "Rec.", "bleu1": "B-1", "bleu2": "B-2",
           "bleu3": "B-3", "bleu4": "B-4", "bleu_mean": "B-mean", "f1_ci": "F1 95% CI",
           "bleu_mean_ci": "B-mean 95% CI", "rouge_l": "ROUGE-L", "weighted_f1": "F1 (weighted)",
           "source": "Source", "training": "Training", "sc": "SC", "frz": "Frz", "vt": "VT", "dec": "Dec.",
           "auc": "AUC", "group": "Group", "paper_f1": "F1 (paper)", "paper_precision": "Prec. (paper)",
           "paper_recall": "Rec. (paper)", "paper_bleu_mean": "B-M (paper)", "our_vt": "VT (ours)",
           "holdout_auc": "AUC (hold-out)"}


def format_ci(ci) -> str | None:
    return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else None


def _our_row(title: str, metrics: dict, source: str) -> dict:
    return {"method": title, "f1": metrics["macro_f1"], "precision": metrics["macro_precision"],
            "recall": metrics["macro_recall"], **{f"bleu{n}": metrics[f"bleu{n}"] for n in range(1, 5)},
            "bleu_mean": metrics["bleu_mean"], "f1_ci": format_ci(metrics.get("macro_f1_ci")),
            "bleu_mean_ci": format_ci(metrics.get("bleu_mean_ci")), "rouge_l": metrics.get("rouge_l"),
            "weighted_f1": metrics.get("weighted_f1"), "source": source}


def main_table(published_path: str | Path, main: tuple[str, str, str | Path], baseline_path: str | Path,
               dataset_label: str) -> pd.DataFrame:
    """Table 2 layout: the paper's rows, then a trivial baseline and our counterpart of the paper's U-VLM
    row (macro F1/P/R). main: (experiment name, title, metrics json path)."""
    published = yaml.safe_load(Path(published_path).read_text())["ct_rate_table2"]
    rows = [{**r, "source": "paper (CT-RATE)"} for r in published]
    rows.append(_our_row("Most frequent label set (baseline)", json.loads(Path(baseline_path).read_text()),
                         f"ours ({dataset_label})"))
    name, title, path = main
    rows.append(_our_row(f"U-VLM (ours): {title}", json.loads(Path(path).read_text()),
                         f"ours ({dataset_label}): {name}"))
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(df: pd.DataFrame, caption: str) -> str:
    shown = df.rename(columns=HEADERS)
    shown = shown.astype(object).where(shown.notna(), None)  # empty cells, not "nan"
    body = shown.to_markdown(index=False, floatfmt=".3f", missingval="")
    return f"{caption}\n\n{body}\n"


def write_table(df: pd.DataFrame, csv_path: str | Path, md_path: str | Path, caption: str, footer: str = "") -> None:
    """CSV and Markdown of one table; footer: Markdown appended after the table (main.md's claims section)."""
    write_text(df.to_csv(index=False, float_format="%.4f"), csv_path)
    write_text(to_markdown(df, caption) + (f"\n{footer}" if footer else ""), md_path)
