"""The paper's Tables 3-5 regenerated from our results, with the published rows as reference.

Table 3: lesion detection on AbdomenAtlas 3.0 (per-organ precision / recall / F1, percent).
Table 4: Stage 2 classification by pretraining (macro F1 / precision / recall), paper beside ours.
Table 5: report-generation ablations (training recipe, injection, frozen encoder, visual tokens,
decoder -> F1 and BLEU-mean), each paper row once with our experiment of the same kind beside it (95%
bootstrap intervals and ROUGE-L); experiments the paper has no row for follow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from uvlm.evaluation.tables import format_ci
from uvlm.experiments import DECODERS, Experiment, Stage2Run, stage1_seg, table5_key

ORGAN_ORDER = ("pancreatic_lesion", "kidney_lesion", "liver_lesion")  # the paper's column order
SHORT = {"pancreatic_lesion": "Pancreas", "kidney_lesion": "Kidney", "liver_lesion": "Liver"}


def _published(path: str | Path, key: str):
    return yaml.safe_load(Path(path).read_text())[key]


def table3(published: str | Path, ours: dict[str, dict], dataset_label: str) -> pd.DataFrame:
    """ours: {row title: metrics with per_class[lesion] precision/recall/f1 (0-1)}."""
    rows = []
    for r in _published(published, "abdomen_table3"):
        row = {"method": r["method"], "group": r["group"]}
        for lesion in ORGAN_ORDER:
            row.update(dict(zip(_cols(lesion), r[lesion], strict=True)))
        rows.append({**row, "source": "paper (AbdomenAtlas 3.0)"})
    for title, m in ours.items():
        row = {"method": title, "group": "ours"}
        for lesion in ORGAN_ORDER:
            c = m["per_class"][lesion]
            row.update(dict(zip(_cols(lesion), (100 * c["precision"], 100 * c["recall"], 100 * c["f1"]), strict=True)))
        rows.append({**row, "source": f"ours ({dataset_label})"})
    return pd.DataFrame(rows)


def _cols(lesion: str) -> tuple[str, str, str]:
    return tuple(f"{SHORT[lesion]} {m}" for m in ("P", "R", "F1"))


def table4(published: str | Path, runs: list[Stage2Run], metrics: dict[str, str | Path],
           dataset_label: str, dataset: str = "ct_rate") -> pd.DataFrame:
    """One row per Stage 2 initialisation: the paper's numbers for `dataset` beside ours (macro F1 / precision /
    recall at 0.5 on the evaluation split; AUC there and on the hold-out that picked the weights, ours
    only). metrics: {Stage2Run.name: its metrics.json}."""
    paper = {stage1_seg(init): vals[dataset]  # none for a dataset the paper did not use (your own)
             for init, vals in _published(published, "stage2_table4").items() if dataset in vals}
    ours = {r.seg: r for r in runs}
    rows = []
    for seg in [*paper, *(s for s in ours if s not in paper)]:
        run = Stage2Run(seg)
        row = {"training": run.title}
        if paper:  # the dataset has published numbers (CT-RATE, AbdomenAtlas)
            row.update(zip(("paper_f1", "paper_precision", "paper_recall"), paper.get(seg, (None,) * 3), strict=True))
        if seg in ours and run.name in metrics:
            m = json.loads(Path(metrics[run.name]).read_text())
            row.update(f1=m.get("macro_f1"), precision=m.get("macro_precision"), recall=m.get("macro_recall"),
                       auc=m.get("macro_auc"), holdout_auc=m.get("holdout", {}).get("macro_auc"),
                       source=f"ours ({dataset_label}): {run.name}")
        rows.append(row)
    return pd.DataFrame(rows)


def table5(published: str | Path, experiments: list[Experiment], metrics: dict[str, str | Path],
           dataset_label: str, dataset: str = "ct_rate") -> pd.DataFrame:
    """Each of the paper's Table 5 rows once, with its F1 and BLEU-mean on `dataset` beside ours (the experiment
    with the same recipe, SC, Frz, visual-token stage and decoder); our experiments that match no paper row
    follow. metrics: {experiment name: metrics json path}."""
    by_key: dict[tuple, list[Experiment]] = {}
    for exp in experiments:
        by_key.setdefault(exp.row_key(), []).append(exp)
    rows, shown = [], set()
    for r in [r for r in _published(published, "rep_table5") if dataset in r]:  # none for your own data
        key = table5_key(r["seg"], r["cls"], r["sc"], r["frz"], r["ref_stage"], r["decoder"])
        paper = {"training": r["training"], "sc": r["sc"], "frz": r["frz"], "vt": r["vt"],
                 "dec": DECODERS[r["decoder"]][0], "paper_f1": r[dataset][0], "paper_bleu_mean": r[dataset][1]}
        matches = by_key.get(key, [])
        rows.append({**paper, **(_ours(matches[0], metrics, dataset_label) if matches else {})})
        shown.update(e.name for e in matches[:1])
    for exp in experiments:
        if exp.name not in shown:
            rows.append({"training": exp.recipe, "sc": exp.multi_layer, "frz": exp.frozen,
                         "dec": exp.decoder_label, **_ours(exp, metrics, dataset_label)})
    df = pd.DataFrame(rows)
    for col in ("vt", "our_vt"):  # token counts stay integers where a row has none
        if col in df:
            df[col] = df[col].astype("Int64")
    return df


def _ours(exp: Experiment, metrics: dict[str, str | Path], dataset_label: str) -> dict:
    m = json.loads(Path(metrics[exp.name]).read_text())
    return {"our_vt": exp.visual_tokens, "f1": m["macro_f1"], "f1_ci": format_ci(m.get("macro_f1_ci")),
            "bleu_mean": m["bleu_mean"], "bleu_mean_ci": format_ci(m.get("bleu_mean_ci")),
            "rouge_l": m.get("rouge_l"), "source": f"ours ({dataset_label}): {exp.name}"}
