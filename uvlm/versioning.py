"""Restoring versioned results with DVC so that Snakemake trusts them.

`dvc pull` writes files in whatever order its threads finish, so their dates say nothing about the
order the pipeline made them in, and Snakemake (which always compares dates) would redo jobs whose
inputs look newer than their outputs. `pull_results` pulls, checks that the workspace is exactly what
dvc.lock records with the committed effective config, then has Snakemake touch the outputs in the
order of its DAG (`snakemake --touch`), which also records the current params and code for each
output so that a later settings change reruns exactly the jobs it affects.

Marking inputs ancient() instead was measured to be wrong: Snakemake then does not propagate a rerun
downstream (a changed experiment retrained Stage 3 but left its reports and metrics stale).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from uvlm.config import EFFECTIVE_CONFIG

log = logging.getLogger(__name__)


class PullError(RuntimeError):
    """The pulled results cannot be marked up to date; the message says why and what to do."""


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(list(cmd), cwd=cwd, text=True, capture_output=True)


def pull_results(project: Path, targets: Sequence[str] = (), cores: int = 1) -> None:
    """Check the committed config, `dvc pull [targets]`, check the workspace against dvc.lock, then
    `snakemake --touch all`.

    Targets are DVC stages (phases); each comes with the phases it depends on, so the pipeline can go
    on from it. Phases not pulled stay missing, and Snakemake computes them on the next run.
    """
    if not (project / EFFECTIVE_CONFIG).is_file():
        raise PullError(f"{EFFECTIVE_CONFIG} is missing: commit it with dvc.lock (it is the config of the results)")
    diff = _run(["git", "diff", "--quiet", "HEAD", "--", EFFECTIVE_CONFIG], project)
    if diff.returncode != 0:
        raise PullError(f"{EFFECTIVE_CONFIG} differs from the committed one: the results were made with the "
                        "committed config; `git checkout` it before pulling")
    dvc = [sys.executable, "-m", "dvc"]
    scope = ["--with-deps", *targets] if targets else []
    done = _run([*dvc, "pull", *scope], project)
    if done.returncode != 0:  # corrupted or missing remote objects: DVC names the outs it could not restore
        raise PullError(f"dvc pull failed; nothing was marked up to date:\n{done.stdout}{done.stderr}")
    log.info("%s", done.stdout.strip())
    status = _run([*dvc, "status", *scope], project)
    if status.returncode != 0 or "up to date" not in status.stdout:
        raise PullError("the workspace differs from dvc.lock (code, params or data), so the pulled results "
                        f"cannot be marked up to date:\n{status.stdout}{status.stderr}")
    touch = _run([sys.executable, "-m", "snakemake", "all", "--touch", "--cores", str(cores),
                  f"--configfile={EFFECTIVE_CONFIG}"], project)
    if touch.returncode != 0:
        raise PullError(f"snakemake --touch failed:\n{touch.stderr[-4000:]}")
    log.info("Snakemake marked the pulled results up to date, in the order of its DAG")
