"""Each step's declaration (uvlm/steps.py) against the rules, dvc.yaml and what the steps really do.

- Rules: each runs its step and passes exactly its keys as params; dvc.yaml is the generated one.
- A real run: every `uvlm` call of the micro demo recorded the config keys it read and the modules it
  loaded; each key is declared and each module is in the step's code (uvlm.step_code).
- Snakemake: changing one declared key at a time plans the steps that read it and their dependants only.
- The package's layers and file sizes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from micro_project import REPO, STEP_CALL
from micro_project import run_snakemake as _snakemake

from uvlm.config import overrides_key
from uvlm.dvc_stages import render
from uvlm.step_code import _module_imports, module_file, modules_of, step_modules
from uvlm.steps import STEPS, covered, keys, lookup, rule_name

RULES = REPO / "workflow" / "rules"


def rule_blocks() -> dict[str, str]:
    """rule name -> its text, for every rule and checkpoint of workflow/rules/."""
    out = {}
    for smk in sorted(RULES.glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", smk.read_text()):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if head:
                out[head.group(1)] = block
    return out


def step_of(rule: str) -> str | None:
    """The step a rule runs, by the naming rule of uvlm/steps.py (None for targets such as `all`)."""
    name = rule.removesuffix("_shard").replace("_", "-")
    return name if name in STEPS else None


def test_each_rule_runs_its_step_and_passes_its_keys() -> None:
    runs = {}
    for rule, block in rule_blocks().items():
        shell = re.search(STEP_CALL, block)
        # a rule with a {dataset} wildcard passes it, so its step reads that dataset's view of the config
        assert ("{dataset}" in block.split("params:")[0]) == ("--dataset {wildcards.dataset}" in block), rule
        if not shell:
            continue
        step = shell.group(1)
        assert step in STEPS, f"rule {rule} runs `uvlm {step}`, which uvlm/steps.py does not declare"
        assert rule in (rule_name(step), rule_name(step) + "_shard"), f"rule {rule} runs step {step}: names differ"
        assert f'reads=step_reads("{step}")' in block, f"rule {rule} does not pass its step's keys as params"
        # no other config values as params: they would be a second, drifting list
        params = block[block.index("params:"):block.index("log:")]
        assert not re.search(r'config\["', params.replace('config["threads"]', "")), f"rule {rule}: {params}"
        runs[step] = rule
    assert set(runs) == set(STEPS), f"steps without a rule: {sorted(set(STEPS) - set(runs))}"


def test_every_step_and_tool_is_a_subcommand_with_its_function() -> None:
    from uvlm.cli.main import COMMANDS, command_function
    from uvlm.steps import TOOLS

    assert set(COMMANDS) == set(STEPS) | set(TOOLS)
    assert all(command_function(name).__name__ == "cmd_" + name.replace("-", "_") for name in COMMANDS)


def test_dvc_yaml_is_generated_from_the_steps() -> None:
    assert (REPO / "dvc.yaml").read_text() == render(), "run `python -m uvlm.dvc_stages > dvc.yaml`"


def undeclared(record: dict, steps: dict = STEPS) -> list[str]:
    """The config keys a recorded `uvlm` call read that its step does not declare."""
    declared = [k.format(**record["wildcards"]) for k in steps[record["command"]].reads]
    return [k for k in record["reads"] if not covered(k, declared)]


def test_the_read_check_fails_on_an_undeclared_key() -> None:
    """Before uvlm/steps.py, the generate rule's params were its `generate` section alone; the check
    names what it also reads (seed, device, threads)."""
    from uvlm.steps import Step

    record = {"command": "generate", "wildcards": {}, "reads": ["device", "generate.batch_size", "seed", "threads"]}
    assert undeclared(record) == []
    assert undeclared(record, {"generate": Step("generate", ("generate",))}) == ["device", "seed", "threads"]


# Modules `uvlm` itself loads before any step runs: argument parsing and config validation (which
# checks experiments and labeler settings); they shape no output.
PLUMBING = modules_of({"uvlm.cli.main", "uvlm.config_reads"})


@pytest.mark.slow
def test_each_step_reads_only_declared_keys_and_runs_only_its_code(micro_run: Path) -> None:
    records = [json.loads(line) for line in (micro_run / "config_reads.jsonl").read_text().splitlines()]
    problems = []
    for r in records:
        bad = undeclared(r)
        if bad:
            problems.append(f"step {r['command']} {r['wildcards']} reads undeclared keys {bad}")
        outside = set(r["modules"]) - step_modules(r["command"]) - PLUMBING
        if outside:
            problems.append(f"step {r['command']} loaded modules outside its code: {sorted(outside)}")
    assert not problems, "\n".join(problems)
    # every step ran, but the one that needs a standalone nnU-Net checkpoint (tests/test_stage1.py)
    assert {r["command"] for r in records} == set(STEPS) - {"stage1-import"}


# ---------------------------------------------------------------- one key changed, one dry run each

def _set(cfg: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for part in path:
        cfg = cfg[part]
    cfg[last] = value


# (keys changed together, their new values), on the micro run with its data at data/ct_rate
CHANGES: list[dict] = [
    {"seed": 1}, {"shard_size": 7}, {"demo.n_patients": 11}, {"abdomen_atlas.demo.n_cases": 13},
    {"abdomen_atlas.valid_fraction": 0.2}, {"abdomen_atlas.lesion_min_mm3": 11.0},
    {"abdomen_atlas.report_column": "narrative report"}, {"abdomen_atlas.overrides.generate": {"max_new_tokens": 7}},
    {"rexgrounding_root": "data/ct_rate/ReXGroundingCT"}, {"lesions_complete": False},
    {"stage1.max_cases": 5}, {"stage1.epochs": 2}, {"stage1.dataset_ids.CL": 512}, {"device": "cpu"},
    {"threads": 2}, {"loader_workers": 1}, {"on_volume_error": "skip"}, {"pseudolabels.montages": False},
    {"pseudolabels.labelers.classical.params": {"air_hu": -450}},
    {"pseudolabels.labelers.truth.path": "data/ct_rate/anatomy_masks"},
    {"preprocess.hu_window": [-1000, 900]},
    {"preprocess.grid": [16, 24, 28], "experiments.seg_cl_cls_rep_vt144.visual_tokens": 1344},
    {"encoder.kernel_size": 5}, {"stage2.steps": 4}, {"stage3.steps": 4}, {"stage3.batch_size": 3},
    {"stage3.feature_cache_gb": 0.0}, {"stage3.vocab_size": 301},
    {"stage3.tokenizer_dir": "no_tokenizer"}, {"model_selection.holdout_fraction": 0.25},
    {"gpus.stage1": 1}, {"gpus.stage2": 1}, {"gpus.stage3": 1}, {"generate.max_new_tokens": 9},
    {"evaluation.bootstrap_resamples": 999}, {"evaluation.extractor": "llm"}, {"main_experiment": "none_rep"},
    {"run": ["none_rep", "seg_cl_cls_rep_ft", "seg_cl_cls_rep_vt144", "seg_cl_cls_rep", "seg_cl_cls_rep_sc"]},
    {"stage2_runs": ["CL", "none"]}, {"experiments.none_rep.title": "None Rep (renamed)"},
    {"csv_datasets.hospital.source.split_values": {"train": "train", "test": "valid", "valid": "valid", "tr": "train"}},
    {"csv_datasets.hospital.overrides.generate": {"max_new_tokens": 7}},
]
# Declared keys no change above makes, and why: they name the data (a rule input: another folder is
# another input set) or the QC reference (another reference is another set of QC inputs).
NOT_CHANGED = {"ct_rate_root", "abdomen_atlas.root", "pseudolabels.reference"}
CHECKPOINTS = ("ingest", "stage1_cases", "ingest_abdomen", "ingest_csv")


def _jobs(text: str) -> list[dict]:
    """Jobs of a Snakemake log or dry run: rule, wildcards, reason."""
    jobs = []
    for m in re.finditer(r"^(?:local)?(?:rule|checkpoint) (\w+):\n((?:    .*\n)*)", text, re.M):
        body = m.group(2)
        wc = re.search(r"^    wildcards: (.*)$", body, re.M)
        reason = re.search(r"^    reason: (.*)$", body, re.M)
        jobs.append({"rule": m.group(1), "wildcards": dict(kv.split("=", 1) for kv in wc.group(1).split(", "))
                     if wc else {}, "reason": reason.group(1) if reason else ""})
    return jobs


def _job_id(job: dict) -> tuple:
    return job["rule"], tuple(sorted(job["wildcards"].items()))


def _shadowed(overrides: dict, key: str) -> bool:
    """Whether a dataset's overrides set `key` (or a section or leaf above it): then a change to the key at the
    top level does not reach that dataset's steps."""
    value = overrides
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return not isinstance(value, dict)  # a leaf or list above the key replaces it whole
        value = value[part]
    return True


def _in_view(changed: list[str], job: dict, cfg: dict) -> list[str]:
    """The changed keys as the job's step sees them (uvlm.config.dataset_view): a dataset's steps read
    `<its overrides>.K` as K (abdomen_atlas.overrides, csv_datasets.<name>.overrides), do not see other
    datasets' overrides, and do not see a top-level key their own overrides set."""
    dataset = job["wildcards"].get("dataset")
    if dataset is None:
        return changed
    top = [c for c in changed if ".overrides." not in c]
    if dataset == "ct_rate":
        return top
    own = overrides_key(dataset)
    overrides = lookup(cfg, own)
    return [c.removeprefix(own + ".") for c in changed if c.startswith(own + ".")] + [
        c for c in top if not _shadowed(overrides, c)]


def _touches(reads: list[str], changed: list[str]) -> bool:
    return any(covered(c, reads) or covered(r, [c]) for c in changed for r in reads)


def _really_reads(job: dict, records: list[dict]) -> list[str]:
    """The keys the job's `uvlm` call read in the micro run (its step's calls with the same wildcards)."""
    step = step_of(job["rule"])
    same = [r for r in records if r["command"] == step and all(job["wildcards"].get(k, v) == v
                                                               for k, v in r["wildcards"].items())]
    return sorted({k for r in same for k in r["reads"]})


def test_every_declared_key_is_changed_by_the_dry_run_test() -> None:
    names = {"experiment": ["none_rep"], "labeler": ["classical", "truth"], "granularity": ["CL"],
             "dataset": ["ct_rate", "abdomen_atlas", "hospital"]}
    changed = [k for change in CHANGES for k in change]
    for step in STEPS.values():
        for key in step.reads:
            wild = re.findall(r"\{(\w+)\}", key)
            values = {w: ["hospital"] if key.startswith("csv_datasets.") else names[w] for w in wild}  # CSV only
            filled = [key.format(**{w: v}) for w in wild for v in values[w]] if wild else [key]
            for k in filled:
                assert k in NOT_CHANGED or any(covered(c, [k]) or covered(k, [c]) for c in changed), k


@pytest.fixture(scope="module")
def real_data_run(micro_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the micro run whose data is an existing folder, as on a real CT-RATE copy (the seed then
    drives training only, not the data), marked up to date for that config with `--touch`."""
    work = tmp_path_factory.mktemp("real_data") / "project"
    shutil.copytree(micro_run, work, symlinks=True)
    shutil.copytree(work / "results" / "demo" / "ct_rate", work / "data" / "ct_rate")
    cfg = yaml.safe_load((work / "micro.yaml").read_text())
    cfg["ct_rate_root"] = "data/ct_rate"
    (work / "real.yaml").write_text(yaml.safe_dump(cfg))
    for _ in range(3):  # jobs behind checkpoints are touched on a later pass
        done = _snakemake(work, "--cores", "1", "--touch", f"--configfile={work / 'real.yaml'}", "all")
        assert done.returncode == 0, done.stderr[-2000:]
        done = _snakemake(work, "-n", f"--configfile={work / 'real.yaml'}", "all")
        if "Nothing to be done" in done.stdout + done.stderr:
            return work
    raise AssertionError(f"still jobs to do after --touch:\n{done.stdout[-2000:]}")


@pytest.mark.slow
def test_changing_one_key_replans_the_steps_that_read_it_and_their_dependants_only(micro_run: Path,
                                                                                   real_data_run: Path) -> None:
    """Per change: every job that planned on its params declares the key; every other planned job was
    planned because an input it reads will change; every job whose step really read the key (recorded in
    the micro run) is planned, unless it lies behind a checkpoint that reruns (not known in a dry run)."""
    records = [json.loads(line) for line in (micro_run / "config_reads.jsonl").read_text().splitlines()]
    log = sorted((micro_run / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    all_jobs = {_job_id(j): j for j in _jobs(log) if step_of(j["rule"]) and j["rule"] != "demo_data"}
    done = _snakemake(real_data_run, "-n", "--forceall", f"--configfile={real_data_run / 'real.yaml'}", "all")
    visible = {_job_id(j) for j in _jobs(done.stdout)}
    base = yaml.safe_load((real_data_run / "real.yaml").read_text())
    problems = []
    for i, change in enumerate(CHANGES):
        cfg = json.loads(json.dumps(base))
        for key, value in change.items():
            _set(cfg, key, value)
        path = real_data_run / f"changed_{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        done = _snakemake(real_data_run, "-n", f"--configfile={path}", "all")
        assert done.returncode == 0, f"{change}: {done.stderr[-2000:]}"
        planned = {_job_id(j): j for j in _jobs(done.stdout) if step_of(j["rule"])}
        for jid, job in planned.items():
            declared = keys(step_of(job["rule"]), **job["wildcards"])
            if job["reason"].startswith("Params have changed") and not _touches(declared, _in_view(list(change), job, base)):
                problems.append(f"{change}: {jid} reran on params it does not declare")
            elif not job["reason"].startswith(("Params have changed", "Input files updated by another job")):
                problems.append(f"{change}: {jid} planned because {job['reason']}")
        readers = {jid for jid, j in all_jobs.items()
                   if _touches(_really_reads(j, records), _in_view(list(change), j, base))}
        if any(j["rule"] in CHECKPOINTS for j in planned.values()):
            readers &= visible
        if readers - set(planned):
            problems.append(f"{change}: jobs that read it are not replanned: {sorted(readers - set(planned))}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- layers and sizes

# A module may import from its own layer and those below, never from above.
LAYERS = [
    {"uvlm", "uvlm.constants", "uvlm.io", "uvlm.device", "uvlm.shards", "uvlm.config_reads"},
    {"uvlm.data", "uvlm.text", "uvlm.models", "uvlm.preprocess", "uvlm.labels", "uvlm.pseudolabel", "uvlm.qc",
     "uvlm.demo"},
    {"uvlm.experiments", "uvlm.steps"},
    {"uvlm.train", "uvlm.generate", "uvlm.evaluation", "uvlm.param_count", "uvlm.config", "uvlm.versioning",
     "uvlm.step_code", "uvlm.dvc_stages"},
    {"uvlm.cli"},
]


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in layer if p != "uvlm") or module == "uvlm":
            return i
    raise AssertionError(f"{module} is in no layer")


def test_no_module_imports_from_a_layer_above_it() -> None:
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
               for p in (REPO / "uvlm").rglob("*.py")}
    bad = [f"{m} imports {i}" for m in sorted(modules) for i in sorted(_module_imports(m))
           if module_file(i) and layer_of(i) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_no_file_is_over_400_lines() -> None:
    files = [p for d in ("uvlm", "tests", "workflow", "benchmarks") for p in (REPO / d).rglob("*")
             if p.suffix in (".py", ".smk") and "__pycache__" not in p.parts]
    long = {p.relative_to(REPO).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
