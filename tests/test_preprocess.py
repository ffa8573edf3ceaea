"""Whole-volume preprocessing: HU harmonisation, orientation handling, grid and normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uvlm.io import VolumeError
from uvlm.preprocess.volume import harmonize_hu, preprocess_volume


def _phantom() -> np.ndarray:
    arr = np.full((16, 24, 24), -1000, np.int16)
    arr[4:12, 6:18, 6:18] = 40
    arr[4:12, 6:18, 6:9] = 700  # a bright slab on the low-x side: orientation is visible
    return arr


def test_harmonize_detects_double_rescale() -> None:
    arr = _phantom().astype(np.float32)
    hu, how = harmonize_hu(arr, -1024, 1, "c")
    assert how == "none" and np.array_equal(hu, arr)
    hu, how = harmonize_hu(arr - 1024, -1024, 1, "c")  # intercept applied twice
    assert how == "unrescaled" and np.allclose(hu, arr)
    hu, how = harmonize_hu(arr + 1024, -1024, 1, "c")  # stored raw, never rescaled
    assert how == "rescaled" and np.allclose(hu, arr)
    with pytest.raises(VolumeError, match="case c"):
        harmonize_hu(arr + 5000, -1024, 1, "c")


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
