"""Pseudo-labelers: the real TotalSegmentator and nnU-Net inference paths on random-weight model folders,
and the classical labeler on real CT shipped in packages and on the demo phantoms."""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from uvlm.demo.phantom import PatientAnatomy, PhantomConfig, make_reconstructions
from uvlm.pseudolabel.classical import CLASSES, label_image
from uvlm.pseudolabel.nnunet_model import ModelFolderError, NnunetLabeler
from uvlm.pseudolabel.random_model import write_random_model_folder
from uvlm.pseudolabel.run import pseudolabel_shard
from uvlm.pseudolabel.totalseg import TotalSegmentatorLabeler, WeightsMissingError, class_table

VALUE = {n: v for v, n in CLASSES.items()}


def oblique_ct(path: Path, shape=(36, 40, 44)) -> sitk.Image:
    """A CT with non-trivial geometry: anisotropic spacing, an origin, and a flipped x axis."""
    rng = np.random.default_rng(0)
    _, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    body = ((yy - shape[1] / 2) / (0.4 * shape[1])) ** 2 + ((xx - shape[2] / 2) / (0.4 * shape[2])) ** 2 < 1
    arr = (rng.normal(0, 30, shape) + np.where(body, 40, -1000)).astype(np.int16)  # air around a body (HU)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.2, 2.9, 4.0))
    img.SetOrigin((120.0, -40.0, 15.0))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(path))
    return img


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_totalsegmentator_api_end_to_end(tmp_path: Path) -> None:
    """Task total (fast, 3 mm model) through TotalSegmentator's own API on a random-weight folder."""
    ct = oblique_ct(tmp_path / "ct.nii.gz")
    weights = tmp_path / "weights"
    with pytest.raises(WeightsMissingError, match="Dataset297_TotalSegmentator_total_3mm_1559subj"):
        TotalSegmentatorLabeler("total", True, weights, tmp_path / "home", "cpu")
    write_random_model_folder(
        weights / "Dataset297_TotalSegmentator_total_3mm_1559subj"
        / "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres",
        class_table("total"), (3.0, 3.0, 3.0), trainer="nnUNetTrainer_4000epochs_NoMirroring")
    before = {k: os.environ.get(k) for k in ("TOTALSEG_HOME_DIR", "TOTALSEG_WEIGHTS_PATH", "nnUNet_results")}
    rows = pd.DataFrame([{"volume_name": "train_1_a_1", "image_path": str(tmp_path / "ct.nii.gz")}])
    spec = {"backend": "totalsegmentator", "task": "total", "fast": True, "weights_dir": str(weights)}
    index = pseudolabel_shard(rows, "totalseg", spec, tmp_path / "out" / "shard_0", device="cpu")
    out = sitk.ReadImage(str(tmp_path / "out" / "shard_0" / "train_1_a_1.nii.gz"))
    assert_same_grid(out, ct)
    classes = json.loads((tmp_path / "out" / "shard_0" / "classes.json").read_text())
    from totalsegmentator.map_to_binary import class_map
    assert classes == {str(k): v for k, v in class_map["total"].items()}  # TotalSegmentator's own names
    assert set(np.unique(sitk.GetArrayFromImage(out)).tolist()) <= {0, *map(int, classes)}
    assert json.loads(index.loc[0, "voxels"]).keys() == set(classes.values())
    meta = json.loads((tmp_path / "out" / "shard_0" / "labeler.json").read_text())
    assert meta["versions"]["totalsegmentator"] == "2.18.0"
    assert {k: os.environ.get(k) for k in before} == before  # environment restored after the call
    assert not (tmp_path / "out" / "shard_0.home").exists()  # private home removed with the job


def test_totalsegmentator_private_home_has_usage_statistics_off(tmp_path: Path) -> None:
    from uvlm.pseudolabel.totalseg import totalseg_environment

    with totalseg_environment(tmp_path / "w", tmp_path / "home"):
        from totalsegmentator.config import get_totalseg_dir, setup_totalseg

        assert get_totalseg_dir() == (tmp_path / "home").resolve()
        assert setup_totalseg()["send_usage_stats"] is False


def test_nnunet_backend_end_to_end_with_renamed_classes(tmp_path: Path) -> None:
    ct = oblique_ct(tmp_path / "ct.nii.gz")
    folder = write_random_model_folder(tmp_path / "Dataset801_Airway" / "nnUNetTrainer__nnUNetPlans__3d_fullres",
                                       {1: "lumen", 2: "wall"}, (4.0, 3.0, 3.0), patch_size=(16, 32, 32))
    raw = sitk.Cast(sitk.Clamp(ct + 1024, sitk.sitkInt16, 0, 4095), sitk.sitkUInt16)  # stored raw: HU + 1024
    sitk.WriteImage(raw, str(tmp_path / "raw.nii.gz"))
    rows = pd.DataFrame([{"volume_name": "train_1_a_1", "image_path": str(tmp_path / "ct.nii.gz")},
                         {"volume_name": "train_2_a_1", "image_path": str(tmp_path / "missing.nii.gz")},
                         {"volume_name": "train_3_a_1", "image_path": str(tmp_path / "raw.nii.gz"),
                          "rescale_intercept": -1024.0, "rescale_slope": 1.0}])
    spec = {"backend": "nnunet", "model_dir": str(folder), "folds": [0], "classes": {"1": "airway"}}
    index = pseudolabel_shard(rows, "airway", spec, tmp_path / "out" / "shard_0", on_error="skip")
    shard = tmp_path / "out" / "shard_0"
    assert index["volume_name"].tolist() == ["train_1_a_1", "train_3_a_1"]
    assert_same_grid(sitk.ReadImage(str(shard / "train_3_a_1.nii.gz")), ct)
    assert "train_2_a_1" in (shard / "errors.csv").read_text()  # one unreadable case, the other done
    out = sitk.ReadImage(str(shard / "train_1_a_1.nii.gz"))
    assert_same_grid(out, ct)
    assert json.loads((shard / "classes.json").read_text()) == {"1": "airway", "2": "wall"}
    assert (shard / "qc" / "train_1_a_1.png").is_file()
    assert sorted(p.name for p in shard.iterdir()) == ["classes.json", "errors.csv", "index.parquet",  # no .hu copy
                                                      "labeler.json", "qc", "train_1_a_1.nii.gz", "train_3_a_1.nii.gz"]
    with pytest.raises(ModelFolderError, match="no label values \\[7\\]"):
        NnunetLabeler(folder, [0], rename={7: "x"})


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/uvlm_pwned",))


def test_nnunet_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m", {1: "airway"}, (2.0, 2.0, 2.0), patch_size=(16, 16, 16))
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    ckpt["extra"] = _Payload()
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ModelFolderError, match="weights-only"):
        NnunetLabeler(folder, [0])
    assert not Path("/tmp/uvlm_pwned").exists()


def _atlas() -> sitk.Image:
    path = importlib.resources.files("totalsegmentator") / "resources" / "ct_brain_atlas_1mm.nii.gz"
    return sitk.ReadImage(str(path))


def test_classical_on_real_head_ct() -> None:
    """TotalSegmentator's head CT (brain only, outside set to 0, not air): the body is the brain's
    volume, and there are no lungs, airway or bone to find."""
    img = _atlas()
    ml = np.prod(img.GetSpacing()) / 1000.0
    lab = sitk.GetArrayFromImage(label_image(img))
    volumes = {n: float((lab == v).sum() * ml) for v, n in CLASSES.items()}
    assert set(CLASSES.values()) == {"body", "lung_left", "lung_right", "airway", "vertebrae", "ribs", "sternum"}
    assert 1000 <= volumes["body"] <= 1800  # an adult brain is 1.1-1.5 l
    assert volumes["lung_left"] == volumes["lung_right"] == volumes["airway"] == 0
    assert volumes["vertebrae"] + volumes["ribs"] + volumes["sternum"] < 5


def test_classical_finds_bone_in_real_ct_slice() -> None:
    """pydicom's CT_small.dcm: one real CT slice (HU) through a vertebra; as a 5-slice volume."""
    from pydicom.data import get_testdata_file

    slice_ = sitk.ReadImage(get_testdata_file("CT_small.dcm"))[:, :, 0]
    vol = sitk.JoinSeries([slice_] * 5)
    vol.SetSpacing((*slice_.GetSpacing(), 5.0))
    lab = sitk.GetArrayFromImage(label_image(vol))[2]
    hu = sitk.GetArrayFromImage(vol)[2]
    bone = np.isin(lab, [VALUE["vertebrae"], VALUE["ribs"], VALUE["sternum"]])
    area = float(bone.sum() * np.prod(slice_.GetSpacing()))
    assert 100 <= area <= 1500  # mm^2: a vertebral cross-section, not the whole slice
    assert np.median(hu[bone]) > 300
    assert (lab == VALUE["body"]).sum() > 0.5 * lab.size


def _phantoms(n: int, orient: str | None = None):
    cfg = PhantomConfig(shape=(40, 80, 80), spacing_mm=(8.0, 4.48, 4.48))  # the demo's grid
    rng = np.random.default_rng(7)
    from uvlm.constants import CT_RATE_LABELS

    for _ in range(n):
        labels = {c for c in CT_RATE_LABELS if rng.random() < 0.3}
        ph = make_reconstructions(rng, cfg, labels, PatientAnatomy.sample(rng), (int(rng.integers(1, 3)),))[0]
        img = sitk.GetImageFromArray(ph.hu)
        img.SetSpacing(tuple(reversed(ph.spacing_mm)))
        truth = sitk.GetImageFromArray(ph.anatomy)
        truth.CopyInformation(img)
        if orient:  # store the volume in another orientation: labels must still follow the patient
            img, truth = sitk.DICOMOrient(img, orient), sitk.DICOMOrient(truth, orient)
        yield img, truth


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.mark.parametrize("orient", [None, "RAI"])
def test_classical_reaches_dice_targets_on_demo_phantoms(orient: str | None) -> None:
    from uvlm.demo.phantom import ANATOMY_CLASSES

    names = dict(ANATOMY_CLASSES)
    groups = {"lung_left": [v for v, n in names.items() if n.startswith("lung") and n.endswith("left")],
              "lung_right": [v for v, n in names.items() if n.startswith("lung") and n.endswith("right")],
              "airway": [v for v, n in names.items() if n in ("trachea", "bronchi")],
              **{k: [v for v, n in names.items() if n == k] for k in ("vertebrae", "ribs", "sternum")}}
    scores = {k: [] for k in groups}
    for img, truth in _phantoms(10, orient):
        lab = sitk.GetArrayFromImage(label_image(img))
        gt = sitk.GetArrayFromImage(truth)
        for k, vals in groups.items():
            scores[k].append(_dice(lab == VALUE[k], np.isin(gt, vals)))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean["lung_left"] >= 0.9 and mean["lung_right"] >= 0.9, mean
    assert mean["airway"] >= 0.7, mean
    # The bone split by position (measured means on these 10 phantoms, both orientations: ribs 0.974,
    # sternum 0.996, vertebrae 0.687). Vertebrae are lower because the bone step misses the cancellous
    # core of vertebral bodies whose cortex ring is open in the slice; the split itself puts over 90%
    # of the detected vertebral bone into vertebrae.
    assert mean["ribs"] >= 0.9 and mean["sternum"] >= 0.9, mean
    assert mean["vertebrae"] >= 0.6, mean
