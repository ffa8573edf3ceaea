"""Label merging: the authors' chest label sets, priorities (lesions over anatomy), optional classes,
class tables, and mask validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from uvlm.demo.scene import ANATOMY_CLASSES
from uvlm.io import VolumeError
from uvlm.labels.label_map import LabelMap, load_label_map
from uvlm.labels.merge import AnatomySource, class_voxel_counts, merge_labels
from uvlm.labels.rexgrounding import read_lesions
from uvlm.labels.shard import label_shard
from uvlm.pseudolabel.classical import CLASSES as CLASSICAL_CLASSES
from uvlm.pseudolabel.run import pseudolabel_shard

CHEST = Path(__file__).resolve().parent.parent / "config" / "labels" / "chest.yaml"
ANATOMY = {1: "body", 2: "lung_upper_lobe_left", 3: "trachea", 4: "aorta", 5: "heart", 6: "bronchi"}

# The authors' released ReXGroundingCT sets (REFERENCE.md section 6), written out as data.
AUTHORS_COARSE = ["spleen", "kidney", "liver", "stomach", "pancreas", "lung", "esophagus", "trachea", "heart",
                  "aorta", "vena_cava", "spine", "ribs", "sternum", "muscles"]
AUTHORS_FINE = ["spleen", "kidney_right", "kidney_left", "liver_right_lobe", "liver_left_lobe", "stomach",
                "pancreas", "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left",
                "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right",
                "esophagus", "trachea", "thyroid_gland_left", "thyroid_gland_right", "thymus", "vertebrae", "heart",
                "aorta", "pulmonary_trunk", "brachiocephalic_trunk", "inferior_vena_cava", "superior_vena_cava",
                "gallbladder", "rib", "spine", "muscle", "clavicula", "sternum", "scapula", "humerus"]
AUTHORS_LESIONS = {"1a": "bronchial_wall_thickening", "1b": "bronchiectasis", "1c": "emphysema",
                   "1d": "septal_thickening", "1e": "micronodules", "1f": "other_non_focal",
                   "2a": "linear_abnormalities", "2b": "atelectasis_consolidation", "2c": "groundglass_opacity",
                   "2d": "pulmonary_nodules_masses", "2e": "pleural_effusion_thickening", "2f": "honeycombing",
                   "2g": "pneumothorax", "2h": "other_focal"}
OPTIONAL = ["airway", "pulmonary_artery", "pulmonary_vein"]

# The authors' C merge of their fine names, with our two fixes (thyroid, thymus: background; humerus: ribs).
AUTHORS_C_MERGE = {
    "spleen": "spleen", "kidney_right": "kidney", "kidney_left": "kidney", "adrenal_gland_right": "kidney",
    "adrenal_gland_left": "kidney", "liver_right_lobe": "liver", "liver_left_lobe": "liver", "gallbladder": "liver",
    "stomach": "stomach", "pancreas": "pancreas", "lung_upper_lobe_left": "lung", "lung_lower_lobe_left": "lung",
    "lung_upper_lobe_right": "lung", "lung_middle_lobe_right": "lung", "lung_lower_lobe_right": "lung",
    "pulmonary_trunk": "lung", "esophagus": "esophagus", "trachea": "trachea", "heart": "heart",
    "brachiocephalic_trunk": "heart", "aorta": "aorta", "inferior_vena_cava": "vena_cava",
    "superior_vena_cava": "vena_cava", "vertebrae": "spine", "spine": "spine", "rib": "ribs", "clavicula": "ribs",
    "scapula": "ribs", "humerus": "ribs", "sternum": "sternum", "muscle": "muscles",
    "thyroid_gland_left": "background", "thyroid_gland_right": "background", "thymus": "background",
}


def _merge_names(names: list[str], lm: LabelMap) -> list[str]:
    """Each name as its own one-voxel structure of one labeler, merged: the output class name per voxel."""
    classes = dict(enumerate(names, start=1))
    anatomy = np.arange(1, len(names) + 1, dtype=np.uint8)[None, None]
    merged = merge_labels([AnatomySource("synthetic", anatomy, classes)], None, [], lm)
    table = lm.class_table()
    return [table[str(v)] for v in merged[0, 0]]


def test_label_map_values_follow_yaml_order() -> None:
    cl = load_label_map(CHEST, "CL")
    assert cl.title == "C+L" and cl.needs_lesions
    assert load_label_map(CHEST, "C").title == "C" and not load_label_map(CHEST, "C").needs_lesions
    assert load_label_map(CHEST, "FL").title == "F+L"
    assert [c.name for c in cl.classes[:3]] == ["spleen", "kidney", "liver"]
    assert [c.value for c in cl.classes] == list(range(1, len(cl.classes) + 1))
    assert load_label_map(CHEST, "C").class_table()["0"] == "background"


def test_class_names_are_the_authors_sets() -> None:
    lesions = list(AUTHORS_LESIONS.values())
    assert [c.name for c in load_label_map(CHEST, "C").classes] == AUTHORS_COARSE
    assert [c.name for c in load_label_map(CHEST, "CL").classes] == AUTHORS_COARSE + lesions
    assert [c.name for c in load_label_map(CHEST, "FL", available=set()).classes] == AUTHORS_FINE + lesions
    assert [c.name for c in load_label_map(CHEST, "FL").classes] == AUTHORS_FINE + lesions + OPTIONAL


def test_counts_with_background_and_optional_classes() -> None:
    none: set[str] = set()
    total_like = {"lung_upper_lobe_left", "trachea", "heart", "vertebrae_T5", "rib_left_3", "liver"}
    assert len(load_label_map(CHEST, "C", available=none).class_table()) == 16
    assert len(load_label_map(CHEST, "CL", available=none).class_table()) == 30
    assert len(load_label_map(CHEST, "FL", available=none).class_table()) == 49
    assert len(load_label_map(CHEST, "FL", available=total_like).class_table()) == 49
    full = load_label_map(CHEST, "FL", available=total_like | {"airway", "pulmonary_artery", "pulmonary_vein"})
    assert len(full.class_table()) == 49 + 3 and [c.name for c in full.classes[-3:]] == OPTIONAL
    # TotalSegmentator's lung_vessels task and the demo truth feed the same classes
    assert len(load_label_map(CHEST, "FL", available={"lung_airways", "lung_arteries", "lung_veins"}).classes) == 51
    assert len(load_label_map(CHEST, "FL", available=set(ANATOMY_CLASSES.values())).classes) == 51
    # the classical labeler gives airway only: it is value 49, the 48 fixed classes keep their values
    classical = load_label_map(CHEST, "FL", available=set(CLASSICAL_CLASSES.values()))
    assert len(classical.classes) == 49 and classical.classes[-1].name == "airway" and classical.classes[-1].value == 49
    assert classical.classes[:48] == load_label_map(CHEST, "FL", available=none).classes
    # C and C+L have no optional classes
    assert load_label_map(CHEST, "CL", available=none) == load_label_map(CHEST, "CL")
    # restricting a loaded map equals loading it restricted
    assert load_label_map(CHEST, "FL").for_sources({"airway"}) == load_label_map(CHEST, "FL", available={"airway"})


def test_c_merge_is_the_authors_table_with_two_fixes() -> None:
    names = list(AUTHORS_C_MERGE)
    assert sorted(names) == sorted(AUTHORS_FINE)
    for gran in ("C", "CL"):
        assert _merge_names(names, load_label_map(CHEST, gran)) == list(AUTHORS_C_MERGE.values())
    # in F+L each of the authors' fine names is its own class
    assert _merge_names(names, load_label_map(CHEST, "FL")) == names


def test_every_labelers_names_land_in_the_right_classes() -> None:
    c, fl = load_label_map(CHEST, "C"), load_label_map(CHEST, "FL")
    # TotalSegmentator 2.x (total, liver_segments, lung_vessels)
    total = ["liver", "kidney_cyst_left", "adrenal_gland_right", "thyroid_gland", "pulmonary_vein", "vertebrae_T5",
             "vertebrae_C7", "spinal_cord", "rib_left_3", "costal_cartilages", "clavicula_left", "scapula_right",
             "humerus_left", "autochthon_left", "iliopsoas_right", "atrial_appendage_left", "femur_left",
             "liver_segment_1", "liver_segment_3", "liver_segment_6", "lung_airways", "lung_arteries"]
    assert _merge_names(total, c) == [
        "liver", "kidney", "kidney", "background", "lung", "spine", "spine", "spine", "ribs", "ribs", "ribs", "ribs",
        "ribs", "muscles", "muscles", "heart", "background", "liver", "liver", "liver", "trachea", "lung"]
    assert _merge_names(total, fl) == [
        "background", "kidney_left", "adrenal_gland_right", "background", "pulmonary_vein", "vertebrae", "vertebrae",
        "spine", "rib", "rib", "clavicula", "scapula", "humerus", "muscle", "muscle", "heart", "background",
        "background", "liver_left_lobe", "liver_right_lobe", "airway", "pulmonary_artery"]
    # the demo phantom's truth
    truth = list(ANATOMY_CLASSES.values())
    assert _merge_names(truth, c) == ["background"] + ["lung"] * 5 + [
        "trachea", "trachea", "heart", "aorta", "lung", "lung", "spine", "ribs", "sternum"]
    assert _merge_names(truth, fl) == ["background"] + truth[1:6] + [
        "trachea", "airway", "heart", "aorta", "pulmonary_artery", "pulmonary_vein", "vertebrae", "rib", "sternum"]
    # the classical labeler
    classical = list(CLASSICAL_CLASSES.values())
    assert classical == ["body", "lung_left", "lung_right", "airway", "vertebrae", "ribs", "sternum"]
    assert _merge_names(classical, c) == ["background", "lung", "lung", "trachea", "spine", "ribs", "sternum"]
    assert _merge_names(classical, fl) == ["background", "background", "background", "airway", "vertebrae", "rib",
                                           "sternum"]


def test_every_lesion_is_lung_in_c_and_its_own_class_with_l() -> None:
    codes = list(AUTHORS_LESIONS)
    anatomy = np.zeros((1, 1, len(codes)), np.uint8)
    anatomy[0, 0, :] = 5  # heart under every lesion: lesions win over anatomy
    lesions = np.zeros((len(codes), 1, 1, len(codes)), np.uint8)
    for i in range(len(codes)):
        lesions[i, 0, 0, i] = 1
    expected = {"C": ["lung"] * len(codes), "CL": list(AUTHORS_LESIONS.values()), "FL": list(AUTHORS_LESIONS.values())}
    for gran, names in expected.items():
        lm = load_label_map(CHEST, gran)
        merged = merge_labels([AnatomySource("truth", anatomy, ANATOMY)], lesions, codes, lm)
        table = lm.class_table()
        assert [table[str(v)] for v in merged[0, 0]] == names, gran


def test_merge_priority_lesions_win_and_sources_combine() -> None:
    cl = load_label_map(CHEST, "CL")
    value = {c.name: c.value for c in cl.classes}
    anatomy = np.array([[[0, 1, 2, 2, 3, 4, 5]]], dtype=np.uint8)  # (1, 1, 7)
    lesions = np.zeros((2, 1, 1, 7), dtype=np.uint8)
    lesions[0, 0, 0, [2, 6]] = 1   # a nodule (2d) over lung and over heart
    lesions[1, 0, 0, [2, 3]] = 1   # consolidation (2b) overlapping the nodule at voxel 2
    merged = merge_labels([AnatomySource("truth", anatomy, ANATOMY)], lesions, ["2d", "2b"], cl)
    expected = [0, 0, value["pulmonary_nodules_masses"], value["atelectasis_consolidation"], value["trachea"],
                value["aorta"], value["pulmonary_nodules_masses"]]
    assert merged[0, 0].tolist() == expected  # body is not a C+L class: background
    counts = class_voxel_counts(merged, cl)
    assert counts["pulmonary_nodules_masses"] == 2 and counts["lung"] == 0


def test_merge_without_lesions_is_anatomy_only() -> None:
    c = load_label_map(CHEST, "C")
    anatomy = np.array([[[2, 3, 5, 6]]], dtype=np.uint8)
    merged = merge_labels([AnatomySource("truth", anatomy, ANATOMY)], None, [], c)
    names = c.class_table()
    assert [names[str(v)] for v in merged[0, 0]] == ["lung", "trachea", "heart", "trachea"]


def test_merge_rejects_misaligned_lesions() -> None:
    with pytest.raises(ValueError, match="shape"):
        merge_labels([AnatomySource("truth", np.zeros((2, 2, 2), np.uint8), ANATOMY)],
                     np.zeros((1, 2, 2, 3), np.uint8), ["2d"], load_label_map(CHEST, "CL"))


def test_merge_combines_labelers_by_name_pattern_and_priority() -> None:
    """TotalSegmentator names (vertebrae_T5, rib_left_3) and an airway model's tree feed the classes by
    pattern; where two labelers claim a voxel the higher-priority class wins, whichever labeler said it."""
    total = np.array([[[1, 2, 3, 3, 5, 4]]], np.uint8)   # vertebrae_T5, rib_left_3, lobe, lobe, trachea, heart
    airway = np.array([[[0, 0, 0, 1, 1, 1]]], np.uint8)  # ATM22-style tree: in the lobe, the trachea, the heart
    sources = [AnatomySource("totalseg", total, {1: "vertebrae_T5", 2: "rib_left_3", 3: "lung_upper_lobe_left",
                                                 4: "heart", 5: "trachea"}),
               AnatomySource("airway", airway, {1: "airway"})]
    names = {}
    for gran in ("C", "CL", "FL"):
        lm = load_label_map(CHEST, gran)
        table = lm.class_table()
        names[gran] = [table[str(v)] for v in merge_labels(sources, None, [], lm)[0, 0]]
    # C, C+L: an airway branch inside a lobe stays lung; outside the lungs it is trachea (over heart)
    assert names["C"] == names["CL"] == ["spine", "ribs", "lung", "lung", "trachea", "trachea"]
    # F+L: the tree beats the lobe and the heart, the named trachea beats the tree
    assert names["FL"] == ["vertebrae", "rib", "lung_upper_lobe_left", "airway", "trachea", "airway"]


def test_optional_classes_must_come_last(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("granularities:\n  X:\n    classes:\n"
                    "      - {name: a, anatomy: [a], optional: true}\n      - {name: b, anatomy: [b]}\n")
    with pytest.raises(ValueError, match="optional"):
        load_label_map(path, "X")


def _write_case(folder: Path, name: str, shape=(8, 5, 6)) -> tuple[str, str, str]:
    """Image (air with a block of tissue: a CT the checks accept), anatomy map (in folder/anatomy with
    classes.json) and a one-finding lesion npz."""
    arr = np.full(shape, -1000, np.int16) + np.arange(np.prod(shape), dtype=np.int16).reshape(shape) % 7
    arr[2:6, 1:4, 1:5] = 40
    img = sitk.GetImageFromArray(arr)
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
    assert mask.shape == (1, 8, 5, 6) and mask[0, 1, 2, 2] == 1 and mask.sum() == 1
    with pytest.raises(VolumeError, match=r"train_1_a_1.*differs"):
        read_lesions(npz, ["2d"], sitk.Image(7, 5, 8, sitk.sitkInt16), "train_1_a_1")
    with pytest.raises(VolumeError, match=r"train_1_a_1.*2 channels|channels"):
        read_lesions(npz, ["2d", "2b"], img, "train_1_a_1")
    with pytest.raises(VolumeError, match=r"train_1_a_1.*unknown ReXGroundingCT categories \['9z'\]"):
        read_lesions(npz, ["9z"], img, "train_1_a_1")


def test_lesion_nifti_must_match_image_geometry(tmp_path: Path) -> None:
    image, _, _ = _write_case(tmp_path, "train_1_a_1")
    img = sitk.ReadImage(image)
    vol = np.zeros((2, 8, 5, 6), np.uint8)  # (F, D, H, W)
    vol[1, 3, 4, 5] = 1
    mask = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in vol])
    mask.SetSpacing((1.5, 1.5, 2.0, 1.0))
    path = tmp_path / "train_1_a_1.nii.gz"
    sitk.WriteImage(mask, str(path))
    got = read_lesions(path, ["2d", "2b"], img, "train_1_a_1")
    assert got.shape == (2, 8, 5, 6) and got[1, 3, 4, 5] == 1 and got.sum() == 1
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
    bad = sitk.GetImageFromArray(np.zeros((8, 5, 7), np.uint8))  # anatomy of another shape
    sitk.WriteImage(bad, str(tmp_path / "anatomy" / "train_5_a_1.nii.gz"))
    source = tmp_path / "pl" / "truth" / "shard_0"
    pseudolabel_shard(rows, "truth", {"backend": "folder", "path": str(tmp_path / "anatomy")}, source,
                      on_error="skip", montages=False)
    maps = [load_label_map(CHEST, "C"), load_label_map(CHEST, "CL"), load_label_map(CHEST, "FL")]
    index = label_shard(rows, maps, [source], tmp_path / "out", lesions_complete=False, on_error="skip")
    assert index["volume_name"].tolist() == ["train_1_a_1"]
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "CL" / "train_1_a_1.nii.gz")))
    nodule = {c.name: c.value for c in maps[1].classes}["pulmonary_nodules_masses"]
    assert merged[1, 2, 2] == nodule and (merged == nodule).sum() == 1
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("volume_name")["error"]
    assert "train_2_a_1.npz" in errors["train_2_a_1"] and "empty or truncated" in errors["train_2_a_1"]
    assert "train_3_a_1.npz" in errors["train_3_a_1"]
    assert "unknown ReXGroundingCT categories ['7x']" in errors["train_4_a_1"]
    assert "train_5_a_1" in errors["train_5_a_1"] and "made no label map" in errors["train_5_a_1"]
    pl_errors = pd.read_csv(source / "errors.csv").set_index("volume_name")["error"]
    assert "anatomy/train_5_a_1.nii.gz does not match its image" in pl_errors["train_5_a_1"]
    assert json.loads((tmp_path / "out" / "classes_CL.json").read_text())[str(nodule)] == "pulmonary_nodules_masses"
    # F+L lists the optional classes the source feeds (its `bronchi` -> airway) and no others
    fl = json.loads((tmp_path / "out" / "classes_FL.json").read_text())
    assert len(fl) == 50 and fl["49"] == "airway"
    assert len(json.loads((tmp_path / "out" / "classes_C.json").read_text())) == 16
    assert json.loads(index.loc[0, "missing_FL"]).count("airway") == 1  # no bronchi voxels in this case
