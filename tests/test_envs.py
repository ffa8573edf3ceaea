"""The conda environments per rule group: every rule names one, pins agree with pyproject.toml, and each
environment holds every third-party package its rules' code can import.

conda-forge cannot be reached from CI, so conda does not build them here. Instead the import check
follows uvlm's import graph from each rule's `uvlm` subcommand (an environment provides its pins plus
their declared requirements, read from the installed distributions' metadata), and the `data`
environment's pip layer is built in a virtualenv and runs its rules.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from micro_project import REPO, STEP_CALL, micro_config, project_copy
from packaging.requirements import Requirement

from uvlm.step_code import imports_in, module_file
from uvlm.steps import STEPS, function_path

ENVS = REPO / "envs"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def workflow_rules() -> dict[str, tuple[str, str]]:
    """rule name -> (conda env file, uvlm subcommand) from workflow/rules/*.smk."""
    found = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|checkpoint) )", smk.read_text()):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            shell = re.search(STEP_CALL, block)
            if head and shell:
                conda = re.search(r'conda:\s*"([^"]+)"', block)
                found[head.group(1)] = (conda.group(1) if conda else "", shell.group(1))
    return found


def env_pins(env: Path) -> dict[str, str]:
    deps = yaml.safe_load(env.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return {_norm(Requirement(p).name): str(Requirement(p).specifier).removeprefix("==") for p in pip}


def _step_module(step: str) -> ast.Module:
    module, _ = function_path(step)
    return ast.parse(module_file(module).read_text())


def subcommand_functions() -> dict[str, ast.FunctionDef]:
    """step -> its cmd_* function (uvlm/cli/<phase>.py)."""
    return {step: next(n for n in _step_module(step).body
                       if isinstance(n, ast.FunctionDef) and n.name == function_path(step)[1]) for step in STEPS}


def module_level_imports(step: str) -> set[str]:
    """uvlm modules the step's phase module imports at its top (they run whichever function is called)."""
    return {m for n in _step_module(step).body if isinstance(n, (ast.Import, ast.ImportFrom))
            for m in _imports(n) if m.startswith("uvlm")}


def _imports(node: ast.AST) -> set[str]:
    """Modules imported anywhere under `node` (uvlm.step_code's reading of imports, which DVC deps use too)."""
    return imports_in(node, "uvlm")


# Imports deferred into the one function that needs them, for a backend only that rule group runs:
# label merging reads pseudo-label folders through uvlm.pseudolabel.run but never starts a labeler.
BACKEND_ONLY = {"uvlm.pseudolabel.run": {"uvlm.pseudolabel.totalseg.TotalSegmentatorLabeler",
                                         "uvlm.pseudolabel.nnunet_model.NnunetLabeler",
                                         "uvlm.pseudolabel.totalseg", "uvlm.pseudolabel.nnunet_model"}}


@cache
def _direct_imports(name: str) -> frozenset[str]:
    """Everything a module imports, at module level or inside functions (an over-approximation)."""
    path = module_file(name)
    found = _imports(ast.parse(path.read_text())) if path else set()
    return frozenset(found - BACKEND_ONLY.get(name, set()))


def third_party_imports(name: str) -> frozenset[str]:
    """Top-level third-party modules a uvlm module (or anything it imports from uvlm) may import."""
    todo, seen, found = [name], set(), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for imported in _direct_imports(module):
            top = imported.split(".")[0]
            if top == "uvlm":
                todo.append(imported)
            elif top not in sys.stdlib_module_names:
                found.add(top)
    return frozenset(found)


def provided_distributions(pins: dict[str, str]) -> set[str]:
    """The pinned distributions and, recursively, what they require (extras not included)."""
    todo, seen = list(pins), set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        for req in map(Requirement, md.requires(dist) or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return seen


def test_every_rule_names_an_existing_group_environment() -> None:
    rules = workflow_rules()
    assert len(rules) >= 20
    for rule, (conda, _) in rules.items():
        assert conda.startswith("../../envs/"), f"rule {rule} has no conda environment"
        env = (REPO / "workflow" / "rules" / conda).resolve()
        assert env.is_file(), f"rule {rule}: {conda} does not exist"
        assert env.with_name(env.stem + ".post-deploy.sh").is_file(), f"{env.name} has no post-deploy script"
    assert {Path(c).stem for c, _ in rules.values()} == {p.stem for p in ENVS.glob("*.yaml")}


def test_pins_are_exact_and_agree_with_pyproject() -> None:
    text = (REPO / "pyproject.toml").read_text()
    project = re.findall(r'^\s*"([^"]+)",$', text[text.index("dependencies = ["):text.index("]\n", text.index("dependencies = ["))], re.M)
    assert len(project) > 20
    wanted = {_norm(Requirement(r).name): Requirement(r).specifier for r in project}
    for env in ENVS.glob("*.yaml"):
        for name, version in env_pins(env).items():
            assert re.fullmatch(r"\d+(\.\d+)*", version), f"{env.name}: {name} is not pinned exactly"
            assert name in wanted and version in wanted[name], f"{env.name}: {name}=={version} vs pyproject"


def test_each_environment_holds_what_its_rules_import() -> None:
    functions = subcommand_functions()
    top_level = {_norm(top): [_norm(d) for d in dists] for top, dists in md.packages_distributions().items()}
    missing = []
    for rule, (conda, sub) in workflow_rules().items():
        env = (REPO / "workflow" / "rules" / conda).resolve()
        provided = provided_distributions(env_pins(env))
        modules = set().union(*(third_party_imports(m) for m in module_level_imports(sub)))
        for imported in _imports(functions[sub]):
            top = imported.split(".")[0]
            modules |= third_party_imports(imported) if top == "uvlm" else {top}
        for module in modules - set(sys.stdlib_module_names):
            dists = top_level.get(_norm(module), [])
            assert dists, f"rule {rule}: cannot tell which distribution provides {module}"
            if not set(dists) & provided:
                missing.append(f"rule {rule} ({sub}) imports {module}, which {env.name} lacks")
    assert not missing, "\n".join(missing)


def test_the_check_sees_a_missing_package() -> None:
    """The import check is not vacuous: the training rules need torch, which the data env lacks."""
    data = provided_distributions(env_pins(ENVS / "data.yaml"))
    stage2 = set()
    for imported in _imports(subcommand_functions()["stage2"]):
        stage2 |= third_party_imports(imported) if imported.startswith("uvlm") else {imported.split(".")[0]}
    assert "torch" in stage2 and "torch" not in data


@pytest.mark.slow  # a virtualenv installed from the pins
def test_the_data_environment_runs_its_rules_without_torch(tmp_path: Path) -> None:
    """envs/data.yaml for real, minus conda (conda-forge is not reachable here): a virtualenv with exactly
    its pip pins and the post-deploy script runs the data group's rules of a micro demo, torch absent."""
    env = tmp_path / "data-env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    pins = [f"{name}=={version}" for name, version in env_pins(ENVS / "data.yaml").items()]
    bin_path = f"{env / 'bin'}:{os.environ['PATH']}"
    done = subprocess.run([str(env / "bin" / "pip"), "install", "-q", *pins], capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(["bash", str(ENVS / "data.post-deploy.sh")], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PATH": bin_path})
    assert done.returncode == 0, done.stderr[-3000:]
    assert subprocess.run([str(env / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode != 0

    project = project_copy(tmp_path / "project")
    cfg = micro_config(project)
    targets = ["phase_data", "phase_preprocess", "results/qc/abdomen_atlas/lesion_labels.md"]
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", f"--configfile={cfg}", *targets]
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PATH": bin_path, "OMP_NUM_THREADS": "1"})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for rule in ("demo_data", "ingest", "preprocess_shard", "demo_abdomen", "ingest_abdomen", "mask_labels_shard",
                 "abdomen_qc"):
        assert f"rule {rule}:" in out or f"checkpoint {rule}:" in out, rule
    assert (project / "results" / "preprocessed" / "ct_rate" / "shard_0" / "index.parquet").is_file()
