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
from uvlm.labels.merge import class_voxel_counts, merge_labels
from uvlm.labels.shard import label_shard, read_lesions

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
    merged = merge_labels(anatomy, ANATOMY, lesions, ["2d", "2b"], cl)
    expected = [0, 0, value["nodule_mass"], value["atelectasis_consolidation"], value["airway"], value["aorta"],
                value["nodule_mass"]]
    assert merged[0, 0].tolist() == expected  # body is not a C+L class: background
    counts = class_voxel_counts(merged, cl)
    assert counts["nodule_mass"] == 2 and counts["lung_right"] == 0


def test_merge_without_lesions_is_anatomy_only() -> None:
    c = load_label_map(CHEST, "C")
    anatomy = np.array([[[2, 3, 5]]], dtype=np.uint8)
    merged = merge_labels(anatomy, ANATOMY, None, [], c)
    names = c.class_table()
    assert [names[str(v)] for v in merged[0, 0]] == ["lung_left", "airway", "heart"]


def test_merge_rejects_misaligned_lesions() -> None:
    with pytest.raises(ValueError, match="shape"):
        merge_labels(np.zeros((2, 2, 2), np.uint8), ANATOMY, np.zeros((1, 2, 2, 3), np.uint8), ["2d"],
                     load_label_map(CHEST, "CL"))


def _write_case(folder: Path, name: str, shape=(4, 5, 6)) -> tuple[str, str]:
    anatomy = np.zeros(shape, np.uint8)
    anatomy[1:3, 1:4, 1:5] = 2
    img = sitk.GetImageFromArray(anatomy)
    (folder / "anatomy").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(folder / "anatomy" / f"{name}.nii.gz"))
    (folder / "anatomy" / "classes.json").write_text(json.dumps({str(k): v for k, v in ANATOMY.items()}))
    lesion = np.zeros((1, shape[2], shape[1], shape[0]), np.uint8)  # (F, X, Y, Z)
    lesion[0, 2, 2, 1] = 1  # x=2, y=2, z=1
    np.savez_compressed(folder / f"{name}.npz", mask=lesion)
    return str(folder / "anatomy" / f"{name}.nii.gz"), str(folder / f"{name}.npz")


def test_lesion_axes_are_transposed_to_dhw(tmp_path: Path) -> None:
    _, npz = _write_case(tmp_path, "train_1_a_1")
    mask = read_lesions(npz, ["2d"], (4, 5, 6), "train_1_a_1")
    assert mask.shape == (1, 4, 5, 6) and mask[0, 1, 2, 2] == 1 and mask.sum() == 1
    with pytest.raises(VolumeError, match=r"train_1_a_1.*differs"):
        read_lesions(npz, ["2d"], (4, 5, 7), "train_1_a_1")
    with pytest.raises(VolumeError, match=r"train_1_a_1.*2 channels|channels"):
        read_lesions(npz, ["2d", "2b"], (4, 5, 6), "train_1_a_1")


def test_label_shard_writes_maps_and_records_bad_cases(tmp_path: Path) -> None:
    good_anat, good_npz = _write_case(tmp_path, "train_1_a_1")
    bad_anat, _ = _write_case(tmp_path, "train_2_a_1", shape=(4, 5, 6))
    bad_npz = tmp_path / "train_2_a_1.npz"
    bad_npz.write_bytes(b"not an npz")
    rows = pd.DataFrame([
        {"volume_name": "train_1_a_1", "split": "train", "anatomy_path": good_anat, "lesion_mask_path": good_npz,
         "lesion_categories": '["2d"]'},
        {"volume_name": "train_2_a_1", "split": "train", "anatomy_path": bad_anat, "lesion_mask_path": str(bad_npz),
         "lesion_categories": '["2d"]'},
    ])
    maps = [load_label_map(CHEST, "C"), load_label_map(CHEST, "CL")]
    index = label_shard(rows, maps, tmp_path / "out", lesions_complete=False, on_error="skip")
    assert index["volume_name"].tolist() == ["train_1_a_1"]
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "CL" / "train_1_a_1.nii.gz")))
    nodule = {c.name: c.value for c in maps[1].classes}["nodule_mass"]
    assert merged[1, 2, 2] == nodule and (merged == nodule).sum() == 1
    assert "train_2_a_1" in (tmp_path / "out" / "errors.csv").read_text()
    assert json.loads((tmp_path / "out" / "classes_CL.json").read_text())[str(nodule)] == "nodule_mass"
