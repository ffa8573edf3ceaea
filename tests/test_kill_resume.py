"""SIGKILL mid-step, then rerun: preprocessing, Stage 2 training and LLM extraction finish with results
identical to an uninterrupted run (CPU, fixed seeds), and no half-written file ever stands under its final
name. Each step runs as the `uvlm` command Snakemake starts, killed for real (SIGKILL: no cleanup runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from safetensors.numpy import load_file

from uvlm.constants import CT_RATE_LABELS
from uvlm.data.ct_rate import ingest_ct_rate
from uvlm.data.manifest import with_label_set

pytestmark = pytest.mark.slow  # real processes killed and rerun

REPO = Path(__file__).resolve().parent.parent


def start(args: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    fh = open(log, "w")  # noqa: SIM115 - closed by the child's exit; the test only reads it afterwards
    return subprocess.Popen([sys.executable, "-m", "uvlm.cli", *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 120) -> None:
    """SIGKILL the process as soon as ready() holds; fail if it ended first (the kill must land mid-step)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "never reached the kill point"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def run(args: list[str], cwd: Path, log: Path, env: dict | None = None) -> None:
    proc = start(args, cwd, log, env)
    assert proc.wait(600) == 0, log.read_text()[-3000:]


def write_root(root: Path, n: int = 24) -> None:
    """A CT-RATE-layout root of n volumes big enough that preprocessing them takes a few seconds."""
    rng = np.random.default_rng(0)
    rows = {"train": [], "valid": []}
    for i in range(n):
        split = "train" if i < n * 3 // 4 else "valid"
        name = f"{split}_{i}_a_1"
        shape = (48, 128, 128)
        _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
        body = ((y - 64) / 52) ** 2 + ((x - 64) / 56) ** 2 <= 1
        arr = np.where(body, 40, -1000) + rng.normal(0, 10, shape)
        arr[:, 90:100, 60:68] = 700
        img = sitk.GetImageFromArray(arr.astype(np.int16))
        img.SetSpacing((2.5, 2.5, 5.0))
        folder = root / "dataset" / f"{split}_fixed" / f"{split}_{i}" / f"{split}_{i}_a"
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(folder / f"{name}.nii.gz"))
        rows[split].append({"VolumeName": f"{name}.nii.gz", "ClinicalInformation_EN": "Not given.",
                            "Technique_EN": "CT.", "Findings_EN": f"Findings {i}.", "Impressions_EN": "Normal.",
                            **{c: int(rng.random() < 0.4) for c in CT_RATE_LABELS}})
    for split, (rep, lab) in {"train": ("train_reports.csv", "train_predicted_labels.csv"),
                              "valid": ("validation_reports.csv", "valid_predicted_labels.csv")}.items():
        df = pd.DataFrame(rows[split])
        (root / "radiology_text_reports").mkdir(parents=True, exist_ok=True)
        (root / "multi_abnormality_labels").mkdir(parents=True, exist_ok=True)
        df[["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]].to_csv(
            root / "radiology_text_reports" / rep, index=False)
        df[["VolumeName", *CT_RATE_LABELS]].to_csv(root / "multi_abnormality_labels" / lab, index=False)


def small_config(work: Path, **sections: dict) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["preprocess"]["grid"] = [16, 32, 32]
    cfg["encoder"].update(features_per_stage=[4, 8, 16, 32], strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 1, 1, 1],
                          n_conv_per_stage_decoder=[1, 1, 1])
    cfg["stage2"].update(steps=60, batch_size=4, checkpoint_every=5, eval_every=20)
    cfg["experiments"].pop("seg_cl_cls_rep_vt144")  # its token count is the demo grid's
    for key, values in sections.items():
        cfg[key].update(values)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root, its manifest, and one uninterrupted preprocessing of its single shard (the reference)."""
    work = tmp_path_factory.mktemp("killresume")
    write_root(work / "CT-RATE")
    ingest_ct_rate(work / "CT-RATE", shard_size=64).to_parquet(work / "manifest.parquet")
    cfg = small_config(work)
    run(["--config", str(cfg), "preprocess", "--manifest", "manifest.parquet", "--shard", "0", "--out", "pre_ref"],
        work, work / "pre_ref.log")
    return work


def test_preprocessing_killed_then_rerun_equals_uninterrupted(project: Path) -> None:
    out, partial = project / "pre", project / "pre.partial"
    args = ["--config", "config.yaml", "preprocess", "--manifest", "manifest.parquet", "--shard", "0", "--out", "pre"]
    proc = start(args, project, project / "pre_killed.log")
    kill_when(proc, lambda: len(list(partial.glob("*.npy"))) >= 3, project / "pre_killed.log")
    assert not out.exists() and partial.is_dir()  # the half-done shard does not stand under its final name
    run(args, project, project / "pre_rerun.log")
    assert not partial.exists()
    ref = pd.read_parquet(project / "pre_ref" / "index.parquet")
    got = pd.read_parquet(out / "index.parquet")
    pd.testing.assert_frame_equal(ref, got)
    for name in ref["array_file"]:
        assert (out / name).read_bytes() == (project / "pre_ref" / name).read_bytes(), name


def test_stage2_killed_then_rerun_equals_uninterrupted(project: Path) -> None:
    args = ["--config", "config.yaml", "stage2", "--manifest", "manifest.parquet", "--preprocessed", "pre_ref"]
    run([*args, "--out", "s2_ref"], project, project / "s2_ref.log")
    checkpoint = project / "s2.work" / "checkpoint_latest.pt"
    proc = start([*args, "--out", "s2"], project, project / "s2_killed.log")
    kill_when(proc, checkpoint.is_file, project / "s2_killed.log")
    assert not (project / "s2").exists()  # no model folder before training has finished
    run([*args, "--out", "s2"], project, project / "s2_rerun.log")
    assert "resuming from" in (project / "s2_rerun.log").read_text()  # it did not start afresh
    ref, got = load_file(str(project / "s2_ref" / "model.safetensors")), load_file(str(project / "s2" / "model.safetensors"))
    assert ref.keys() == got.keys()
    for key in ref:
        np.testing.assert_array_equal(ref[key], got[key], err_msg=key)  # same process, same CPU: bit for bit
    assert json.loads((project / "s2" / "metrics.json").read_text()) == json.loads(
        (project / "s2_ref" / "metrics.json").read_text())
    assert not (project / "s2.work").exists()


def test_llm_extraction_killed_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai_server import FakeOpenAIServer

    rng = np.random.default_rng(1)
    rows, reports = [], []
    for i in range(20):
        present = [c for c in CT_RATE_LABELS if rng.random() < 0.3]
        text = f"Findings {i}: " + " ".join(f"{c} is seen." for c in present)
        rows.append({"volume_name": f"valid_{i}_a_1", "split": "valid", "report_text": text, "labels_known": True,
                     "has_report": True, **{c: int(c in present) for c in CT_RATE_LABELS}})
        reports.append({"volume_name": f"valid_{i}_a_1", "generated": f"Report {i}: " + " ".join(
            f"{c} is seen." for c in present[:1]), "reference": text})
    with_label_set(pd.DataFrame(rows), "ct_rate", CT_RATE_LABELS).to_parquet(tmp_path / "manifest.parquet")
    pd.DataFrame(reports).to_parquet(tmp_path / "reports.parquet")
    with FakeOpenAIServer(list(CT_RATE_LABELS), timeout_sleep_s=0.15) as server:
        server.per_call = {i: "timeout" for i in range(1, 200)}  # every answer comes after 0.15 s
        cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        results = {}
        for name in ("ref", "killed"):
            cfg["evaluation"].update(extractor="llm", bootstrap_resamples=50, cache_dir=f"cache_{name}")
            cfg["evaluation"]["llm"].update(base_url=server.base_url, allowed_hosts=["127.0.0.1"],
                                            api_key_env="UVLM_TEST_KEY", prompt_dir=str(REPO / "config" / "prompts"),
                                            timeout_s=5, max_concurrency=1)
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
            args = ["--config", f"{name}.yaml", "evaluate", "--reports", "reports.parquet", "--manifest",
                    "manifest.parquet", "--out", f"{name}.json"]
            env = {"UVLM_TEST_KEY": "sk-test"}
            if name == "killed":
                before = server.count
                proc = start(args, tmp_path, tmp_path / "killed.log", env)
                kill_when(proc, lambda before=before: server.count - before >= 8, tmp_path / "killed.log")
                assert not (tmp_path / "killed.json").exists()
                made = server.count - before
                run(args, tmp_path, tmp_path / "rerun.log", env)
                rerun_calls = server.count - before - made
                assert rerun_calls <= 40 - made + 1  # answers cached before the kill (all but one in flight) kept
            else:
                run(args, tmp_path, tmp_path / "ref.log", env)
            results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["killed"] == results["ref"]
