"""Bring-your-own-data CSV: DICOM series reading in HU, and the CSV -> manifest rules and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from dicom_writer import ORIGIN, SERIES, SPACING, write_dicom_series

from uvlm.data.csv_manifest import BASE_COLUMNS, CsvDatasetConfig, CsvManifestError, ingest_csv
from uvlm.data.ct_volume import load_ct
from uvlm.data.manifest import label_set
from uvlm.io import VolumeError, read_header, read_image


def phantom(seed: int = 0, shape: tuple[int, int, int] = (10, 24, 20)) -> np.ndarray:
    """Plausible CT in HU, (D, H, W) int16: noisy air around a ~40 HU body with a ~700 HU bone."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    _, y, x = np.mgrid[:d, :h, :w]
    body = ((y - h / 2) / (h * 0.4)) ** 2 + ((x - w / 2) / (w * 0.4)) ** 2 < 1
    bone = ((y - h / 2) / (h * 0.1)) ** 2 + ((x - w / 2) / (w * 0.1)) ** 2 < 1
    hu = np.where(body, 40, -1000) + np.where(bone, 660, 0) + rng.integers(-20, 21, shape)
    return hu.astype(np.int16)


def write_nifti(path: Path, hu: np.ndarray) -> Path:
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(SPACING)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


# ---- DICOM series reading -------------------------------------------------------------------------


def test_read_image_returns_the_series_in_hu_sorted_by_position(tmp_path: Path) -> None:
    hu = phantom()
    paths = write_dicom_series(tmp_path / "ct", hu)
    img = read_image(tmp_path / "ct", "c1")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu)  # (D, H, W), slices in position order
    np.testing.assert_allclose(img.GetSpacing(), SPACING, atol=1e-4)
    np.testing.assert_allclose(img.GetOrigin(), ORIGIN, atol=1e-4)
    header = read_header(tmp_path / "ct", "c1")  # callers use the geometry getters only
    assert header.GetSize() == img.GetSize() == (20, 24, 10)
    assert header.GetSpacing() == img.GetSpacing() and header.GetDirection() == img.GetDirection()
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(paths[0])  # the files really hold HU + 1024: the reader applied the rescale
    assert float(ds.RescaleIntercept) == -1024
    k = int(ds.InstanceNumber) - 1
    assert k != 0  # shuffled: the first file name is not the first slice
    np.testing.assert_array_equal(ds.pixel_array.astype(int), hu[k].astype(int) + 1024)


def test_two_series_in_one_folder_name_both_uids(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "ct", phantom(0))
    other = f"{SERIES}.2"
    for p in write_dicom_series(tmp_path / "tmp", phantom(1), series=other):
        p.rename(tmp_path / "ct" / f"B{p.name}")
    with pytest.raises(VolumeError, match="c7") as err:
        read_image(tmp_path / "ct", "c7")
    assert SERIES in str(err.value) and other in str(err.value) and "one series" in str(err.value)


def test_empty_folder_and_folder_without_dicom_name_the_case(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match=r"case c3: no DICOM series in folder .*empty"):
        read_image(tmp_path / "empty", "c3")
    with pytest.raises(VolumeError, match="case c3: no DICOM series"):
        read_header(tmp_path / "empty", "c3")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a DICOM file")
    with pytest.raises(VolumeError, match="case c4: no DICOM series"):
        read_image(tmp_path / "notes", "c4")


def test_a_missing_slice_is_rejected_not_spread_out(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "ct", phantom(), skip=(4,))
    with pytest.raises(VolumeError, match=r"case c5: DICOM series in .* is unevenly spaced"):
        read_image(tmp_path / "ct", "c5")


def test_file_reading_is_unchanged(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "a.nii.gz", phantom())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path, "a")), phantom())
    assert isinstance(read_header(path, "a"), sitk.ImageFileReader)
    with pytest.raises(VolumeError, match="case a: file not found"):
        read_image(tmp_path / "gone.nii.gz", "a")


def test_load_ct_reads_a_dicom_folder_in_hu(tmp_path: Path) -> None:
    hu = phantom()
    write_dicom_series(tmp_path / "ct", hu)
    img, info = load_ct(tmp_path / "ct", "c1")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu.astype(np.float32))
    assert info["hu_correction"] == "none" and info["padding"] is None
    np.testing.assert_allclose(info["source_spacing"], SPACING, atol=1e-4)


# ---- CSV -> manifest --------------------------------------------------------------------------------

LABELS = ("Liver lesion", "Kidney cyst")


def write_csv(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, encoding=encoding)
    return path


def row(case: str, patient: str, split: str = "train", image: str = "", report: str = "Normal.",
        liver: str = "0", kidney: str = "0", **extra: str) -> dict:
    return {"case_id": case, "patient_id": patient, "split": split, "image": image, "report": report,
            "Liver lesion": liver, "Kidney cyst": kidney, **extra}


@pytest.fixture()
def hospital(tmp_path: Path) -> Path:
    """A NIfTI case, a DICOM case, a missing image, an empty report, unknown labels, a missing mask."""
    root = tmp_path / "hospital"
    write_nifti(root / "nifti" / "a.nii.gz", phantom(0))
    write_dicom_series(root / "dicom" / "b", phantom(1))
    (root / "masks" / "a").mkdir(parents=True)  # a's mask folder (its per-class files are the label step's)
    (root / "masks" / "e").write_bytes(b"x")  # a file where a folder should be
    return write_csv(root / "cases.csv", [
        row(" d ", "p3", "Test", "nifti/missing.nii.gz", "Liver lesion.", liver="1", mask=""),
        row("a", "p1", "train", "nifti/a.nii.gz", "  Liver lesion seen.  ", liver="1.0", mask="masks/a"),
        row("b", "p2", "val", str(root / "dicom" / "b"), "Kidney cyst.", kidney="1", mask="masks/b"),
        row("c", "p1", "train", "nifti/a.nii.gz", "", liver="", kidney="NaN", mask=""),
        row("e", "p4", "train", "nifti/a.nii.gz", "Normal.", mask="masks/e"),
    ])


def test_manifest_columns_types_paths_and_problems(hospital: Path) -> None:
    cfg = CsvDatasetConfig(csv=str(hospital), labels=LABELS, mask_column="mask", label_map="config/labels/abdomen.yaml")
    df = ingest_csv(cfg, shard_size=2, name="hospital")
    root = hospital.parent
    assert list(df.columns) == [*BASE_COLUMNS[:8], *LABELS, *BASE_COLUMNS[8:]]
    assert label_set(df) == ("hospital", list(LABELS))  # the label set Stage 2 and scoring read
    # sorted by (split, name); "Test" and "val" both mean the scored split "valid"
    assert list(zip(df["split"], df["volume_name"], strict=True)) == [
        ("train", "a"), ("train", "c"), ("train", "e"), ("valid", "b"), ("valid", "d")]
    assert list(df["shard"]) == [0, 0, 1, 1, 2]
    r = df.set_index("volume_name")
    assert r.loc["a", "image_path"] == str(root / "nifti" / "a.nii.gz") and Path(r.loc["a", "image_path"]).is_absolute()
    assert r.loc["b", "image_path"] == str(root / "dicom" / "b")
    assert r.loc["d", "image_path"] == ""
    assert r["image_exists"].to_dict() == {"a": True, "b": True, "c": True, "d": False, "e": True}
    assert r["has_report"].to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": True}
    assert r.loc["a", "report_text"] == "Liver lesion seen." and r.loc["c", "report_text"] == ""
    assert r["labels_known"].to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": True}
    assert r["Liver lesion"].to_dict() == {"a": 1, "b": 0, "c": 0, "d": 1, "e": 0}
    assert r["Kidney cyst"].to_dict() == {"a": 0, "b": 1, "c": 0, "d": 0, "e": 0}
    assert r.loc["a", "seg_dir"] == str(root / "masks" / "a") and r.loc["b", "seg_dir"] == r.loc["e", "seg_dir"] == ""
    assert r.loc["a", "problems"] == ""
    assert r.loc["b", "problems"] == f"mask folder missing: {root / 'masks' / 'b'}"
    assert r.loc["e", "problems"] == f"masks not a folder: {root / 'masks' / 'e'}"
    assert r.loc["c", "problems"] == "no report; labels not given: Liver lesion, Kidney cyst"
    assert r.loc["d", "problems"] == f"image missing: {root / 'nifti' / 'missing.nii.gz'}"
    assert r.loc["d", "patient_id"] == "p3"
    for col in LABELS:
        assert df[col].dtype == np.int8
    for col in ("image_exists", "has_report", "labels_known"):
        assert df[col].dtype == bool
    for col in ("xy_spacing", "z_spacing", "rescale_intercept", "rescale_slope"):
        assert df[col].dtype == np.float64 and df[col].isna().all()
    for col in ("volume_name", "split", "patient_id", "image_path", "seg_dir", "report_text", "problems"):
        assert all(isinstance(v, str) for v in df[col]), col


def test_no_labels_no_masks_and_base_dir(hospital: Path, tmp_path: Path) -> None:
    moved = write_csv(tmp_path / "elsewhere" / "cases.csv",
                      [row("a", "p1", "train", "nifti/a.nii.gz"), row("b", "p2", "valid", "dicom/b")],
                      encoding="utf-8-sig")  # as Excel saves it: a byte-order mark before 'case_id'
    cfg = CsvDatasetConfig.from_config({"csv": str(moved), "base_dir": str(hospital.parent)})
    df = ingest_csv(cfg, shard_size=10)
    assert df["image_exists"].all() and df["labels_known"].all() and (df["problems"] == "").all()
    assert (df["seg_dir"] == "").all() and list(df["shard"]) == [0, 0]
    assert "Liver lesion" not in df.columns  # only the configured label set becomes columns


def test_manifest_row_loads_the_dicom_case(hospital: Path) -> None:
    df = ingest_csv(CsvDatasetConfig(csv=str(hospital), labels=LABELS), shard_size=2)
    b = df.set_index("volume_name").loc["b"]
    img, _ = load_ct(b["image_path"], "b", b["rescale_intercept"], b["rescale_slope"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), phantom(1).astype(np.float32))


def test_from_config_rejects_unknown_keys_and_takes_lists() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['image_col', 'lables'\]"):
        CsvDatasetConfig.from_config({"csv": "x.csv", "lables": ["A"], "image_col": "img"})
    with pytest.raises(ValueError, match="needs 'csv'"):
        CsvDatasetConfig.from_config({"labels": ["A"]})
    with pytest.raises(ValueError, match="must map to 'train' or 'valid'"):
        CsvDatasetConfig.from_config({"csv": "x.csv", "split_values": {"test": "test"}})
    with pytest.raises(ValueError, match="not the string"):
        CsvDatasetConfig.from_config({"csv": "x.csv", "labels": "Liver lesion"})
    cfg = CsvDatasetConfig.from_config({"csv": "x.csv", "labels": ["A", "B"], "split_values": {"tr": "train"}})
    assert cfg.labels == ("A", "B") and cfg.split_values == {"tr": "train"}
    assert CsvDatasetConfig(csv="x.csv").split_values["test"] == "valid"
    with pytest.raises(ValueError, match="mask_column and label_map go together"):
        CsvDatasetConfig.from_config({"csv": "x.csv", "mask_column": "masks"})


def _bad(rows: list[dict], drop: str = "") -> list[dict]:
    return [{k: v for k, v in r.items() if k != drop} for r in rows]


@pytest.mark.parametrize("rows, expected", [
    (_bad([row("a", "p1")], drop="report"), r"missing columns \['report'\]; the CSV has \['case_id'"),
    (_bad([row("a", "p1")], drop="Kidney cyst"), r"missing label columns \['Kidney cyst'\]"),
    ([row("a", "p1"), row("a", "p2", "valid")], r"duplicate case ids in 'case_id': a"),
    ([row("a", "p1"), row("b", "p1", "test")], r"split leak.*patient p1: a \(train\), b \(valid\)"),
    ([row("a", "p1"), row("b", "p2", "holdout"), row("c", "p3", "")],
     r"split values \['', 'holdout'\] in 'split' are not in split_values .*cases b, c"),
    ([row("a", "p1"), row("b", "p2", liver="2")], r"label values other than 0, 1 or empty: b \(Liver lesion='2'\)"),
    ([row("a", "p1"), row("b", "p2", kidney="yes")], r"b \(Kidney cyst='yes'\)"),
    ([row("a", "p1"), row("  ", "p2")], r"empty case id \('case_id'\) on lines 3"),
    ([row("a", "p1"), row("b", "")], r"empty patient id \('patient_id'\) on lines 3"),
])
def test_errors_name_the_csv_and_the_offender(tmp_path: Path, rows: list[dict], expected: str) -> None:
    path = write_csv(tmp_path / "cases.csv", rows)
    with pytest.raises(CsvManifestError, match=expected) as err:
        ingest_csv(CsvDatasetConfig(csv=str(path), labels=LABELS), shard_size=4)
    assert str(path) in str(err.value)


def test_missing_mask_column_and_missing_csv_are_errors(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cases.csv", [row("a", "p1")])
    with pytest.raises(CsvManifestError, match=r"missing columns \['mask'\]"):
        ingest_csv(CsvDatasetConfig(csv=str(path), mask_column="mask", label_map="m.yaml"), shard_size=4)
    with pytest.raises(CsvManifestError, match="CSV not found"):
        ingest_csv(CsvDatasetConfig(csv=str(tmp_path / "nope.csv")), shard_size=4)
