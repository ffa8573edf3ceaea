"""DAG size at CT-RATE and AbdomenAtlas scale: `snakemake -n all` over a 50,188-volume CT-RATE manifest and a
9,262-case AbdomenAtlas 3.0 manifest (paths only, no images).

Builds a work folder with the project's Snakefile/workflow/config, a fake CT-RATE root (only its
folder must exist), a manifest of N volumes in shards of `shard_size` of which `--masks` training
volumes have ReXGroundingCT masks (the paper's 2,628), and the Stage 1 case list the `stage1_cases`
rule would write from it; then times the dry run of `config/ct_rate.yaml` (wall clock and peak memory of
the snakemake process) and counts jobs per rule from its summary. It also reports the pseudo-labelling
work: labeler jobs and labelled volumes now (Stage 1 cases only) and before (every training volume,
one job per manifest shard and labeler, as the pipeline did up to commit cf4eba6). With `--abdomen-cases`, the
same dry run again with AbdomenAtlas enabled (its manifest written as its ingest would, sharded the same way)
and going through every stage for the paper's 17 Table 5 rows, as the paper's AbdomenAtlas columns: the DAG
of both datasets, its build time and memory.

    python benchmarks/dag_scale.py [--volumes 50188] [--masks 2628] [--abdomen-cases 9262]
                                   [--out benchmarks/results/dag_scale.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from uvlm.config import with_defaults
from uvlm.data.manifest import stage1_cases
from uvlm.data.roots import ABDOMEN_MANIFEST, CT_RATE_MANIFEST, STAGE1_CASES, UNLISTED_VOLUMES

REPO = Path(__file__).resolve().parent.parent


def fake_manifest(n: int, shard_size: int, root: Path, masks: int) -> pd.DataFrame:
    """CT-RATE-shaped rows: ~2.36 reconstructions per patient, 94/6 train/valid split by patient;
    `masks` training volumes, drawn at random, have a lesion mask."""
    rng = np.random.default_rng(0)
    rows, patient = [], 0
    while len(rows) < n:
        patient += 1
        split = "valid" if rng.random() < 0.061 else "train"
        for scan in "ab"[: rng.integers(1, 3)]:
            for recon in range(1, rng.integers(1, 3) + 1):
                name = f"{split}_{patient}_{scan}_{recon}"
                rows.append({"volume_name": name, "split": split, "patient_id": f"{split}_{patient}",
                             "image_path": str(root / "dataset" / f"{name}.nii.gz"), "image_exists": True})
    df = pd.DataFrame(rows[:n]).sort_values(["split", "volume_name"]).reset_index(drop=True)
    df["shard"] = np.arange(len(df)) // shard_size
    train = np.flatnonzero(df["split"] == "train")
    df["lesion_mask_path"] = ""
    df.loc[rng.choice(train, size=masks, replace=False), "lesion_mask_path"] = "mask.npz"
    return df


def fake_abdomen_manifest(n: int, shard_size: int, root: Path) -> pd.DataFrame:
    """AbdomenAtlas-shaped rows BDMAP_00000001..n, a 90/10 IID split by case, as ingest_abdomen writes them."""
    cases = [f"BDMAP_{i:08d}" for i in range(1, n + 1)]
    valid = set(np.random.default_rng(1).choice(n, size=round(0.1 * n), replace=False).tolist())
    df = pd.DataFrame({"volume_name": cases, "split": ["valid" if i in valid else "train" for i in range(n)],
                       "patient_id": cases, "image_path": [str(root / c / "ct.nii.gz") for c in cases],
                       "image_exists": True, "seg_dir": [str(root / c / "segmentations") for c in cases],
                       "report_text": "FINDINGS: ...", "has_report": True, "problems": ""})
    df = df.sort_values(["split", "volume_name"]).reset_index(drop=True)
    df["shard"] = np.arange(len(df)) // shard_size
    return df


def dry_run(work: Path, config: Path) -> tuple[dict[str, int], float, float]:
    """(jobs per rule, seconds, peak GB of the snakemake process) of `snakemake -n all` in `work`."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", f"--configfile={config}", "all"]
    # a wrapper process per dry run, so that its peak memory (RUSAGE_CHILDREN: the largest child) is this run's
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
               "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(done.returncode)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(out[-3000:])
    peak_gb = int(re.search(r"PEAK_KB (\d+)", done.stderr).group(1)) / 2**20
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", done.stdout, re.M)}, seconds, peak_gb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=50188)
    ap.add_argument("--masks", type=int, default=2628, help="training volumes with ReXGroundingCT masks")
    ap.add_argument("--abdomen-cases", type=int, default=9262, help="AbdomenAtlas cases (0: CT-RATE only)")
    ap.add_argument("--config", default=str(REPO / "config" / "ct_rate.yaml"))
    ap.add_argument("--abdomen-config", default=str(REPO / "config" / "abdomen_atlas.yaml"),
                    help="laid over --config for the run with AbdomenAtlas")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "dag_scale.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("workflow", "config"):
            (work / name).symlink_to(REPO / name)
        (work / "Snakefile").write_text((REPO / "Snakefile").read_text())
        root = work / "CT-RATE"
        (root / "dataset").mkdir(parents=True)
        cfg = with_defaults(yaml.safe_load(Path(a.config).read_text()))
        cfg["ct_rate_root"] = str(root)
        (work / "radbert").mkdir()  # the radbert extractor's folder must exist before any job
        cfg["evaluation"]["radbert"]["model_dir"] = str(work / "radbert")
        (work / "scale.yaml").write_text(yaml.safe_dump(cfg))
        manifest = fake_manifest(a.volumes, cfg["shard_size"], root, a.masks)
        manifest["image_exists"] = True
        cases = stage1_cases(manifest, cfg["lesions_complete"], cfg["stage1"]["max_cases"], cfg["seed"],
                             cfg["shard_size"])
        for path in (CT_RATE_MANIFEST, STAGE1_CASES):
            (work / path).parent.mkdir(parents=True, exist_ok=True)
        manifest.to_parquet(work / CT_RATE_MANIFEST)
        cases.to_parquet(work / STAGE1_CASES)
        pd.DataFrame(columns=["volume_name", "file"]).to_csv(work / UNLISTED_VOLUMES, index=False)  # ingest's 2nd output
        jobs, seconds, peak_gb = dry_run(work, work / "scale.yaml")
        both = {}
        if a.abdomen_cases:
            atlas = work / "AbdomenAtlas"
            atlas.mkdir()
            # the paper-scale AbdomenAtlas layer (config/abdomen_atlas.yaml) over the CT-RATE config, at this root
            both_cfg = with_defaults(yaml.safe_load(Path(a.abdomen_config).read_text()), cfg)
            both_cfg["abdomen_atlas"]["root"] = str(atlas)
            (work / "both.yaml").write_text(yaml.safe_dump(both_cfg))
            abdomen = fake_abdomen_manifest(a.abdomen_cases, cfg["shard_size"], atlas)
            abdomen.to_parquet(work / ABDOMEN_MANIFEST)
            both_jobs, both_s, both_gb = dry_run(work, work / "both.yaml")
            both = {"abdomen_cases": a.abdomen_cases, "abdomen_shards": int(abdomen["shard"].max()) + 1,
                    "dry_run_s": round(both_s, 1), "peak_rss_gb": round(both_gb, 2), "jobs_per_rule": both_jobs,
                    "max_jobs_per_rule": max(v for k, v in both_jobs.items() if k != "total")}
    labelers = len(cfg["pseudolabels"]["sources"])
    train = manifest[manifest["split"] == "train"]
    result = {"volumes": a.volumes, "shards": int(manifest["shard"].max()) + 1, "config": Path(a.config).name,
              "dry_run_s": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2), "jobs_per_rule": jobs,
              "max_jobs_per_rule": max(v for k, v in jobs.items() if k != "total"),
              "pseudolabels": {
                  "labelers": labelers,
                  "now": {"stage1_cases": len(cases), "shards": int(cases["shard"].max()) + 1 if len(cases) else 0,
                          "labeler_jobs": jobs.get("pseudolabel_shard", 0), "labelled_volumes": labelers * len(cases)},
                  "before": {"training_volumes": len(train), "shards": int(manifest["shard"].nunique()),
                             "labeler_jobs": labelers * int(manifest["shard"].nunique()),
                             "labelled_volumes": labelers * len(train)}},
              "with_abdomen_atlas": both}
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
