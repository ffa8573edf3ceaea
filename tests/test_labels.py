"""Label merging: priorities (lesions over anatomy), class tables, and mask validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from uvlm.io import VolumeError
from uvlm.labels.label_map import load_label_map
from uvlm.labels.merge import AnatomySource, class_voxel_counts, merge_labels
from uvlm.labels.rexgrounding import read_lesions
from uvlm.labels.shard import label_shard
from uvlm.pseudolabel.run import pseudolabel_shard

CHEST = Path(__file__).resolve().parent.parent / "config" / "labels" / "chest.yaml"
ANATOMY = {1: "body", 2: "lung_upper_lobe_left", 3: "trachea", 4: "aorta", 5: "heart"}


def test_label_map_values_follow_yaml_order() -> None:
    cl = load_label_map(CHEST, "CL")
    assert cl.title == "C+L" and cl.needs_lesions
    assert [c.name for c in cl.classes[:3]] == ["lung_left", "lung_right", "airway"]
    assert [c.value for c in cl.classes] == list(range(1, len(cl.classes) + 1))
    assert len(cl.classes) == 7 + 14
    assert load_label_map(CHEST, "C").class_table()["0"] == "background"
    assert len(load_label_map(CHEST, "FL").classes) == 14 + 14


def test_merge_priority_lesions_win_and_sources_combine() -> None:
    cl = load_label_map(CHEST, "CL")
    value = {c.name: c.value for c in cl.classes}
    anatomy = np.array([[[0, 1, 2, 2, 3, 4, 5]]], dtype=np.uint8)  # (1, 1, 7)
    lesions = np.zeros((2, 1, 1, 7), dtype=np.uint8)
    lesions[0, 0, 0, [2, 6]] = 1   # a nodule (2d) over lung and over heart
    lesions[1, 0, 0, [2, 3]] = 1   # consolidation (2b) overlapping the nodule at voxel 2
    merged = merge_labels([AnatomySource("truth", anatomy, ANATOMY)], lesions, ["2d", "2b"], cl)
    expected = [0, 0, value["nodule_mass"], value["atelectasis_consolidation"], value["airway"], value["aorta"],
                value["nodule_mass"]]
    assert merged[0, 0].tolist() == expected  # body is not a C+L class: background
    counts = class_voxel_counts(merged, cl)
    assert counts["nodule_mass"] == 2 and counts["lung_right"] == 0


def test_merge_without_lesions_is_anatomy_only() -> None:
    c = load_label_map(CHEST, "C")
    anatomy = np.array([[[2, 3, 5]]], dtype=np.uint8)
    merged = merge_labels([AnatomySource("truth", anatomy, ANATOMY)], None, [], c)
    names = c.class_table()
    assert [names[str(v)] for v in merged[0, 0]] == ["lung_left", "airway", "heart"]


def test_merge_rejects_misaligned_lesions() -> None:
    with pytest.raises(ValueError, match="shape"):
        merge_labels([AnatomySource("truth", np.zeros((2, 2, 2), np.uint8), ANATOMY)],
                     np.zeros((1, 2, 2, 3), np.uint8), ["2d"], load_label_map(CHEST, "CL"))


def test_merge_combines_labelers_by_name_pattern_and_priority() -> None:
    """TotalSegmentator-style names (vertebrae_T5, rib_left_3) and classical names feed the same class;
    where two labelers claim a voxel the higher-priority class wins, whichever labeler said it."""
    c = load_label_map(CHEST, "C")
    value = {k.name: k.value for k in c.classes}
    total = np.array([[[1, 2, 3, 0, 0, 4]]], np.uint8)   # vertebrae_T5, rib_left_3, lung lobe, -, -, heart
    classical = np.array([[[0, 0, 0, 5, 4, 4]]], np.uint8)  # -, -, -, bone, airway, airway
    merged = merge_labels([
        AnatomySource("totalseg", total, {1: "vertebrae_T5", 2: "rib_left_3", 3: "lung_upper_lobe_left", 4: "heart"}),
        AnatomySource("classical", classical, {4: "airway", 5: "bone"}),
    ], None, [], c)
    # airway (priority 1) beats heart (priority 0) at the last voxel
    assert merged[0, 0].tolist() == [value["bone"], value["bone"], value["lung_left"], value["bone"],
                                     value["airway"], value["airway"]]


def _write_case(folder: Path, name: str, shape=(4, 5, 6)) -> tuple[str, str, str]:
    """Image, anatomy map (in folder/anatomy with classes.json) and a one-finding lesion npz."""
    img = sitk.GetImageFromArray(np.full(shape, -1000, np.int16))
    img.SetSpacing((1.5, 1.5, 2.0))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(folder / "images" / f"{name}.nii.gz"))
    anatomy = np.zeros(shape, np.uint8)
    anatomy[1:3, 1:4, 1:5] = 2
    lab = sitk.GetImageFromArray(anatomy)
    lab.CopyInformation(img)
    (folder / "anatomy").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(lab, str(folder / "anatomy" / f"{name}.nii.gz"))
    (folder / "anatomy" / "classes.json").write_text(json.dumps({str(k): v for k, v in ANATOMY.items()}))
    lesion = np.zeros((1, shape[2], shape[1], shape[0]), np.uint8)  # (F, X, Y, Z)
    lesion[0, 2, 2, 1] = 1  # x=2, y=2, z=1
    np.savez_compressed(folder / f"{name}.npz", mask=lesion)
    return str(folder / "images" / f"{name}.nii.gz"), str(folder / "anatomy" / f"{name}.nii.gz"), str(folder / f"{name}.npz")


def test_lesion_axes_are_transposed_to_dhw(tmp_path: Path) -> None:
    image, _, npz = _write_case(tmp_path, "train_1_a_1")
    img = sitk.ReadImage(image)
    mask = read_lesions(npz, ["2d"], img, "train_1_a_1")
    assert mask.shape == (1, 4, 5, 6) and mask[0, 1, 2, 2] == 1 and mask.sum() == 1
    with pytest.raises(VolumeError, match=r"train_1_a_1.*differs"):
        read_lesions(npz, ["2d"], sitk.Image(7, 5, 4, sitk.sitkInt16), "train_1_a_1")
    with pytest.raises(VolumeError, match=r"train_1_a_1.*2 channels|channels"):
        read_lesions(npz, ["2d", "2b"], img, "train_1_a_1")
    with pytest.raises(VolumeError, match=r"train_1_a_1.*unknown ReXGroundingCT categories \['9z'\]"):
        read_lesions(npz, ["9z"], img, "train_1_a_1")


def test_lesion_nifti_must_match_image_geometry(tmp_path: Path) -> None:
    image, _, _ = _write_case(tmp_path, "train_1_a_1")
    img = sitk.ReadImage(image)
    vol = np.zeros((2, 4, 5, 6), np.uint8)  # (F, D, H, W)
    vol[1, 3, 4, 5] = 1
    mask = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in vol])
    mask.SetSpacing((1.5, 1.5, 2.0, 1.0))
    path = tmp_path / "train_1_a_1.nii.gz"
    sitk.WriteImage(mask, str(path))
    got = read_lesions(path, ["2d", "2b"], img, "train_1_a_1")
    assert got.shape == (2, 4, 5, 6) and got[1, 3, 4, 5] == 1 and got.sum() == 1
    mask.SetOrigin((0.0, 0.0, 10.0, 0.0))
    sitk.WriteImage(mask, str(path))
    with pytest.raises(VolumeError, match=r"train_1_a_1.*does not match its image: origin"):
        read_lesions(path, ["2d", "2b"], img, "train_1_a_1")


def _rows(tmp_path: Path, names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        image, _, npz = _write_case(tmp_path, name)
        rows.append({"volume_name": name, "split": "train", "image_path": image, "lesion_mask_path": npz,
                     "lesion_categories": '["2d"]'})
    return pd.DataFrame(rows)


def test_label_shard_writes_maps_and_records_bad_cases(tmp_path: Path) -> None:
    rows = _rows(tmp_path, ["train_1_a_1", "train_2_a_1", "train_3_a_1", "train_4_a_1", "train_5_a_1"])
    (tmp_path / "train_2_a_1.npz").write_bytes(b"")  # empty lesion file
    data = (tmp_path / "train_3_a_1.npz").read_bytes()
    (tmp_path / "train_3_a_1.npz").write_bytes(data[: len(data) // 2])  # truncated lesion file
    rows.loc[3, "lesion_categories"] = '["7x"]'  # a category ReXGroundingCT does not have
    bad = sitk.GetImageFromArray(np.zeros((4, 5, 7), np.uint8))  # anatomy of another shape
    sitk.WriteImage(bad, str(tmp_path / "anatomy" / "train_5_a_1.nii.gz"))
    source = tmp_path / "pl" / "truth" / "shard_0"
    pseudolabel_shard(rows, "truth", {"backend": "folder", "path": str(tmp_path / "anatomy")}, source,
                      on_error="skip", montages=False)
    maps = [load_label_map(CHEST, "C"), load_label_map(CHEST, "CL")]
    index = label_shard(rows, maps, [source], tmp_path / "out", lesions_complete=False, on_error="skip")
    assert index["volume_name"].tolist() == ["train_1_a_1"]
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "CL" / "train_1_a_1.nii.gz")))
    nodule = {c.name: c.value for c in maps[1].classes}["nodule_mass"]
    assert merged[1, 2, 2] == nodule and (merged == nodule).sum() == 1
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("volume_name")["error"]
    assert "train_2_a_1.npz" in errors["train_2_a_1"] and "empty or truncated" in errors["train_2_a_1"]
    assert "train_3_a_1.npz" in errors["train_3_a_1"]
    assert "unknown ReXGroundingCT categories ['7x']" in errors["train_4_a_1"]
    assert "train_5_a_1" in errors["train_5_a_1"] and "made no label map" in errors["train_5_a_1"]
    pl_errors = pd.read_csv(source / "errors.csv").set_index("volume_name")["error"]
    assert "anatomy/train_5_a_1.nii.gz does not match its image" in pl_errors["train_5_a_1"]
    assert json.loads((tmp_path / "out" / "classes_CL.json").read_text())[str(nodule)] == "nodule_mass"
