"""Load and validate the pipeline configuration (one YAML file, checked against one JSON schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
# Relative to the project root: the config a Snakemake run used (written by the workflow, committed
# beside dvc.lock, read back by `uvlm pull`).
EFFECTIVE_CONFIG = "results/config/effective.json"


# Sections a config file replaces whole instead of key by key: catalogues whose entries a config names for
# itself (the paper's 17 experiments, a cluster's labelers); merged, the demo's entries would join them.
REPLACED_WHOLE = ("experiments", "pseudolabels.labelers", "abdomen_atlas.overrides", "csv_datasets")
# The datasets with a reader of their own; CT-RATE goes through every stage when `ct_rate_enabled`,
# AbdomenAtlas when `abdomen_atlas.enabled`, and each entry of `csv_datasets` (your own data) under its name.
BUILT_IN_DATASETS = ("ct_rate", "abdomen_atlas")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def trained_datasets(cfg: dict[str, Any]) -> list[str]:
    """The datasets that go through the three stages with this config."""
    return [*(["ct_rate"] if cfg["ct_rate_enabled"] else []), *(["abdomen_atlas"] if cfg["abdomen_atlas"]["enabled"] else []),
            *cfg["csv_datasets"]]


def overrides_key(dataset: str) -> str:
    """The config key holding what differs for a dataset's steps."""
    return "abdomen_atlas.overrides" if dataset == "abdomen_atlas" else f"csv_datasets.{dataset}.overrides"


def dataset_view(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The config a dataset's steps read: for CT-RATE the config itself, for the others the config with their
    `overrides` on top (key by key, as a config file over the defaults; `abdomen_atlas.overrides`,
    `csv_datasets.<name>.overrides`). So every step reads `run`, `stage2`, `evaluation`... whatever the
    dataset, and one key says what differs for it."""
    if dataset == "ct_rate":
        return cfg
    if dataset == "abdomen_atlas":
        return with_defaults(cfg["abdomen_atlas"]["overrides"], cfg)
    if dataset in cfg["csv_datasets"]:
        return with_defaults(cfg["csv_datasets"][dataset]["overrides"], cfg)
    raise ConfigError(f"unknown dataset '{dataset}' (known: {', '.join([*BUILT_IN_DATASETS, *cfg['csv_datasets']])})")


def validate_config(cfg: dict[str, Any], views: bool = True) -> dict[str, Any]:
    """Validate against the schema and the cross-key rules the schema cannot express (and each dataset's view
    of the config the same way, naming the dataset)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(cfg, schema)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "<top>"
        raise ConfigError(f"config key '{where}': {err.message}") from None
    unknown = [name for name in cfg["run"] if name not in cfg["experiments"]]
    if unknown:
        raise ConfigError(f"config key 'run' names unknown experiments: {unknown}")
    enc = cfg["encoder"]
    n = len(enc["features_per_stage"])
    if len(enc["strides"]) != n or len(enc["n_blocks_per_stage"]) != n:
        raise ConfigError("config key 'encoder': features_per_stage, strides and n_blocks_per_stage differ in length")
    if len(enc["n_conv_per_stage_decoder"]) != n - 1:
        raise ConfigError("config key 'encoder/n_conv_per_stage_decoder' needs one entry per stage but the first")
    total_stride = 1
    for st in enc["strides"]:
        total_stride *= st
    if enc["strides"][0] != 1:
        raise ConfigError("config key 'encoder/strides': the first stage must have stride 1 (nnU-Net's "
                          "segmentation output has the resolution of the first stage)")
    for key, size in (("preprocess/grid", cfg["preprocess"]["grid"]), ("stage1/patch_size", cfg["stage1"]["patch_size"])):
        if any(s % total_stride for s in size):
            raise ConfigError(f"config key '{key}': {size} is not divisible by the encoder's total stride "
                              f"{total_stride} in every axis")
    _check_experiments(cfg)
    _check_labelers(cfg["pseudolabels"])
    if views and not trained_datasets(cfg):
        raise ConfigError("no dataset to run: ct_rate_enabled and abdomen_atlas/enabled are false and csv_datasets is "
                          "empty")
    for dataset in [d for d in trained_datasets(cfg) if d != "ct_rate"] if views else ():
        where = overrides_key(dataset).replace(".", "/")
        try:
            view = validate_config(dataset_view(cfg, dataset), views=False)
            _check_dataset(view, dataset)
        except ConfigError as err:
            raise ConfigError(f"{dataset} (config key '{where}' over the rest): {err}") from None
    return cfg


def _check_dataset(view: dict[str, Any], dataset: str) -> None:
    """What a dataset's own data must provide for the experiments its view runs, and the text extractor for
    its label set: found here, before any job, rather than as a failure at scoring time."""
    from uvlm.data.csv_manifest import CsvDatasetConfig
    from uvlm.evaluation.extract_rules import LABEL_SETS
    from uvlm.experiments import Plan

    source = None
    if dataset in view["csv_datasets"]:
        try:
            source = CsvDatasetConfig.from_config(view["csv_datasets"][dataset]["source"])
        except ValueError as err:
            raise ConfigError(f"csv_datasets/{dataset}/source: {err}") from None
    vocabulary = source.label_set_name(dataset) if source else dataset  # what its manifest will name
    ev = view["evaluation"]
    if ev["extractor"] == "radbert" and vocabulary != "ct_rate":
        raise ConfigError(f"evaluation/extractor: radbert classifies CT-RATE's 18 labels, not label set "
                          f"'{vocabulary}'; set evaluation: {{extractor: llm}} (the paper's choice for AbdomenAtlas) "
                          "or rules in this dataset's overrides")
    if ev["extractor"] == "rules" and vocabulary not in LABEL_SETS:
        raise ConfigError(f"evaluation/extractor: rules has no rules for label set '{vocabulary}' (known: "
                          f"{', '.join(LABEL_SETS)}); use extractor llm with a prompt {vocabulary}_v1.md in "
                          "evaluation/llm/prompt_dir, or a label_set the rules know")
    if ev["extractor"] == "llm":
        prompt = Path(ev["llm"]["prompt_dir"]) / f"{vocabulary}_v1.md"
        if not prompt.is_file():
            raise ConfigError(f"evaluation/extractor: llm needs the prompt {prompt} for label set '{vocabulary}'")
    if source is None:
        return
    if ev["extractor"] == "rules" and list(source.labels) != list(LABEL_SETS[vocabulary][0]):
        raise ConfigError(f"csv_datasets/{dataset}/source/labels: the rules of label set '{vocabulary}' extract "
                          f"{list(LABEL_SETS[vocabulary][0])}, not {list(source.labels)}")
    stage1 = Plan.from_config(view, dataset).stage1
    if stage1 and not source.mask_column:
        raise ConfigError(f"csv_datasets/{dataset}/source has no masks (mask_column is empty), so no Stage 1, but its "
                          f"experiments or stage2_runs start from Stage 1 {', '.join(stage1)}: run only experiments "
                          "without 'seg' (and stage2_runs [none]) for it")


def _check_experiments(cfg: dict[str, Any]) -> None:
    from uvlm.experiments import ExperimentError, Plan

    for exp_name, exp in cfg["experiments"].items():
        if exp["seg"] is not None and exp["seg"] not in cfg["stage1"]["dataset_ids"]:
            raise ConfigError(f"experiment '{exp_name}': key 'seg' = {exp['seg']} has no stage1/dataset_ids entry")
    if cfg["main_experiment"] not in cfg["run"]:
        raise ConfigError(f"config key 'main_experiment': {cfg['main_experiment']!r} is not in 'run' {cfg['run']}")
    try:
        plan = Plan.from_config(cfg)
    except ExperimentError as err:
        raise ConfigError(str(err)) from None
    for exp in plan.experiments:
        if exp.hf_finetune and not cfg["stage3"]["hf"]["model_dir"]:
            raise ConfigError(f"experiment '{exp.name}': key 'decoder' = {exp.decoder} needs stage3/hf/model_dir "
                              "(a local Hugging Face model folder, e.g. Qwen3-4B)")


def check_extractor(ev: dict[str, Any]) -> None:
    """The RadBERT extractor needs its local folder. The workflow checks this before any job (and the
    scoring commands before they start) rather than falling back silently; other commands, e.g. `uvlm
    params`, work without it."""
    if ev["extractor"] != "radbert":
        return
    folder = ev["radbert"]["model_dir"]
    if not folder or not Path(folder).is_dir():
        raise ConfigError(
            f"config key 'evaluation/radbert/model_dir' = {folder!r}: the radbert extractor needs a local RadBERT "
            "text-classifier folder (config.json, weights, tokenizer files and classifier.safetensors, see "
            "uvlm/evaluation/extract_radbert.py). Put that folder on storage every node can read and set this key "
            "in the config file, or choose evaluation/extractor: rules")


def _check_labelers(pl: dict[str, Any]) -> None:
    names = [*pl["sources"], *([pl["reference"]] if pl["reference"] else [])]
    unknown = [n for n in names if n not in pl["labelers"]]
    if unknown:
        raise ConfigError(f"config key 'pseudolabels': sources/reference name unknown labelers {unknown}")
    needs = {"totalsegmentator": "weights_dir", "nnunet": "model_dir"}
    from dataclasses import fields

    from uvlm.pseudolabel.classical import ClassicalConfig

    known = {f.name for f in fields(ClassicalConfig)}
    for name, spec in pl["labelers"].items():
        bad = sorted(set(spec.get("params", {})) - known)
        if spec["backend"] == "classical" and bad:
            raise ConfigError(f"config key 'pseudolabels/labelers/{name}/params': unknown {bad} (known: {sorted(known)})")
        key = needs.get(spec["backend"])
        if key and not spec.get(key):
            raise ConfigError(f"config key 'pseudolabels/labelers/{name}': backend {spec['backend']} needs '{key}'")


def with_defaults(config: dict[str, Any], defaults: dict[str, Any] | None = None, _path: str = "") -> dict[str, Any]:
    """`config` on top of the defaults (config/config.yaml): key by key in nested sections, lists and the
    REPLACED_WHOLE sections replaced. So a config file says only what differs, and a full one (the
    effective config of a run) comes back unchanged."""
    base = yaml.safe_load(DEFAULT_CONFIG.read_text()) if defaults is None else defaults
    out = dict(base)
    for key, value in config.items():
        path = f"{_path}.{key}" if _path else key
        if isinstance(value, dict) and isinstance(base.get(key), dict) and path not in REPLACED_WHOLE:
            out[key] = with_defaults(value, base[key], path)
        else:
            out[key] = value
    return out


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML/JSON config over the defaults (with_defaults), apply top-level overrides, validate."""
    cfg = with_defaults(yaml.safe_load(Path(path).read_text()) or {})
    cfg.update(overrides or {})
    return validate_config(cfg)
