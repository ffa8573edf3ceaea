"""A micro demo project: the repository's files copied to a folder, and a config that runs in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from uvlm.config import with_defaults

REPO = Path(__file__).resolve().parent.parent
# How a rule calls its step: `uvlm --config {params.config} [--dataset {wildcards.dataset}] <step>` (group 1)
STEP_CALL = r'"(?:\{params\.launch\})?uvlm --config \{params\.config\} (?:--dataset \{wildcards\.dataset\} )?([a-z0-9-]+)'


def run_snakemake(workdir: Path, *args: str, timeout: int = 900,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


MICRO_CONFIG = REPO / ".test" / "config" / "micro.yaml"  # the micro project's overrides of the demo config


def micro_config(workdir: Path, extra: dict | None = None) -> Path:
    """The micro project's config in full (.test/config/micro.yaml, then `extra`, over the defaults) at
    workdir/micro.yaml: tests read and change its nested keys."""
    path = workdir / "micro.yaml"
    path.write_text(yaml.safe_dump(with_defaults({**yaml.safe_load(MICRO_CONFIG.read_text()), **(extra or {})})))
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
