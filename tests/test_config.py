"""Config validation: the shipped configs pass, and a bad value fails naming its key."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from uvlm.config import (
    REPO_ROOT,
    ConfigError,
    check_extractor,
    dataset_view,
    load_config,
    trained_datasets,
    validate_config,
    with_defaults,
)
from uvlm.experiments import Plan, experiments, table5_key


def ct_rate_config(tmp_path: Path) -> dict:
    """config/ct_rate.yaml with its one required local path (the RadBERT folder) set."""
    cfg = with_defaults(yaml.safe_load((REPO_ROOT / "config" / "ct_rate.yaml").read_text()))
    cfg["evaluation"]["radbert"]["model_dir"] = str(tmp_path)
    return validate_config(cfg)


def test_shipped_configs_are_valid(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    assert set(cfg["run"]) <= set(cfg["experiments"]) and cfg["evaluation"]["extractor"] == "rules"
    assert set(ct_rate_config(tmp_path)["run"]) == set(ct_rate_config(tmp_path)["experiments"])
    cfg = load_config(REPO_ROOT / "config" / "ct_rate.yaml")  # valid: `uvlm params` etc. work without RadBERT
    with pytest.raises(ConfigError, match="evaluation/radbert/model_dir.*local RadBERT"):  # scoring does not
        check_extractor(cfg["evaluation"])


def test_ct_rate_config_is_the_papers_table5_and_table4(tmp_path: Path) -> None:
    """Exactly the 17 Table 5 rows, in the paper's order, matched row by row (recipe, SC, Frz, visual-token
    stage, decoder) to config/published.yaml, the paper's printed training names as titles, and the four
    Table 4 Stage 2 runs; each shared model once."""
    cfg = ct_rate_config(tmp_path)
    plan = Plan.from_config(cfg)
    paper = yaml.safe_load((REPO_ROOT / "config" / "published.yaml").read_text())["rep_table5"]
    assert len(plan.experiments) == 17
    assert [e.row_key() for e in plan.experiments] == [
        table5_key(r["seg"], r["cls"], r["sc"], r["frz"], r["ref_stage"], r["decoder"]) for r in paper]
    assert all(e.title.split(",")[0] == r["training"] and e.recipe == r["training"]
               for e, r in zip(plan.experiments, paper, strict=True))
    assert [e.visual_tokens for e in plan.experiments] == [r["vt"] for r in paper]  # 384 / 3072 at 192x256x256
    assert {r.title for r in plan.stage2} == {"None Cls", "Seg(C) Cls", "Seg(C+L) Cls", "Seg(F+L) Cls"}
    assert plan.stage1 == ("C", "CL", "FL") and len(plan.model_dirs) == 3 + 4 + 17
    main = next(e for e in plan.experiments if e.name == cfg["main_experiment"])
    assert main.row_key() == table5_key("FL", True, True, True, -1, "own")  # Table 2: the paper's best row
    none_rep = next(e for e in plan.experiments if e.recipe == "None Rep")
    assert none_rep.frozen and none_rep.init_dir("ct_rate") is None  # a frozen random encoder


def test_abdomen_atlas_config_is_the_papers_abdomen_columns(tmp_path: Path) -> None:
    """config/abdomen_atlas.yaml over config/ct_rate.yaml: AbdomenAtlas trains every paper row that has an
    AbdomenAtlas value, its own Stage 1 (C, C+L, F+L) and Table 4 runs, scored by an LLM as the paper; left
    on CT-RATE's RadBERT, the config is refused before any job."""
    cfg = with_defaults(yaml.safe_load((REPO_ROOT / "config" / "abdomen_atlas.yaml").read_text()),
                        ct_rate_config(tmp_path))
    validate_config(cfg)
    assert trained_datasets(cfg) == ["ct_rate", "abdomen_atlas"]
    view = dataset_view(cfg, "abdomen_atlas")
    plan = Plan.from_config(view, "abdomen_atlas")
    paper = yaml.safe_load((REPO_ROOT / "config" / "published.yaml").read_text())["rep_table5"]
    assert [e.row_key() for e in plan.experiments] == [
        table5_key(r["seg"], r["cls"], r["sc"], r["frz"], r["ref_stage"], r["decoder"]) for r in paper
        if "abdomen_atlas" in r]
    main = next(e for e in plan.experiments if e.name == view["main_experiment"])
    assert main.row_key() == table5_key("CL", True, True, True, -1, "own")  # F1 0.624, BLEU-mean 0.437
    assert plan.stage1 == ("C", "CL", "FL") and len(plan.stage2) == 4
    assert view["evaluation"]["extractor"] == "llm" and view["preprocess"]["grid"] == [192, 256, 256]
    assert all(d.startswith("results/models/stage") and "/abdomen_atlas/" in d for d in plan.model_dirs)
    del cfg["abdomen_atlas"]["overrides"]["evaluation"]
    with pytest.raises(ConfigError, match=r"abdomen_atlas \(config key 'abdomen_atlas/overrides'.*radbert classifies "
                                          r"CT-RATE's 18 labels, not label set 'abdomen_atlas'"):
        validate_config(cfg)


def _with_csv(source: dict, overrides: dict | None = None) -> dict:
    cfg = load_config()
    cfg["csv_datasets"] = {"clinic": {"source": {"csv": "cases.csv", **source},
                                      "overrides": overrides or {"run": ["none_rep"], "main_experiment": "none_rep",
                                                                 "stage2_runs": []}}}
    return cfg


@pytest.mark.parametrize(("source", "overrides", "message"), [
    ({"labels": ["a"]}, None, r"rules has no rules for label set 'clinic'"),
    ({"labels": ["a"], "label_set": "abdomen_atlas"}, None,
     r"rules of label set 'abdomen_atlas' extract \['liver_lesion', 'kidney_lesion', 'pancreatic_lesion'\], not \['a'\]"),
    ({"labels": ["a"], "label_set": "clinic"}, {"run": ["none_rep"], "main_experiment": "none_rep",
                                                 "stage2_runs": [], "evaluation": {"extractor": "llm"}},
     r"llm needs the prompt config/prompts/clinic_v1.md"),
    ({"labels": ["liver_lesion", "kidney_lesion", "pancreatic_lesion"], "label_set": "abdomen_atlas"},
     {"run": ["seg_cl_cls_rep_sc"], "main_experiment": "seg_cl_cls_rep_sc", "stage2_runs": []},
     r"csv_datasets/clinic/source has no masks .* Stage 1 CL"),
    ({"labels": ["liver_lesion", "kidney_lesion", "pancreatic_lesion"], "label_set": "abdomen_atlas",
      "mask_column": "masks"}, None, r"csv_datasets/clinic/source: mask_column and label_map go together"),
])
def test_a_csv_dataset_is_checked_before_any_job(source: dict, overrides: dict | None, message: str) -> None:
    """Your own dataset's entry: the extractor must know its label set, Stage 1 needs masks, the reader's keys
    agree; each message names the dataset and the key."""
    with pytest.raises(ConfigError, match=r"clinic \(config key 'csv_datasets/clinic/overrides' over the rest\): .*"
                                          + message):
        validate_config(_with_csv(source, overrides))


def test_a_csv_dataset_with_a_known_label_set_is_a_trained_dataset() -> None:
    cfg = _with_csv({"labels": ["liver_lesion", "kidney_lesion", "pancreatic_lesion"], "label_set": "abdomen_atlas",
                     "mask_column": "masks", "label_map": "config/labels/abdomen.yaml"},
                    {"run": ["seg_cl_cls_rep_sc"], "main_experiment": "seg_cl_cls_rep_sc", "stage2_runs": [],
                     "stage3": {"steps": 7}})
    validate_config(cfg)
    assert trained_datasets(cfg) == ["ct_rate", "abdomen_atlas", "clinic"]
    view = dataset_view(cfg, "clinic")
    assert view["stage3"]["steps"] == 7 and view["stage3"]["lr"] == cfg["stage3"]["lr"]  # key by key
    assert Plan.from_config(view, "clinic").stage1_dirs == ["results/models/stage1/clinic/seg_CL"]
    with pytest.raises(ConfigError, match=r"unknown dataset 'elsewhere' \(known: ct_rate, abdomen_atlas, clinic\)"):
        dataset_view(cfg, "elsewhere")
    cfg["csv_datasets"]["ct_rate"] = cfg["csv_datasets"]["clinic"]
    with pytest.raises(ConfigError, match="csv_datasets"):  # a name of its own, not a built-in dataset's
        validate_config(cfg)


def test_ct_rate_can_be_switched_off_but_not_every_dataset() -> None:
    cfg = _with_csv({"labels": ["liver_lesion", "kidney_lesion", "pancreatic_lesion"], "label_set": "abdomen_atlas"})
    cfg["ct_rate_enabled"] = False
    assert trained_datasets(validate_config(cfg)) == ["abdomen_atlas", "clinic"]
    cfg["abdomen_atlas"]["enabled"] = False
    assert trained_datasets(validate_config(cfg)) == ["clinic"]
    cfg["csv_datasets"] = {}
    with pytest.raises(ConfigError, match="no dataset to run"):
        validate_config(cfg)


def test_experiment_needs_are_said_once() -> None:
    exps = experiments(load_config())
    sc = exps["seg_cl_cls_rep_sc"]
    assert (sc.stage1_dir("ct_rate"), sc.stage2_dir("ct_rate"), sc.init_dir("ct_rate")) == (
        "results/models/stage1/ct_rate/seg_CL", "results/models/stage2/ct_rate/cls_seg_CL",
        "results/models/stage2/ct_rate/cls_seg_CL")
    assert sc.model_dirs("abdomen_atlas") == [
        "results/models/stage1/abdomen_atlas/seg_CL", "results/models/stage2/abdomen_atlas/cls_seg_CL",
        "results/models/stage3/abdomen_atlas/seg_cl_cls_rep_sc"]  # each dataset trains its own
    assert exps["none_rep"].model_dirs("ct_rate") == ["results/models/stage3/ct_rate/none_rep"]
    assert (exps["seg_cl_cls_rep_vt144"].reference_stage, exps["seg_cl_cls_rep"].reference_stage) == (-2, -1)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda c: c["experiments"]["none_rep"].update(seg="XL"), "experiments/none_rep/seg"),
    (lambda c: c["experiments"]["none_rep"].update(decoder="gpt5"), "experiments/none_rep/decoder"),
    (lambda c: c["experiments"]["none_rep"].update(visual_tokens=500),
     "experiment 'none_rep': key 'visual_tokens' = 500 is not the token count of any encoder stage"),
    (lambda c: c["experiments"]["none_rep"].update(decoder="hf_lora"),
     "experiment 'none_rep': key 'decoder' = hf_lora needs stage3/hf/model_dir"),
    (lambda c: c["stage1"]["dataset_ids"].pop("CL"), "experiment 'seg_cl_cls_rep_sc': key 'seg' = CL"),
    (lambda c: c.update(main_experiment="nope"), "main_experiment"),
    (lambda c: c.update(stage2_runs=["XL"]), "stage2_runs"),
])
def test_bad_experiments_fail_naming_the_experiment_and_key(mutate, message: str) -> None:
    cfg = copy.deepcopy(load_config())
    mutate(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda c: c["experiments"]["none_rep"].update(visual_tokens=500),
     "experiment 'none_rep': key 'visual_tokens' = 500"),
    (lambda c: c["experiments"]["none_rep"].update(decoder="gpt5"), "['experiments']['none_rep']['decoder']"),
    (lambda c: (c["evaluation"].update(extractor="radbert"),  # CT-RATE's; AbdomenAtlas keeps the rules
                c["abdomen_atlas"]["overrides"].update(evaluation={"extractor": "rules"})),
     "'evaluation/radbert/model_dir' = ''"),
])
def test_bad_config_fails_before_any_job(tmp_path: Path, mutate, message: str) -> None:
    """Snakemake stops while reading the config, naming the experiment and the key (or the RadBERT
    setting); nothing runs."""
    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    mutate(cfg)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run(["snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(tmp_path),
                           "--cores", "1", f"--configfile={tmp_path / 'bad.yaml'}", "all"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "results" / "demo").exists() and not (tmp_path / "results" / "logs").exists()


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda c: c["stage2"].update(steps=0), "stage2/steps"),
    (lambda c: c["preprocess"].update(grid=[30, 48, 48]), "preprocess/grid"),
    (lambda c: c["encoder"].update(strides=[2, 2, 2, 2, 2]), "encoder/strides"),
    (lambda c: c.update(run=["nope"]), "run"),
    (lambda c: c.update(unknown_key=1), "<top>"),
])
def test_invalid_values_name_the_key(mutate, key: str) -> None:
    cfg = copy.deepcopy(load_config())
    mutate(cfg)
    with pytest.raises(ConfigError, match=key):
        validate_config(cfg)


def test_labeler_settings_are_checked() -> None:
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg["pseudolabels"]["sources"] = ["classical", "totalseg"]
    with pytest.raises(ConfigError, match="unknown labelers \\['totalseg'\\]"):
        validate_config(cfg)
    cfg["pseudolabels"]["labelers"]["totalseg"] = {"backend": "totalsegmentator", "task": "total"}
    with pytest.raises(ConfigError, match="totalseg.*needs 'weights_dir'"):
        validate_config(cfg)
    cfg["pseudolabels"]["sources"] = ["classical"]
    del cfg["pseudolabels"]["labelers"]["totalseg"]
    cfg["pseudolabels"]["labelers"]["classical"]["params"] = {"air_hu": -450, "lung_hu": 3}
    with pytest.raises(ConfigError, match="unknown \\['lung_hu'\\]"):
        validate_config(cfg)


def test_a_config_file_overrides_the_defaults_key_by_key() -> None:
    defaults = load_config()
    assert with_defaults(defaults) == defaults  # a full config (an effective.json) comes back unchanged
    small = with_defaults({"stage2": {"steps": 7}, "preprocess": {"grid": [16, 32, 32]},
                           "experiments": {"mine": defaults["experiments"]["none_rep"]}})
    assert small["stage2"]["steps"] == 7 and small["stage2"]["lr"] == defaults["stage2"]["lr"]  # merged
    assert small["preprocess"]["grid"] == [16, 32, 32]  # lists replaced
    assert list(small["experiments"]) == ["mine"]  # catalogues replaced whole
    ct = yaml.safe_load((REPO_ROOT / "config" / "ct_rate.yaml").read_text())
    assert "seed" not in ct and "model_selection" not in ct  # says only what differs
    full = with_defaults(ct)
    assert full["stage3"]["decoder"]["dim"] == 512 and full["stage3"]["hf"]["lora_r"] == defaults["stage3"]["hf"]["lora_r"]
    assert "truth" not in full["pseudolabels"]["labelers"] and len(full["experiments"]) == 17
