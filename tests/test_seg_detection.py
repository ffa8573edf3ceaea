"""Segmentation-based lesion detection (Table 3's nnU-Net rows): the RadGPT rule on a predicted label map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uvlm.data.abdomen_atlas import ingest_abdomen_atlas
from uvlm.demo.abdomen_writer import write_demo_abdomen_atlas
from uvlm.io import read_header
from uvlm.labels.abdomen_shard import label_abdomen_shard, read_masks
from uvlm.labels.label_map import load_label_map
from uvlm.labels.radgpt import LESION_ORGANS, detect_lesions, lesion_findings, lesion_present, organ_classes

ABDOMEN = Path(__file__).resolve().parent.parent / "config" / "labels" / "abdomen.yaml"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, Path]:
    """The demo's cases, their C+L and F+L label maps (made from the masks) and the label index."""
    root = tmp_path_factory.mktemp("atlas") / "AbdomenAtlas"
    write_demo_abdomen_atlas(root, n_cases=6, seed=5, shape=(24, 32, 32))
    rows = ingest_abdomen_atlas(root, shard_size=100)
    out = root.parent / "labels"
    maps = [load_label_map(ABDOMEN, g) for g in ("C", "CL", "FL")]
    index = label_abdomen_shard(rows, maps, out, montages=False)
    return root, index.set_index("volume_name"), out


def test_organ_classes_follow_the_granularity() -> None:
    cl, fl = load_label_map(ABDOMEN, "CL"), load_label_map(ABDOMEN, "FL")
    assert organ_classes(cl, "liver_lesion") == ["liver", "liver_lesion"]
    assert organ_classes(fl, "liver_lesion") == [f"liver_segment_{i}" for i in range(1, 9)] + ["liver_lesion"]
    assert organ_classes(cl, "pancreatic_lesion") == ["pancreas", "pancreatic_lesion"]
    with pytest.raises(ValueError, match="granularity C has no classes"):
        detect_lesions(sitk.Image(4, 4, 4, sitk.sitkUInt8), load_label_map(ABDOMEN, "C"))


@pytest.mark.parametrize("granularity", ["CL", "FL"])
def test_detection_on_a_label_map_equals_the_rule_on_the_masks_it_was_made_from(labelled, granularity) -> None:
    """A perfect prediction (the label map made from the ground-truth masks) gives the labels and volumes of the
    RadGPT rule applied to those masks directly, for every lesion inside its organ. (A one-voxel speck outside
    its organ cannot be told apart on a label map, where the lesion class replaces the organ: the demo's specks
    are skipped here and counted.)"""
    root, index, out = labelled
    label_map = load_label_map(ABDOMEN, granularity)
    compared = positives = specks = 0
    for case in index.index:
        found = detect_lesions(sitk.ReadImage(str(out / granularity / f"{case}.nii.gz")), label_map)
        masks = read_masks(root / case / "segmentations", read_header(root / case / "ct.nii.gz", case), case)
        truth = lesion_findings(masks)
        for lesion, organs in LESION_ORGANS.items():
            inside = np.logical_or.reduce([sitk.GetArrayViewFromImage(masks[o]) > 0 for o in organs])
            outside = (sitk.GetArrayViewFromImage(masks[lesion]) > 0) & ~inside
            if outside.any():
                specks += 1
                continue
            assert found[lesion] == truth[lesion], (case, lesion)
            compared += 1
            positives += truth[lesion][0]
    assert compared >= 12 and positives >= 1 and specks >= 1


def test_detection_equals_the_rule_on_the_predicted_lesion_and_organ_masks() -> None:
    """An imperfect prediction: a liver lesion reaching outside the liver, a kidney speck the erosion removes.
    The detector's answer is lesion_present on the same masks, given directly."""
    label_map = load_label_map(ABDOMEN, "CL")
    value = {c.name: c.value for c in label_map.classes}
    arr = np.zeros((20, 24, 24), np.uint8)  # (D, H, W), 2 x 1.5 x 1.5 mm voxels
    arr[2:12, 2:14, 2:14] = value["liver"]
    arr[6:14, 8:16, 8:16] = value["liver_lesion"]          # half outside the liver
    arr[14:19, 16:22, 16:22] = value["kidney"]
    arr[16, 18, 18] = value["kidney_lesion"]                # one voxel: eroded away
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.5, 1.5, 2.0))
    found = detect_lesions(img, label_map)

    def direct(lesion_values: list[int], organ_values: list[int]) -> tuple[int, float]:
        masks = []
        for values in (lesion_values, organ_values):
            m = sitk.GetImageFromArray(np.isin(arr, values).astype(np.uint8))
            m.CopyInformation(img)
            masks.append(m)
        positive, volume = lesion_present(*masks)
        return int(positive), volume

    assert found["liver_lesion"] == direct([value["liver_lesion"]], [value["liver"], value["liver_lesion"]])
    assert found["liver_lesion"][0] == 1
    assert found["kidney_lesion"] == direct([value["kidney_lesion"]], [value["kidney"], value["kidney_lesion"]])
    assert found["kidney_lesion"] == (0, 0.0) and found["pancreatic_lesion"] == (0, 0.0)
    assert set(found) == set(LESION_ORGANS)
