"""Drawing primitives for the chest phantom and one renderer per CT-RATE abnormality.

The phantom (phantom.py) builds normal anatomy on a `Scene`; the renderers here then paint findings
on top. Every lung finding claims only lung voxels that no earlier finding owns, so each finding
stays visible and its lesion mask is exactly where its appearance is. Coordinates are mm, ordered
(z, y, x) with z superior, y posterior, x patient-left (LPS, identity direction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage as ndi

# Fine anatomy classes (TotalSegmentator-like names). 0 = outside the body.
ANATOMY_CLASSES: dict[int, str] = {
    1: "body",
    2: "lung_upper_lobe_left",
    3: "lung_lower_lobe_left",
    4: "lung_upper_lobe_right",
    5: "lung_middle_lobe_right",
    6: "lung_lower_lobe_right",
    7: "trachea",
    8: "bronchi",
    9: "heart",
    10: "aorta",
    11: "pulmonary_artery",
    12: "pulmonary_vein",
    13: "vertebrae",
    14: "ribs",
    15: "sternum",
}
CLS = {name: idx for idx, name in ANATOMY_CLASSES.items()}
LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
         "lung_middle_lobe_right", "lung_lower_lobe_right")
LOBE_SIDE = {lobe: lobe.rsplit("_", 1)[1] for lobe in LOBES}


@dataclass
class Grid:
    """Voxel-centre coordinates in mm: z from the inferior edge, y and x from the centre."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # patient position (mm), subtracted

    def __post_init__(self) -> None:
        d, h, w = self.shape
        sz, sy, sx = self.spacing
        oz, oy, ox = self.offset
        self.axes = ((np.arange(d) + 0.5) * sz - oz, (np.arange(h) + 0.5 - h / 2) * sy - oy,
                     (np.arange(w) + 0.5 - w / 2) * sx - ox)
        self.z = self.axes[0][:, None, None]  # (D,1,1)
        self.y = self.axes[1][None, :, None]  # (1,H,1)
        self.x = self.axes[2][None, None, :]  # (1,1,W)

    @property
    def fov(self) -> np.ndarray:
        return np.asarray(self.shape) * np.asarray(self.spacing)

    def box(self, lo, hi):
        """Slices of the voxels whose centres lie in [lo, hi] mm, and their local coordinates."""
        sl = tuple(slice(int(np.searchsorted(c, a)), int(np.searchsorted(c, b, side="right")))
                   for c, a, b in zip(self.axes, lo, hi, strict=True))
        return sl, self.z[sl[0]], self.y[:, sl[1]], self.x[:, :, sl[2]]

    def point(self, idx) -> np.ndarray:
        return np.array([self.axes[a][int(i)] for a, i in enumerate(idx)])


def ellipsoid(grid: Grid, c, r, pad: float = 0.0):
    """(slices, q): q = normalised radius (1 on the surface) in the bounding box grown by pad mm."""
    c, r = np.asarray(c, float), np.asarray(r, float)
    sl, z, y, x = grid.box(c - r - pad, c + r + pad)
    q = np.sqrt(((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2)
    return sl, q


def segment(grid: Grid, p0, p1, pad: float):
    """(slices, dist, t): distance to the segment p0-p1 and the position t in [0, 1] along it."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    sl, z, y, x = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    d = p1 - p0
    t = np.clip(((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / max(d @ d, 1e-6), 0, 1)
    dist = np.sqrt((z - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (x - p0[2] - t * d[2]) ** 2)
    return sl, dist, t


class Canvas:
    """HU (float32), anatomy labels and lesion ownership of one volume, all (D,H,W)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.hu = np.full(shape, -1000.0, np.float32)
        self.anat = np.zeros(shape, np.uint8)
        self.owner = np.zeros(shape, np.uint8)  # 0 = no lesion, k = lesion k-1
        self.lesions: list[tuple[str, str]] = []  # (ReXGroundingCT code, finding text)

    def paint(self, sl, mask, hu=None, label: int | None = None) -> None:
        if hu is not None:
            view = self.hu[sl]
            view[mask] = hu if np.isscalar(hu) else np.broadcast_to(hu, mask.shape)[mask]
        if label is not None:
            self.anat[sl][mask] = label

    def lesion(self, sl, mask, code: str, text: str, hu=None, label: int | None = None) -> bool:
        if not mask.any():
            return False
        self.paint(sl, mask, hu, label)
        self.lesions.append((code, text))
        self.owner[sl][mask] = len(self.lesions)
        return True


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

    def field(self, scale_mm: float) -> np.ndarray:
        """Smooth unit-variance noise with blobs of about scale_mm; cached per scale (D,H,W)."""
        if scale_mm not in self._fields:
            coarse = np.maximum(2, np.ceil(self.grid.fov / scale_mm).astype(int) + 1)
            noise = self.rng.standard_normal(tuple(coarse)).astype(np.float32)
            up = ndi.zoom(noise, np.asarray(self.grid.shape) / coarse, order=1, grid_mode=False)
            self._fields[scale_mm] = (up - up.mean()) / (up.std() + 1e-6)
        return self._fields[scale_mm]

    def lung(self, lobes=LOBES, free: bool = True, sl=(slice(None),) * 3) -> np.ndarray:
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


LOBE_PHRASE = {
    "lung_upper_lobe_left": "upper lobe of the left lung", "lung_lower_lobe_left": "lower lobe of the left lung",
    "lung_upper_lobe_right": "upper lobe of the right lung",
    "lung_middle_lobe_right": "middle lobe of the right lung",
    "lung_lower_lobe_right": "lower lobe of the right lung",
}


def _choose_lobe(s: Scene, prefer, min_vox: int = 50) -> str:
    """The first lobe (in a shuffled preference list) with enough free voxels."""
    prefer = list(s.rng.permutation(list(prefer))) + list(s.rng.permutation(list(LOBES)))
    for lobe in prefer:
        if np.count_nonzero(s.lung([lobe])) >= min_vox:
            return lobe
    return prefer[0]


def _sides(s: Scene) -> list[str]:
    return [["right"], ["left"], ["right", "left"]][s.rng.integers(3)]


def _side_lobes(side: str) -> list[str]:
    return [lobe for lobe in LOBES if LOBE_SIDE[lobe] == side]


# ---------------------------------------------------------------- pleura and pericardium
def pleural_effusion(s: Scene) -> None:
    """Posterior dependent fluid crescent replacing lung, deepest at the base."""
    g, (cax, cay) = s.grid, s.cav
    base = float(s.rng.uniform(30, 50))
    z_low, z_high = float(s.dome.min()), s.z_carina + 30
    depth = base * np.clip(1 - 0.75 * (g.z - z_low) / (z_high - z_low), 0.25, 1)  # (D,1,1)
    wall = cay * np.sqrt(np.clip(1 - (g.x / cax) ** 2, 0, 1))  # (1,1,W) posterior wall
    sides = _sides(s)
    full = (slice(None),) * 3
    for side in sides:
        fluid = s.lung(_side_lobes(side)) & (g.y > wall - depth)
        s.canvas.lesion(full, fluid, "2e", f"{side} pleural effusion",
                        hu=15 + 4 * s.field(10.0), label=CLS["body"])
    s.details["Pleural effusion"] = {"side": "bilateral" if len(sides) == 2 else sides[0],
                                     "thickness_mm": round(base)}


def pericardial_effusion(s: Scene) -> None:
    """Fluid rim in the space the phantom reserved around the heart."""
    sl, q = ellipsoid(s.grid, s.heart_c, s.heart_r + s.pericardial_mm)
    rim = (q <= 1) & (s.canvas.anat[sl] == CLS["body"])
    s.canvas.lesion(sl, rim, "2h", "pericardial effusion", hu=10)
    s.details["Pericardial effusion"] = {"thickness_mm": round(s.pericardial_mm)}


# ---------------------------------------------------------------- focal lung findings
def lung_nodule(s: Scene) -> None:
    nodules = []
    for _ in range(int(s.rng.choice([1, 1, 1, 2, 3]))):
        size = int(s.rng.integers(10, 26))
        lobe = _choose_lobe(s, LOBES, min_vox=200)
        c = s.pick_deep([lobe], size / 2 + 3)
        if c is None:
            continue
        sl, q = ellipsoid(s.grid, c, np.full(3, size / 2))
        m = (q <= 1) & np.isin(s.canvas.anat[sl], [CLS[x] for x in LOBES]) & (s.canvas.owner[sl] == 0)
        if s.canvas.lesion(sl, m, "2d", f"{size} mm solid nodule in the {LOBE_PHRASE[lobe]}", hu=35):
            nodules.append({"size_mm": size, "lobe": lobe})
    s.details["Lung nodule"] = {"nodules": nodules}


def consolidation(s: Scene) -> None:
    lobe = _choose_lobe(s, LOBES, min_vox=500)
    region = s.lung([lobe])
    lobar = s.rng.random() < 0.4
    if not lobar:
        c, g = s.pick(region), s.grid
        region &= ((g.z - c[0]) ** 2 + (g.y - c[1]) ** 2 + (g.x - c[2]) ** 2) <= 40.0**2
    full = (slice(None),) * 3
    s.canvas.lesion(full, region, "2b", f"consolidation in the {LOBE_PHRASE[lobe]}",
                    hu=35 + 8 * s.field(10.0))
    s.details["Consolidation"] = {"lobe": lobe, "extent": "lobar" if lobar else "segmental"}


def atelectasis(s: Scene) -> None:
    """Dense posterior basal band of a lower lobe."""
    side = str(s.rng.choice(["right", "left"]))
    lobe = f"lung_lower_lobe_{side}"
    height = float(s.rng.uniform(22, 32))
    above = s.grid.z - s.dome[None] < height
    region = s.lung([lobe]) & above & (s.grid.y > -0.2 * s.cav[1])
    if np.count_nonzero(region) < 30:
        region = s.lung([lobe]) & (s.grid.z - s.dome[None] < 2 * height)
    full = (slice(None),) * 3
    s.canvas.lesion(full, region, "2b", f"atelectasis in the {LOBE_PHRASE[lobe]}", hu=45)
    s.details["Atelectasis"] = {"side": side, "lobe": lobe}


def _airways(s: Scene, code: str, text: str, lumen: float, wall: float, wall_hu: float) -> list[str]:
    """Diseased bronchi from a hilum into its lower lobe: air lumen inside a soft-tissue wall."""
    sides = _sides(s)
    for side in sides:
        lobes = [f"lung_lower_lobe_{side}"]
        for _ in range(4):
            target = s.pick_deep(lobes, 12)
            if target is None:
                continue
            sl, dist, _ = segment(s.grid, s.hila[side], target, lumen + wall + 1)
            ok = s.lung(sl=sl)
            s.canvas.paint(sl, ok & (dist <= lumen + wall), hu=wall_hu)
            s.canvas.paint(sl, ok & (dist <= lumen), hu=-990)
            s.canvas.owner[sl][ok & (dist <= lumen + wall)] = len(s.canvas.lesions) + 1
        s.canvas.lesions.append((code, f"{text} in the {LOBE_PHRASE[lobes[0]]}"))
    return sides


def bronchiectasis(s: Scene) -> None:
    sides = _airways(s, "1b", "bronchiectasis", lumen=6.5, wall=2.5, wall_hu=60)
    s.details["Bronchiectasis"] = {"side": "bilateral" if len(sides) == 2 else sides[0]}


def peribronchial_thickening(s: Scene) -> None:
    sides = _airways(s, "1a", "peribronchial thickening", lumen=3.0, wall=4.5, wall_hu=40)
    s.details["Peribronchial thickening"] = {"side": "bilateral" if len(sides) == 2 else sides[0]}


def fibrotic_sequela(s: Scene) -> None:
    """A few thick parenchymal bands in one lobe."""
    lobe = _choose_lobe(s, ["lung_upper_lobe_left", "lung_upper_lobe_right"], min_vox=500)
    owner_id = len(s.canvas.lesions) + 1
    for _ in range(int(s.rng.integers(3, 6))):
        p0 = s.pick(s.lung([lobe]))
        if p0 is None:
            break
        direction = s.rng.normal(size=3) * np.array([0.5, 1, 1])
        p1 = p0 + direction / np.linalg.norm(direction) * s.rng.uniform(30, 50)
        sl, dist, _ = segment(s.grid, p0, p1, 5)
        m = (dist <= 3.5) & s.lung([lobe], sl=sl)
        s.canvas.paint(sl, m, hu=-150)
        s.canvas.owner[sl][m] = owner_id
    s.canvas.lesions.append(("2a", f"fibrotic bands in the {LOBE_PHRASE[lobe]}"))
    s.details["Pulmonary fibrotic sequela"] = {"lobe": lobe}


# ---------------------------------------------------------------- diffuse lung findings
def lung_opacity(s: Scene) -> None:
    lobes = [_choose_lobe(s, LOBES, min_vox=500) for _ in range(int(s.rng.integers(1, 3)))]
    lobes = sorted(set(lobes), key=LOBES.index)
    region = s.lung(lobes) & (s.field(25.0) > -0.3)
    full = (slice(None),) * 3
    phrase = " and ".join(LOBE_PHRASE[lobe] for lobe in lobes)
    s.canvas.lesion(full, region, "2c", f"ground-glass opacities in the {phrase}",
                    hu=-600 + 30 * s.field(10.0))
    s.details["Lung opacity"] = {"lobes": lobes}


def emphysema(s: Scene) -> None:
    """Upper-zone low attenuation plus a few bullae; large areas of about -960 HU."""
    upper = ["lung_upper_lobe_left", "lung_upper_lobe_right"]
    region = s.lung(upper) & (s.field(25.0) < 0.4)
    if np.count_nonzero(region) < 0.1 * np.count_nonzero(s.lung(free=False)):
        region = s.lung() & (s.field(25.0) < 0.4)
    full = (slice(None),) * 3
    bulla = int(s.rng.integers(15, 35))
    c = s.pick_deep(upper, bulla / 2)
    if c is not None:
        bsl, q = ellipsoid(s.grid, c, np.full(3, bulla / 2))
        region[bsl] |= (q <= 1) & s.lung(upper, sl=bsl)
    hu = np.where(region, -960 + 6 * s.field(10.0), 0)
    if c is not None:
        hu[bsl] = np.where(q <= 1, -995, hu[bsl])
    s.canvas.lesion(full, region, "1c", "emphysema with bullae", hu=hu)
    s.details["Emphysema"] = {"bulla_mm": bulla}


def interlobular_septal_thickening(s: Scene) -> None:
    """Polygonal septal lines in the peripheral 20 mm of both lower lobes."""
    lower = ["lung_lower_lobe_left", "lung_lower_lobe_right"]
    depth = np.repeat(np.repeat(s.lung_depth(), 2, axis=1), 2, axis=2)[:, : s.grid.shape[1], : s.grid.shape[2]]
    region = s.lung(lower) & (depth < 20)
    period = 12.0
    lines = (np.abs((s.grid.x % period) - period / 2) > period / 2 - 2.5) | \
            (np.abs((s.grid.y % period) - period / 2) > period / 2 - 2.5)
    full = (slice(None),) * 3
    s.canvas.lesion(full, region, "1d", "interlobular septal thickening in both lower lobes")
    s.canvas.paint(full, region & lines, hu=-350)
    s.details["Interlobular septal thickening"] = {}


def mosaic_attenuation(s: Scene) -> None:
    lobes = sorted({_choose_lobe(s, LOBES, min_vox=500) for _ in range(2)}, key=LOBES.index)
    region = s.lung(lobes)
    hu = np.where(s.field(30.0) > 0, -760.0, -930.0) + 10 * s.field(10.0)
    full = (slice(None),) * 3
    s.canvas.lesion(full, region, "1f", "mosaic attenuation pattern", hu=hu)
    s.details["Mosaic attenuation pattern"] = {"lobes": lobes}


# ---------------------------------------------------------------- mediastinum and chest wall
def arterial_calcification(s: Scene) -> None:
    """Bright plaques in the aortic wall (shell from 1.5 mm inside to 3 mm outside the lumen)."""
    sites, owner_id = set(), len(s.canvas.lesions) + 1
    for _ in range(int(s.rng.integers(3, 7))):
        i = int(s.rng.choice(len(s.aorta_columns), p=[0.3, 0.7]))
        x, y, r, z0, z1 = s.aorta_columns[i]
        sites.add(["ascending aorta", "descending aorta"][i])
        ang, zc = s.rng.uniform(0, 2 * np.pi), s.rng.uniform(z0 + 10, z1 - 10)
        c = np.array([zc, y + r * np.sin(ang), x + r * np.cos(ang)])
        sl, zz, yy, xx = s.grid.box(c - 10, c + 10)
        q = ((zz - c[0]) / 10) ** 2 + ((yy - c[1]) / 9) ** 2 + ((xx - c[2]) / 9) ** 2
        rad = np.sqrt((yy - y) ** 2 + (xx - x) ** 2)
        m = (q <= 1) & (rad >= r - 1.5) & (rad <= r + 3) & (s.canvas.anat[sl] != CLS["vertebrae"])
        s.canvas.paint(sl, m, hu=float(s.rng.uniform(600, 900)), label=CLS["aorta"])
        s.canvas.owner[sl][m] = owner_id
    s.canvas.lesions.append(("2h", "calcified atherosclerotic plaques in the aortic wall"))
    s.details["Arterial wall calcification"] = {"sites": sorted(sites)}


def coronary_calcification(s: Scene) -> None:
    """Calcified spots along an anterior-left epicardial course (LAD-like)."""
    owner_id = len(s.canvas.lesions) + 1
    for t in np.linspace(0.2, 0.8, int(s.rng.integers(2, 5))):
        theta = 0.35 * np.pi + t * 0.5 * np.pi  # from superior towards the apex
        d = np.array([np.cos(theta), -0.7, 0.7 * np.sin(theta)])
        c = s.heart_c + s.heart_r * d / np.linalg.norm(d) * 0.97
        sl, q = ellipsoid(s.grid, c, np.full(3, 4.0))
        s.canvas.paint(sl, q <= 1, hu=700, label=CLS["heart"])
        s.canvas.owner[sl][q <= 1] = owner_id
    s.canvas.lesions.append(("2h", "coronary artery calcification"))
    s.details["Coronary artery wall calcification"] = {"vessel": "left anterior descending artery"}


def lymphadenopathy(s: Scene) -> None:
    hx = {k: v for k, v in s.hila.items()}
    stations = {
        "subcarinal": np.array([s.z_carina - 25, s.oesophagus[0] - 12, 0.0]),
        "right paratracheal": np.array([s.z_carina + 25, s.oesophagus[0] - 22, -20.0]),
        "prevascular": np.array([s.z_carina + 5, -0.5 * s.cav[1], 8.0]),
        "right hilar": hx["right"] + np.array([-5, 12, -5]),
        "left hilar": hx["left"] + np.array([-5, 12, 5]),
    }
    chosen = list(s.rng.choice(list(stations), size=int(s.rng.integers(1, 4)), replace=False))
    short = int(s.rng.integers(15, 25))
    owner_id = len(s.canvas.lesions) + 1
    for name in chosen:
        sl, q = ellipsoid(s.grid, stations[name], np.array([1.4, 1.0, 1.2]) * short / 2)
        ok = np.isin(s.canvas.anat[sl], [CLS["body"], *[CLS[x] for x in LOBES]])
        m = (q <= 1) & ok & (s.canvas.hu[sl] < 100)
        s.canvas.paint(sl, m, hu=40, label=CLS["body"])
        s.canvas.owner[sl][m] = owner_id
    s.canvas.lesions.append(("2h", "enlarged mediastinal lymph nodes"))
    s.details["Lymphadenopathy"] = {"stations": sorted(chosen), "short_axis_mm": short}


def hiatal_hernia(s: Scene) -> None:
    """Stomach herniated above the hemidiaphragm behind the heart, with anterior air (supine)."""
    size = int(s.rng.integers(40, 60))
    r = np.array([0.45, 0.35, 0.5]) * size
    iy, ix = (int(np.argmin(np.abs(a - v))) for a, v in zip(s.grid.axes[1:], s.oesophagus, strict=True))
    c = np.array([s.dome[iy, ix] + 0.6 * r[0], s.oesophagus[0] - 5, s.oesophagus[1] + 6])
    sl, q = ellipsoid(s.grid, c, r)
    ok = np.isin(s.canvas.anat[sl], [CLS["body"], *[CLS[x] for x in LOBES]]) & (s.canvas.hu[sl] < 100)
    m = (q <= 1) & ok
    air = s.grid.box(c - r, c + r)[2] < c[1] - 0.3 * r[1]
    s.canvas.lesion(sl, m, "2h", "hiatal hernia", hu=np.where(air, -950.0, 30.0), label=CLS["body"])
    s.details["Hiatal hernia"] = {"size_mm": size}


def medical_material(s: Scene) -> None:
    """Metal (about 2500 HU): pacemaker with lead, sternotomy wires or a port catheter."""
    kind = str(s.rng.choice(["pacemaker", "sternotomy wires", "port catheter"]))
    g, metal = s.grid, 2500.0
    if kind == "sternotomy wires":
        for dz in range(-2, 3):
            zc = s.z_carina - 20 + 25 * dz
            y = -s.cav[1] - 6
            sl, dist, _ = segment(g, (zc, y, -16), (zc, y, 16), 3)
            s.canvas.paint(sl, dist <= 2.0, hu=metal)
    else:
        left = kind == "pacemaker"
        yx = s.body_surface(np.deg2rad(55 if left else 125)) * 0.93
        c = np.array([s.z_carina + 35, *yx])
        half = np.array([18, 6, 22]) if left else np.array([12, 6, 12])
        sl, *_ = g.box(c - half, c + half)
        s.canvas.paint(sl, s.canvas.anat[sl] > 0, hu=metal)
        tip = s.heart_c + np.array([0, -0.4, -0.2]) * s.heart_r if left else \
            np.array([s.z_carina, -0.3 * s.cav[1], -15.0])
        for p0, p1 in ((c, np.array([s.z_carina + 40, -0.3 * s.cav[1], -15.0])),
                       (np.array([s.z_carina + 40, -0.3 * s.cav[1], -15.0]), tip)):
            sl, dist, _ = segment(g, p0, p1, 3)
            s.canvas.paint(sl, (dist <= 1.5) & (s.canvas.anat[sl] > 0), hu=metal)
    s.details["Medical material"] = {"kind": kind}


# Painting order = priority: compact findings first, diffuse patterns fill what is left.
RENDERERS: dict[str, Callable[[Scene], None]] = {
    "Pleural effusion": pleural_effusion,
    "Pericardial effusion": pericardial_effusion,
    "Lung nodule": lung_nodule,
    "Consolidation": consolidation,
    "Atelectasis": atelectasis,
    "Bronchiectasis": bronchiectasis,
    "Peribronchial thickening": peribronchial_thickening,
    "Pulmonary fibrotic sequela": fibrotic_sequela,
    "Lung opacity": lung_opacity,
    "Emphysema": emphysema,
    "Interlobular septal thickening": interlobular_septal_thickening,
    "Mosaic attenuation pattern": mosaic_attenuation,
    "Arterial wall calcification": arterial_calcification,
    "Coronary artery wall calcification": coronary_calcification,
    "Lymphadenopathy": lymphadenopathy,
    "Hiatal hernia": hiatal_hernia,
    "Medical material": medical_material,
}


def render_abnormalities(scene: Scene, abnormalities: set[str]) -> None:
    """Paint every requested finding (Cardiomegaly is drawn by the phantom as a larger heart)."""
    for name, render in RENDERERS.items():
        if name in abnormalities:
            render(scene)
