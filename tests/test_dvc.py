"""DVC round trip with a real local remote: commit and push a finished run, clone, pull, nothing to do.

The steps are the README's: `dvc remote add -d` + `verify true`, `dvc commit -f`, commit dvc.lock with
the effective config, `dvc push`; elsewhere `git clone` + `uvlm pull` (`dvc pull`, checks, and
`snakemake --touch`, because DVC restores file dates in arbitrary order).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from micro_project import run_snakemake

pytestmark = pytest.mark.slow  # the micro workflow run and DVC round trips

GIT_ENV = {"GIT_AUTHOR_NAME": "uvlm-test", "GIT_AUTHOR_EMAIL": "test@uvlm.invalid",
           "GIT_COMMITTER_NAME": "uvlm-test", "GIT_COMMITTER_EMAIL": "test@uvlm.invalid"}


def _run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **GIT_ENV})
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(cwd, sys.executable, "-m", "dvc", *args, check=check)


@pytest.fixture(scope="module")
def pushed(micro_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the micro run made a git repository, committed to DVC and pushed to a local remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin, remote = base / "origin", base / "remote"
    shutil.copytree(micro_run, origin, symlinks=True)
    _run(origin, "git", "init", "-q")
    _dvc(origin, "remote", "add", "-d", "storage", str(remote))
    _dvc(origin, "remote", "modify", "storage", "verify", "true")
    _dvc(origin, "commit", "-f")
    _run(origin, "git", "add", "-A")
    _run(origin, "git", "commit", "-q", "-m", "micro demo results")
    _dvc(origin, "push")
    return origin, remote


def test_everything_under_results_is_versioned(pushed: tuple[Path, Path]) -> None:
    origin, _ = pushed
    tracked = set(_run(origin, "git", "ls-files", "results").stdout.split())
    lock = yaml.safe_load((origin / "dvc.lock").read_text())["stages"]
    outs = {o["path"] for stage in lock.values() for o in stage.get("outs", [])}
    files = [f.relative_to(origin).as_posix() for f in (origin / "results").rglob("*") if f.is_file()]
    assert len(files) > 100
    for rel in files:
        assert rel in tracked or any(rel == o or rel.startswith(o + "/") for o in outs), f"{rel} is not versioned"
    assert tracked == {"results/config/effective.json"}  # git holds only the config, DVC the bytes
    status = _dvc(origin, "status").stdout
    assert "up to date" in status, status


def test_fresh_clone_and_pull_has_nothing_to_do(pushed: tuple[Path, Path], tmp_path: Path) -> None:
    origin, _ = pushed
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "results" / "models").exists()
    (clone / "uvlm" / "data" / "__pycache__").mkdir()  # code that has run here: bytecode is not a code change
    (clone / "uvlm" / "data" / "__pycache__" / "manifest.cpython-311.pyc").write_bytes(b"\x00" * 16)
    _run(clone, "uvlm", "pull")
    assert (clone / "results" / "models" / "stage3" / "ct_rate" / "none_rep" / "model.safetensors").is_file()
    original = (origin / "results" / "metrics" / "ct_rate" / "none_rep.json").read_bytes()
    assert (clone / "results" / "metrics" / "ct_rate" / "none_rep.json").read_bytes() == original
    done = run_snakemake(clone, "-n", f"--configfile={clone / 'micro.yaml'}", "all")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Nothing to be done" in done.stdout + done.stderr, done.stdout[-3000:]

    # One experiment's setting changes: that experiment's jobs and everything after them rerun, nothing else.
    cfg = yaml.safe_load((clone / "micro.yaml").read_text())
    cfg["experiments"]["none_rep"]["injection"] = "multi_layer"
    (clone / "changed.yaml").write_text(yaml.safe_dump(cfg))
    done = run_snakemake(clone, "-n", f"--configfile={clone / 'changed.yaml'}", "all")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for job in ("output: results/models/stage3/ct_rate/none_rep", "output: results/reports/ct_rate/none_rep.parquet",
                "output: results/metrics/ct_rate/none_rep.json", "rule tables:", "rule report_html:"):
        assert job in out
    for untouched in ("rule stage1:", "rule stage2:", "rule preprocess_shard:", "rule pseudolabel_shard:",
                      "rule demo_data:", "rule tokenizer:", "output: results/models/stage3/ct_rate/seg_cl_cls_rep"):
        assert untouched not in out


def test_pulling_one_phase_brings_what_it_needs_and_the_rest_is_computed(pushed: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    """`uvlm pull stage2`: Stage 2 and the phases before it come from DVC; a run would only do what follows."""
    origin, _ = pushed
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    _run(clone, "uvlm", "pull", "stage2")
    assert (clone / "results" / "models" / "stage2" / "ct_rate" / "cls_seg_CL" / "model.safetensors").is_file()
    assert (clone / "results" / "preprocessed" / "ct_rate" / "shard_0").is_dir()
    for later in ("models/stage3", "reports"):  # at most the empty folders a run creates for `dvc commit`
        assert not [p for p in (clone / "results" / later).rglob("*") if p.is_file()], later
    done = run_snakemake(clone, "-n", f"--configfile={clone / 'micro.yaml'}", "all")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for job in ("rule tokenizer:", "rule stage3:", "rule generate:", "rule evaluate:", "rule tables:"):
        assert job in out
    for pulled in ("rule demo_data:", "rule pseudolabel_shard:", "rule labels_shard:", "rule preprocess_shard:",
                   "rule nnunet_export:", "rule stage1:", "rule stage2:"):
        assert pulled not in out


def test_pull_refuses_to_mark_results_of_another_config(pushed: tuple[Path, Path], tmp_path: Path) -> None:
    """An edited effective config would make `--touch` vouch for results it did not make: refused."""
    origin, _ = pushed
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    effective = clone / "results" / "config" / "effective.json"
    edited = effective.read_text().replace('"seed": 0', '"seed": 1')
    assert edited != effective.read_text()
    effective.write_text(edited)
    done = _run(clone, "uvlm", "pull", check=False)
    assert done.returncode != 0 and "differs from the committed one" in done.stderr
    assert not (clone / ".snakemake" / "metadata").exists()  # nothing was touched


def test_a_corrupted_remote_file_is_reported_not_used(pushed: tuple[Path, Path], tmp_path: Path) -> None:
    origin, remote = pushed
    target = origin / "results" / "metrics" / "ct_rate" / "none_rep.json"
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    stored = remote / "files" / "md5" / md5[:2] / md5[2:]
    assert stored.is_file()
    stored.chmod(0o644)
    stored.write_text('{"macro_f1": 0.99}')
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    done = _run(clone, "uvlm", "pull", check=False)
    assert done.returncode != 0
    assert "dvc pull failed; nothing was marked up to date" in done.stderr and "results/metrics" in done.stderr
    assert not (clone / "results" / "metrics" / "ct_rate" / "none_rep.json").exists()
    # The other phases are intact and restored.
    assert (clone / "results" / "models" / "stage3" / "ct_rate" / "none_rep" / "model.safetensors").is_file()


def _changed_deps(clone: Path) -> dict[str, set[str]]:
    """DVC stage -> the deps `dvc status` reports changed (code and config files, not the missing outs)."""
    status = json.loads(_dvc(clone, "status", "--json").stdout or "{}")
    out: dict[str, set[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, dict) and "changed deps" in entry:
                out.setdefault(stage.split(":")[-1], set()).update(
                    d for d in entry["changed deps"] if not d.startswith("results/"))
    return out


def test_a_source_change_marks_exactly_the_phases_whose_steps_run_it(pushed: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """For a file of each step's code (its phase module, and the file its step shares with the fewest
    phases), plus a label map and a rule file: `dvc status` names exactly the phases that run it."""
    from uvlm.dvc_stages import rule_files
    from uvlm.step_code import phase_files
    from uvlm.steps import PHASES, STEPS, function_path

    origin, _ = pushed
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    runs = {p: phase_files(p) | set(rule_files(p)) | {f for s in STEPS.values() if s.phase == p for f in s.files}
            for p in PHASES}

    def phases_running(path: str) -> set[str]:
        return {p for p, files in runs.items() if any(path == f or path.startswith(f + "/") for f in files)}

    chosen = {"config/labels/chest.yaml", "workflow/rules/train.smk"}
    for step in STEPS:
        module, _ = function_path(step)
        chosen.add(module.replace(".", "/") + ".py")
        own = sorted(phase_files(STEPS[step].phase) - chosen, key=lambda f: (len(phases_running(f)), f))
        chosen.add(own[0])
    assert len(chosen) > 15
    for path in sorted(chosen):
        target = clone / path
        original = target.read_bytes()
        target.write_bytes(original + b"\n# changed\n")
        try:
            changed = {stage for stage, deps in _changed_deps(clone).items()
                       if any(path == d or path.startswith(d + "/") for d in deps)}
        finally:
            target.write_bytes(original)
        assert changed == phases_running(path), path
