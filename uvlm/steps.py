"""Every pipeline step, declared once: the config keys it reads and the DVC phase that versions its outputs.

A step is a `uvlm` subcommand run by the Snakemake rule of the same name (`pseudolabel` by
`pseudolabel_shard`: per-shard rules end in `_shard`). Its function is `cmd_<step>` in `uvlm/cli/<phase>.py`.

- The rule passes `reads` as params (workflow/rules/common.smk: `step_params`), so Snakemake reruns
  exactly the steps whose keys changed, and their dependants.
- dvc.yaml is generated from this table (`python -m uvlm.dvc_stages > dvc.yaml`): a phase's params are
  its steps' keys, its code deps the package files its steps import (uvlm.step_code follows the imports).
- tests/test_steps.py checks both against what the steps really read and import in a run.

A key names a config value by its dotted path; `{experiment}`, `{labeler}`, `{granularity}` and `{dataset}` are
filled from the rule's wildcard (the subcommand's argument of that name), so one experiment's entry is
one experiment's input. Keys of a whole section cover everything in it. A per-dataset step (its rule has
a `{dataset}` wildcard, its call `--dataset`) reads the keys in that dataset's view of the config
(uvlm.config.dataset_view: AbdomenAtlas's `abdomen_atlas.overrides` over the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# DVC phases in run order; each is a `phase_<name>` target of the workflow and a stage of dvc.yaml.
PHASES = ("data", "labels", "preprocess", "stage1", "stage2", "stage3", "generate", "report")
RUN = ("seed", "device", "threads")  # what every training or inference job reads besides its section


@dataclass(frozen=True)
class Step:
    phase: str
    reads: tuple[str, ...] = ()   # config keys (dotted paths) the step's outputs depend on
    files: tuple[str, ...] = ()   # repository files outside the package it reads (rules pass them as input)


STEPS: dict[str, Step] = {
    # data
    "demo-data": Step("data", ("seed", "demo")),
    "demo-abdomen": Step("data", ("seed", "abdomen_atlas.demo")),
    "ingest": Step("data", ("shard_size", "rexgrounding_root")),
    "ingest-abdomen": Step("data", ("seed", "shard_size", "abdomen_atlas.valid_fraction",
                                    "abdomen_atlas.report_column")),
    "ingest-csv": Step("data", ("shard_size", "csv_datasets.{dataset}.source")),
    # labels
    "stage1-cases": Step("labels", ("seed", "shard_size", "lesions_complete", "stage1.max_cases")),
    "pseudolabel": Step("labels", ("device", "threads", "ct_rate_root", "on_volume_error", "pseudolabels.montages",
                                   "pseudolabels.labelers.{labeler}")),
    "pseudolabel-qc": Step("labels", ("ct_rate_root", "pseudolabels.reference", "pseudolabels.labelers"),
                           ("config/labels",)),
    "labels": Step("labels", ("lesions_complete", "on_volume_error"), ("config/labels",)),
    "mask-labels": Step("labels", ("on_volume_error", "abdomen_atlas.lesion_min_mm3"), ("config/labels",)),
    "abdomen-cases": Step("labels"),
    "abdomen-qc": Step("labels"),
    # preprocess
    "preprocess": Step("preprocess", ("preprocess", "on_volume_error")),
    # Stage 1
    "nnunet-export": Step("stage1", ("seed", "stage1.dataset_ids.{granularity}")),
    "stage1": Step("stage1", (*RUN, "encoder", "stage1", "gpus.stage1")),
    "stage1-import": Step("stage1", ("encoder",)),
    # Stage 2
    "stage2": Step("stage2", (*RUN, "loader_workers", "encoder", "stage2", "model_selection", "gpus.stage2")),
    # Stage 3
    "tokenizer": Step("stage3", ("stage3.tokenizer_dir", "stage3.vocab_size")),
    "stage3-features": Step("stage3", (*RUN, "encoder", "preprocess.grid", "stage3.batch_size",
                                       "stage3.feature_cache_gb")),
    "stage3": Step("stage3", (*RUN, "loader_workers", "encoder", "preprocess.grid", "stage3", "model_selection",
                              "gpus.stage3", "experiments.{experiment}")),
    # generate
    "generate": Step("generate", (*RUN, "generate")),
    "seg-detect": Step("generate", ("device", "threads", "on_volume_error", "abdomen_atlas.lesion_min_mm3"),
                       ("config/labels",)),
    # report
    "evaluate": Step("report", ("seed", "evaluation"), ("config/prompts",)),
    "baseline": Step("report", ("seed", "evaluation"), ("config/prompts",)),
    "abdomen-eval": Step("report", ("evaluation",), ("config/prompts",)),
    "reconcile": Step("report"),
    "tables": Step("report", ("ct_rate_root", "abdomen_atlas.root", "abdomen_atlas.overrides", "main_experiment",
                              "run", "stage2_runs", "experiments", "encoder", "preprocess.grid",
                              "evaluation.extractor"),
                   ("config/published.yaml",)),
    "dataset-tables": Step("report", ("run", "stage2_runs", "experiments", "encoder", "preprocess.grid"),
                           ("config/published.yaml",)),
    "figures": Step("report", ("run", "stage2_runs", "experiments", "encoder", "preprocess.grid")),
    "report-html": Step("report", ("ct_rate_root", "run")),
}

# Subcommands that are not pipeline steps (no rule runs them; they write no versioned result).
TOOLS = ("params", "pull")


def rule_name(step: str) -> str:
    """The Snakemake rule that runs a step: its name with '_' (per-shard rules add '_shard')."""
    return step.replace("-", "_")


def function_path(step: str) -> tuple[str, str]:
    """(module, function) of a step's `uvlm` subcommand."""
    return f"uvlm.cli.{STEPS[step].phase}", f"cmd_{step.replace('-', '_')}"


def keys(step: str, **wildcards: str) -> list[str]:
    """The step's config keys, with {experiment}, {labeler} or {granularity} filled in."""
    return [k.format(**wildcards) for k in STEPS[step].reads]


def key_prefix(key: str) -> str:
    """The part of a key before its first wildcard: what a phase (all experiments at once) reads."""
    return re.sub(r"\.?\{[^}]+\}.*$", "", key)


def lookup(cfg: dict[str, Any], key: str) -> Any:
    """The config value a dotted key names."""
    value: Any = cfg
    for part in key.split("."):
        value = value[part]
    return value


def step_params(cfg: dict[str, Any], step: str, **wildcards: str) -> dict[str, Any]:
    """{key: value} of the step's config keys: a rule's params, so a changed value reruns the step."""
    return {k: lookup(cfg, k) for k in keys(step, **wildcards)}


def phase_keys(phase: str) -> list[str]:
    """The config keys a DVC phase reads: its steps' keys, without wildcards, none covered by another."""
    found = {key_prefix(k) for s in STEPS.values() if s.phase == phase for k in s.reads}
    return sorted(k for k in found if not any(k.startswith(o + ".") for o in found))


def covered(key: str, declared: list[str]) -> bool:
    """A key read is covered when it or a section holding it is declared."""
    return any(key == d or key.startswith(d + ".") for d in declared)
