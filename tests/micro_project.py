"""A micro demo project: the repository's files copied to a folder, and a config that runs in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run_snakemake(workdir: Path, *args: str, timeout: int = 900,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def micro_config(workdir: Path) -> Path:
    """The default config shrunk to seconds: few tiny phantoms, a handful of steps per stage."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["demo"].update(n_patients=10, shape=[24, 48, 48], spacing_mm=[10.0, 6.0, 6.0])
    cfg["shard_size"] = 8
    cfg["preprocess"]["grid"] = [16, 24, 24]
    cfg["encoder"].update(features_per_stage=[4, 8, 8], strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1],
                          n_conv_per_stage_decoder=[1, 1])
    cfg["stage1"].update(spacing_mm=[10.0, 6.0, 6.0], patch_size=[16, 16, 16], epochs=1, iterations_per_epoch=2,
                         val_iterations_per_epoch=1, max_cases=6)
    cfg["stage2"].update(steps=3, batch_size=2, eval_every=2)
    cfg["stage3"].update(steps=3, batch_size=2, eval_every=2, vocab_size=300, max_text_tokens=48,
                         decoder={"dim": 32, "n_layers": 2, "n_heads": 2, "dropout": 0.0})
    cfg["generate"].update(max_new_tokens=8, batch_size=4)
    # every kind of row runs: SC on/off, Frz on/off, the deepest and the second-deepest stage's tokens (at
    # this grid 8 x 12 x 12; the deepest has 144)
    cfg["experiments"]["seg_cl_cls_rep_vt144"]["visual_tokens"] = 1152
    cfg["run"] = ["seg_cl_cls_rep_sc", "seg_cl_cls_rep", "seg_cl_cls_rep_vt144", "seg_cl_cls_rep_ft", "none_rep"]
    cfg["threads"] = 1
    path = workdir / "micro.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# What a project checkout holds besides tests and results (a copy is a project a test can own).
PROJECT_FILES = ("Snakefile", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore", "config",
                 "workflow", "uvlm", "envs", "slurm")


def project_copy(dest: Path) -> Path:
    for name in PROJECT_FILES:
        src, dst = REPO / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    return dest
