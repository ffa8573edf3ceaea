# Shared values and input functions. No rules here.
import json
import os
from pathlib import Path

import pandas as pd
import yaml

from uvlm.config import EFFECTIVE_CONFIG, check_extractor, dataset_view, trained_datasets, validate_config
from uvlm.data.roots import (
    ABDOMEN_CASES,
    ABDOMEN_DEMO,
    ABDOMEN_MANIFEST,
    CT_RATE_DEMO,
    CT_RATE_MANIFEST,
    STAGE1_CASES,
    UNLISTED_VOLUMES,
    manifest_path,
    training_manifest_path,
)
from uvlm.experiments import Plan, encoder_init_dir, experiments, features_dir, stage2_init_dir
from uvlm.labels.label_map import load_label_map
from uvlm.labels.radgpt import LESION_ORGANS
from uvlm.io import write_json
from uvlm.pseudolabel import GPU_BACKENDS
from uvlm.pseudolabel.reference import qc_reference
from uvlm.steps import step_params

validate_config(config)
DATASETS = trained_datasets(config)  # the datasets that go through the three stages
VIEWS = {d: dataset_view(config, d) for d in DATASETS}  # the config each dataset's steps read
for _view in VIEWS.values():  # scoring needs its model folder: stop before any job, not at the end
    check_extractor(_view["evaluation"])
# What `all` builds and which model each experiment starts from, per dataset: uvlm/experiments.py says it once.
PLANS = {d: Plan.from_config(VIEWS[d], d) for d in DATASETS}
CT_RATE = "ct_rate" in DATASETS  # ct_rate_enabled
PLAN = PLANS.get("ct_rate")  # CT-RATE's plan (Table 2, figures), None when it is off
CSV_DATASETS = list(config["csv_datasets"])  # your own data (uvlm/data/csv_manifest.py)
# Datasets whose label maps come from per-class masks shipped with them (not from pseudo-labels).
MASKED_DATASETS = [d for d in DATASETS if d == "abdomen_atlas"
                   or (d in CSV_DATASETS and config["csv_datasets"][d]["source"].get("mask_column"))]
EXPERIMENTS = experiments(config)  # every configured experiment: each can be built alone


def write_effective_config():
    """The effective config (config file + --config overrides) that every `uvlm` call reads, written when a
    run starts (not by a dry run) and only when it changed, so its timestamp never triggers reruns; each
    rule's `reads` params (uvlm/steps.py) are what make Snakemake rerun exactly the affected jobs."""
    eff = Path(EFFECTIVE_CONFIG)
    if not eff.is_file() or json.loads(eff.read_text()) != config:
        write_json(config, eff)


def step_reads(step):
    """A rule's params: the config values its step reads (uvlm/steps.py) in its dataset's view of the config,
    wildcards filled in."""
    return lambda wc: step_params(VIEWS[wc.dataset] if "dataset" in wc.keys() else config, step, **dict(wc.items()))


DEMO_ROOT = CT_RATE_DEMO
CT_RATE_ROOT = config["ct_rate_root"] or DEMO_ROOT
MANIFEST = CT_RATE_MANIFEST
ABDOMEN_DEMO_ROOT = ABDOMEN_DEMO
LABELERS = config["pseudolabels"]["labelers"]
QC_REFERENCE = qc_reference(config)  # the labeler QC scores against, or none (and why)
# Granularities whose Stage 1 encoder comes from a standalone nnU-Net run instead of training here.
_imported = [g for g, path in config["stage1"]["import_checkpoints"].items() if path]
IMPORTED_GRANULARITIES = "|".join(_imported) if _imported else "(?!)"


def dvc_out_dirs():
    """Folders dvc.yaml versions; created at the start of a run so that `dvc commit` finds each one,
    even when a config leaves it empty (no Stage 1 experiment, no AbdomenAtlas, rules extractor)."""
    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"] if Path("dvc.yaml").is_file() else {}
    outs = [next(iter(o)) if isinstance(o, dict) else o for st in stages.values() for o in st.get("outs", [])]
    return [o for o in outs if not Path(o).suffix]


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(names) if names else "(?!)"


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d+",
    granularity="|".join(config["stage1"]["dataset_ids"]),
    experiment="|".join(config["experiments"]),
    labeler="|".join(LABELERS),
    init="none|" + "|".join(f"seg_{g}" for g in config["stage1"]["dataset_ids"]),


def ct_rate_root_input(wildcards):
    """The demo folder is a rule's output; a real CT-RATE copy is an existing, unchanging input."""
    return DEMO_ROOT if not config["ct_rate_root"] else ancient(config["ct_rate_root"])


def abdomen_root_input(wildcards):
    root = config["abdomen_atlas"]["root"]
    return ancient(root) if root else ABDOMEN_DEMO_ROOT


def abdomen_label_shards(wildcards):
    return mask_label_shards_of("abdomen_atlas")


def mask_label_shards_of(dataset):
    """Label-map shards of a dataset with masks: one per shard of its manifest."""
    return [f"results/labels/{dataset}/shard_{k}" for k in shard_ids(ingested(dataset))]


def label_map_of(dataset):
    """The label map (config/labels/*.yaml) that makes a dataset's Stage 1 granularities."""
    if dataset == "ct_rate":
        return config["label_map"]
    if dataset == "abdomen_atlas":
        return config["abdomen_atlas"]["label_map"]
    return config["csv_datasets"][dataset]["source"]["label_map"]


def csv_source(wildcards):
    """A CSV dataset's table: editing it reruns its ingest (and what changed downstream)."""
    return config["csv_datasets"][wildcards.dataset]["source"]["csv"]


def abdomen_outputs():
    """AbdomenAtlas tables built by `all` when the dataset is enabled."""
    if not config["abdomen_atlas"]["enabled"]:
        return []
    return ["results/qc/abdomen_atlas/lesion_labels.md", "results/qc/abdomen_atlas/missing_classes.md"]


def shard_ids(manifest):
    """Shard indices of a manifest a checkpoint has written."""
    shards = pd.read_parquet(manifest, columns=["shard"])["shard"]
    return range(int(shards.max()) + 1 if len(shards) else 0)


def ingested(dataset):
    """The manifest a dataset's ingest checkpoint wrote (volumes, reports; CT-RATE's and a CSV's with labels)."""
    if dataset == "ct_rate":
        return checkpoints.ingest.get().output.manifest
    if dataset == "abdomen_atlas":
        return checkpoints.ingest_abdomen.get().output[0]
    return checkpoints.ingest_csv.get(dataset=dataset).output[0]


def ingest_manifest(wildcards):
    return ingested(wildcards.dataset)


def training_manifest(wildcards):
    """The manifest Stages 2 and 3, generation and scoring read: with the dataset's label set."""
    return training_manifest_path(wildcards.dataset)


def preprocessed_of(dataset):
    return [f"results/preprocessed/{dataset}/shard_{k}" for k in shard_ids(ingested(dataset))]


def preprocessed_shards(wildcards):
    return preprocessed_of(wildcards.dataset)


def ct_rate_label_shards(wildcards):
    return [f"results/labels/ct_rate/shard_{k}" for k in shard_ids(checkpoints.stage1_cases.get().output[0])]


def label_shards(wildcards):
    """A dataset's label-map shards: CT-RATE's over its Stage 1 case list, the others' over their manifest."""
    if wildcards.dataset == "ct_rate":
        return ct_rate_label_shards(wildcards)
    return mask_label_shards_of(wildcards.dataset)


def stage1_case_list(wildcards):
    """The cases nnU-Net's export may take (it keeps the training split's labelled ones)."""
    return STAGE1_CASES if wildcards.dataset == "ct_rate" else manifest_path(wildcards.dataset)


def launcher(stage):
    """Training jobs with several GPUs run one process per GPU under torchrun (DDP)."""
    n = config["gpus"][stage]
    return f"torchrun --standalone --nproc_per_node={n} --no-python " if n > 1 else ""


def labeler_gpus(name):
    """Model-based labelers get one GPU per job; the classical and folder ones run on CPU."""
    return 1 if LABELERS[name]["backend"] in GPU_BACKENDS else 0


def pseudolabel_shards(labeler):
    return [f"results/pseudolabels/ct_rate/{labeler}/shard_{k}"
            for k in shard_ids(checkpoints.stage1_cases.get().output[0])]


def source_shards(wildcards):
    """The anatomy sources of one label shard: that shard of every source labeler."""
    return [f"results/pseudolabels/ct_rate/{s}/shard_{wildcards.shard}" for s in config["pseudolabels"]["sources"]]


def qc_reference_shards(labeler):
    """Shards of the reference labeler a source's QC is scored against: none when uvlm.pseudolabel.reference
    drops it (a folder labeler whose folder is absent, e.g. anatomy_masks/ on a real CT-RATE copy)."""
    ref = QC_REFERENCE.labeler
    return pseudolabel_shards(ref) if ref and ref != labeler else []


def qc_tables():
    """QC tables of every source labeler (scored against the reference when there is one), with CT-RATE on."""
    return [f"results/qc/ct_rate/{s}/classes.md" for s in config["pseudolabels"]["sources"]] if CT_RATE else []


def needed_granularities():
    """Stage 1 granularities CT-RATE's plan uses (labels are built only for these)."""
    return list(PLAN.stage1 if PLAN else ()) or ["C"]


def stage2_init(wildcards):
    """Stage 2 of cls_none starts from scratch; cls_seg_X from Stage 1 of granularity X."""
    d = stage2_init_dir(wildcards.dataset, wildcards.init)
    return [d] if d else []


def stage3_init(wildcards):
    """Where an experiment's encoder comes from: Stage 2, Stage 1, or nowhere (random init)."""
    d = EXPERIMENTS[wildcards.experiment].init_dir(wildcards.dataset)
    return [d] if d else []


def frozen_features(split):
    """The stored features (uvlm.train.feature_cache) a frozen experiment's Stage 3 (split train) or generation
    (split valid) reads instead of running its encoder; none when the encoder is fine-tuned. One folder per
    encoder and visual-token stage, shared by the experiments (it says so when it stores nothing)."""

    def inputs(wildcards):
        d = EXPERIMENTS[wildcards.experiment].features_dir(wildcards.dataset, split)
        return [d] if d else []

    return inputs


def features_init(wildcards):
    """The model folder whose encoder makes a features folder (none: the random encoder of the seed)."""
    d = encoder_init_dir(wildcards.dataset, wildcards.encoder)
    return [d] if d else []


# The tables of the `tables` job: CT-RATE's (Table 2 `main`, Tables 4-5) and AbdomenAtlas's.
TABLES = (["main", "table4_classification", "table5_ablations"] if CT_RATE else []) + (
    ["table3_abdomen", "table4_classification_abdomen_atlas", "table5_ablations_abdomen_atlas"]
    if "abdomen_atlas" in DATASETS else [])
# Your own datasets' Tables 4 and 5, each built by its own `dataset_tables` job from its runs only (so
# `snakemake results/tables/table5_ablations_<name>.md` trains that dataset alone).
CSV_TABLES = [f"{t}_{d}" for d in CSV_DATASETS for t in ("table4_classification", "table5_ablations")]


def abdomen_metrics():
    return ["results/metrics/abdomen_atlas/reference.json"] if "abdomen_atlas" in DATASETS else []


def seg_detections():
    """Table 3's segmentation-based rows: AbdomenAtlas's Stage 1 networks whose classes include the lesions."""
    if "abdomen_atlas" not in DATASETS:
        return []
    label_map = config["abdomen_atlas"]["label_map"]
    lesions = [g for g in PLANS["abdomen_atlas"].stage1
               if set(LESION_ORGANS) <= {c.name for c in load_label_map(label_map, g).classes}]
    return [f"results/reports/abdomen_atlas/nnunet_seg_{g}" for g in lesions]


def run_stage2_dirs():
    """Stage 2 runs of every dataset's plan (Table 4 and the experiments' initialisations)."""
    return [d for plan in PLANS.values() for d in plan.stage2_dirs]


def run_stage1_dirs():
    """Stage 1 encoders of every dataset's plan."""
    return [d for plan in PLANS.values() for d in plan.stage1_dirs]


def run_model_dirs():
    """Every trained model folder behind CT-RATE's plan (training-curve figure)."""
    return PLAN.model_dirs if PLAN else []


def ct_rate_reconcile_args(wildcards, input):
    """The reconciliation's CT-RATE inputs (ingest, Stage 1 cases, pseudo-labels), with CT-RATE on."""
    if not CT_RATE:
        return ""
    return (f"--manifest {input.manifest} --unlisted {input.unlisted} --stage1-cases {input.stage1_cases} "
            f"--pseudolabels {' '.join(input.pseudolabels)}")


def run_outputs(kind, dataset=None):
    """Every planned experiment's file of one kind (reports, metrics) per dataset: results/<kind>/<d>/<name>."""
    ext = {"reports": "parquet", "metrics": "json"}[kind]
    datasets = [d for d in ([dataset] if dataset else DATASETS) if d in PLANS]  # none for a dataset that is off
    return [f"results/{kind}/{d}/{name}.{ext}" for d in datasets for name in PLANS[d].names]


def run_metrics():
    return run_outputs("metrics")
