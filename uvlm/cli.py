"""`uvlm` command line: one subcommand per pipeline step, each a thin wrapper over a Python function.

Every subcommand takes --config (the YAML or JSON config; Snakemake passes the effective config it
ran with), so any step can be rerun and debugged for one shard or one experiment without Snakemake.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from uvlm.config import DEFAULT_CONFIG, EFFECTIVE_CONFIG, check_extractor, load_config

log = logging.getLogger("uvlm")


def dataset_label(cfg: dict) -> str:
    """How tables and the report name the CT-RATE-layout data in use."""
    return "CT-RATE" if cfg["ct_rate_root"] else "synthetic demo"


def ct_rate_root(cfg: dict) -> Path:
    """The CT-RATE root in use: the configured one, or the generated demo."""
    return Path(cfg["ct_rate_root"]) if cfg["ct_rate_root"] else Path("results/demo/ct_rate")


def _split(manifest: str, shard_dirs: list[str], split: str, needs: str | None = None):
    from uvlm.data.volumes import VolumeDataset, load_split

    return VolumeDataset(load_split(manifest, shard_dirs, split, needs))


def _fit_and_holdout(manifest: str, shard_dirs: list[str], cfg: dict, needs: str):
    """The training split's volumes that have what the stage `needs` ("labels", "report") as (volumes to fit
    on, patients held out for model selection); the scored split is not read."""
    from uvlm.data.holdout import split_holdout
    from uvlm.data.volumes import VolumeDataset, load_split

    fit_rows, held = split_holdout(load_split(manifest, shard_dirs, "train", needs),
                                   cfg["model_selection"]["holdout_fraction"], cfg["seed"])
    log.info("training split: %d volumes to fit on, %d held out for model selection (%d patients)",
             len(fit_rows), len(held), held["patient_id"].nunique())
    return VolumeDataset(fit_rows), VolumeDataset(held)


def abdomen_root(cfg: dict) -> Path:
    """The AbdomenAtlas 3.0 root in use: the configured one, or the generated demo."""
    root = cfg["abdomen_atlas"]["root"]
    return Path(root) if root else Path("results/demo/abdomen_atlas")


def cmd_demo_data(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.demo.ct_rate_writer import DemoConfig, write_demo_ct_rate
    from uvlm.demo.phantom import PhantomConfig

    if a.dataset == "abdomen_atlas":
        from uvlm.demo.abdomen_writer import write_demo_abdomen_atlas

        d = cfg["abdomen_atlas"]["demo"]
        write_demo_abdomen_atlas(Path(a.out), d["n_cases"], cfg["seed"], tuple(d["shape"]), tuple(d["spacing_mm"]))
        return
    d = cfg["demo"]
    phantom = PhantomConfig(shape=tuple(d["shape"]), spacing_mm=tuple(d["spacing_mm"]))
    write_demo_ct_rate(Path(a.out), DemoConfig(n_patients=d["n_patients"], valid_fraction=d["valid_fraction"],
                                               abnormality_prob=d["abnormality_prob"], seed=cfg["seed"],
                                               report_style=d["report_style"], phantom=phantom))


def cmd_ingest(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.ct_rate import find_volumes, ingest_ct_rate, unlisted_volume_files
    from uvlm.io import write_csv, write_parquet

    root = (Path(a.root) if a.root else ct_rate_root(cfg)).resolve()  # absolute image paths in the manifest
    volumes = find_volumes(root / "dataset")  # walked once, for the manifest and the unlisted files
    df = ingest_ct_rate(root, cfg["shard_size"], cfg["rexgrounding_root"] or None, volumes=volumes)
    unlisted = unlisted_volume_files(volumes, df)
    write_parquet(df, a.out)
    write_csv(unlisted, a.unlisted)
    log.info("manifest: %d volumes (%d missing files, %d without labels, %d with empty reports), %d shards -> %s; "
             "%d volume files without a report row -> %s", len(df), int((~df["image_exists"]).sum()),
             int((~df["labels_known"]).sum()), int((~df["has_report"]).sum()), int(df["shard"].max()) + 1, a.out,
             len(unlisted), a.unlisted)


def cmd_ingest_abdomen(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.data.abdomen_atlas import ingest_abdomen_atlas
    from uvlm.io import write_parquet

    ab = cfg["abdomen_atlas"]
    root = Path(a.root) if a.root else abdomen_root(cfg)
    df = ingest_abdomen_atlas(root, cfg["shard_size"], valid_fraction=ab["valid_fraction"], seed=cfg["seed"])
    write_parquet(df, a.out)
    log.info("AbdomenAtlas manifest: %d cases (%d train), %d shards -> %s", len(df),
             int((df["split"] == "train").sum()), int(df["shard"].max()) + 1, a.out)


def cmd_labels_abdomen(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import shard_rows
    from uvlm.labels.abdomen_shard import label_abdomen_shard
    from uvlm.labels.label_map import granularity_names, load_label_map

    ab = cfg["abdomen_atlas"]
    maps = [load_label_map(ab["label_map"], g) for g in granularity_names(ab["label_map"])]
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)
    label_abdomen_shard(rows, maps, a.out, cfg["on_volume_error"], ab["lesion_min_mm3"])


def cmd_abdomen_qc(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.tables import write_table
    from uvlm.qc.summary import class_summary, lesion_label_table, missing_class_table
    from uvlm.shards import read_shard_indexes

    index = read_shard_indexes(a.shards)
    out = Path(a.out)
    write_table(lesion_label_table(index), out / "lesion_labels.csv", out / "lesion_labels.md",
                "AbdomenAtlas 3.0: cases with each lesion label (RadGPT rule on the masks) per split.")
    write_table(missing_class_table(index), out / "missing_classes.csv", out / "missing_classes.md",
                "AbdomenAtlas 3.0: cases whose label map lacks each class, per granularity.")
    table, _ = class_summary(a.shards, column="voxels_FL", missing_column="missing_FL")
    write_table(table, out / "classes_FL.csv", out / "classes_FL.md",
                "AbdomenAtlas 3.0: volume per F+L class (ml, over the cases where the class is present).")


def cmd_labels(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import shard_rows
    from uvlm.labels.label_map import load_label_map
    from uvlm.labels.shard import label_shard

    maps = [load_label_map(cfg["label_map"], g) for g in a.granularities]
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)
    label_shard(rows, maps, a.sources, a.out, cfg["lesions_complete"], cfg["on_volume_error"])


def cmd_pseudolabel(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd
    import torch

    from uvlm.data.manifest import shard_rows
    from uvlm.device import pick_device
    from uvlm.pseudolabel.reference import label_folder
    from uvlm.pseudolabel.run import pseudolabel_shard

    pl = cfg["pseudolabels"]
    if a.labeler not in pl["labelers"]:
        raise SystemExit(f"no labeler '{a.labeler}' in pseudolabels.labelers (has {sorted(pl['labelers'])})")
    torch.set_num_threads(cfg["threads"])
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)  # a shard of the Stage 1 case list
    spec = pl["labelers"][a.labeler]
    pseudolabel_shard(rows, a.labeler, spec, a.out, cfg["on_volume_error"], pick_device(cfg["device"]).type,
                      cfg["threads"], default_folder=str(label_folder(spec, ct_rate_root(cfg))),
                      montages=pl["montages"])


def cmd_label_qc(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.tables import write_table
    from uvlm.io import write_text
    from uvlm.labels.label_map import load_label_map
    from uvlm.pseudolabel.reference import qc_reference
    from uvlm.qc.summary import agreement, agreement_table, class_summary

    out = Path(a.out)
    table, missing = class_summary(a.shards)
    no_reference = ""  # why there is no Dice table: said in classes.md, agreement.md and the log
    if not a.reference:
        ref = qc_reference(cfg)
        no_reference = ref.note or (f"{a.labeler} is itself the reference labeler" if ref.labeler == a.labeler
                                    else f"the reference labeler '{ref.labeler}' was not given (--reference)")
        for stale in ("agreement.csv", "agreement_per_case.csv"):  # an earlier run's scores are not this one's
            (out / stale).unlink(missing_ok=True)
        write_text(f"No agreement with a reference for {a.labeler}: {no_reference}.\n", out / "agreement.md")
        log.log(logging.WARNING if cfg["pseudolabels"]["reference"] else logging.INFO, "no reference for QC: %s",
                no_reference)
    write_table(table, out / "classes.csv", out / "classes.md",
                f"Labeler {a.labeler}: volume per class over {int(table['cases_with_class'].max() if len(table) else 0)}"
                " cases (ml, cases where the class is present) and cases missing each class.",
                footer=f"No Dice against a reference: {no_reference}.\n" if no_reference else "")
    missing.to_csv(out / "missing.csv", index=False)
    if a.reference:
        per_case = agreement(a.shards, a.reference, load_label_map(cfg["label_map"], a.granularity))
        per_case.to_csv(out / "agreement_per_case.csv", index=False)
        summary = agreement_table(per_case)
        write_table(summary, out / "agreement.csv", out / "agreement.md",
                    f"Dice of {a.labeler} against the reference labeler, per {a.granularity} class.")
        log.info("agreement with reference:\n%s", summary.to_string(index=False))


def cmd_stage1_cases(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import n_shards, stage1_cases
    from uvlm.io import write_parquet

    df = pd.read_parquet(a.manifest)
    cases = stage1_cases(df, cfg["lesions_complete"], cfg["stage1"]["max_cases"], cfg["seed"], cfg["shard_size"])
    write_parquet(cases, a.out)
    log.info("Stage 1 cases: %d of %d training volumes (%s), %d shards -> %s", len(cases),
             int((df["split"] == "train").sum()),
             "lesions complete" if cfg["lesions_complete"] else "those with lesion masks", n_shards(cases), a.out)


def cmd_preprocess(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import shard_rows
    from uvlm.preprocess.volume import preprocess_shard

    p = cfg["preprocess"]
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)
    preprocess_shard(rows, a.out, tuple(p["grid"]), tuple(p["hu_window"]), p["orientation"], cfg["on_volume_error"])


def cmd_reconcile(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.evaluation.tables import write_table
    from uvlm.io import write_csv
    from uvlm.qc.reconcile import reconcile

    labelers: dict[str, list[str]] = {}
    for shard in a.pseudolabels:  # results/pseudolabels/ct_rate/<labeler>/shard_<k>
        labelers.setdefault(Path(shard).parent.name, []).append(shard)
    rejected, table = reconcile(pd.read_parquet(a.manifest), pd.read_csv(a.unlisted, keep_default_na=False),
                                pd.read_parquet(a.stage1_cases), a.preprocessed, labelers, a.labels)
    write_csv(rejected, a.rejected)
    unbalanced = table.loc[~table["balanced"], "step"].tolist()
    write_table(table, a.table, Path(a.table).with_suffix(".md"),
                "Every volume accounted for, per step: in = accepted + rejected (the reasons, per case, are in "
                f"{a.rejected}).", footer=f"Unbalanced steps: {', '.join(unbalanced)}.\n" if unbalanced else "")
    log.info("%d rejections over %d steps -> %s, %s", len(rejected), len(table), a.rejected, a.table)
    if unbalanced:
        raise SystemExit(f"volumes unaccounted for in steps {unbalanced}: see {a.table}")


def cmd_tokenizer(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.text.tokenizer import from_hf_folder, train_bpe

    if cfg["stage3"]["tokenizer_dir"]:
        tok = from_hf_folder(cfg["stage3"]["tokenizer_dir"], Path(a.out))
        log.info("tokenizer from %s: %d tokens -> %s", cfg["stage3"]["tokenizer_dir"], tok.get_vocab_size(), a.out)
        return
    df = pd.read_parquet(a.manifest)
    texts = df.loc[(df["split"] == "train") & df["has_report"], "report_text"].tolist()  # training split only
    tok = train_bpe(texts, cfg["stage3"]["vocab_size"], Path(a.out))
    log.info("BPE tokenizer: %d tokens from %d training reports -> %s", tok.get_vocab_size(), len(texts), a.out)


def cmd_nnunet_export(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.shards import read_shard_indexes
    from uvlm.train.nnunet_export import export_nnunet_dataset, load_class_table, select_cases

    rows = select_cases(pd.read_parquet(a.manifest), read_shard_indexes(a.labels), a.granularity)
    if rows.empty:
        raise SystemExit(f"no Stage 1 case has {a.granularity} labels; nothing to export")
    out = export_nnunet_dataset(rows, a.granularity, load_class_table(a.labels, a.granularity),
                                cfg["stage1"]["dataset_ids"][a.granularity], a.out, seed=cfg["seed"])
    log.info("nnU-Net raw dataset with %d cases -> %s", len(rows), out)


def cmd_stage1(a: argparse.Namespace, cfg: dict) -> None:
    import torch

    from uvlm.device import pick_device
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage1 import Stage1Config, run_stage1

    torch.set_num_threads(cfg["threads"])
    datasets = sorted(Path(a.raw).glob("Dataset*"))
    if len(datasets) != 1:
        raise SystemExit(f"{a.raw}: expected one nnU-Net Dataset folder, found {[d.name for d in datasets]}")
    run_stage1(datasets[0], a.work, a.out, EncoderConfig.from_config(cfg["encoder"]),
               Stage1Config.from_config(cfg["stage1"]), pick_device(cfg["device"]), cfg["seed"])


def cmd_stage1_import(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage1 import import_stage1

    import_stage1(a.checkpoint, a.out, EncoderConfig.from_config(cfg["encoder"]))
    log.info("Stage 1 encoder imported from %s -> %s", a.checkpoint, a.out)


def cmd_stage2(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage2 import Stage2Config, train_stage2

    train, holdout = _fit_and_holdout(a.manifest, a.preprocessed, cfg, "labels")
    scored = _split(a.manifest, a.preprocessed, "valid", "labels")  # Table 4: read only to score the selected weights
    train_stage2(train, holdout, scored, a.init or None, EncoderConfig.from_config(cfg["encoder"]),
                 Stage2Config.from_config(cfg["stage2"]), a.out, cfg["device"], cfg["threads"], cfg["seed"])


def cmd_stage3(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.experiments import experiments
    from uvlm.models.encoder import EncoderConfig
    from uvlm.train.stage3 import Stage3Config, train_stage3

    exp = experiments(cfg)[a.experiment]
    s3 = cfg["stage3"]
    train, holdout = _fit_and_holdout(a.manifest, a.preprocessed, cfg, "report")
    train_stage3(train, holdout, a.tokenizer, a.init or None, EncoderConfig.from_config(cfg["encoder"]),
                 tuple(cfg["preprocess"]["grid"]), s3["decoder"], Stage3Config.from_config(s3), exp, a.out,
                 cfg["device"], cfg["threads"], cfg["seed"], hf=s3["hf"],
                 stage_to_layer=s3["injection"]["stage_to_layer"])


def cmd_generate(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.generate import decoding_from_config, generate_reports

    g = cfg["generate"]
    generate_reports(a.model, _split(a.manifest, a.preprocessed, a.split), a.out, g["max_new_tokens"],
                     g["batch_size"], cfg["device"], cfg["threads"], decoding_from_config({**g, "seed": cfg["seed"]}))


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


def cmd_tables(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.claims import claims_section
    from uvlm.evaluation.paper_tables import table3, table4, table5
    from uvlm.evaluation.tables import main_table, write_table
    from uvlm.experiments import Plan

    out = Path(a.out_dir)
    plan = Plan.from_config(cfg)
    metrics = {e.name: Path(a.metrics_dir) / f"{e.name}.json" for e in plan.experiments}
    main = next(e for e in plan.experiments if e.name == cfg["main_experiment"])
    label = dataset_label(cfg)
    write_table(main_table(a.published, (main.name, main.title, metrics[main.name]), a.baseline, label),
                out / "main.csv", out / "main.md",
                f"Table 2 layout. Paper rows: CT-RATE validation as published. Our rows: {label} validation split "
                f"(never read by training or model selection); ours is experiment '{main.name}'. Labels extracted "
                f"from generated reports by the {cfg['evaluation']['extractor']} extractor; F1/Prec./Rec. are "
                "macro means over the 18 CT-RATE labels; BLEU is corpus BLEU on a 0-1 scale, the authors' way "
                "(case and punctuation kept, pycocoevalcap Bleu(4)); CIs are 95% bootstrap intervals over reports.",
                footer=claims_section(list(plan.experiments), metrics, a.baseline))
    stage2 = {r.name: Path(r.dir) / "metrics.json" for r in plan.stage2}
    write_table(table4(a.published, list(plan.stage2), stage2, label), out / "table4_classification.csv",
                out / "table4_classification.md",
                "Table 4 layout: Stage 2 classification by pretraining, the paper's CT-RATE numbers beside ours "
                f"(macro F1/precision/recall at 0.5 on the {label} validation split; weights chosen by the "
                "smoothed AUC on a patient hold-out of the training split, shown as AUC (hold-out)).")
    write_table(table5(a.published, list(plan.experiments), metrics, label), out / "table5_ablations.csv",
                out / "table5_ablations.md",
                "Table 5 layout: report-generation ablations, each paper row once with the CT-RATE F1 and BLEU-mean "
                f"it published beside ours ({label} validation split). SC = multi-layer (skip-connection) "
                "injection, Frz = frozen encoder, VT = visual tokens (the paper's count; ours at our grid), Dec. = "
                "decoder (0.1B = ours, Q4B-L/F = Qwen3-4B LoRA / full fine-tuning). Empty cells: not run.")
    if a.abdomen:
        ours = json.loads(Path(a.abdomen).read_text())
        write_table(table3(a.published, ours, "AbdomenAtlas demo" if not cfg["abdomen_atlas"]["root"] else
                           "AbdomenAtlas 3.0"), out / "table3_abdomen.csv", out / "table3_abdomen.md",
                    "Table 3 layout: lesion detection on AbdomenAtlas 3.0, precision / recall / F1 in percent per "
                    "lesion class against the RadGPT labels derived from the masks. Our rows need no trained model: "
                    "the rule extractor on the reference reports (a check of the extractor) and the most frequent "
                    "training label set, over all labelled cases.")
    print((out / "main.md").read_text())


def cmd_abdomen_eval(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.evaluate import abdomen_reference_scores
    from uvlm.io import write_json

    ev = cfg["evaluation"]
    check_extractor(ev)
    write_json(abdomen_reference_scores(a.manifest, a.labels, ev["extractor"], ev, ev["cache_dir"]), a.out)


def cmd_figures(a: argparse.Namespace, cfg: dict) -> None:
    import numpy as np
    import pandas as pd

    from uvlm.evaluation.figures import per_class_f1, qualitative, training_curves
    from uvlm.experiments import Plan
    from uvlm.shards import read_shard_indexes

    out = Path(a.out_dir)
    plan = Plan.from_config(cfg)
    metrics = {"Most frequent label set": a.baseline,
               **{e.title: Path(a.metrics_dir) / f"{e.name}.json" for e in plan.experiments}}
    per_class_f1(metrics, out / "per_class_f1.png")
    training_curves({Path(m).parent.name + "/" + Path(m).name: m for m in a.models}, out / "training_curves.png")
    index = read_shard_indexes(a.preprocessed)
    arrays = dict(zip(index["volume_name"], (Path(d) / f for d, f in zip(index["shard_dir"], index["array_file"],
                                                                          strict=True)), strict=True))
    for exp in plan.experiments:
        reports = pd.read_parquet(Path(a.reports_dir) / f"{exp.name}.parquet").sort_values("volume_name")
        examples = [{"name": r.volume_name, "image": np.load(arrays[r.volume_name]).astype(np.float32),
                     "generated": r.generated, "reference": r.reference}
                    for r in reports.head(a.n_examples).itertuples()]
        qualitative(examples, out / f"qualitative_{exp.name}.png", exp.title)


def cmd_report_html(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.report_html import write_html_report

    tables = [(Path(t).stem.replace("_", " "), t, Path(t).with_suffix(".md").read_text().split("\n", 1)[0])
              for t in a.tables]
    figures = [(Path(f).stem.replace("_", " "), f) for f in a.figures]
    label = dataset_label(cfg)
    write_html_report(a.out, f"U-VLM results ({label})", tables, figures,
                      notes=[f"Experiments: {', '.join(cfg['run'])}. Configuration: {EFFECTIVE_CONFIG}."])


def cmd_params(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.param_count import parameter_table

    df = parameter_table(cfg)
    print(f"Parameter counts for {a.config} (input grid {cfg['preprocess']['grid']}, stage shapes "
          f"{df.attrs['stage_shapes']}, {df.attrs['n_visual_tokens']} visual tokens):\n")
    print(df.to_markdown(index=False, intfmt=","))


def cmd_pull(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.versioning import pull_results

    pull_results(Path.cwd(), a.targets, a.cores)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uvlm", description=__doc__)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline config (YAML/JSON)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a top-level config key, e.g. --set ct_rate_root='\"/data/CT-RATE\"'")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help_: str, *args: tuple[str, dict]) -> None:
        sp = sub.add_parser(name, help=help_)
        for flag, kw in args:
            sp.add_argument(flag, **kw)
        sp.set_defaults(fn=fn)

    req = {"required": True}
    many = {"nargs": "+", "required": True}
    add("demo-data", cmd_demo_data, "write a synthetic demo dataset in the real layout", ("out", {}),
        ("--dataset", {"choices": ["ct_rate", "abdomen_atlas"], "default": "ct_rate"}))
    add("ingest-abdomen", cmd_ingest_abdomen, "AbdomenAtlas 3.0 root -> manifest parquet",
        ("--root", {"default": ""}), ("--out", req))
    add("labels-abdomen", cmd_labels_abdomen, "AbdomenAtlas label maps + RadGPT lesion labels for one shard",
        ("--manifest", req), ("--shard", {"type": int, **req}), ("--out", req))
    add("abdomen-qc", cmd_abdomen_qc, "AbdomenAtlas lesion-label and missing-class tables", ("--shards", many),
        ("--out", req))
    add("ingest", cmd_ingest, "CT-RATE root -> manifest parquet (+ volume files no report row names)",
        ("--root", {"default": ""}), ("--out", req), ("--unlisted", req))
    add("pseudolabel", cmd_pseudolabel, "run one anatomy labeler over one shard", ("--manifest", req),
        ("--shard", {"type": int, **req}), ("--labeler", req), ("--out", req))
    add("label-qc", cmd_label_qc, "per-class tables (and Dice against a reference) for one labeler",
        ("--labeler", req), ("--shards", many), ("--reference", {"nargs": "*", "default": []}),
        ("--granularity", {"default": "C"}), ("--out", req))
    add("labels", cmd_labels, "merge label maps for one shard", ("--manifest", req), ("--shard", {"type": int, **req}),
        ("--sources", many), ("--granularities", many), ("--out", req))
    add("stage1-cases", cmd_stage1_cases, "manifest -> the Stage 1 case list (same for every granularity)",
        ("--manifest", req), ("--out", req))
    add("preprocess", cmd_preprocess, "resample/normalise one shard", ("--manifest", req),
        ("--shard", {"type": int, **req}), ("--out", req))
    add("tokenizer", cmd_tokenizer, "train the BPE tokenizer on training reports", ("--manifest", req),
        ("--out", req))
    add("nnunet-export", cmd_nnunet_export, "export one granularity as an nnU-Net raw dataset",
        ("--manifest", req), ("--labels", many), ("--granularity", req), ("--out", req))
    add("stage1", cmd_stage1, "segmentation pretraining with nnU-Net", ("--raw", req), ("--work", req),
        ("--out", req))
    add("stage1-import", cmd_stage1_import, "use a standalone nnU-Net run's checkpoint_final.pth as Stage 1",
        ("--checkpoint", req), ("--out", req))
    add("stage2", cmd_stage2, "classification pretraining (selection on a hold-out of the training split)",
        ("--manifest", req), ("--preprocessed", many), ("--init", {"default": ""}), ("--out", req))
    add("stage3", cmd_stage3, "report-generation training", ("--manifest", req), ("--preprocessed", many),
        ("--tokenizer", req), ("--init", {"default": ""}), ("--experiment", req), ("--out", req))
    add("generate", cmd_generate, "generate reports", ("--manifest", req), ("--preprocessed", many),
        ("--model", req), ("--split", {"default": "valid"}), ("--out", req))
    add("evaluate", cmd_evaluate, "score generated reports", ("--reports", req), ("--manifest", req),
        ("--out", req))
    add("params", cmd_params, "print the parameter count of every model part for the config")
    add("baseline", cmd_baseline, "most-frequent-label-set baseline", ("--manifest", req), ("--out", req))
    add("tables", cmd_tables, "paper-shaped result tables (Tables 2-5) for the experiments in `run`",
        ("--metrics-dir", req), ("--baseline", req), ("--published", {"default": "config/published.yaml"}),
        ("--abdomen", {"default": ""}), ("--out-dir", req))
    add("abdomen-eval", cmd_abdomen_eval, "AbdomenAtlas rows of Table 3 that need no model", ("--manifest", req),
        ("--labels", many), ("--out", req))
    add("figures", cmd_figures, "per-class F1, training curves, qualitative examples", ("--metrics-dir", req),
        ("--baseline", req), ("--models", many), ("--reports-dir", req), ("--preprocessed", many),
        ("--n-examples", {"type": int, "default": 3}), ("--out-dir", req))
    add("reconcile", cmd_reconcile, "every volume's fate per step: rejected.csv and the reconciliation table",
        ("--manifest", req), ("--unlisted", req), ("--stage1-cases", req), ("--preprocessed", many),
        ("--pseudolabels", many), ("--labels", many), ("--rejected", req), ("--table", req))
    add("report-html", cmd_report_html, "one HTML page linking tables and figures", ("--tables", many),
        ("--figures", many), ("--out", req))
    add("pull", cmd_pull, "dvc pull versioned results, then mark them up to date for Snakemake (run from the "
        "project root of a clone)", ("targets", {"nargs": "*", "help": "DVC stages (phases), each with the phases it depends on; default: all"}),
        ("--cores", {"type": int, "default": 1}))
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = build_parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    cfg = load_config(args.config, overrides)
    try:
        args.fn(args, cfg)
    except Exception as err:  # one line naming the problem, then the traceback in the log
        log.error("uvlm %s failed: %s", args.command, err)
        raise


if __name__ == "__main__":
    main()
