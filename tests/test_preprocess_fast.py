"""The fast preprocessing path (uvlm.preprocess.area_resample, read_once): exact area averages against an
independent computation, orientation and field of view against SimpleITK, bad inputs, pool workers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from uvlm.config import load_config
from uvlm.io import VolumeError, read_image
from uvlm.preprocess.area_resample import area_resample, dicom_orient_axes, output_grid
from uvlm.preprocess.read_once import read_image_once
from uvlm.preprocess.volume import preprocess_shard, preprocess_volume, resample_to_grid
from uvlm.shards import ShardError, run_shard


def exact_area(x: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Area average in float64 by repetition: each voxel repeated n_out times along an axis makes every
    output voxel exactly n_in whole sub-voxels, which are then averaged."""
    x = x.astype(np.float64)
    for axis, n_out in enumerate(grid):
        n_in = x.shape[axis]
        up = np.repeat(x, n_out, axis=axis)
        x = up.reshape(x.shape[:axis] + (n_out, n_in) + x.shape[axis + 1:]).mean(axis=axis + 1)
    return x


def body(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Noisy HU (z, y, x): air, soft tissue and bone in random blocks, plausible to every HU check."""
    rng = np.random.default_rng(seed)
    hu = np.where(rng.random(shape) < 0.35, -1000.0, 40.0) + rng.normal(0, 20, shape)
    hu[rng.random(shape) < 0.05] = 700
    return np.round(hu)


def write(arr: np.ndarray, path: Path, spacing=(0.8, 0.7, 2.0), direction=None, origin=(0, 0, 0)) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


@pytest.mark.parametrize("grid", [(7, 5, 11), (8, 4, 10), (23, 6, 30)])
def test_area_average_is_exact_for_non_integer_factors(grid: tuple[int, int, int]) -> None:
    x = np.random.default_rng(1).integers(-1024, 2000, (23, 17, 30)).astype(np.int16)
    x[:, :4] = -2000  # padding, counted as 24 (air in stored units under intercept -1024)
    got = area_resample(x, (0, 1, 2), (False,) * 3, grid, padding=-2000, pad_to=24, line=(1.0, -1024.0))
    want = exact_area(np.where(x == -2000, 24, x), grid) - 1024
    assert got.shape == grid and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_a_finer_axis_is_interpolated_linearly() -> None:
    x = np.random.default_rng(2).normal(0, 100, (10, 6, 8)).astype(np.float32)
    got = area_resample(x, (0, 1, 2), (False,) * 3, (16, 3, 8))
    coarse = exact_area(x, (10, 3, 8))
    centres = (np.arange(16) + 0.5) * 10 / 16 - 0.5  # np.interp holds the end values outside [0, 9]
    want = np.apply_along_axis(lambda col: np.interp(centres, np.arange(10), col), 0, coarse)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_preprocess_volume_is_the_exact_average_in_hu(tmp_path: Path) -> None:
    """Stored raw values (HU + 1024), -2000 padding outside a circle, intercept -1024 in the metadata."""
    shape, grid = (20, 40, 44), (12, 15, 33)
    hu = body(shape)
    _, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    fov = (yy - 20) ** 2 + (xx - 22) ** 2 < 19**2
    path = write(np.where(fov, hu + 1024, -2000).astype(np.int16), tmp_path / "c.nii.gz")
    out, info = preprocess_volume(str(path), grid, (-1000, 1000), "LPS", -1024, 1, "c")
    want = np.clip(exact_area(np.where(fov, hu, -1000), grid), -1000, 1000)
    want = (want - want.mean()) / want.std()
    assert out.shape == grid and out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float64), want, atol=4e-3)  # float16 holds 3 digits
    _, old = preprocess_volume(str(path), grid, (-1000, 1000), "LPS", -1024, 1, "c", method="gaussian")
    assert info["hu_correction"] == "rescaled" and info["padding"] == -2000
    assert {k: info[k] for k in ("hu_correction", "padding", "fingerprint", "source_size", "source_spacing")} == \
        {k: old[k] for k in ("hu_correction", "padding", "fingerprint", "source_size", "source_spacing")}


DIRECTIONS = {"flip x": (-1, 0, 0, 0, 1, 0, 0, 0, 1), "swap x y, flip z": (0, 1, 0, 1, 0, 0, 0, 0, -1),
              "z stored first": (0, 0, 1, 1, 0, 0, 0, 1, 0), "all flipped": (-1, 0, 0, 0, -1, 0, 0, 0, -1)}


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_orientation_and_field_of_view_are_dicom_orients(direction: tuple, tmp_path: Path) -> None:
    arr = body((9, 10, 12), seed=3)  # stored (z, y, x): every axis a different length
    path = write(arr.astype(np.int16), tmp_path / "c.nii.gz", (0.8, 0.7, 2.0), direction, (10.0, -4.0, 7.0))
    img = read_image(path)
    oriented = sitk.DICOMOrient(img, "LPS")
    # identity grid: the sitk path neither smooths nor interpolates, so both paths must be DICOMOrient's array
    same = oriented.GetSize()[::-1]
    new, _ = preprocess_volume(str(path), same, (-1000, 1000), "LPS", float("nan"), float("nan"), "c")
    old, _ = preprocess_volume(str(path), same, (-1000, 1000), "LPS", float("nan"), float("nan"), "c",
                               method="gaussian")
    np.testing.assert_allclose(new.astype(np.float32), old.astype(np.float32), atol=2e-3)
    # a coarser grid: the same geometry as resample_to_grid, and the area average of DICOMOrient's array
    grid = (5, 4, 6)
    ref = resample_to_grid(sitk.Cast(img, sitk.sitkFloat32), grid, "LPS")
    geo = output_grid(img, grid, "LPS")
    assert geo["size"] == list(ref.GetSize())
    for key, got in (("spacing", ref.GetSpacing()), ("origin", ref.GetOrigin()), ("direction", ref.GetDirection())):
        np.testing.assert_allclose(geo[key], got, atol=1e-9)
    perm, flips = dicom_orient_axes(img, "LPS")
    got = area_resample(sitk.GetArrayViewFromImage(img), perm, flips, grid)
    np.testing.assert_allclose(got, exact_area(sitk.GetArrayFromImage(oriented), grid), atol=1e-3)


def _multi_member(data: bytes) -> bytes:
    raw = gzip.decompress(data)
    return gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])


def _flip_late(data: bytes) -> bytes:
    at = len(data) - 200  # deep in the deflate stream, past the header
    return data[:at] + bytes(b ^ 0x5A for b in data[at:at + 8]) + data[at + 8:]


def _flip_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 16]) + data[mid + 16:]


DAMAGES = {"truncated": lambda d: d[: len(d) // 2], "bad trailer": lambda d: d[:-8] + bytes(8),
           "flipped late": _flip_late, "flipped middle": _flip_middle, "two members": _multi_member,
           "intact": lambda d: d}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_one_decompression_gives_read_images_verdict(damage, tmp_path: Path) -> None:
    """ITK alone reads a damaged stream of this size (about 1 MB) as garbage without a word: the CRC of its
    decoded voxels must catch it, with read_image's message."""
    path = write(body((40, 128, 128)).astype(np.int16), tmp_path / "c.nii.gz")
    path.write_bytes(damage(path.read_bytes()))
    try:
        want = sitk.GetArrayFromImage(read_image(path, "c"))
    except VolumeError as err:
        if damage is not DAMAGES["truncated"]:
            sitk.ReadImage(str(path))  # ITK does not notice
        with pytest.raises(VolumeError) as got:
            read_image_once(path, "c")
        assert str(got.value) == str(err) and str(err).startswith("case c: ")
        with pytest.raises(VolumeError) as got:  # the CRC-32 checked while the voxels are resampled
            preprocess_volume(str(path), (4, 8, 8), (-1000, 1000), "LPS", float("nan"), float("nan"), "c")
        assert str(got.value) == str(err)
        return
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image_once(path, "c")), want)


@pytest.mark.parametrize("arr", [np.full((10, 12, 12), 40, np.int16),
                                 np.random.default_rng(4).integers(0, 255, (10, 12, 12)).astype(np.uint8)],
                         ids=["constant", "not CT"])
def test_bad_volumes_are_refused_as_before(arr: np.ndarray, tmp_path: Path) -> None:
    path = write(arr, tmp_path / "c.nii.gz")
    messages = []
    for method in ("area", "gaussian"):
        with pytest.raises(VolumeError, match="case c") as err:
            preprocess_volume(str(path), (4, 4, 4), (-1000, 1000), "LPS", -1024, 1, "c", method=method)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def _rows(tmp_path: Path, bad: bool = True) -> pd.DataFrame:
    rows = []
    for i in range(3):
        path = write(body((10, 20, 18), seed=10 + i).astype(np.int16), tmp_path / f"v{i}.nii.gz")
        rows.append({"volume_name": f"v{i}", "image_path": str(path), "image_exists": True})
    if bad:
        rows.insert(1, {"volume_name": "broken", "image_path": str(tmp_path / "nope.nii.gz"), "image_exists": True})
    return pd.DataFrame(rows)


def test_pool_workers_give_the_same_shard(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    one = preprocess_shard(rows, tmp_path / "one", (5, 8, 8), (-1000, 1000), "LPS", on_error="skip")
    two = preprocess_shard(rows, tmp_path / "two", (5, 8, 8), (-1000, 1000), "LPS", on_error="skip", workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert one["volume_name"].tolist() == ["v0", "v1", "v2"]
    for name in one["array_file"]:
        np.testing.assert_array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name))
    errors = [pd.read_csv(tmp_path / d / "errors.csv") for d in ("one", "two")]
    pd.testing.assert_frame_equal(*errors)
    assert errors[0]["volume_name"].tolist() == ["broken"] and "case broken: file not found" in errors[0]["error"][0]
    with pytest.raises(ShardError, match="1 of 4 volumes failed:\n  broken: case broken: file not found"):
        preprocess_shard(rows, tmp_path / "fail", (5, 8, 8), (-1000, 1000), "LPS", workers=2)
    assert not (tmp_path / "fail").exists() and not (tmp_path / "fail.partial").exists()


def _die_on_v1(row: pd.Series, out: Path) -> dict:
    if row["volume_name"] == "v1":
        os._exit(3)  # as the kernel's out-of-memory killer would end a worker
    (out / f"{row['volume_name']}.txt").write_text("done")
    return {"done": True}


def test_a_dead_worker_fails_the_shard_and_writes_nothing(tmp_path: Path) -> None:
    rows = _rows(tmp_path, bad=False)
    with pytest.raises(ShardError, match="a worker process died while running .*v1"):
        run_shard(rows, _die_on_v1, tmp_path / "out", on_error="skip", workers=2)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_the_demo_volume_keeps_its_shape_and_type(tmp_path: Path) -> None:
    """A full-size demo phantom through the demo config's preprocessing: the Stage 2/3 input is unchanged in
    shape and type, and close to the Gaussian path's (z-scored units)."""
    from uvlm.demo.phantom import PatientAnatomy, PhantomConfig, make_reconstructions

    rng = np.random.default_rng(0)
    ph = make_reconstructions(rng, PhantomConfig(), set(), PatientAnatomy.sample(rng))[0]
    path = write(np.round(ph.hu).astype(np.int16), tmp_path / "demo.nii.gz", tuple(reversed(ph.spacing_mm)))
    p = load_config(Path(__file__).resolve().parent.parent / "config" / "config.yaml")["preprocess"]
    grid = tuple(p["grid"])
    rows = pd.DataFrame([{"volume_name": "demo", "image_path": str(path), "image_exists": True,
                          "rescale_intercept": -1024.0, "rescale_slope": 1.0}])
    index = preprocess_shard(rows, tmp_path / "pre", grid, tuple(p["hu_window"]), p["orientation"])
    out = np.load(tmp_path / "pre" / "demo.npy")
    assert out.shape == grid and out.dtype == np.float16 and index["hu_correction"].tolist() == ["none"]
    old, _ = preprocess_volume(str(path), grid, tuple(p["hu_window"]), p["orientation"], -1024.0, 1.0, "demo",
                               method="gaussian")
    assert float(np.abs(out.astype(np.float32) - old.astype(np.float32)).mean()) < 0.05
