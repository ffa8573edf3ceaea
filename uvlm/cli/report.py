"""Report phase: labels from generated text, metrics, the reconciliation of every volume, tables, figures
and the HTML page (DVC stage `report`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from uvlm.config import check_extractor

log = logging.getLogger("uvlm")


def cmd_evaluate(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.evaluate import evaluate_reports
    from uvlm.io import write_json

    ev = cfg["evaluation"]
    check_extractor(ev)
    m = evaluate_reports(a.reports, a.manifest, ev["extractor"], ev, ev["cache_dir"], ev["bootstrap_resamples"],
                         cfg["seed"])
    write_json(m, a.out)
    log.info("macro F1 %.3f (P %.3f, R %.3f), BLEU-mean %.3f over %d reports", m["macro_f1"],
             m["macro_precision"], m["macro_recall"], m["bleu_mean"], m["n_reports"])


def cmd_baseline(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.evaluate import most_frequent_baseline
    from uvlm.io import write_json

    ev = cfg["evaluation"]
    check_extractor(ev)
    write_json(most_frequent_baseline(a.manifest, extractor=ev["extractor"], settings=ev, cache_dir=ev["cache_dir"],
                                      n_resamples=ev["bootstrap_resamples"], seed=cfg["seed"]), a.out)


def cmd_abdomen_eval(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.evaluate import abdomen_reference_scores
    from uvlm.io import write_json

    ev = cfg["evaluation"]
    check_extractor(ev)
    write_json(abdomen_reference_scores(a.manifest, ev["extractor"], ev, ev["cache_dir"]), a.out)


def _by_dataset(shards: list[str]) -> dict[str, list[str]]:
    """results/<kind>/<dataset>/shard_<k> grouped by <dataset> (or by labeler, one level deeper)."""
    grouped: dict[str, list[str]] = {}
    for shard in shards:
        grouped.setdefault(Path(shard).parent.name, []).append(shard)
    return grouped


def cmd_reconcile(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.evaluation.tables import write_table
    from uvlm.io import write_csv
    from uvlm.qc.reconcile import reconcile, reconcile_dataset

    preprocessed, labels = _by_dataset(a.preprocessed), _by_dataset(a.labels)
    parts = [reconcile(pd.read_parquet(a.manifest), pd.read_csv(a.unlisted, keep_default_na=False),
                       pd.read_parquet(a.stage1_cases), preprocessed.get("ct_rate", []),
                       _by_dataset(a.pseudolabels), labels.get("ct_rate", []))] if a.manifest else []
    for entry in a.datasets:  # DATASET=TRAINING_MANIFEST
        dataset, _, manifest = entry.partition("=")
        parts.append(reconcile_dataset(pd.read_parquet(manifest), preprocessed.get(dataset, []),
                                      labels.get(dataset, []), dataset))
    rejected = pd.concat([r for r, _ in parts], ignore_index=True)
    table = pd.concat([t for _, t in parts], ignore_index=True)
    write_csv(rejected, a.rejected)
    unbalanced = [f"{r.dataset}: {r.step}" for r in table[~table["balanced"]].itertuples()]
    write_table(table, a.table, Path(a.table).with_suffix(".md"),
                "Every volume accounted for, per dataset and step: in = accepted + rejected (the reasons, per case, "
                f"are in {a.rejected}).", footer=f"Unbalanced steps: {', '.join(unbalanced)}.\n" if unbalanced else "")
    log.info("%d rejections over %d steps -> %s, %s", len(rejected), len(table), a.rejected, a.table)
    if unbalanced:
        raise SystemExit(f"volumes unaccounted for in steps {unbalanced}: see {a.table}")


def cmd_tables(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.roots import abdomen_label, dataset_label
    from uvlm.evaluation.result_tables import write_abdomen_tables, write_result_tables
    from uvlm.experiments import Plan

    plans = {d: Plan.from_config(view, d) for d, view in a.views.items()}
    if "ct_rate" in plans:
        main = write_result_tables(a.out_dir, plans["ct_rate"], cfg["main_experiment"], a.metrics, a.stage2,
                                   a.baseline, a.published, dataset_label(cfg), cfg["evaluation"]["extractor"])
        print(main.read_text())
    if "abdomen_atlas" in plans:
        write_abdomen_tables(a.out_dir, plans["abdomen_atlas"], a.metrics, a.stage2, a.published, a.abdomen,
                             abdomen_label(cfg), a.views["abdomen_atlas"]["evaluation"]["extractor"], a.detections)


def cmd_dataset_tables(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.result_tables import write_dataset_tables
    from uvlm.experiments import Plan

    write_dataset_tables(a.out_dir, Plan.from_config(cfg, a.dataset), a.metrics, a.stage2, a.published, a.dataset)


def cmd_figures(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.figures import write_figures
    from uvlm.experiments import Plan

    write_figures(a.out_dir, list(Plan.from_config(cfg).experiments), a.metrics, a.baseline, a.models, a.reports,
                  a.preprocessed, a.n_examples)


def cmd_report_html(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.config import EFFECTIVE_CONFIG
    from uvlm.data.roots import dataset_label
    from uvlm.evaluation.report_html import write_results_page

    names = [dataset_label(cfg) if d == "ct_rate" else d for d in a.views]
    runs = [f"{name}: {', '.join(view['run'])}" for name, view in zip(names, a.views.values(), strict=True)]
    write_results_page(a.out, a.tables, a.figures, ", ".join(names), runs, EFFECTIVE_CONFIG)
