"""One PNG per labelled case: axial, coronal and sagittal slices with the label map overlaid.

Slices pass through the centre of the labelled region, are shown in radiological convention
(LPS arrays: patient left on the image right for axial/coronal, superior up) and are stretched to
square millimetres, so anisotropic CT-RATE volumes do not look squashed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk

from uvlm.io import atomic_path

WINDOW = (-1000.0, 400.0)  # HU shown from black to white (lung + mediastinum)


def _colours(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return np.array([cmap(i % 20)[:3] for i in range(n + 1)])


def _panel(img: np.ndarray, lab: np.ndarray, px_mm: tuple[float, float], mm_per_px: float,
           colours: np.ndarray, alpha: float) -> np.ndarray:
    zoom = (px_mm[0] / mm_per_px, px_mm[1] / mm_per_px)
    img = ndi.zoom(img, zoom, order=1)
    lab = ndi.zoom(lab, zoom, order=0)
    grey = np.clip((img - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    on = lab > 0
    rgb[on] = (1 - alpha) * rgb[on] + alpha * colours[np.minimum(lab[on], len(colours) - 1)]
    return rgb


def montage(image: sitk.Image, labels: sitk.Image, n_classes: int, out_png: str | Path,
            mm_per_px: float = 1.5, alpha: float = 0.45) -> None:
    """Write the three-plane overlay of one case (written atomically)."""
    import matplotlib.image

    img = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")).astype(np.float32)  # (z, y, x)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(labels, "LPS"))
    sx, sy, sz = sitk.DICOMOrient(image, "LPS").GetSpacing()
    mm_per_px = max(mm_per_px, min(sx, sy, sz))
    fg = np.argwhere(lab > 0)
    cz, cy, cx = (fg.mean(axis=0).astype(int) if len(fg) else np.array(img.shape) // 2)
    colours = _colours(n_classes)
    # Radiological display: flip x so patient left is on the image right; flip z so superior is up.
    panels = [
        _panel(img[cz, :, ::-1], lab[cz, :, ::-1], (sy, sx), mm_per_px, colours, alpha),
        _panel(img[::-1, cy, ::-1], lab[::-1, cy, ::-1], (sz, sx), mm_per_px, colours, alpha),
        _panel(img[::-1, :, cx], lab[::-1, :, cx], (sz, sy), mm_per_px, colours, alpha),
    ]
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
    with atomic_path(out_png, suffix=".png") as tmp:
        matplotlib.image.imsave(tmp, np.concatenate(padded, axis=1))
