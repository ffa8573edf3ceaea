"""The Snakemake workflow: lint-clean, and a micro demo run end to end (real Snakemake, real jobs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from micro_project import REPO, micro_config, project_copy
from micro_project import run_snakemake as _snakemake

from uvlm.data.abdomen_atlas import META_CSV, SPLIT_FILES
from uvlm.labels.label_map import load_label_map
from uvlm.labels.radgpt import detect_lesions

pytestmark = pytest.mark.slow  # real Snakemake runs of the micro project


def test_lint_is_clean() -> None:
    res = subprocess.run(["snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


RUN = ["seg_cl_cls_rep_sc", "seg_cl_cls_rep", "seg_cl_cls_rep_vt144", "seg_cl_cls_rep_ft", "none_rep"]


def test_micro_demo_runs_end_to_end(micro_run: Path) -> None:
    table = (micro_run / "results" / "tables" / "main.md").read_text()
    for title in ("U-VLM (ours): Seg(C+L) Cls Rep, SC + Frz", "Most frequent label set (baseline)", "BTB3D-16"):
        assert title in table
    df = pd.read_csv(micro_run / "results" / "tables" / "main.csv")
    ours = df[df["source"].str.startswith("ours")]
    assert len(ours) == 2 and ours[["f1", "bleu_mean"]].notna().all().all()
    reports = pd.read_parquet(micro_run / "results" / "reports" / "ct_rate" / "none_rep.parquet")
    manifest = pd.read_parquet(micro_run / "results" / "manifest" / "ct_rate.parquet")
    assert set(reports["volume_name"]) == set(manifest.loc[manifest["split"] == "valid", "volume_name"])
    metrics = json.loads((micro_run / "results" / "metrics" / "ct_rate" / "seg_cl_cls_rep_sc.json").read_text())
    assert 0 <= metrics["macro_f1"] <= 1 and metrics["n_reports"] == len(reports)
    # Stage outputs shared by experiments exist once, named by what made them.
    models_dir = micro_run / "results" / "models"
    assert (models_dir / "stage1" / "ct_rate" / "seg_CL" / "encoder.safetensors").is_file()
    for init in ("cls_seg_CL", "cls_none"):  # the experiments' Stage 2 and Table 4's
        assert (models_dir / "stage2" / "ct_rate" / init / "model.safetensors").is_file()
    # One row of each kind ran: SC on / off, frozen / fine-tuned (and a frozen random encoder), and the
    # visual tokens of the second-deepest stage
    models = {n: json.loads((models_dir / "stage3" / "ct_rate" / n / "config.json").read_text()) for n in RUN}
    kinds = {n: (m["model"]["injection"]["mode"], m["model"]["freeze_encoder"], m["model"]["n_visual_tokens"])
             for n, m in models.items()}
    assert kinds == {"seg_cl_cls_rep_sc": ("multi_layer", True, 144), "seg_cl_cls_rep": ("input_only", True, 144),
                     "seg_cl_cls_rep_vt144": ("input_only", True, 1152),
                     "seg_cl_cls_rep_ft": ("input_only", False, 144), "none_rep": ("input_only", True, 144)}
    assert models["none_rep"]["init"] == "" and models["seg_cl_cls_rep"]["init"].endswith("stage2/ct_rate/cls_seg_CL")
    assert all(m["n_holdout"] > 0 and m["best_step"] >= 1 for m in models.values())  # selection on the hold-out
    # Stage 1 cases: the same list for every granularity, pseudo-labelled and nothing else
    cases = pd.read_parquet(micro_run / "results" / "labels" / "ct_rate_stage1_cases.parquet")
    assert len(cases) == 6 and (cases["split"] == "train").all()
    labelled = pd.concat(pd.read_parquet(p) for p in (micro_run / "results" / "pseudolabels" / "ct_rate" /
                                                      "classical").glob("shard_*/index.parquet"))
    assert sorted(labelled["volume_name"]) == sorted(cases["volume_name"])
    exported = sorted(p.name.removesuffix(".nii.gz") for p in
                      (micro_run / "results" / "nnunet" / "ct_rate" / "raw" / "CL").glob("Dataset*/labelsTr/*.nii.gz"))
    assert exported == sorted(cases["volume_name"])
    # Stage 1 labels come from the classical labeler; its QC is scored against the phantoms' truth.
    shard0 = micro_run / "results" / "pseudolabels" / "ct_rate" / "classical" / "shard_0"
    assert (shard0 / "classes.json").is_file() and any((shard0 / "qc").glob("*.png"))
    agreement = pd.read_csv(micro_run / "results" / "qc" / "ct_rate" / "classical" / "agreement.csv")
    assert set(agreement["class"]) == {"lung", "trachea", "spine", "ribs", "sternum"}
    assert agreement.set_index("class").loc["lung", "mean_dice"] > 0.8
    # Tables 2-5, figures and the HTML report that links them
    for table in ("main", "table3_abdomen", "table4_classification", "table5_ablations"):
        assert (micro_run / "results" / "tables" / f"{table}.md").is_file()
    t5 = pd.read_csv(micro_run / "results" / "tables" / "table5_ablations.csv")
    assert t5["paper_f1"].notna().sum() == 17  # each paper row once
    assert sorted(t5["source"].dropna().str.split(": ").str[-1]) == sorted(RUN)  # each experiment once
    beside = t5[(t5["training"] == "Seg(C+L) Cls Rep") & t5["sc"] & t5["frz"]]
    assert beside["paper_f1"].tolist() == [0.407] and beside["source"].str.endswith("seg_cl_cls_rep_sc").all()
    t4 = pd.read_csv(micro_run / "results" / "tables" / "table4_classification.csv").set_index("training")
    assert t4["paper_f1"].notna().sum() == 4 and t4.loc[["None Cls", "Seg(C+L) Cls"], "f1"].notna().all()
    figures = sorted(p.name for p in (micro_run / "results" / "figures").glob("*.png"))
    assert figures == sorted(["per_class_f1.png", "training_curves.png", *(f"qualitative_{n}.png" for n in RUN)])
    html = (micro_run / "results" / "report.html").read_text()
    assert all(f"figures/{f}" in html for f in figures) and "table5_ablations.csv" in html
    assert metrics["macro_f1_ci"][0] <= metrics["macro_f1"] <= metrics["macro_f1_ci"][1] and "rouge_l" in metrics
    # AbdomenAtlas 3.0 demo: lesion labels per split and a montage per case
    lesions = pd.read_csv(micro_run / "results" / "qc" / "abdomen_atlas" / "lesion_labels.csv")
    assert lesions["cases"].sum() == 10 and set(lesions["split"]) == {"train", "valid"}
    assert len(list((micro_run / "results" / "labels" / "abdomen_atlas").glob("shard_*/qc/BDMAP_*.png"))) == 10
    # ... and through the three stages on its own cases (its own Stage 1, Stage 2 with its 3 lesion labels)
    s2 = json.loads((models_dir / "stage2" / "abdomen_atlas" / "cls_seg_CL" / "config.json").read_text())
    assert s2["labels"] == ["liver_lesion", "kidney_lesion", "pancreatic_lesion"] and s2["label_set"] == "abdomen_atlas"
    s2_chest = json.loads((models_dir / "stage2" / "ct_rate" / "cls_seg_CL" / "config.json").read_text())
    assert len(s2_chest["labels"]) == 18 and s2_chest["label_set"] == "ct_rate"  # the label count follows the dataset
    s3 = json.loads((models_dir / "stage3" / "abdomen_atlas" / "seg_cl_cls_rep_sc" / "config.json").read_text())
    assert s3["init"].endswith("stage2/abdomen_atlas/cls_seg_CL")
    cases = pd.read_parquet(micro_run / "results" / "labels" / "abdomen_atlas_cases.parquet")
    test = set(cases.loc[cases["split"] == "valid", "volume_name"])
    abdomen_reports = pd.read_parquet(micro_run / "results" / "reports" / "abdomen_atlas" / "seg_cl_cls_rep_sc.parquet")
    assert set(abdomen_reports["volume_name"]) == test  # generated for the test split only
    trained = {n for stage in ("stage2/abdomen_atlas/cls_seg_CL", "stage3/abdomen_atlas/seg_cl_cls_rep_sc")
               for n in pd.read_csv(models_dir / stage / "cases.csv")["volume_name"]}
    nnunet = {p.name.removesuffix(".nii.gz") for p in (micro_run / "results" / "nnunet" / "abdomen_atlas" / "raw" /
                                                       "CL").glob("Dataset*/labelsTr/*.nii.gz")}
    assert trained and nnunet and not (trained | nnunet) & test  # no test case is trained on at any stage
    t3 = pd.read_csv(micro_run / "results" / "tables" / "table3_abdomen.csv")
    ours = t3[t3["method"].str.startswith("U-VLM Seg(C+L) Cls Rep, SC + Frz")]
    assert len(ours) == 1 and ours.filter(like=" F1").notna().all().all()
    assert "U-VLM Seg(C+L)" in set(t3["method"])  # the published row beside ours
    # segmentation-based detection: our Stage 1 network on the same test cases, then the RadGPT rule
    seg = t3[t3["method"].str.startswith("nnU-Net Seg(C+L), RadGPT rule on our Stage 1")]
    assert len(seg) == 1 and seg.filter(like=" F1").notna().all().all()
    detected = micro_run / "results" / "reports" / "abdomen_atlas" / "nnunet_seg_CL"
    index = pd.read_parquet(detected / "index.parquet")
    assert set(index["volume_name"]) == set(abdomen_reports["volume_name"])
    label_map = load_label_map(REPO / "config" / "labels" / "abdomen.yaml", "CL")
    for r in index.to_dict("records"):  # the labels are the rule on the saved prediction
        found = detect_lesions(sitk.ReadImage(str(detected / "maps" / f"{r['volume_name']}.nii.gz")), label_map)
        assert {k: v[0] for k, v in found.items()} == {k: r[k] for k in found}
    t5a = pd.read_csv(micro_run / "results" / "tables" / "table5_ablations_abdomen_atlas.csv")
    assert t5a["source"].dropna().str.endswith("seg_cl_cls_rep_sc").tolist() == [True]
    assert 0.62 in t5a["paper_f1"].tolist()  # the paper's AbdomenAtlas column


def test_nothing_to_do_after_a_run(micro_run: Path) -> None:
    res = _snakemake(micro_run, "-n", f"--configfile={micro_run / 'micro.yaml'}", "all")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Nothing to be done" in res.stdout + res.stderr


def test_one_experiment_reruns_alone(micro_run: Path) -> None:
    """Changing one experiment's setting reruns its own jobs only; shared stages are not redone."""
    cfg = yaml.safe_load((micro_run / "micro.yaml").read_text())
    cfg["experiments"]["none_rep"]["injection"] = "multi_layer"
    changed = micro_run / "micro_changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    res = _snakemake(micro_run, "-n", f"--configfile={changed}", "results/metrics/ct_rate/none_rep.json")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-2000:]
    for job in ("rule stage3", "rule generate", "rule evaluate"):
        assert job in out
    for shared in ("rule stage1", "rule stage2", "rule preprocess_shard", "rule demo_data", "rule tokenizer"):
        assert shared not in out
    res = _snakemake(micro_run, "-n", f"--configfile={changed}", "all")
    out = res.stdout + res.stderr
    assert "output: results/models/stage3/ct_rate/seg_cl_cls_rep" not in out  # the other experiments are untouched
    assert "rule tables" in out


def test_broken_volume_fails_its_shard_only(tmp_path: Path) -> None:
    """A truncated volume: its shard fails naming the file; with --keep-going the others complete."""
    (tmp_path / "config").symlink_to(REPO / "config")
    (tmp_path / "workflow").symlink_to(REPO / "workflow")
    cfg = micro_config(tmp_path)
    res = _snakemake(tmp_path, "--cores", "2", f"--configfile={cfg}", "results/manifest/ct_rate.parquet")
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = pd.read_parquet(tmp_path / "results" / "manifest" / "ct_rate.parquet")
    victim = manifest.sort_values("volume_name").iloc[0]
    path = Path(victim["image_path"])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    os.utime(tmp_path / "results" / "manifest" / "ct_rate.parquet")  # keep the manifest newer than the demo
    res = _snakemake(tmp_path, "--cores", "2", "--keep-going", f"--configfile={cfg}",
                     "results/models/stage2/ct_rate/cls_none")
    assert res.returncode != 0
    bad_shard = int(victim["shard"])
    log = (tmp_path / "results" / "logs" / "preprocess" / "ct_rate" / f"shard_{bad_shard}.log").read_text()
    assert victim["volume_name"] in log and path.name in log and "truncated" in log
    assert not (tmp_path / "results" / "preprocessed" / "ct_rate" / f"shard_{bad_shard}").exists()
    others = [k for k in manifest["shard"].unique() if k != bad_shard]
    assert others
    for k in others:
        index = pd.read_parquet(tmp_path / "results" / "preprocessed" / "ct_rate" / f"shard_{k}" / "index.parquet")
        assert len(index) == int((manifest["shard"] == k).sum())


def test_stage2_under_torchrun_ddp_on_cpu(micro_run: Path, tmp_path: Path) -> None:
    """The multi-process path: two DDP ranks (gloo on CPU) train Stage 2; rank 0 writes the folder."""
    pre = sorted(str(p) for p in (micro_run / "results" / "preprocessed" / "ct_rate").glob("shard_*"))
    out = tmp_path / "cls_ddp"
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "--no-python", "uvlm",
           "--config", str(micro_run / "results" / "config" / "effective.json"), "stage2",
           "--manifest", str(micro_run / "results" / "manifest" / "ct_rate.parquet"),
           "--preprocessed", *pre, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=micro_run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "encoder_config.json").is_file()
    assert len(pd.read_csv(out / "training_log.csv")) == 3


def test_training_rules_request_gpus_and_use_torchrun_for_several(micro_run: Path) -> None:
    cfg = yaml.safe_load((micro_run / "micro.yaml").read_text())
    cfg["gpus"] = {"stage1": 2, "stage2": 4, "stage3": 1}
    cfg["stage2"]["lr"] = 0.5  # force Stage 2 (and what follows) to rerun in the dry run
    path = micro_run / "micro_gpus.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _snakemake(micro_run, "-n", "-p", f"--configfile={path}", "results/models/stage3/ct_rate/seg_cl_cls_rep")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-2000:]
    stage2 = out[out.index("rule stage2:"):out.index("rule stage3:")]
    assert "gpu=4" in stage2 and "torchrun --standalone --nproc_per_node=4 --no-python uvlm" in stage2
    stage3 = out[out.index("rule stage3:"):]
    assert "gpu=1" in stage3 and "torchrun" not in stage3


def test_ct_rate_scale_dag_has_few_jobs_per_rule() -> None:
    """A 50,188-volume manifest (paths only), and with it a 9,262-case AbdomenAtlas manifest, builds its DAG with
    at most ~800 cluster jobs per rule
    (time and memory are measured by benchmarks/dag_scale.py, not asserted here)."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dag_scale.py"), "--out", "/dev/null"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["volumes"] == 50188 and result["shards"] == 262
    jobs = result["jobs_per_rule"]
    assert result["max_jobs_per_rule"] <= 1000
    # every row of Tables 4 and 5 is planned; each shared model once
    assert (jobs["stage3"], jobs["generate"], jobs["evaluate"]) == (17, 17, 17)
    assert (jobs["stage2"], jobs["stage1"], jobs["nnunet_export"]) == (4, 3, 3)
    # pseudo-labels only for the 2,628 Stage 1 cases: 14 shards of 192, 3 labelers
    assert result["pseudolabels"]["now"] == {"stage1_cases": 2628, "shards": 14, "labeler_jobs": 42,
                                             "labelled_volumes": 3 * 2628}
    assert jobs["pseudolabel_shard"] == 42 and jobs["labels_shard"] == 14
    # with AbdomenAtlas 3.0's 9,262 cases (49 shards) through every stage for the same 17 rows, on its own models
    both = result["with_abdomen_atlas"]
    assert both["abdomen_cases"] == 9262 and both["abdomen_shards"] == 49 and both["max_jobs_per_rule"] <= 1000
    more = {rule: n - jobs.get(rule, 0) for rule, n in both["jobs_per_rule"].items()}
    assert (more["stage3"], more["generate"], more["evaluate"], more["stage2"], more["stage1"]) == (17, 17, 17, 4, 3)
    assert (more["preprocess_shard"], more["mask_labels_shard"], more["seg_detect"]) == (49, 49, 2)


def test_default_config_runs_on_a_public_files_only_ct_rate_copy(tmp_path: Path) -> None:
    """The README's real-data command on a CT-RATE layout with only the public folders (no anatomy_masks/,
    no ReXGroundingCT/): the DAG builds, and the pseudo-label QC runs without the demo-only `truth`
    reference, saying why, instead of failing on its missing folder."""
    workdir = project_copy(tmp_path / "project")
    cfg = micro_config(workdir)
    root = tmp_path / "CT-RATE"
    done = subprocess.run(["uvlm", "--config", str(cfg), "demo-data", str(root)], capture_output=True, text=True,
                          timeout=300, cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    for extra in ("anatomy_masks", "ReXGroundingCT"):  # what only the demo has
        shutil.rmtree(root / extra)
    (root / "demo_truth.parquet").unlink()
    assert sorted(p.name for p in root.iterdir()) == ["dataset", "metadata", "multi_abnormality_labels",
                                                      "radiology_text_reports"]
    real = [f"--configfile={cfg}", "--config", f"ct_rate_root={root}", "--"]
    qc = "results/qc/ct_rate/classical"

    res = _snakemake(workdir, "--cores", "2", *real, f"{qc}/classes.md")  # ingest, Stage 1 cases, labels, QC
    assert res.returncode == 0, res.stderr[-3000:]
    note = (workdir / qc / "agreement.md").read_text()
    assert "'truth'" in note and f"{root / 'anatomy_masks'}, which does not exist" in note
    assert "No Dice against a reference" in (workdir / qc / "classes.md").read_text()
    assert not (workdir / qc / "agreement.csv").exists()
    assert "WARNING" in (workdir / "results" / "logs" / "qc" / "classical.log").read_text()
    assert not (workdir / "results" / "pseudolabels" / "ct_rate" / "truth").exists()
    assert not (workdir / "results" / "demo" / "ct_rate").exists()  # the real root was read, not the demo

    res = _snakemake(workdir, "-n", *real, "all")  # the rest of the DAG, now that the checkpoints have run
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for rule in ("rule labels_shard", "rule stage1", "rule stage2", "rule stage3", "rule evaluate", "rule tables"):
        assert rule in out
    assert "rule demo_data" not in out and "pseudolabels/ct_rate/truth" not in out

    (root / "anatomy_masks").mkdir()  # control: with its folder there, the reference is planned and scored
    res = _snakemake(workdir, "-n", *real, f"{qc}/classes.md")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "results/pseudolabels/ct_rate/truth/shard_0" in out and "rule pseudolabel_qc" in out


def test_qc_reference_is_dropped_only_when_its_folder_is_absent(tmp_path: Path) -> None:
    """The one decision the workflow and `uvlm pseudolabel-qc` share (uvlm.pseudolabel.reference)."""
    from uvlm.pseudolabel.reference import QCReference, qc_reference

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert cfg["pseudolabels"]["reference"] == "truth"
    assert qc_reference(cfg) == QCReference("truth")  # the demo: its job writes anatomy_masks/ later
    cfg["ct_rate_root"] = str(tmp_path)
    dropped = qc_reference(cfg)
    assert dropped.labeler == "" and str(tmp_path / "anatomy_masks") in dropped.note and "real CT-RATE" in dropped.note
    (tmp_path / "anatomy_masks").mkdir()
    assert qc_reference(cfg) == QCReference("truth")
    cfg["pseudolabels"]["labelers"]["truth"]["path"] = str(tmp_path / "masks")  # a configured folder, absent
    dropped = qc_reference(cfg)
    assert dropped.labeler == "" and str(tmp_path / "masks") in dropped.note and "CT-RATE" not in dropped.note
    cfg["pseudolabels"]["labelers"]["truth"] = {"backend": "nnunet", "model_dir": str(tmp_path / "none")}
    assert qc_reference(cfg) == QCReference("truth")  # model labelers run as configured (and fail loudly)
    cfg["pseudolabels"]["reference"] = ""
    assert qc_reference(cfg).labeler == "" and "pseudolabels.reference is empty" in qc_reference(cfg).note


def test_planted_bad_volumes_are_rejected_and_reconciled(tmp_path: Path) -> None:
    """A CT-RATE-layout copy of the micro demo with defects planted, run with `on_volume_error: skip`: the
    bad volumes are rejected or left out with their reasons, the others go on, and every step balances."""
    sys.path.insert(0, str(Path(__file__).parent))
    from damage import corrupt_middle, labels, reports, set_cell

    (tmp_path / "config").symlink_to(REPO / "config")
    (tmp_path / "workflow").symlink_to(REPO / "workflow")
    cfg_path = micro_config(tmp_path)
    res = _snakemake(tmp_path, "--cores", "2", f"--configfile={cfg_path}", "results/demo/ct_rate",
                     "results/demo/abdomen_atlas")
    assert res.returncode == 0, res.stderr[-3000:]
    atlas = tmp_path / "AbdomenAtlas"
    shutil.copytree(tmp_path / "results" / "demo" / "abdomen_atlas", atlas)
    meta = pd.read_csv(atlas / META_CSV, dtype=str, keep_default_na=False)
    train_cases = set(pd.read_csv(atlas / SPLIT_FILES["train"], dtype=str)["case_id"])
    blank, unlisted_case = sorted(train_cases)[:2]
    meta.loc[meta["BDMAP ID"] == blank, "structured report"] = ""                       # 6. an empty report column
    meta[meta["BDMAP ID"] != unlisted_case].to_csv(atlas / META_CSV, index=False)       # 7. no metadata row
    root = tmp_path / "CT-RATE"
    shutil.copytree(tmp_path / "results" / "demo" / "ct_rate", root)
    volumes = sorted((root / "dataset").rglob("train_*.nii.gz"))
    corrupt, leak_train = volumes[0], volumes[1]
    corrupt.write_bytes(corrupt_middle(corrupt.read_bytes()))                           # 1. corrupt voxels
    leak_valid = next((root / "dataset").rglob("valid_*.nii.gz"))
    leak_train.write_bytes(leak_valid.read_bytes())                                     # 2. the same scan in both splits
    no_labels, empty_report = volumes[2].name.removesuffix(".nii.gz"), volumes[3].name.removesuffix(".nii.gz")
    set_cell(labels(root), no_labels, "Cardiomegaly", "2")                               # 3. a label value 2
    for column in ("Findings_EN", "Impressions_EN"):
        set_cell(reports(root), empty_report, column, "Not given.")                     # 4. an empty report
    (corrupt.parent / "train_999_a_1.nii.gz").write_bytes(volumes[4].read_bytes())      # 5. no report row
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(ct_rate_root=str(root), on_volume_error="skip")
    cfg["abdomen_atlas"]["root"] = str(atlas)
    (tmp_path / "planted.yaml").write_text(yaml.safe_dump(cfg))
    res = _snakemake(tmp_path, "--cores", "2", f"--configfile={tmp_path / 'planted.yaml'}", "results/qc/reconciliation.csv")
    assert res.returncode == 0, res.stderr[-3000:]
    both = pd.read_csv(tmp_path / "results" / "qc" / "reconciliation.csv")
    assert both["balanced"].all() and (both["unaccounted"] == 0).all(), both
    table = both[both["dataset"] == "ct_rate"].set_index("step")
    rejected = pd.read_csv(tmp_path / "results" / "qc" / "rejected.csv")
    why = {(r.case, r.step): r.reason for r in rejected.itertuples()}
    name = corrupt.name.removesuffix(".nii.gz")
    assert "is truncated or corrupt" in why[(name, "preprocess")]
    assert why[(leak_train.name.removesuffix(".nii.gz"), "preprocess")].startswith("split leak: same voxels as valid_")
    assert why[(no_labels, "Stage 2 (labels)")] == "label 'Cardiomegaly' is '2', not 0 or 1"
    assert why[(empty_report, "Stage 3 (report targets)")] == "empty findings and impressions"
    assert "without a report row" in why[("train_999_a_1", "ingest")]
    assert table.loc["preprocess", "rejected"] == 3  # the corrupt volume and both copies of the leaked scan
    # AbdomenAtlas: every case folder is counted in; the two without a report are rejected for Stage 3 only
    abdomen = both[both["dataset"] == "abdomen_atlas"].set_index("step")
    n_cases = len(meta)
    assert abdomen.loc["ingest", ["in", "accepted"]].tolist() == [n_cases, n_cases]
    assert abdomen.loc["Stage 3 (report targets)", ["in", "rejected"]].tolist() == [len(train_cases), 2]
    assert abdomen.loc["Stage 2 (labels)", "rejected"] == 0  # their masks still give lesion labels
    assert why[(blank, "Stage 3 (report targets)")] == "empty report (column 'structured report')"
    assert why[(unlisted_case, "Stage 3 (report targets)")] == "no metadata row (no report)"
    shutil.copy(tmp_path / "results" / "qc" / "reconciliation.md", tmp_path / "reconciliation_planted.md")
