"""The CT-RATE-sized volume the per-volume benchmarks share: a demo phantom on a 512 x 512 x 300 grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

SHAPE = (300, 512, 512)  # (z, y, x)
SPACING = (1.0, 0.7, 0.7)  # mm


def ct_rate_sized_hu(fill: float) -> tuple[np.ndarray, sitk.Image]:
    """(float32 HU (z, y, x): a demo phantom upsampled to the grid, `fill` outside it, fresh noise; an image of
    the grid's geometry to copy onto what is written)."""
    from uvlm.demo.phantom import PatientAnatomy, PhantomConfig, make_reconstructions

    rng = np.random.default_rng(0)
    fov = np.asarray(SHAPE) * np.asarray(SPACING)
    cfg = PhantomConfig(shape=(75, 128, 128), spacing_mm=tuple(fov / np.array([75, 128, 128])))
    ph = make_reconstructions(rng, cfg, {"Lung nodule", "Emphysema"}, PatientAnatomy.sample(rng))[0]
    small = sitk.GetImageFromArray(ph.hu.astype(np.float32))
    small.SetSpacing(tuple(reversed(ph.spacing_mm)))
    ref = sitk.Image(SHAPE[2], SHAPE[1], SHAPE[0], sitk.sitkFloat32)
    ref.SetSpacing(tuple(reversed(SPACING)))
    arr = sitk.GetArrayFromImage(sitk.Resample(small, ref, sitk.Transform(), sitk.sitkLinear, fill))
    return arr + rng.normal(0, 15, SHAPE).astype(np.float32), ref
