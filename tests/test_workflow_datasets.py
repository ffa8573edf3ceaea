"""The micro run's other datasets: AbdomenAtlas scored by an LLM over HTTP, and your own CSV dataset through
every stage (the micro run itself: tests/conftest.py `micro_run`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from micro_project import run_snakemake as _snakemake

pytestmark = pytest.mark.slow  # they read the micro run (real Snakemake)


def test_abdomen_atlas_scored_by_an_llm_over_http(micro_run: Path, tmp_path: Path) -> None:
    """The paper scored AbdomenAtlas with an LLM: the dataset's `evaluate` and `abdomen-eval` steps, run as
    the workflow runs them with `abdomen_atlas.overrides.evaluation.extractor: llm`, send each report through
    the real openai client to a local OpenAI-compatible server that reads it as the rules extractor does;
    the LLM path then gives exactly the rules' numbers of the micro run, with the dataset's prompt and its
    3 labels, and a second run makes no call (the answer cache)."""
    from fake_openai_server import FakeOpenAIServer

    from uvlm.constants import ABDOMEN_LESION_LABELS
    from uvlm.evaluation.extract_rules import extract_labels

    def reads(text: str) -> dict[str, bool]:
        return {k: bool(v) for k, v in extract_labels(text, "abdomen_atlas").items()}

    results = micro_run / "results"
    reports, cases = results / "reports" / "abdomen_atlas" / "seg_cl_cls_rep_sc.parquet", results / "labels" / \
        "abdomen_atlas_cases.parquet"
    with FakeOpenAIServer(list(ABDOMEN_LESION_LABELS), reader=reads) as server:
        cfg = yaml.safe_load((micro_run / "micro.yaml").read_text())
        cfg["abdomen_atlas"]["overrides"]["evaluation"] = {
            "extractor": "llm", "cache_dir": str(tmp_path / "extraction"),
            "llm": {"base_url": server.base_url, "allowed_hosts": ["127.0.0.1"], "api_key_env": "UVLM_TEST_LLM_KEY"}}
        (tmp_path / "llm.yaml").write_text(yaml.safe_dump(cfg))

        def step(name: str, *args: str) -> dict:
            out = tmp_path / f"{name}.json"
            done = subprocess.run(["uvlm", "--config", str(tmp_path / "llm.yaml"), "--dataset", "abdomen_atlas", name,
                                   *args, "--out", str(out)], cwd=micro_run, capture_output=True, text=True,
                                  timeout=300, env={**os.environ, "UVLM_TEST_LLM_KEY": "sk-test-abdomen"})
            assert done.returncode == 0, done.stderr[-3000:]
            return json.loads(out.read_text())

        generated = step("evaluate", "--reports", str(reports), "--manifest", str(cases))
        reference = step("abdomen-eval", "--manifest", str(cases))
        calls = server.count
        assert calls >= len(pd.read_parquet(reports)) and calls == len(server._text_calls)  # one call per text
        system = [m["content"] for m in server.requests[0]["body"]["messages"] if m["role"] == "system"][0]
        assert all(label in system for label in ABDOMEN_LESION_LABELS) and "CT-RATE" not in system
        step("evaluate", "--reports", str(reports), "--manifest", str(cases))
        assert server.count == calls  # answered from the cache
    by_rules = json.loads((results / "metrics" / "abdomen_atlas" / "seg_cl_cls_rep_sc.json").read_text())
    for key in ("macro_f1", "macro_precision", "macro_recall", "bleu_mean", "n_reports"):
        assert generated[key] == by_rules[key], key
    assert generated["per_class"] == by_rules["per_class"] and list(by_rules["per_class"]) == list(ABDOMEN_LESION_LABELS)
    assert (generated["extractor"], by_rules["extractor"]) == ("llm", "rules")
    rules_ref = json.loads((results / "metrics" / "abdomen_atlas" / "reference.json").read_text())
    assert reference["Reference reports, llm extractor"] == rules_ref["Reference reports, rules extractor"]


def test_your_own_csv_dataset_goes_through_every_stage(micro_run: Path) -> None:
    """The hospital of tests/hospital_data.py (a CSV naming NIfTI files and DICOM series folders, reports,
    0/1 labels, mask folders), configured as a `csv_datasets` entry and nothing else: its own Stage 1 on its
    masks, Stage 2 on its label columns, Stage 3 on its reports, scored on its test rows; the row without a
    report is rejected for Stage 3 with its reason, and every step balances."""
    from hospital_data import NO_REPORT

    results = micro_run / "results"
    manifest = pd.read_parquet(results / "manifest" / "hospital.parquet")
    dicom = set(manifest.loc[manifest["image_path"].str.contains("/dicom/"), "volume_name"])
    assert len(manifest) == 11 and len(dicom) == 5
    preprocessed = pd.concat(pd.read_parquet(p) for p in (results / "preprocessed" / "hospital").glob("shard_*/index.parquet"))
    assert set(preprocessed["volume_name"]) == set(manifest["volume_name"])  # DICOM series read like NIfTI files
    stage1 = {p.name.removesuffix(".nii.gz") for p in (results / "nnunet" / "hospital" / "raw" / "CL").glob(
        "Dataset*/labelsTr/*.nii.gz")}
    train = set(manifest.loc[manifest["split"] == "train", "volume_name"])
    assert stage1 == train and dicom & stage1  # every training row with masks, DICOM ones too
    s2 = json.loads((results / "models" / "stage2" / "hospital" / "cls_seg_CL" / "config.json").read_text())
    assert s2["labels"] == ["liver_lesion", "kidney_lesion", "pancreatic_lesion"] and s2["label_set"] == "abdomen_atlas"
    s3_cases = pd.read_csv(results / "models" / "stage3" / "hospital" / "seg_cl_cls_rep_sc" / "cases.csv")
    assert NO_REPORT not in set(s3_cases["volume_name"]) and set(s3_cases["volume_name"]) <= train
    reports = pd.read_parquet(results / "reports" / "hospital" / "seg_cl_cls_rep_sc.parquet")
    assert set(reports["volume_name"]) == set(manifest.loc[manifest["split"] == "valid", "volume_name"])
    t5 = pd.read_csv(results / "tables" / "table5_ablations_hospital.csv")
    assert len(t5) == 1 and t5["f1"].notna().all() and "paper_f1" not in t5  # no published column for your data
    table = pd.read_csv(results / "qc" / "reconciliation.csv")
    assert set(table["dataset"]) == {"ct_rate", "abdomen_atlas", "hospital"}
    assert table["balanced"].all() and (table["unaccounted"] == 0).all(), table
    rows = table[table["dataset"] == "hospital"].set_index("step")
    assert rows.loc["ingest", ["in", "accepted"]].tolist() == [11, 11]
    assert rows.loc["Stage 3 (report targets)", ["in", "accepted", "rejected"]].tolist() == [len(train), len(train) - 1, 1]
    rejected = pd.read_csv(results / "qc" / "rejected.csv")
    why = {(r.dataset, r.case, r.step): r.reason for r in rejected.itertuples()}
    assert why[("hospital", NO_REPORT, "Stage 3 (report targets)")] == "no report"
    # its tables are its own job: building them needs no other dataset's data or models
    plan = _snakemake(micro_run, "-n", "--forceall", f"--configfile={micro_run / 'micro.yaml'}",
                      "results/tables/table5_ablations_hospital.md")
    assert plan.returncode == 0, plan.stderr[-2000:]
    datasets = set(re.findall(r"^    wildcards: .*?dataset=(\w+)", plan.stdout, re.M))
    rules = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", plan.stdout, re.M))
    assert datasets == {"hospital"} and {"stage1", "stage2", "stage3", "dataset_tables"} <= rules
    assert not rules & {"demo_data", "ingest", "demo_abdomen", "ingest_abdomen", "tables"}, rules
    # with CT-RATE and AbdomenAtlas switched off, `all` is this dataset's run, its account and its page
    cfg = yaml.safe_load((micro_run / "micro.yaml").read_text())
    cfg["ct_rate_enabled"], cfg["abdomen_atlas"]["enabled"] = False, False
    (micro_run / "hospital_only.yaml").write_text(yaml.safe_dump(cfg))
    plan = _snakemake(micro_run, "-n", "--forceall", f"--configfile={micro_run / 'hospital_only.yaml'}", "all")
    assert plan.returncode == 0, plan.stderr[-2000:]
    rules = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", plan.stdout, re.M))
    assert set(re.findall(r"^    wildcards: .*?dataset=(\w+)", plan.stdout, re.M)) == {"hospital"}
    assert {"dataset_tables", "reconcile", "report_html", "stage3"} <= rules
    assert not rules & {"demo_data", "ingest", "pseudolabel_shard", "tables", "figures", "demo_abdomen"}, rules
