"""The demo pipeline through a real single-node SLURM cluster with the project's `slurm` profile.

Skipped where SLURM is not installed; `.ci/run` installs Debian's slurm-wlm and munge and starts the
cluster (tests/slurm/start_cluster.sh) before the test suite, so CI runs it for real.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from micro_project import REPO, micro_config

pytestmark = [pytest.mark.skipif(shutil.which("sbatch") is None, reason="SLURM (slurm-wlm) is not installed"),
              pytest.mark.slow]  # the demo through a real SLURM: minutes


def _cluster_up() -> bool:
    done = subprocess.run(["bash", str(REPO / "tests" / "slurm" / "start_cluster.sh")], capture_output=True,
                          text=True, timeout=120)
    return done.returncode == 0


def test_demo_runs_through_sbatch_with_the_project_profile(tmp_path: Path) -> None:
    if not _cluster_up():
        pytest.skip("could not start the single-node SLURM cluster (needs root)")
    for name in ("config", "workflow", "slurm"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    cfg = micro_config(tmp_path)
    small = yaml.safe_load(cfg.read_text())
    small["abdomen_atlas"]["demo"]["n_cases"] = 4
    cfg.write_text(yaml.safe_dump(small))
    before = int(subprocess.run(["bash", "-c", "scontrol show config | awk '/NEXT_JOB_ID/ {print $3}'"],
                                capture_output=True, text=True).stdout.strip() or 0)
    # Typed exactly as a user does from the repository root; the test profile only sets the partition.
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--workflow-profile",
           str(REPO / "tests" / "slurm" / "profile"), f"--configfile={cfg}", "all"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert (tmp_path / "results" / "report.html").is_file()
    # Every job went through sbatch: one SLURM log per job, and SLURM handed out that many job ids.
    logs = list((tmp_path / "results" / "logs" / "slurm").rglob("*.log"))
    submitted = out.count("Job ") and out.count("has been submitted with SLURM jobid")
    after = int(subprocess.run(["bash", "-c", "scontrol show config | awk '/NEXT_JOB_ID/ {print $3}'"],
                               capture_output=True, text=True).stdout.strip() or 0)
    assert submitted >= 20 and len(logs) >= submitted
    assert after - before >= submitted
