"""The drawing surface of the chest phantom: the anatomy classes, a Canvas of HU and labels, and the Scene
that phantom.py builds normal anatomy on and abnormalities.py paints findings on. Coordinates are mm,
ordered (z, y, x) with z superior, y posterior, x patient-left (LPS, identity direction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.ndimage as ndi

if TYPE_CHECKING:  # the grid lives with the phantom geometry; only its type is needed here
    from uvlm.demo.phantom import Grid

# Fine anatomy classes (TotalSegmentator-like names). 0 = outside the body.
ANATOMY_CLASSES: dict[int, str] = dict(enumerate((
    "body", "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
    "lung_lower_lobe_right", "trachea", "bronchi", "heart", "aorta", "pulmonary_artery", "pulmonary_vein",
    "vertebrae", "ribs", "sternum"), start=1))
CLS = {name: idx for idx, name in ANATOMY_CLASSES.items()}
LOBES = tuple(name for name in ANATOMY_CLASSES.values() if name.startswith("lung_"))
LOBE_PHRASE = {lobe: "{1} lobe of the {3} lung".format(*lobe.split("_")) for lobe in LOBES}
FULL = (slice(None),) * 3  # slices selecting the whole volume


class Canvas:
    """HU (float32), anatomy labels and lesion ownership of one volume, all (D,H,W)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.hu = np.full(shape, -1000.0, np.float32)
        self.anat = np.zeros(shape, np.uint8)
        self.owner = np.zeros(shape, np.uint8)  # 0 = no finding, k = lesions[k-1]
        self.lesions: list[tuple[str, str]] = []  # (ReXGroundingCT code, finding text)

    def new_lesion(self, code: str, text: str) -> int:
        """Register a finding; paint(..., lesion=k) then marks its voxels (empty findings are dropped)."""
        self.lesions.append((code, text))
        return len(self.lesions)

    def paint(self, sl, mask, hu=None, label: int | None = None, lesion: int = 0) -> None:
        if hu is not None:
            view = self.hu[sl]
            view[mask] = hu if np.isscalar(hu) else np.broadcast_to(hu, mask.shape)[mask]
        if label is not None:
            self.anat[sl][mask] = label
        if lesion:
            self.owner[sl][mask] = lesion

    def lesion(self, sl, mask, code: str, text: str, hu=None, label: int | None = None) -> None:
        self.paint(sl, mask, hu, label, self.new_lesion(code, text))


@dataclass
class Scene:
    """Canvas plus the landmarks (mm) the renderers need to place findings plausibly."""

    grid: Grid
    canvas: Canvas
    rng: np.random.Generator
    cav: tuple[float, float]  # thoracic cavity semi-axes (x, y)
    z_carina: float
    dome: np.ndarray  # (H,W) diaphragm height
    heart_c: np.ndarray
    heart_r: np.ndarray
    pericardial_mm: float
    aorta_columns: list[tuple[float, float, float, float, float]]  # (x, y, radius, z0, z1)
    oesophagus: tuple[float, float]  # (y, x)
    hila: dict[str, np.ndarray]  # side -> main bronchus end point
    body_surface: Callable[[float], np.ndarray]  # angle -> (y, x) on the skin
    details: dict[str, Any] = field(default_factory=dict)
    _fields: dict[float, np.ndarray] = field(default_factory=dict)
    _edt: np.ndarray | None = None

    def smooth_noise(self, scale_mm: float) -> np.ndarray:
        """Smooth unit-variance noise with blobs of about scale_mm; cached per scale (D,H,W)."""
        if scale_mm not in self._fields:
            coarse = np.maximum(2, np.ceil(self.grid.fov / scale_mm).astype(int) + 1)
            noise = self.rng.standard_normal(tuple(coarse)).astype(np.float32)
            up = ndi.zoom(noise, np.asarray(self.grid.shape) / coarse, order=1, grid_mode=False)
            self._fields[scale_mm] = (up - up.mean()) / (up.std() + 1e-6)
        return self._fields[scale_mm]

    def lung(self, lobes=LOBES, free: bool = True, sl=FULL) -> np.ndarray:
        """Voxels of the given lobes (inside slices sl), optionally only those no finding owns yet."""
        m = np.isin(self.canvas.anat[sl], [CLS[lobe] for lobe in lobes])
        return m & (self.canvas.owner[sl] == 0) if free else m

    def lung_depth(self) -> np.ndarray:
        """Distance (mm) to the lung surface on a (D,H/2,W/2) grid; computed once, after effusions."""
        if self._edt is None:
            sz, sy, sx = self.grid.spacing
            self._edt = ndi.distance_transform_edt(self.lung(free=False)[:, ::2, ::2],
                                                   sampling=(sz, 2 * sy, 2 * sx))
        return self._edt

    def pick(self, mask: np.ndarray) -> np.ndarray | None:
        """A random voxel centre (mm) inside mask, or None."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        return self.grid.point(np.unravel_index(self.rng.choice(idx), mask.shape))

    def pick_deep(self, lobes, depth_mm: float) -> np.ndarray | None:
        """A free lung voxel at least depth_mm inside the lung (falls back to the deepest one)."""
        coarse = self.lung(lobes)[:, ::2, ::2]
        depth = np.where(coarse, self.lung_depth(), 0)
        if not coarse.any():
            return None
        ok = depth >= min(depth_mm, depth.max())
        i, j, k = np.unravel_index(self.rng.choice(np.flatnonzero(ok)), ok.shape)
        return self.grid.point((i, 2 * j, 2 * k))
