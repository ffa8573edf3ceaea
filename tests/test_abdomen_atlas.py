"""AbdomenAtlas 3.0: demo layout, ingest, label maps, the RadGPT lesion rule and the label step."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk
from conftest import truncate_gzip

from uvlm.data.abdomen_atlas import (
    ALL_CLASSES,
    LESION_VOLUME_COLUMNS,
    META_CSV,
    ingest_abdomen_atlas,
    with_lesion_labels,
)
from uvlm.data.ct_rate import IngestError
from uvlm.data.manifest import label_set, usable
from uvlm.demo.abdomen_writer import write_demo_abdomen_atlas
from uvlm.labels.abdomen_shard import label_abdomen_shard
from uvlm.labels.label_map import load_label_map
from uvlm.labels.merge import AnatomySource, matches, merge_labels
from uvlm.labels.radgpt import LESION_ORGANS, lesion_findings, lesion_labels, lesion_present
from uvlm.preprocess.volume import preprocess_shard
from uvlm.qc.reconcile import reconcile_dataset
from uvlm.shards import ShardError, read_shard_errors

ABDOMEN = Path(__file__).resolve().parent.parent / "config" / "labels" / "abdomen.yaml"
SHAPE, N_CASES = (24, 32, 32), 8
LESIONS = ("liver_lesion", "kidney_lesion", "pancreatic_lesion")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("atlas") / "AbdomenAtlas"
    write_demo_abdomen_atlas(root, n_cases=N_CASES, seed=3, shape=SHAPE)
    return root


@pytest.fixture
def atlas(demo: Path, tmp_path: Path) -> Path:
    """A private copy, for tests that damage it."""
    return Path(shutil.copytree(demo, tmp_path / "AbdomenAtlas"))


def _image(arr: np.ndarray, spacing_xyz=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(arr, np.uint8))
    img.SetSpacing(spacing_xyz)
    img.SetOrigin(origin)
    return img


# ----------------------------------------------------------------------------- demo writer


def test_demo_layout_and_geometry(demo: Path, tmp_path: Path) -> None:
    cases = sorted(p.name for p in demo.glob("BDMAP_*"))
    assert cases == [f"BDMAP_{i:08d}" for i in range(1, N_CASES + 1)]
    for case in cases[:3]:
        ct = sitk.ReadImage(str(demo / case / "ct.nii.gz"))
        assert ct.GetPixelID() == sitk.sitkInt16 and ct.GetSize() == SHAPE[::-1]
        hu = sitk.GetArrayViewFromImage(ct)
        assert -1030 < hu.min() < -950 and 350 < hu.max() < 800  # air ... bone
        masks = sorted(p.name[:-7] for p in (demo / case / "segmentations").glob("*.nii.gz"))
        assert masks == sorted(ALL_CLASSES) and len(masks) == 41
        for name in masks:
            m = sitk.ReadImage(str(demo / case / "segmentations" / f"{name}.nii.gz"))
            assert m.GetPixelID() == sitk.sitkUInt8 and set(np.unique(sitk.GetArrayViewFromImage(m))) <= {0, 1}
            assert m.GetSize() == ct.GetSize() and m.GetSpacing() == ct.GetSpacing()
            assert m.GetOrigin() == ct.GetOrigin() and m.GetDirection() == ct.GetDirection()
        liver = sitk.GetArrayFromImage(sitk.ReadImage(str(demo / case / "segmentations" / "liver_segment_6.nii.gz")))
        assert hu[liver > 0].mean() > 30  # an organ, not air
    meta = pd.read_csv(demo / META_CSV)
    assert {"BDMAP ID", "structured report", "narrative report", *LESION_VOLUME_COLUMNS.values()} <= set(meta.columns)
    train = pd.read_csv(demo / "TrainTestIDS" / "IID_train.csv")["case_id"].tolist()
    test = pd.read_csv(demo / "TrainTestIDS" / "IID_test.csv")["case_id"].tolist()
    assert sorted(train + test) == cases and len(test) == 1
    assert not list(demo.rglob("*.tmp*"))
    # deterministic for a seed
    write_demo_abdomen_atlas(tmp_path / "again", n_cases=2, seed=3, shape=SHAPE)
    again = pd.read_csv(tmp_path / "again" / META_CSV)
    pd.testing.assert_frame_equal(again, meta.iloc[:2])
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "again" / cases[1] / "ct.nii.gz")))
    assert np.array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(demo / cases[1] / "ct.nii.gz"))))


# ----------------------------------------------------------------------------- ingest


def test_ingest_official_split_and_columns(demo: Path) -> None:
    df = ingest_abdomen_atlas(demo, shard_size=3)
    assert list(df.columns) == ["volume_name", "split", "patient_id", "image_path", "image_exists", "seg_dir",
                                "seg_classes", "report_text", "has_report", "problems", "shard"]
    assert (df["split"] == "valid").sum() == 1 and (df["split"] == "train").sum() == N_CASES - 1
    assert df["split"].tolist() == sorted(df["split"]) and df["shard"].tolist() == [i // 3 for i in range(N_CASES)]
    test = pd.read_csv(demo / "TrainTestIDS" / "IID_test.csv")["case_id"].tolist()
    assert df.loc[df["split"] == "valid", "volume_name"].tolist() == test
    assert df["image_exists"].all() and (df["patient_id"] == df["volume_name"]).all()
    assert all(len(json.loads(s)) == 41 for s in df["seg_classes"])
    assert df["report_text"].str.startswith("FINDINGS:").all() and df["has_report"].all()
    assert (df["problems"] == "").all()
    narrative = ingest_abdomen_atlas(demo, shard_size=3, report_column="narrative report")
    assert (narrative["report_text"] != "").all() and not narrative["report_text"].str.startswith("FINDINGS:").any()
    with pytest.raises(IngestError, match="report column 'impression'"):
        ingest_abdomen_atlas(demo, shard_size=3, report_column="impression")


def test_ingest_missing_files_and_random_split(atlas: Path, caplog: pytest.LogCaptureFixture) -> None:
    (atlas / "BDMAP_00000002" / "ct.nii.gz").unlink()
    shutil.rmtree(atlas / "BDMAP_00000005")
    (atlas / "BDMAP_00000001" / "segmentations" / "liver_tumor_extra.nii.gz").write_bytes(b"")
    train_csv = atlas / "TrainTestIDS" / "IID_train.csv"
    ids = pd.read_csv(train_csv)
    ids[ids["case_id"] != "BDMAP_00000003"].to_csv(train_csv, index=False)
    with caplog.at_level(logging.WARNING):  # in neither IID list: maybe an OOD test case, never trained on
        assert "BDMAP_00000003" not in set(ingest_abdomen_atlas(atlas, shard_size=100)["volume_name"])
    assert "neither IID split file" in caplog.text
    shutil.rmtree(atlas / "TrainTestIDS")
    with caplog.at_level(logging.WARNING):
        df = ingest_abdomen_atlas(atlas, shard_size=100, seed=7).set_index("volume_name")
    assert not df.loc["BDMAP_00000002", "image_exists"] and df.loc["BDMAP_00000002", "image_path"] == ""
    assert not df.loc["BDMAP_00000005", "image_exists"] and df.loc["BDMAP_00000005", "seg_dir"] == ""
    assert "BDMAP_00000005" in caplog.text and "liver_tumor_extra" in caplog.text
    assert "liver_tumor_extra" in json.loads(df.loc["BDMAP_00000001", "seg_classes"])
    assert len(df) == N_CASES and (df["split"] == "valid").sum() == 1  # round(0.1 * 8), at least one
    again = ingest_abdomen_atlas(atlas, shard_size=100, seed=7).set_index("volume_name")
    assert again["split"].equals(df["split"])
    (atlas / META_CSV).unlink()
    with pytest.raises(IngestError, match=r"AbdomenAtlas3\.0MiniWithMeta\.csv"):
        ingest_abdomen_atlas(atlas, shard_size=100)


def test_cases_without_a_report_are_rejected_with_their_reason_and_counts_reconcile(atlas: Path,
                                                                                    tmp_path: Path) -> None:
    """A case whose metadata row is missing, or whose report column is empty, stays in the manifest with its
    reason; Stage 3 leaves it out, and cases in = trained on + rejected. A case whose masks the label step
    could not read has no lesion labels: Stage 2 leaves it out, with the label step's error as the reason."""
    meta = pd.read_csv(atlas / META_CSV, dtype=str, keep_default_na=False)
    meta.loc[meta["BDMAP ID"] == "BDMAP_00000002", "structured report"] = "  "
    meta[meta["BDMAP ID"] != "BDMAP_00000004"].to_csv(atlas / META_CSV, index=False)
    (atlas / "BDMAP_00000006" / "segmentations" / "spleen.nii.gz").write_bytes(b"")
    df = ingest_abdomen_atlas(atlas, shard_size=100)
    index = label_abdomen_shard(df, _maps(), tmp_path / "shard", on_error="skip", montages=False)
    labelled = with_lesion_labels(df, index, read_shard_errors([tmp_path / "shard"])).set_index("volume_name")
    assert label_set(labelled) == ("abdomen_atlas", list(LESIONS))
    assert labelled.loc["BDMAP_00000002", "problems"] == "empty report (column 'structured report')"
    assert labelled.loc["BDMAP_00000004", "problems"] == "no metadata row (no report)"
    assert "BDMAP_00000006" in labelled.loc["BDMAP_00000006", "problems"]
    assert "spleen.nii.gz" in labelled.loc["BDMAP_00000006", "problems"]
    assert not labelled.loc["BDMAP_00000006", "labels_known"] and labelled["labels_known"].sum() == N_CASES - 1
    # the lesion labels are the label step's (RadGPT rule), per case
    ok = index.set_index("volume_name")
    assert (labelled.loc[ok.index, list(LESIONS)] == ok[list(LESIONS)]).all().all()
    for need, limited in (("report", {"BDMAP_00000002", "BDMAP_00000004"}), ("labels", {"BDMAP_00000006"})):
        train = labelled[labelled["split"] == "train"]
        kept = set(train.index[usable(train, need)])
        rejected = {c: r for c, r in train["problems"].items() if c not in kept}
        assert set(rejected) == limited - set(labelled.index[labelled["split"] == "valid"])
        assert len(kept) + len(rejected) == len(train) and all(rejected.values())
    # the same account as results/qc/reconciliation.csv gives it: cases in = accepted + rejected, per step
    preprocess_shard(df, tmp_path / "pre", (8, 8, 8), (-1000.0, 1000.0), "LPS")
    rejected, table = reconcile_dataset(labelled.reset_index(), [tmp_path / "pre"], [tmp_path / "shard"],
                                        "abdomen_atlas")
    steps = table.set_index("step")
    assert table["balanced"].all() and (table["in"] == table["accepted"] + table["rejected"]).all(), table
    assert steps.loc["ingest", ["in", "accepted"]].tolist() == [N_CASES, N_CASES]
    assert steps.loc["label maps", ["in", "accepted", "rejected"]].tolist() == [N_CASES, N_CASES - 1, 1]
    why = {(r.case, r.step): r.reason for r in rejected.itertuples()}
    for case in {"BDMAP_00000002", "BDMAP_00000004"} - set(labelled.index[labelled["split"] == "valid"]):
        assert why[(case, "Stage 3 (report targets)")] == labelled.loc[case, "problems"]
    assert "spleen.nii.gz" in why[("BDMAP_00000006", "label maps")]


# ----------------------------------------------------------------------------- RadGPT rule


def _blocks(shape, lesion_slices, organ_slices=None):
    lesion, organ = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    lesion[lesion_slices] = 1
    organ[organ_slices if organ_slices is not None else (slice(None),) * 3] = 1
    return lesion, organ


@pytest.mark.parametrize(("lesion_sl", "organ_sl", "spacing_xyz", "expected"), [
    ((slice(5, 6),) * 3, None, (1.0, 1.0, 1.0), (False, 0.0)),               # one 1 mm voxel
    ((slice(3, 7),) * 3, None, (1.0, 1.0, 1.0), (False, 8.0)),               # 4 mm cube: 2^3 survive, <= 10
    ((slice(3, 8),) * 3, None, (1.0, 1.0, 1.0), (True, 27.0)),               # 5 mm cube: 3^3 survive
    ((slice(3, 10), slice(3, 7), slice(3, 6)), None, (1.0, 1.0, 1.0), (False, 10.0)),  # exactly 10: not more
    ((slice(3, 8),) * 3, (slice(0, 3),) * 3, (1.0, 1.0, 1.0), (False, 0.0)),  # outside the organ
    ((slice(2, 12), slice(3, 8), slice(3, 8)), (slice(7, 16),) * 3, (1.0, 1.0, 1.0), (False, 0.0)),  # 1 voxel in
    ((slice(4, 6), slice(3, 7), slice(3, 7)), None, (1.0, 1.0, 3.0), (True, 16.0)),  # 4 x 4 x 6 mm: 2*2*4
    ((slice(4, 5), slice(4, 5), slice(4, 5)), None, (6.0, 6.0, 5.0), (True, 48.0)),  # one demo voxel
])
def test_lesion_present_known_sizes(lesion_sl, organ_sl, spacing_xyz, expected) -> None:
    lesion, organ = _blocks((16, 16, 16), lesion_sl, organ_sl)
    origin = (-12.5, 40.0, 301.3)
    assert lesion_present(_image(lesion, spacing_xyz, origin), _image(organ, spacing_xyz, origin)) == expected


@pytest.mark.parametrize("spacing_zyx", [(3, 1, 2), (5, 2, 2), (1, 4, 1)])
def test_lesion_present_matches_brute_force_resampling(spacing_zyx) -> None:
    """Against an independent 1 mm grid: integer spacing s = each voxel repeated s times per axis."""
    rng = np.random.default_rng(sum(spacing_zyx))
    lesion = ndi.binary_dilation(rng.random((14, 16, 18)) > 0.99, iterations=2)
    organ = np.zeros_like(lesion)
    organ[2:12, 3:15, 1:16] = True
    iso = lesion & organ
    for axis, s in enumerate(spacing_zyx):
        iso = np.repeat(iso, s, axis=axis)
    expected = float(ndi.binary_erosion(iso, np.ones((3, 3, 3), bool)).sum())
    positive, volume = lesion_present(_image(lesion, spacing_zyx[::-1]), _image(organ, spacing_zyx[::-1]))
    assert volume == expected and positive == (expected > 10)
    assert lesion_present(_image(lesion, spacing_zyx[::-1]), _image(organ, spacing_zyx[::-1]), 1e9)[0] is False


def test_lesion_labels_missing_files() -> None:
    lesion, organ = _blocks((12, 12, 12), (slice(2, 9),) * 3)
    masks = {"liver_segment_1": _image(organ), **{f"liver_segment_{i}": _image(0 * organ) for i in range(2, 9)},
             "liver_lesion": _image(lesion)}
    assert lesion_labels(masks) == {"liver_lesion": 1, "kidney_lesion": 0, "pancreatic_lesion": 0}
    assert lesion_findings(masks)["liver_lesion"] == (1, 125.0)
    del masks["liver_segment_5"]
    with pytest.raises(ValueError, match="liver_segment_5"):
        lesion_labels(masks)
    with pytest.raises(ValueError, match="spacing"):
        lesion_present(_image(lesion), _image(organ, (1.0, 1.0, 2.0)))


# ----------------------------------------------------------------------------- label maps


def test_label_maps_classes_and_lesion_merging() -> None:
    maps = {g: load_label_map(ABDOMEN, g) for g in ("C", "CL", "FL")}
    assert [len(m.classes) for m in maps.values()] == [12, 15, 41]
    assert [c.name for c in maps["C"].classes] == ["liver", "spleen", "kidney", "stomach", "pancreas", "aorta",
                                                   "postcava", "bladder", "esophagus", "gall_bladder", "lung", "femur"]
    assert {c.name for c in maps["FL"].classes} == set(ALL_CLASSES) and not maps["C"].needs_lesions
    for m in maps.values():  # every mask lands in a class; no pattern is a typo
        assert all(any(matches(s, c.anatomy) for c in m.classes) for s in ALL_CLASSES)
        assert all(any(matches(s, (p,)) for s in ALL_CLASSES) for c in m.classes for p in c.anatomy)
        assert all(not c.lesions for c in m.classes)
    seg = np.array([[[1, 1, 1, 0]]], np.uint8)     # liver segment 3 over voxels 0..2
    les = np.array([[[0, 1, 0, 1]]], np.uint8)     # liver lesion at voxel 1 (in the liver) and 3 (outside)
    vessel = np.array([[[0, 0, 1, 0]]], np.uint8)  # hepatic vessel at voxel 2
    sources = [AnatomySource("liver_segment_3", seg, {1: "liver_segment_3"}),
               AnatomySource("liver_lesion", les, {1: "liver_lesion"}),
               AnatomySource("hepatic_vessel", vessel, {1: "hepatic_vessel"})]
    v = {g: {c.name: c.value for c in m.classes} for g, m in maps.items()}
    assert merge_labels(sources, None, [], maps["C"])[0, 0].tolist() == [v["C"]["liver"]] * 4
    cl = v["CL"]
    assert merge_labels(sources, None, [], maps["CL"])[0, 0].tolist() == [
        cl["liver"], cl["liver_lesion"], cl["liver"], cl["liver_lesion"]]
    fl = v["FL"]
    assert merge_labels(sources, None, [], maps["FL"])[0, 0].tolist() == [
        fl["liver_segment_3"], fl["liver_lesion"], fl["hepatic_vessel"], fl["liver_lesion"]]


# ----------------------------------------------------------------------------- label step


def _maps():
    return [load_label_map(ABDOMEN, g) for g in ("C", "CL", "FL")]


def test_label_shard_writes_granularities_and_lesion_labels(demo: Path, tmp_path: Path) -> None:
    rows = ingest_abdomen_atlas(demo, shard_size=100)
    index = label_abdomen_shard(rows, _maps(), tmp_path / "shard0").set_index("volume_name")
    out = tmp_path / "shard0"
    assert sorted(index.index) == sorted(rows["volume_name"]) and set(index["split"]) == {"train", "valid"}
    assert pd.read_csv(out / "errors.csv").empty
    for g, n in (("C", 12), ("CL", 15), ("FL", 41)):
        assert len(json.loads((out / f"classes_{g}.json").read_text())) == n + 1
        assert len(list((out / g).glob("BDMAP_*.nii.gz"))) == N_CASES
    meta = pd.read_csv(demo / META_CSV).set_index("BDMAP ID")
    specks = 0
    for case, row in index.iterrows():
        report = meta.loc[case, "structured report"]
        for lesion, title in zip(LESIONS, ("Liver lesion:", "Kidney lesion:", "Pancreatic lesion:"), strict=True):
            volume_mm3 = meta.loc[case, LESION_VOLUME_COLUMNS[lesion]] * 1000
            assert row[lesion] == int(title in report), (case, lesion)
            assert row[lesion] == int(row[f"{lesion}_mm3"] > 10)
            if row[lesion]:
                assert volume_mm3 > 10
            specks += int(volume_mm3 > 0 and not row[lesion])
    assert index[list(LESIONS)].to_numpy().sum() >= 1 and specks >= 1  # the rule decides somewhere
    # a real liver lesion: C paints it as liver, C+L as liver_lesion; label maps keep the CT geometry
    case = index.index[index["liver_lesion"] == 1][0]
    les = sitk.GetArrayFromImage(sitk.ReadImage(str(demo / case / "segmentations" / "liver_lesion.nii.gz")))
    ct = sitk.ReadImage(str(demo / case / "ct.nii.gz"))
    for g, name in (("C", "liver"), ("CL", "liver_lesion"), ("FL", "liver_lesion")):
        img = sitk.ReadImage(str(out / g / f"{case}.nii.gz"))
        assert img.GetOrigin() == ct.GetOrigin() and img.GetSpacing() == ct.GetSpacing()
        table = json.loads((out / f"classes_{g}.json").read_text())
        assert {table[str(v)] for v in np.unique(sitk.GetArrayViewFromImage(img)[les > 0])} == {name}
    assert json.loads(index.iloc[0]["missing_C"]) == []


def _rewrite(path: Path, pad: int = 0, shift_mm: float = 0.0, flip: bool = False) -> None:
    """Rewrite a mask with one geometry fault: padded x axis, shifted origin or flipped x direction."""
    like = sitk.ReadImage(str(path))
    img = sitk.GetImageFromArray(np.pad(sitk.GetArrayFromImage(like), ((0, 0), (0, 0), (0, pad))))
    img.SetSpacing(like.GetSpacing())
    img.SetOrigin(tuple(np.add(like.GetOrigin(), (shift_mm, 0.0, 0.0))))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1) if flip else like.GetDirection())
    sitk.WriteImage(img, str(path), True)


def test_label_shard_bad_masks_are_listed_by_case_and_file(atlas: Path, tmp_path: Path) -> None:
    seg = {i: atlas / f"BDMAP_{i:08d}" / "segmentations" for i in range(1, N_CASES + 1)}
    _rewrite(seg[1] / "spleen.nii.gz", pad=1)
    _rewrite(seg[2] / "aorta.nii.gz", shift_mm=10.0)
    _rewrite(seg[3] / "colon.nii.gz", flip=True)
    (seg[4] / "liver_segment_4.nii.gz").write_bytes(b"")                                      # empty file
    truncate_gzip(seg[5] / "kidney_left.nii.gz")                                              # truncated
    rows = ingest_abdomen_atlas(atlas, shard_size=100)
    index = label_abdomen_shard(rows, _maps(), tmp_path / "shard", on_error="skip")
    errors = pd.read_csv(tmp_path / "shard" / "errors.csv").set_index("volume_name")["error"]
    expected = {1: ("spleen.nii.gz", "size"), 2: ("aorta.nii.gz", "origin"), 3: ("colon.nii.gz", "direction"),
                4: ("liver_segment_4.nii.gz", "empty"), 5: ("kidney_left.nii.gz", "")}  # truncated: ITK's words
    assert sorted(errors.index) == [f"BDMAP_{i:08d}" for i in expected]
    for i, (name, why) in expected.items():
        msg = errors[f"BDMAP_{i:08d}"]
        assert f"BDMAP_{i:08d}" in msg and name in msg and why in msg, msg
    assert "truncated" in errors["BDMAP_00000005"] or "cannot read" in errors["BDMAP_00000005"]
    assert "origin" not in errors["BDMAP_00000003"] and "size" not in errors["BDMAP_00000002"]
    assert sorted(index["volume_name"]) == [f"BDMAP_{i:08d}" for i in range(6, N_CASES + 1)]
    assert len(list((tmp_path / "shard" / "FL").glob("*.nii.gz"))) == N_CASES - 5
    with pytest.raises(ShardError, match=r"BDMAP_00000004.*liver_segment_4\.nii\.gz"):
        label_abdomen_shard(rows, _maps(), tmp_path / "shard_fail", on_error="fail")
    assert not (tmp_path / "shard_fail").exists()


def test_lesion_organs_are_atlas_classes() -> None:
    assert set(LESION_ORGANS) == set(LESIONS)
    assert all(o in ALL_CLASSES for organs in LESION_ORGANS.values() for o in organs)
