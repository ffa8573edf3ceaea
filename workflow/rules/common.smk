# Shared values and input functions. No rules here.
import json
import os
from pathlib import Path

import pandas as pd
import yaml

from uvlm.config import EFFECTIVE_CONFIG, check_extractor, validate_config
from uvlm.data.roots import (
    ABDOMEN_DEMO,
    ABDOMEN_MANIFEST,
    CT_RATE_DEMO,
    CT_RATE_MANIFEST,
    STAGE1_CASES,
    UNLISTED_VOLUMES,
)
from uvlm.experiments import Plan, experiments, stage1_dir, stage2_init_dir
from uvlm.io import write_json
from uvlm.pseudolabel import GPU_BACKENDS
from uvlm.pseudolabel.reference import qc_reference
from uvlm.steps import step_params

validate_config(config)
check_extractor(config["evaluation"])  # scoring needs its model folder: stop before any job, not at the end
# What `all` builds and which model each experiment starts from: uvlm/experiments.py says it once.
PLAN = Plan.from_config(config)
EXPERIMENTS = experiments(config)  # every configured experiment: each can be built alone


def write_effective_config():
    """The effective config (config file + --config overrides) that every `uvlm` call reads, written when a
    run starts (not by a dry run) and only when it changed, so its timestamp never triggers reruns; each
    rule's `reads` params (uvlm/steps.py) are what make Snakemake rerun exactly the affected jobs."""
    eff = Path(EFFECTIVE_CONFIG)
    if not eff.is_file() or json.loads(eff.read_text()) != config:
        write_json(config, eff)


def step_reads(step):
    """A rule's params: the config values its step reads (uvlm/steps.py), wildcards filled in."""
    return lambda wc: step_params(config, step, **dict(wc.items()))


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


wildcard_constraints:
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
    return [f"results/labels/abdomen_atlas/shard_{k}" for k in shard_ids(checkpoints.ingest_abdomen)]


def abdomen_outputs():
    """AbdomenAtlas tables built by `all` when the dataset is enabled."""
    if not config["abdomen_atlas"]["enabled"]:
        return []
    return ["results/qc/abdomen_atlas/lesion_labels.md", "results/qc/abdomen_atlas/missing_classes.md"]


def shard_ids(ingest=None):
    """Shard indices, known once a manifest checkpoint (CT-RATE's ingest by default) has written it."""
    manifest = (ingest or checkpoints.ingest).get().output[0]
    shards = pd.read_parquet(manifest, columns=["shard"])["shard"]
    return range(int(shards.max()) + 1 if len(shards) else 0)


def preprocessed_shards(wildcards):
    return [f"results/preprocessed/ct_rate/shard_{k}" for k in shard_ids()]


def label_shards(wildcards):
    return [f"results/labels/ct_rate/shard_{k}" for k in shard_ids(checkpoints.stage1_cases)]


def launcher(stage):
    """Training jobs with several GPUs run one process per GPU under torchrun (DDP)."""
    n = config["gpus"][stage]
    return f"torchrun --standalone --nproc_per_node={n} --no-python " if n > 1 else ""


def labeler_gpus(name):
    """Model-based labelers get one GPU per job; the classical and folder ones run on CPU."""
    return 1 if LABELERS[name]["backend"] in GPU_BACKENDS else 0


def pseudolabel_shards(labeler):
    return [f"results/pseudolabels/ct_rate/{labeler}/shard_{k}" for k in shard_ids(checkpoints.stage1_cases)]


def source_shards(wildcards):
    """The anatomy sources of one label shard: that shard of every source labeler."""
    return [f"results/pseudolabels/ct_rate/{s}/shard_{wildcards.shard}" for s in config["pseudolabels"]["sources"]]


def qc_reference_shards(labeler):
    """Shards of the reference labeler a source's QC is scored against: none when uvlm.pseudolabel.reference
    drops it (a folder labeler whose folder is absent, e.g. anatomy_masks/ on a real CT-RATE copy)."""
    ref = QC_REFERENCE.labeler
    return pseudolabel_shards(ref) if ref and ref != labeler else []


def qc_tables():
    """QC tables of every source labeler (scored against the reference when there is one)."""
    return [f"results/qc/ct_rate/{s}/classes.md" for s in config["pseudolabels"]["sources"]]


def needed_granularities():
    """Stage 1 granularities the plan uses (labels are built only for these)."""
    return list(PLAN.stage1) or ["C"]


def stage2_init(wildcards):
    """Stage 2 of cls_none starts from scratch; cls_seg_X from Stage 1 of granularity X."""
    d = stage2_init_dir(wildcards.init)
    return [d] if d else []


def stage3_init(wildcards):
    """Where an experiment's encoder comes from: Stage 2, Stage 1, or nowhere (random init)."""
    d = EXPERIMENTS[wildcards.experiment].init_dir
    return [d] if d else []


TABLES = ["main", "table4_classification", "table5_ablations"] + (
    ["table3_abdomen"] if config["abdomen_atlas"]["enabled"] else [])


def abdomen_metrics():
    return ["results/metrics/abdomen_atlas_reference.json"] if config["abdomen_atlas"]["enabled"] else []


def run_stage2_dirs():
    """Stage 2 runs of the plan (Table 4 and the experiments' initialisations)."""
    return [r.dir for r in PLAN.stage2]


def run_stage1_dirs():
    """Stage 1 encoders of the plan."""
    return [stage1_dir(g) for g in PLAN.stage1]


def run_model_dirs():
    """Every trained model folder behind the plan (training-curve figure)."""
    return PLAN.model_dirs


def run_metrics():
    return [f"results/metrics/{name}.json" for name in PLAN.names]
