"""Every kind of bad input in tests/bad_inputs.py, run through ingest, preprocessing, pseudo-labels and label
maps: each fails naming the problem, is repaired as documented, or is left out and counted; never does a bad
volume stop the others, and never does one slip through as data."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from bad_inputs import HEADER, KINDS, VICTIM, Kind, Run, table
from conftest import write_ct_rate_root

from uvlm.data.ct_rate import IngestError, find_volumes, ingest_ct_rate, unlisted_volume_files
from uvlm.labels.label_map import load_label_map
from uvlm.labels.shard import label_shard
from uvlm.preprocess.volume import preprocess_shard
from uvlm.pseudolabel.run import pseudolabel_shard

REPO = Path(__file__).resolve().parent.parent
CHEST = REPO / "config" / "labels" / "chest.yaml"


def errors_of(shard: Path) -> dict[str, str]:
    df = pd.read_csv(shard / "errors.csv", keep_default_na=False)
    assert list(df.columns) == ["volume_name", "file", "error"]
    return dict(zip(df["volume_name"], df["error"], strict=True))


def run_steps(root: Path, work: Path) -> Run:
    """Ingest, then every per-volume step in skip mode, as `on_volume_error: skip` runs them."""
    volumes = find_volumes(root / "dataset")
    manifest = ingest_ct_rate(root, shard_size=64, volumes=volumes)
    pre = preprocess_shard(manifest, work / "pre", (8, 12, 12), (-1000, 1000), "LPS", on_error="skip")
    train = manifest[manifest["split"] == "train"]
    pseudolabel_shard(train, "classical", {"backend": "classical", "params": {}}, work / "pl", on_error="skip",
                      montages=False)
    maps = [load_label_map(CHEST, g) for g in ("C", "CL", "FL")]
    label_shard(train, maps, [work / "pl"], work / "labels", lesions_complete=True, on_error="skip")
    for step in ("pre", "pl", "labels"):  # every shard completed: no half-written folder stands anywhere
        assert not (work / f"{step}.partial").exists()
    return Run(manifest, unlisted_volume_files(volumes, manifest), pre,
               {"preprocess": errors_of(work / "pre"), "pseudolabel": errors_of(work / "pl"),
                "labels": errors_of(work / "labels")})


def test_the_corpus_is_large_and_named_once() -> None:
    names = [k.name for k in KINDS]
    assert len(names) == len(set(names)) and len(KINDS) >= 40
    assert {k.area for k in KINDS} == {"volume", "metadata", "reports", "labels", "masks", "folders"}


def test_a_clean_root_passes_every_step(tmp_path: Path) -> None:
    run = run_steps(write_ct_rate_root(tmp_path / "CT-RATE"), tmp_path / "work")
    assert not any(run.errors.values()) and len(run.preprocessed) == 6 and run.unlisted.empty
    assert run.manifest["labels_known"].all() and run.manifest["has_report"].all()
    assert (run.manifest["problems"] == "").all()


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_bad_input(kind: Kind, tmp_path: Path) -> None:
    root = write_ct_rate_root(tmp_path / "CT-RATE")
    kind.damage(root)
    if kind.expect == "ingest error":
        with pytest.raises(IngestError, match=re.compile(kind.pattern, re.S)):
            run_steps(root, tmp_path / "work")
        return
    run = run_steps(root, tmp_path / "work")
    others = set(run.manifest["volume_name"]) - {VICTIM}
    assert others <= set(run.preprocessed["volume_name"])  # one bad volume never costs the others
    if kind.expect == "rejected":
        step = "labels" if kind.area == "masks" else "preprocess"
        error = run.errors[step].get(VICTIM, "")
        assert VICTIM in error and re.search(kind.pattern, error), (step, error)
        assert set(run.errors[step]) == {VICTIM}
    elif kind.expect == "left out":
        problems = run.manifest.set_index("volume_name")["problems"].get(VICTIM, "")
        assert re.search(kind.pattern, problems) if kind.pattern else True, problems
    else:
        assert not any(run.errors.values()), run.errors
    if kind.check is not None:
        kind.check(run)


def test_docs_table_is_generated_from_the_corpus() -> None:
    doc = (REPO / "docs" / "bad_inputs.md").read_text()
    assert doc == HEADER + table(), "docs/bad_inputs.md is stale: run `python tests/bad_inputs.py`"


def test_reconciliation_accounts_for_every_planted_defect(tmp_path: Path) -> None:
    """Several defects in one root: every volume ends up accepted or rejected (with its reason) at each step."""
    from damage import corrupt_middle, labels, reports, set_cell, volume_path

    from uvlm.qc.reconcile import reconcile

    root = write_ct_rate_root(tmp_path / "CT-RATE")
    vp = volume_path(root)
    vp.write_bytes(corrupt_middle(vp.read_bytes()))                                       # corrupt voxels
    set_cell(labels(root), "train_1_a_2", "Cardiomegaly", "2")                            # labels unknown
    set_cell(reports(root), "train_2_a_1", "Findings_EN", "Not given.")                   # empty report
    volume_path(root, "train_1_b_1").write_bytes(volume_path(root, "valid_2_a_1").read_bytes())  # split leak
    extra = vp.parent / "train_1_a_9.nii.gz"
    extra.write_bytes(volume_path(root, "train_2_a_1").read_bytes())                     # no report row
    run = run_steps(root, tmp_path / "work")
    stage1 = run.manifest[run.manifest["split"] == "train"]
    rejected, table = reconcile(run.manifest, run.unlisted, stage1, [tmp_path / "work" / "pre"],
                                {"classical": [tmp_path / "work" / "pl"]}, [tmp_path / "work" / "labels"])
    assert table["balanced"].all() and (table["unaccounted"] == 0).all(), table
    steps = table.set_index("step")
    assert steps.loc["ingest", ["in", "accepted", "rejected"]].tolist() == [7, 6, 1]
    assert steps.loc["preprocess", ["in", "accepted", "rejected"]].tolist() == [6, 3, 3]  # corrupt + both leaked
    why = {(r.case, r.step): r.reason for r in rejected.itertuples()}
    assert "is truncated or corrupt" in why[("train_1_a_1", "preprocess")]
    assert why[("train_1_b_1", "preprocess")] == "split leak: same voxels as valid_2_a_1 (valid)"
    assert why[("valid_2_a_1", "preprocess")] == "split leak: same voxels as train_1_b_1 (train)"
    assert "volume file without a report row" in why[("train_1_a_9", "ingest")]
    assert why[("train_1_a_2", "Stage 2 (labels)")] == "label 'Cardiomegaly' is '2', not 0 or 1"
    assert why[("train_2_a_1", "Stage 3 (report targets)")] == "empty findings and impressions"
    assert steps.loc["Stage 2 (labels)", ["in", "accepted"]].tolist() == [2, 1]  # train_1_a_2 and train_2_a_1 in
    assert steps.loc["scoring (labels and reference report)", ["in", "accepted"]].tolist() == [1, 1]


def test_training_loaders_leave_out_both_copies_of_a_leaked_scan(tmp_path: Path) -> None:
    from damage import volume_path

    from uvlm.data.volumes import load_split

    root = write_ct_rate_root(tmp_path / "CT-RATE")
    volume_path(root, "train_1_b_1").write_bytes(volume_path(root, "valid_2_a_1").read_bytes())
    run = run_steps(root, tmp_path / "work")
    run.manifest.to_parquet(tmp_path / "manifest.parquet")
    train = load_split(tmp_path / "manifest.parquet", [tmp_path / "work" / "pre"], "train", "labels")
    valid = load_split(tmp_path / "manifest.parquet", [tmp_path / "work" / "pre"], "valid", "labels")
    assert "train_1_b_1" not in set(train["volume_name"]) and len(train) == 3
    assert set(valid["volume_name"]) == {"valid_1_a_1"}
