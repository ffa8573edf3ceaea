"""The run's paper-shaped tables (Tables 2-5) with their captions: what `uvlm tables` writes."""

from __future__ import annotations

import json
from pathlib import Path

from uvlm.evaluation.claims import claims_section
from uvlm.evaluation.paper_tables import table3, table4, table5
from uvlm.evaluation.tables import main_table, write_table
from uvlm.experiments import GRANULARITY_TITLES, Plan

MAIN_CAPTION = ("Table 2 layout. Paper rows: CT-RATE validation as published. Our rows: {label} validation split "
                "(never read by training or model selection); ours is experiment '{main}'. Labels extracted "
                "from generated reports by the {extractor} extractor; F1/Prec./Rec. are macro means over the 18 "
                "CT-RATE labels; BLEU is corpus BLEU on a 0-1 scale, the authors' way (case and punctuation "
                "kept, pycocoevalcap Bleu(4)); CIs are 95% bootstrap intervals over reports.")
TABLE4_CAPTION = ("Table 4 layout: Stage 2 classification by pretraining, the paper's {paper} numbers beside ours "
                  "(macro F1/precision/recall at 0.5 on the {label} scored split; weights chosen by the "
                  "smoothed AUC on a patient hold-out of the training split, shown as AUC (hold-out)).")
TABLE5_CAPTION = ("Table 5 layout: report-generation ablations, each paper row once with the {paper} F1 and "
                  "BLEU-mean it published beside ours ({label} scored split). SC = multi-layer "
                  "(skip-connection) injection, Frz = frozen encoder, VT = visual tokens (the paper's count; ours "
                  "at our grid), Dec. = decoder (0.1B = ours, Q4B-L/F = Qwen3-4B LoRA / full fine-tuning). Empty "
                  "cells: not run.")
OWN_TABLE4_CAPTION = ("Table 4 layout on your data ({label}; the paper published nothing for it): Stage 2 "
                      "classification by pretraining, macro F1/precision/recall at 0.5 on its scored split, the weights "
                      "chosen by the smoothed AUC on a patient hold-out of its training split (AUC (hold-out)).")
OWN_TABLE5_CAPTION = ("Table 5 layout on your data ({label}; the paper published nothing for it): each report-generation "
                      "experiment run, F1 from labels extracted from its generated reports and BLEU-mean on its scored "
                      "split. SC = multi-layer injection, Frz = frozen encoder, VT = visual tokens at our grid.")
TABLE3_CAPTION = ("Table 3 layout: lesion detection on AbdomenAtlas 3.0, precision / recall / F1 in percent per "
                  "lesion class against the RadGPT labels derived from the masks. Our U-VLM rows: labels extracted "
                  "by the {extractor} extractor from the reports generated for the {label} test split (never read "
                  "by training or model selection). Our nnU-Net rows: the RadGPT rule applied to the label maps "
                  "our Stage 1 network predicts for the same test cases. Our rows that need no trained model: the "
                  "extractor on the "
                  "reference reports (a check of the extractor) and the most frequent training label set, over "
                  "all labelled cases.")


def of_dataset(files: list[str], dataset: str) -> dict[str, Path]:
    """{name: path} of the files under a dataset's folder (results/metrics/<dataset>/<name>.json,
    results/models/stage2/<dataset>/<name>)."""
    return {Path(f).stem: Path(f) for f in files if Path(f).parent.name == dataset}


def write_result_tables(out_dir: str | Path, plan: Plan, main_experiment: str, metrics: list[str],
                        stage2_dirs: list[str], baseline: str, published: str, dataset: str, extractor: str) -> Path:
    """Write CT-RATE's main, table4_classification and table5_ablations as .csv + .md.

    metrics: one results/metrics/<dataset>/<experiment>.json per experiment (CT-RATE's are used);
    stage2_dirs: the Stage 2 folders. Returns the main table's markdown file."""
    out = Path(out_dir)
    by_name = of_dataset(metrics, plan.dataset)
    missing = [e.name for e in plan.experiments if e.name not in by_name]
    if missing:
        raise ValueError(f"no metrics file given for experiments {missing}")
    main = next(e for e in plan.experiments if e.name == main_experiment)
    write_table(main_table(published, (main.name, main.title, by_name[main.name]), baseline, dataset),
                out / "main.csv", out / "main.md",
                MAIN_CAPTION.format(label=dataset, main=main.name, extractor=extractor),
                footer=claims_section(list(plan.experiments), by_name, baseline))
    stage2 = {name: d / "metrics.json" for name, d in of_dataset(stage2_dirs, plan.dataset).items()}
    write_table(table4(published, list(plan.stage2), stage2, dataset), out / "table4_classification.csv",
                out / "table4_classification.md", TABLE4_CAPTION.format(label=dataset, paper="CT-RATE"))
    write_table(table5(published, list(plan.experiments), by_name, dataset), out / "table5_ablations.csv",
                out / "table5_ablations.md", TABLE5_CAPTION.format(label=dataset, paper="CT-RATE"))
    return out / "main.md"


def write_abdomen_tables(out_dir: str | Path, plan: Plan, metrics: list[str], stage2_dirs: list[str],
                         published: str, reference: str, label: str, extractor: str,
                         detections: list[str] = ()) -> None:
    """Write AbdomenAtlas's table3_abdomen (U-VLM rows from the plan's experiments, segmentation-based rows from
    `detections` (results/reports/<dataset>/nnunet_seg_<g>/), then the rows that need no model, from
    `reference`) and the abdomen columns of Tables 4 and 5 (table4_classification_abdomen_atlas,
    table5_ablations_abdomen_atlas)."""
    out, ds = Path(out_dir), plan.dataset
    by_name = of_dataset(metrics, ds)
    ours = {f"U-VLM {e.title} ({e.name})": json.loads(by_name[e.name].read_text()) for e in plan.experiments}
    for folder in map(Path, detections):
        granularity = folder.name.removeprefix("nnunet_seg_")
        title = f"nnU-Net {GRANULARITY_TITLES[granularity]}, RadGPT rule on our Stage 1 segmentation"
        ours[title] = json.loads((folder / "metrics.json").read_text())
    ours.update(json.loads(Path(reference).read_text()))
    write_table(table3(published, ours, label), out / "table3_abdomen.csv", out / "table3_abdomen.md",
                TABLE3_CAPTION.format(label=label, extractor=extractor))
    write_dataset_tables(out, plan, metrics, stage2_dirs, published, label, "AbdomenAtlas 3.0",
                         " The labels: the 3 lesion labels (RadGPT rule on the masks).")


def write_dataset_tables(out_dir: str | Path, plan: Plan, metrics: list[str], stage2_dirs: list[str], published: str,
                         label: str, paper: str = "", note: str = "") -> None:
    """Tables 4 and 5 of a dataset besides CT-RATE (table4_classification_<dataset>, table5_ablations_<dataset>):
    the paper's columns for `paper` where it published some (AbdomenAtlas), empty for your own data."""
    out, ds = Path(out_dir), plan.dataset
    captions = (TABLE4_CAPTION, TABLE5_CAPTION) if paper else (OWN_TABLE4_CAPTION, OWN_TABLE5_CAPTION)
    stage2 = {name: d / "metrics.json" for name, d in of_dataset(stage2_dirs, ds).items()}
    write_table(table4(published, list(plan.stage2), stage2, label, ds), out / f"table4_classification_{ds}.csv",
                out / f"table4_classification_{ds}.md", captions[0].format(label=label, paper=paper) + note)
    write_table(table5(published, list(plan.experiments), of_dataset(metrics, ds), label, ds),
                out / f"table5_ablations_{ds}.csv", out / f"table5_ablations_{ds}.md",
                captions[1].format(label=label, paper=paper) + note)
