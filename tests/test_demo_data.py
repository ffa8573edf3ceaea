"""The synthetic CT-RATE demo: exact layout, geometry, HU plausibility and visible findings."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from uvlm.constants import CT_RATE_LABELS, NOT_GIVEN, REXGROUNDING_CATEGORIES
from uvlm.demo.ct_rate_writer import DemoConfig, write_demo_ct_rate
from uvlm.demo.phantom import ANATOMY_CLASSES, PatientAnatomy, PhantomConfig, make_phantom
from uvlm.demo.reports import make_report

# abnormality_prob 0.5 so that every label has positives and negatives among ~15 volumes.
CFG = DemoConfig(n_patients=8, abnormality_prob=0.5, seed=3, phantom=PhantomConfig().with_shape((32, 64, 64)))
LUNG = [k for k, v in ANATOMY_CLASSES.items() if v.startswith("lung_")]
BONE = [k for k, v in ANATOMY_CLASSES.items() if v in ("vertebrae", "ribs", "sternum")]
HEART = next(k for k, v in ANATOMY_CLASSES.items() if v == "heart")
# split -> (dataset folder, reports/metadata stem, labels stem, ReXGroundingCT key)
SPLITS = {"train": ("train_fixed", "train", "train", "train"),
          "valid": ("valid_fixed", "validation", "valid", "val")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "ct_rate"
    write_demo_ct_rate(root, CFG, progress=False)
    return root


@pytest.fixture(scope="module")
def volumes(demo: Path) -> pd.DataFrame:
    """One row per volume: truth, metadata and the ReXGroundingCT entry (or None)."""
    truth = pd.read_parquet(demo / "demo_truth.parquet")
    meta = pd.concat([pd.read_csv(demo / "metadata" / f"{t}_metadata.csv") for t in ("train", "validation")])
    rex = json.loads((demo / "ReXGroundingCT" / "dataset.json").read_text())
    entries = {e["name"]: e for e in rex["train"] + rex["val"]}
    df = truth.merge(meta, on="VolumeName", validate="one_to_one")
    df["rex"] = [entries.get(v) for v in df.VolumeName]
    return df


def _paths(demo: Path, name: str) -> tuple[Path, Path]:
    split, patient, scan, _ = name.removesuffix(".nii.gz").split("_")
    pre = f"{split}_{patient}"
    vol = demo / "dataset" / SPLITS[split][0] / pre / f"{pre}_{scan}" / name
    return vol, demo / "anatomy_masks" / name


def _arrays(demo: Path, name: str):
    """(hu, anatomy) in nibabel (X, Y, Z) order and lesion channels {text: (code, mask)}."""
    vol, mask = _paths(demo, name)
    hu, anat = np.asarray(nib.load(vol).dataobj), np.asarray(nib.load(mask).dataobj)
    seg = demo / "ReXGroundingCT" / "segmentations" / name.replace(".nii.gz", ".npz")
    lesions = {}
    if seg.exists():
        entry = next(e for e in json.loads((demo / "ReXGroundingCT" / "dataset.json").read_text())[
            "train" if name.startswith("train") else "val"] if e["name"] == name)
        m = np.load(seg)["mask"]
        lesions = {entry["findings"][str(i)]: (entry["categories"][str(i)], m[i]) for i in range(len(m))}
    return hu, anat, lesions


def test_layout_and_columns(demo: Path, volumes: pd.DataFrame) -> None:
    assert not (demo / ".staging").exists()
    for split, (_, table, labels, _) in SPLITS.items():
        reports = pd.read_csv(demo / "radiology_text_reports" / f"{table}_reports.csv")
        meta = pd.read_csv(demo / "metadata" / f"{table}_metadata.csv")
        lab = pd.read_csv(demo / "multi_abnormality_labels" / f"{labels}_predicted_labels.csv")
        assert list(reports.columns) == ["VolumeName", "ClinicalInformation_EN", "Technique_EN",
                                         "Findings_EN", "Impressions_EN"]
        assert {"VolumeName", "XYSpacing", "ZSpacing", "RescaleIntercept", "RescaleSlope", "Rows", "Columns",
                "NumberofSlices", "PatientSex", "PatientAge", "Manufacturer"} <= set(meta.columns)
        assert list(lab.columns) == ["VolumeName", *CT_RATE_LABELS]
        assert set(lab[list(CT_RATE_LABELS)].to_numpy().ravel()) <= {0, 1}
        assert list(reports.VolumeName) == list(meta.VolumeName) == list(lab.VolumeName)
        assert reports.VolumeName.str.fullmatch(rf"{split}_\d+_[a-z]_\d+\.nii\.gz").all()
        assert meta.PatientAge.str.fullmatch(r"\d{3}Y").all() and (meta.RescaleIntercept == -1024).all()
        assert not reports.isna().any().any()
        for name in reports.VolumeName:
            assert all(p.is_file() for p in _paths(demo, name))
    files = {p.relative_to(demo).parts[0] for p in demo.iterdir()}
    assert files == {"dataset", "radiology_text_reports", "metadata", "multi_abnormality_labels",
                     "anatomy_masks", "ReXGroundingCT", "demo_truth.parquet"}
    assert sorted(p.name for p in (demo / "dataset").iterdir()) == ["train_fixed", "valid_fixed"]
    assert len(list((demo / "dataset").rglob("*.nii.gz"))) == len(volumes)
    classes = json.loads((demo / "anatomy_masks" / "classes.json").read_text())
    assert classes == {str(k): v for k, v in ANATOMY_CLASSES.items()}
    reports = pd.read_csv(demo / "radiology_text_reports" / "train_reports.csv")
    assert (reports.ClinicalInformation_EN == NOT_GIVEN).any()


def test_split_by_patient_and_multiple_scans(volumes: pd.DataFrame) -> None:
    assert set(volumes.split) == {"train", "valid"}
    assert volumes.groupby("patient").split.nunique().max() == 1
    assert (volumes.patient.str.split("_").str[0] == volumes.split).all()
    scans = volumes.VolumeName.str.rsplit("_", n=1).str[0]
    assert volumes.assign(scan=scans).groupby("patient").scan.nunique().max() >= 2
    assert scans.value_counts().max() >= 2
    labels = volumes.set_index("VolumeName").abnormalities.map(frozenset)
    assert labels.groupby(scans.to_numpy()).nunique().max() == 1  # reconstructions share their findings
    for label in CT_RATE_LABELS:  # every label has positives and negatives in this demo
        assert 0 < labels.map(lambda a, x=label: x in a).sum() < len(labels), label


def test_nifti_geometry_matches_metadata(demo: Path, volumes: pd.DataFrame) -> None:
    for row in volumes.itertuples():
        vol_path, mask_path = _paths(demo, row.VolumeName)
        img, mask = sitk.ReadImage(str(vol_path)), sitk.ReadImage(str(mask_path))
        sy, sx = json.loads(row.XYSpacing)
        assert np.allclose(img.GetSpacing(), (sx, sy, row.ZSpacing))
        assert img.GetSize() == (row.Columns, row.Rows, row.NumberofSlices)
        assert np.allclose(img.GetDirection(), np.eye(3).ravel())
        assert img.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(img, get)(), getattr(mask, get)())


def test_hu_plausible(demo: Path, volumes: pd.DataFrame) -> None:
    for name in volumes.VolumeName:
        hu, anat, lesions = _arrays(demo, name)
        in_lesion = np.any([m for _, m in lesions.values()], axis=0) if lesions else np.zeros(hu.shape, bool)
        assert np.median(hu[np.isin(anat, LUNG) & ~in_lesion]) < -700, name
        assert np.median(hu[anat == HEART]) > 50, name
        assert np.median(hu[np.isin(anat, BONE)]) > 300, name
        assert abs(np.median(hu[anat == 0]) + 1000) < 20, name


def _ctr(anat: np.ndarray) -> float:
    """Widest heart extent / widest lung-to-lung extent along x (nibabel axis 0)."""
    def width(mask: np.ndarray) -> int:
        xs = np.nonzero(mask.any(axis=1))  # (x, z) pairs
        return max(np.ptp(xs[0][xs[1] == z]) + 1 for z in np.unique(xs[1]))
    return width(anat == HEART) / width(np.isin(anat, LUNG))


def test_required_findings_visible(demo: Path, volumes: pd.DataFrame) -> None:
    # label -> (text in the lesion finding, allowed median HU range of its voxels)
    checks = {"Lung nodule": ("nodule", (-300, 200)), "Pleural effusion": ("pleural effusion", (-30, 60)),
              "Emphysema": ("emphysema", (-1024, -900)), "Consolidation": ("consolidation", (-100, 100)),
              "Atelectasis": ("atelectasis", (-100, 100)), "Pericardial effusion": ("pericardial", (-20, 40)),
              "Arterial wall calcification": ("aortic wall", (300, 1000))}
    for row in volumes.itertuples():
        hu, anat, lesions = _arrays(demo, row.VolumeName)
        for label, (key, (lo, hi)) in checks.items():
            found = [(code, m) for text, (code, m) in lesions.items() if key in text]
            assert bool(found) == (label in row.abnormalities), (row.VolumeName, label)
            for _, m in found:
                assert m.any() and lo < np.median(hu[m > 0]) < hi, (row.VolumeName, label)
        ctr = _ctr(anat)
        assert ctr > 0.55 if "Cardiomegaly" in row.abnormalities else ctr < 0.5, (row.VolumeName, ctr)


def test_lesion_masks_match_nifti_and_json(demo: Path, volumes: pd.DataFrame) -> None:
    for row in volumes.itertuples():
        seg = demo / "ReXGroundingCT" / "segmentations" / row.VolumeName.replace(".nii.gz", ".npz")
        if row.rex is None:  # only volumes without any lesion finding lack an entry
            assert not seg.exists()
            assert set(row.abnormalities) <= {"Cardiomegaly", "Medical material"}
            continue
        mask = np.load(seg)["mask"]
        shape = nib.load(_paths(demo, row.VolumeName)[0]).shape
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert mask.shape == tuple(row.rex["shape"]) == (len(row.rex["findings"]), *shape)
        assert set(row.rex["categories"].values()) <= set(REXGROUNDING_CATEGORIES)
        assert mask.reshape(len(mask), -1).any(axis=1).all()


def test_deterministic(demo: Path, tmp_path: Path) -> None:
    write_demo_ct_rate(tmp_path / "again", CFG, progress=False)
    for rel in ("multi_abnormality_labels/train_predicted_labels.csv",
                "radiology_text_reports/train_reports.csv", "metadata/validation_metadata.csv",
                "dataset/train_fixed/train_1/train_1_a/train_1_a_1.nii.gz", "ReXGroundingCT/dataset.json"):
        assert (demo / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_paired_phantoms_show_only_labelled_findings() -> None:
    """Same patient and seed: effusion fluid and a larger heart appear only when labelled."""
    cfg = PhantomConfig().with_shape((32, 64, 64))
    patient = PatientAnatomy.sample(np.random.default_rng(0))
    normal = make_phantom(np.random.default_rng(1), cfg, set(), patient)
    sick = make_phantom(np.random.default_rng(1), cfg, {"Pleural effusion", "Cardiomegaly"}, patient)
    lung = np.isin(normal.anatomy, LUNG)  # where lung lies without the effusion
    fluid_normal, fluid_sick = (np.count_nonzero(lung & (p.hu > -40) & (p.hu < 70)) for p in (normal, sick))
    assert fluid_normal < 0.002 * lung.sum() and fluid_sick > 0.05 * lung.sum()
    assert np.count_nonzero(sick.anatomy == HEART) > 1.5 * np.count_nonzero(normal.anatomy == HEART)
    assert normal.lesions.shape == (0, *cfg.shape) and sick.lesion_categories == ["2e"] * len(sick.lesions)
    with pytest.raises(ValueError):
        make_phantom(np.random.default_rng(1), cfg, {"Pneumothorax"}, patient)


def test_interrupted_run_does_not_look_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvlm.demo.ct_rate_writer as writer

    calls = []

    def failing_report(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return make_report(*args, **kwargs)

    monkeypatch.setattr(writer, "make_report", failing_report)
    with pytest.raises(RuntimeError):
        write_demo_ct_rate(tmp_path, CFG, progress=False)
    assert list(tmp_path.rglob("*.nii.gz"))  # some volumes were written ...
    assert not list(tmp_path.rglob("*.csv")) and not (tmp_path / "demo_truth.parquet").exists()  # ... no index
    assert not (tmp_path / ".staging").exists()
