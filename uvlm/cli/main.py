"""`uvlm` command line: one subcommand per pipeline step, each a thin wrapper over a Python function.

Every subcommand takes --config (the YAML or JSON config; Snakemake passes the effective config it
ran with), so any step can be rerun and debugged for one shard or one experiment without Snakemake.
A step's function is `cmd_<step>` in uvlm/cli/<phase>.py (uvlm/steps.py names the phase).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from uvlm.config import DEFAULT_CONFIG, dataset_view, load_config, trained_datasets
from uvlm.steps import STEPS, function_path

log = logging.getLogger("uvlm")
RECORD_READS = "UVLM_RECORD_READS"  # a JSONL file: each command appends the config keys it read (tests)

REQ = {"required": True}
MANY = {"nargs": "+", "required": True}
SHARD = ("--shard", {"type": int, **REQ})
# subcommand -> (help, arguments)
COMMANDS: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "demo-data": ("write the synthetic CT-RATE-layout demo dataset", [("out", {})]),
    "demo-abdomen": ("write the synthetic AbdomenAtlas-layout demo dataset", [("out", {})]),
    "ingest": ("CT-RATE root -> manifest parquet (+ volume files no report row names)",
               [("--root", {"default": ""}), ("--out", REQ), ("--unlisted", REQ)]),
    "ingest-abdomen": ("AbdomenAtlas 3.0 root -> manifest parquet", [("--root", {"default": ""}), ("--out", REQ)]),
    "ingest-csv": ("your own dataset's CSV (csv_datasets.<--dataset>.source) -> manifest parquet", [("--out", REQ)]),
    "stage1-cases": ("manifest -> the Stage 1 case list (same for every granularity)",
                     [("--manifest", REQ), ("--out", REQ)]),
    "pseudolabel": ("run one anatomy labeler over one shard",
                    [("--manifest", REQ), SHARD, ("--labeler", REQ), ("--out", REQ)]),
    "pseudolabel-qc": ("per-class tables (and Dice against a reference) for one labeler",
                       [("--labeler", REQ), ("--shards", MANY), ("--reference", {"nargs": "*", "default": []}),
                        ("--label-map", REQ), ("--granularity", {"default": "C"}), ("--out", REQ)]),
    "labels": ("merge label maps for one shard", [("--manifest", REQ), SHARD, ("--sources", MANY),
                                                  ("--label-map", REQ), ("--granularities", MANY), ("--out", REQ)]),
    "mask-labels": ("label maps from per-class masks (AbdomenAtlas, a CSV's mask folders) + RadGPT lesion labels "
                    "for one shard", [("--manifest", REQ), SHARD, ("--label-map", REQ), ("--out", REQ)]),
    "abdomen-cases": ("AbdomenAtlas manifest + RadGPT lesion labels -> the manifest Stages 2-3 and scoring read",
                      [("--manifest", REQ), ("--labels", MANY), ("--out", REQ)]),
    "abdomen-qc": ("AbdomenAtlas lesion-label and missing-class tables", [("--shards", MANY), ("--out", REQ)]),
    "preprocess": ("resample/normalise one shard", [("--manifest", REQ), SHARD, ("--out", REQ),
                                                     ("--workers", {"type": int, "default": 1,
                                                                    "help": "processes (volumes in parallel)"})]),
    "nnunet-export": ("export one granularity as an nnU-Net raw dataset",
                      [("--manifest", REQ), ("--labels", MANY), ("--granularity", REQ), ("--out", REQ)]),
    "stage1": ("segmentation pretraining with nnU-Net", [("--raw", REQ), ("--work", REQ), ("--out", REQ)]),
    "stage1-import": ("use a standalone nnU-Net run's checkpoint_final.pth as Stage 1",
                      [("--checkpoint", REQ), ("--out", REQ)]),
    "stage2": ("classification pretraining (selection on a hold-out of the training split)",
               [("--manifest", REQ), ("--preprocessed", MANY), ("--init", {"default": ""}), ("--out", REQ)]),
    "tokenizer": ("train the BPE tokenizer on training reports", [("--manifest", REQ), ("--out", REQ)]),
    "stage3-features": ("a frozen encoder's features of one split, stored once for Stage 3 and generation",
                        [("--manifest", REQ), ("--preprocessed", MANY), ("--init", {"default": ""}),
                         ("--depth", {"type": int, **REQ, "help": "the visual tokens' stage: 1 = the deepest"}),
                         ("--split", REQ), ("--out", REQ)]),
    "stage3": ("report-generation training", [("--manifest", REQ), ("--preprocessed", MANY), ("--tokenizer", REQ),
                                              ("--init", {"default": ""}), ("--experiment", REQ),
                                              ("--features", {"default": "", "help": "stage3-features folder "
                                                              "(training split) of a frozen encoder"}),
                                              ("--out", REQ)]),
    "generate": ("generate reports", [("--manifest", REQ), ("--preprocessed", MANY), ("--model", REQ),
                                      ("--split", {"default": "valid"}),
                                      ("--features", {"default": "", "help": "stage3-features folder of the "
                                                      "split, from the model's frozen encoder"}),
                                      ("--out", REQ)]),
    "seg-detect": ("lesion labels of the scored split from a Stage 1 network's segmentations (RadGPT rule)",
                   [("--manifest", REQ), ("--model", REQ), ("--label-map", REQ), ("--granularity", REQ),
                    ("--split", {"default": "valid"}), ("--out", REQ)]),
    "evaluate": ("score generated reports", [("--reports", REQ), ("--manifest", REQ), ("--out", REQ)]),
    "baseline": ("most-frequent-label-set baseline", [("--manifest", REQ), ("--out", REQ)]),
    "abdomen-eval": ("AbdomenAtlas rows of Table 3 that need no model (run with --dataset abdomen_atlas)",
                     [("--manifest", REQ), ("--out", REQ)]),
    "reconcile": ("every volume's fate per step: rejected.csv and the reconciliation table",
                  [("--manifest", {"default": "", "help": "CT-RATE's (none when CT-RATE is off)"}),
                   ("--unlisted", {"default": ""}), ("--stage1-cases", {"default": ""}),
                   ("--preprocessed", {"nargs": "*", "default": []}), ("--pseudolabels", {"nargs": "*", "default": []}),
                   ("--labels", {"nargs": "*", "default": []}),
                   ("--datasets", {"nargs": "*", "default": [], "help": "DATASET=MANIFEST of each dataset besides "
                                   "CT-RATE (its Stage 2-3 manifest); its shards are among --preprocessed and --labels"}),
                   ("--rejected", REQ), ("--table", REQ)]),
    "tables": ("paper-shaped result tables (Tables 2-5) for the experiments in `run`",
               [("--metrics", MANY), ("--stage2", {"nargs": "*", "default": []}), ("--baseline", {"default": ""}),
                ("--published", {"default": "config/published.yaml"}), ("--abdomen", {"default": ""}),
                ("--detections", {"nargs": "*", "default": []}),
                ("--out-dir", REQ)]),
    "dataset-tables": ("Tables 4 and 5 of your own dataset (run with --dataset <name>)",
                       [("--metrics", MANY), ("--stage2", {"nargs": "*", "default": []}),
                        ("--published", {"default": "config/published.yaml"}), ("--out-dir", REQ)]),
    "figures": ("per-class F1, training curves, qualitative examples",
                [("--metrics", MANY), ("--baseline", REQ), ("--models", MANY), ("--reports", MANY),
                 ("--preprocessed", MANY), ("--n-examples", {"type": int, "default": 3}), ("--out-dir", REQ)]),
    "report-html": ("one HTML page linking tables and figures", [("--tables", MANY),
                                                                 ("--figures", {"nargs": "*", "default": []}),
                                                                 ("--out", REQ)]),
    "params": ("print the parameter count of every model part for the config", []),
    "pull": ("dvc pull versioned results, then mark them up to date for Snakemake (run from the project root of "
             "a clone)", [("targets", {"nargs": "*", "help": "DVC stages (phases), each with the phases it "
                                                              "depends on; default: all"}),
                          ("--cores", {"type": int, "default": 1})]),
}


def command_function(name: str):
    """The function behind a subcommand: cmd_<name> in its phase's module (uvlm.cli.tools for the rest)."""
    module, function = function_path(name) if name in STEPS else ("uvlm.cli.tools", f"cmd_{name}")
    return getattr(importlib.import_module(module), function)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uvlm", description=__doc__)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline config (YAML/JSON)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a top-level config key, e.g. --set ct_rate_root='\"/data/CT-RATE\"'")
    p.add_argument("--dataset", default="", help="the dataset a per-dataset step works on (ct_rate, abdomen_atlas, a csv_datasets name): "
                   "it reads that dataset's view of the config (uvlm.config.dataset_view)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_, args) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        for flag, kw in args:
            sp.add_argument(flag, **kw)
    return p


def _record(path: str, args: argparse.Namespace, reads: set[str]) -> None:
    """Append what this command read and loaded to the UVLM_RECORD_READS file (one JSON line)."""
    wildcards = {k: getattr(args, k) for k in ("dataset", "experiment", "labeler", "granularity") if getattr(args, k, None)}
    line = json.dumps({"command": args.command, "wildcards": wildcards, "reads": sorted(reads),
                       "modules": sorted(m for m in sys.modules if m == "uvlm" or m.startswith("uvlm."))})
    with open(path, "a") as fh:
        fh.write(line + "\n")


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
    # every trained dataset's view of the config (steps that span datasets, e.g. tables, read args.views)
    args.views = {d: dataset_view(cfg, d) for d in trained_datasets(cfg)}
    if args.dataset:
        cfg = dataset_view(cfg, args.dataset)
    record = os.environ.get(RECORD_READS)
    if record:
        from uvlm.config_reads import RecordingDict, recording

        cfg, reads = recording(cfg)
        args.views = {d: RecordingDict(v, reads) for d, v in args.views.items()}
    try:
        command_function(args.command)(args, cfg)
    except Exception as err:  # one line naming the problem, then the traceback in the log
        log.error("uvlm %s failed: %s", args.command, err)
        raise
    if record:
        _record(record, args, reads)
