"""Whole-volume preprocessing: HU harmonisation, orientation handling, grid and normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uvlm.data.ct_volume import harmonize_hu
from uvlm.io import VolumeError
from uvlm.preprocess.volume import preprocess_volume


def _phantom() -> np.ndarray:
    arr = np.full((16, 24, 24), -1000, np.int16)
    arr[4:12, 6:18, 6:18] = 40
    arr[4:12, 6:18, 6:9] = 700  # a bright slab on the low-x side: orientation is visible
    return arr


def test_harmonize_detects_double_rescale() -> None:
    arr = _phantom().astype(np.float32)
    hu, how, pad = harmonize_hu(arr, -1024, 1, "c")
    assert how == "none" and pad is None and np.array_equal(hu, arr)
    hu, how, _ = harmonize_hu(arr - 1024, -1024, 1, "c")  # intercept applied twice
    assert how == "unrescaled" and np.allclose(hu, arr)
    hu, how, _ = harmonize_hu(arr + 1024, -1024, 1, "c")  # stored raw, never rescaled
    assert how == "rescaled" and np.allclose(hu, arr)
    with pytest.raises(VolumeError, match="case c"):
        harmonize_hu(arr + 5000, -1024, 1, "c")


def _noisy_chest(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(HU (D, H, W), the circular field of view): noisy air, soft tissue, a lung and a bone."""
    shape = (16, 48, 48)
    _, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    hu = -1000 + rng.normal(0, 15, shape)
    body = (yy - 24) ** 2 / 20**2 + (xx - 24) ** 2 / 19**2 < 1
    hu[body] = 40 + rng.normal(0, 15, int(body.sum()))
    lung = body & ((yy - 24) ** 2 / 9**2 + (xx - 15) ** 2 / 5**2 < 1)
    hu[lung] = -850 + rng.normal(0, 30, int(lung.sum()))
    hu[body & ((yy - 38) ** 2 + (xx - 24) ** 2 < 9)] = 700
    return hu, (yy - 24) ** 2 + (xx - 24) ** 2 < 23**2


@pytest.mark.parametrize(("stored", "intercept", "want"), [
    ("hu", -1024, "none"),          # HU already, metadata intercept -1024: un-rescaling -2000 would look like air
    ("hu", -8192, "none"),          # CT-RATE's trap intercept
    ("raw", -1024, "rescaled"),     # stored raw values, padded with -2000 raw (-3024 HU)
])
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64])
def test_padding_outside_the_field_of_view_does_not_set_the_hu_offset(stored: str, intercept: int, want: str,
                                                                       dtype: type) -> None:
    hu, fov = _noisy_chest(np.random.default_rng(0))
    values = hu if stored == "hu" else hu + 1024
    arr = np.where(fov, np.round(values), -2000).astype(dtype)
    out, how, pad = harmonize_hu(arr, intercept, 1, "c")
    assert how == want and pad == -2000
    np.testing.assert_allclose(out[fov], np.round(values)[fov] - (1024 if stored == "raw" else 0), atol=1e-3)
    assert np.all(out[~fov] == -1000)  # padding becomes air


def test_clipped_air_without_lungs_is_air_not_padding() -> None:
    """An abdomen-like volume whose air is clipped to exactly -1024 outside the body: the minimum is real
    air, not padding, although nothing else in the volume is near it."""
    hu, _ = _noisy_chest(np.random.default_rng(1))
    hu[hu < -500] = -1024
    out, how, pad = harmonize_hu(np.round(hu).astype(np.int16), -1024, 1, "c")
    assert how == "none" and pad is None and out.min() == -1024


@pytest.mark.parametrize("arr", [np.full((16, 16, 16), -1000.0) + np.random.default_rng(2).normal(0, 5, (16, 16, 16)),
                                 np.random.default_rng(3).integers(0, 255, (16, 16, 16)).astype(np.uint8)],
                         ids=["air only", "uint8 noise"])
def test_no_correction_makes_implausible_values_ct(arr: np.ndarray) -> None:
    with pytest.raises(VolumeError, match="case c: stored values with air .* no correction"):
        harmonize_hu(arr, -1024, 1, "c")


def test_flipped_direction_gives_the_same_array(tmp_path: Path) -> None:
    arr = _phantom()
    lps = sitk.GetImageFromArray(arr)
    lps.SetSpacing((1.5, 1.5, 2.0))
    sitk.WriteImage(lps, str(tmp_path / "lps.nii.gz"))
    # The same anatomy stored with the x axis flipped (RPS): voxel order reversed, direction -1.
    flipped = sitk.GetImageFromArray(arr[:, :, ::-1].copy())
    flipped.SetSpacing((1.5, 1.5, 2.0))
    flipped.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    flipped.SetOrigin((23 * 1.5, 0, 0))
    sitk.WriteImage(flipped, str(tmp_path / "rps.nii.gz"))
    a, info = preprocess_volume(str(tmp_path / "lps.nii.gz"), (8, 12, 12), (-1000, 1000), "LPS", -1024, 1, "a")
    b, _ = preprocess_volume(str(tmp_path / "rps.nii.gz"), (8, 12, 12), (-1000, 1000), "LPS", -1024, 1, "b")
    assert a.shape == (8, 12, 12) and a.dtype == np.float16
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)
    assert a[4, 6, :6].mean() > a[4, 6, 6:].mean()  # the bright slab stays on the low-x side
    assert abs(float(a.astype(np.float32).mean())) < 1e-2 and abs(float(a.astype(np.float32).std()) - 1) < 1e-2
    assert info["hu_correction"] == "none"
