"""One PNG per labelled case: axial, coronal and sagittal slices with the label map overlaid.

Slices pass through the centre of the labelled region, are shown in radiological convention
(patient left on the image right, superior up) and are stretched to square millimetres, so
anisotropic CT-RATE volumes do not look squashed. Per-case images are composed with numpy only
(~10 ms each, they are made for every case of 50,000); the colour legend is one PNG per shard.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk

from uvlm.io import atomic_path

WINDOW = (-1000.0, 400.0)  # HU shown from black to white (lung + mediastinum)
FAINT = ("body",)           # classes covering most of the image are drawn faintly


def colours(n: int) -> np.ndarray:
    """(n + 1, 3) RGB; strong tab20 colours first, so neighbouring label values differ clearly."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    order = [2 * i % 20 + (i // 10) % 2 for i in range(20)]
    return np.array([(0.0, 0.0, 0.0)] + [cmap(order[i % 20])[:3] for i in range(n)])


def _panel(img: np.ndarray, lab: np.ndarray, px_mm: tuple[float, float], mm_per_px: float,
           rgb_of: np.ndarray, alpha_of: np.ndarray) -> np.ndarray:
    zoom = (px_mm[0] / mm_per_px, px_mm[1] / mm_per_px)
    img = ndi.zoom(img, zoom, order=1)
    lab = ndi.zoom(lab, zoom, order=0)
    grey = np.clip((img - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1)
    a = alpha_of[lab][..., None]
    return (1 - a) * grey[..., None] + a * rgb_of[lab]


def montage(image: sitk.Image, labels: sitk.Image, classes: dict[int, str], out_png: str | Path,
            panel_px: int = 256, alpha: float = 0.5) -> None:
    """Write the three-plane overlay of one case (atomically)."""
    import matplotlib.image

    lps = sitk.DICOMOrient(image, "LPS")
    img = sitk.GetArrayFromImage(lps).astype(np.float32)  # (z, y, x)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(labels, "LPS")).astype(np.int64)
    sx, sy, sz = lps.GetSpacing()
    mm_per_px = max(np.asarray(img.shape) * np.array([sz, sy, sx])) / panel_px
    n = max(max(classes, default=0), int(lab.max()))
    rgb_of = colours(n)
    alpha_of = np.array([0.0] + [alpha * (0.3 if classes.get(v) in FAINT else 1.0) for v in range(1, n + 1)])
    fg = np.argwhere(lab > 0)
    cz, cy, cx = (fg.mean(axis=0).astype(int) if len(fg) else np.array(img.shape) // 2)
    # LPS arrays: x grows to the patient's left (flip: left on the image right); z grows upwards (flip).
    panels = [
        _panel(img[cz, :, ::-1], lab[cz, :, ::-1], (sy, sx), mm_per_px, rgb_of, alpha_of),
        _panel(img[::-1, cy, ::-1], lab[::-1, cy, ::-1], (sz, sx), mm_per_px, rgb_of, alpha_of),
        _panel(img[::-1, :, cx], lab[::-1, :, cx], (sz, sy), mm_per_px, rgb_of, alpha_of),
    ]
    height = max(p.shape[0] for p in panels)
    strip = np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels], axis=1)
    with atomic_path(out_png, suffix=".png") as tmp:
        matplotlib.image.imsave(tmp, np.clip(strip, 0, 1))


def legend(classes: dict[int, str], out_png: str | Path) -> None:
    """The colour of every class, as used by montage()."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rgb_of = colours(max(classes, default=0))
    fig = plt.figure(figsize=(3.2, 0.25 * len(classes) + 0.4), dpi=100)
    fig.legend(handles=[Patch(color=rgb_of[v], label=f"{v} {n}") for v, n in sorted(classes.items())],
               loc="center", fontsize=8, frameon=False)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
