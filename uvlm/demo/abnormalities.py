"""One renderer per CT-RATE abnormality, painting on the phantom's Scene (uvlm/demo/scene.py).

The phantom (phantom.py) builds normal anatomy on a `Scene`; the renderers here then paint findings
on top. Every lung finding claims only lung voxels that no earlier finding owns, so each finding
stays visible and its lesion mask is exactly where its appearance is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from uvlm.demo.scene import CLS, FULL, LOBE_PHRASE, LOBES, Scene


def _choose_lobe(s: Scene, prefer, min_vox: int = 50) -> str:
    """The first lobe (in a shuffled preference list) with enough free voxels, else the freest lobe."""
    free = {lobe: np.count_nonzero(s.lung([lobe])) for lobe in LOBES}
    for lobe in [str(x) for x in [*s.rng.permutation(list(prefer)), *s.rng.permutation(list(LOBES))]]:
        if free[lobe] >= min_vox:
            return lobe
    return max(LOBES, key=free.__getitem__)


def _sides(s: Scene) -> list[str]:
    return [["right"], ["left"], ["right", "left"]][s.rng.integers(3)]


def _side_lobes(side: str) -> list[str]:
    return [lobe for lobe in LOBES if lobe.endswith(side)]


# ---------------------------------------------------------------- pleura and pericardium
def pleural_effusion(s: Scene) -> None:
    """Posterior dependent fluid crescent replacing lung, deepest at the base."""
    g, (cax, cay) = s.grid, s.cav
    base = float(s.rng.uniform(30, 50))
    z_low, z_high = float(s.dome.min()), s.z_carina + 30
    depth = base * np.clip(1 - 0.75 * (g.z - z_low) / (z_high - z_low), 0.25, 1)  # (D,1,1)
    wall = cay * np.sqrt(np.clip(1 - (g.x / cax) ** 2, 0, 1))  # (1,1,W) posterior wall
    sides = _sides(s)
    for side in sides:
        fluid = s.lung(_side_lobes(side)) & (g.y > wall - depth)
        s.canvas.lesion(FULL, fluid, "2e", f"{side} pleural effusion",
                        hu=15 + 4 * s.smooth_noise(10.0), label=CLS["body"])
    s.details["Pleural effusion"] = {"side": "bilateral" if len(sides) == 2 else sides[0],
                                     "thickness_mm": round(base)}


def pericardial_effusion(s: Scene) -> None:
    """Fluid rim in the space the phantom reserved around the heart."""
    sl, q = s.grid.ellipsoid(s.heart_c, s.heart_r + s.pericardial_mm)
    rim = (q <= 1) & (s.canvas.anat[sl] == CLS["body"])
    s.canvas.lesion(sl, rim, "2h", "pericardial effusion", hu=10)
    s.details["Pericardial effusion"] = {"thickness_mm": round(s.pericardial_mm)}


# ---------------------------------------------------------------- focal lung findings
def lung_nodule(s: Scene) -> None:
    nodules = []
    for _ in range(int(s.rng.choice([1, 1, 1, 2, 3]))):
        size = int(s.rng.integers(12, 26))
        lobe = _choose_lobe(s, LOBES, min_vox=200)
        c = s.pick_deep([lobe], size / 2 + 3)
        if c is None:
            continue
        sl, q = s.grid.ellipsoid(c, np.full(3, size / 2))
        text = f"{size} mm solid nodule in the {LOBE_PHRASE[lobe]}"
        s.canvas.lesion(sl, (q <= 1) & s.lung(sl=sl), "2d", text, hu=35)
        nodules.append({"size_mm": size, "lobe": lobe})
    s.details["Lung nodule"] = {"nodules": nodules}


def consolidation(s: Scene) -> None:
    lobe = _choose_lobe(s, LOBES, min_vox=500)
    region = s.lung([lobe])
    lobar = s.rng.random() < 0.4
    if not lobar:
        c, g = s.pick(region), s.grid
        region &= ((g.z - c[0]) ** 2 + (g.y - c[1]) ** 2 + (g.x - c[2]) ** 2) <= 40.0**2
    s.canvas.lesion(FULL, region, "2b", f"consolidation in the {LOBE_PHRASE[lobe]}",
                    hu=35 + 8 * s.smooth_noise(10.0))
    s.details["Consolidation"] = {"lobe": lobe, "extent": "lobar" if lobar else "segmental"}


def atelectasis(s: Scene) -> None:
    """Dense posterior basal band of a lower lobe (the other side if that base is taken)."""
    height = float(s.rng.uniform(22, 32))
    above = s.grid.z - s.dome[None]  # (D,H,W) height above the diaphragm
    for side in map(str, s.rng.permutation(["right", "left"])):
        lobe = f"lung_lower_lobe_{side}"
        region = s.lung([lobe]) & (above < height) & (s.grid.y > -0.2 * s.cav[1])
        if np.count_nonzero(region) < 30:
            region = s.lung([lobe]) & (above < 2 * height)
        if np.count_nonzero(region) >= 30:
            break
    s.canvas.lesion(FULL, region, "2b", f"atelectasis in the {LOBE_PHRASE[lobe]}", hu=45)
    s.details["Atelectasis"] = {"side": side, "lobe": lobe}


def _airways(s: Scene, code: str, text: str, lumen: float, wall: float, wall_hu: float) -> list[str]:
    """Diseased bronchi from a hilum into a (preferably lower) lobe: air lumen in a soft-tissue wall."""
    wanted = _sides(s)
    done: list[str] = []
    for side in wanted + [x for x in ("right", "left") if x not in wanted]:
        if done and side not in wanted:
            break
        lobes = [f"lung_lower_lobe_{side}", *_side_lobes(side)]
        lobe = next((x for x in lobes if np.count_nonzero(s.lung([x])) >= 200), None)
        if lobe is None:
            continue
        k = s.canvas.new_lesion(code, f"{text} in the {LOBE_PHRASE[lobe]}")
        for target in (s.pick_deep([lobe], 12) for _ in range(4)):
            if target is None:
                continue
            sl, dist, _ = s.grid.segment(s.hila[side], target, lumen + wall + 1)
            ok = s.lung(sl=sl)
            s.canvas.paint(sl, ok & (dist <= lumen + wall), hu=wall_hu, lesion=k)
            s.canvas.paint(sl, ok & (dist <= lumen), hu=-990)
        if np.any(s.canvas.owner == k):
            done.append(side)
    return done or wanted


def bronchiectasis(s: Scene) -> None:
    sides = _airways(s, "1b", "bronchiectasis", lumen=6.5, wall=2.5, wall_hu=60)
    s.details["Bronchiectasis"] = {"side": "bilateral" if len(sides) == 2 else sides[0]}


def peribronchial_thickening(s: Scene) -> None:
    sides = _airways(s, "1a", "peribronchial thickening", lumen=3.0, wall=4.5, wall_hu=40)
    s.details["Peribronchial thickening"] = {"side": "bilateral" if len(sides) == 2 else sides[0]}


def fibrotic_sequela(s: Scene) -> None:
    """A few thick parenchymal bands in one lobe."""
    lobe = _choose_lobe(s, ["lung_upper_lobe_left", "lung_upper_lobe_right"], min_vox=500)
    k = s.canvas.new_lesion("2a", f"fibrotic bands in the {LOBE_PHRASE[lobe]}")
    for _ in range(int(s.rng.integers(3, 6))):
        p0 = s.pick(s.lung([lobe]))
        if p0 is None:
            break
        direction = s.rng.normal(size=3) * np.array([0.5, 1, 1])
        p1 = p0 + direction / np.linalg.norm(direction) * s.rng.uniform(30, 50)
        sl, dist, _ = s.grid.segment(p0, p1, 5)
        s.canvas.paint(sl, (dist <= 4.5) & s.lung([lobe], sl=sl), hu=-150, lesion=k)
    s.details["Pulmonary fibrotic sequela"] = {"lobe": lobe}


# ---------------------------------------------------------------- diffuse lung findings
def lung_opacity(s: Scene) -> None:
    lobes = [_choose_lobe(s, LOBES, min_vox=500) for _ in range(int(s.rng.integers(1, 3)))]
    lobes = sorted(set(lobes), key=LOBES.index)
    region = s.lung(lobes) & (s.smooth_noise(25.0) > -0.3)
    phrase = " and ".join(LOBE_PHRASE[lobe] for lobe in lobes)
    s.canvas.lesion(FULL, region, "2c", f"ground-glass opacities in the {phrase}",
                    hu=-600 + 30 * s.smooth_noise(10.0))
    s.details["Lung opacity"] = {"lobes": lobes}


def emphysema(s: Scene) -> None:
    """Upper-zone low attenuation plus a few bullae; large areas of about -960 HU."""
    upper = ["lung_upper_lobe_left", "lung_upper_lobe_right"]
    region = s.lung(upper) & (s.smooth_noise(25.0) < 0.4)
    if np.count_nonzero(region) < 0.1 * np.count_nonzero(s.lung(free=False)):
        region = s.lung() & (s.smooth_noise(25.0) < 0.4)
    bulla = int(s.rng.integers(15, 35))
    c = s.pick_deep(upper, bulla / 2)
    if c is not None:
        bsl, q = s.grid.ellipsoid(c, np.full(3, bulla / 2))
        region[bsl] |= (q <= 1) & s.lung(upper, sl=bsl)
    hu = np.where(region, -960 + 6 * s.smooth_noise(10.0), 0)
    if c is not None:
        hu[bsl] = np.where(q <= 1, -995, hu[bsl])
    s.canvas.lesion(FULL, region, "1c", "emphysema with bullae", hu=hu)
    s.details["Emphysema"] = {"bulla_mm": bulla}


def interlobular_septal_thickening(s: Scene) -> None:
    """Polygonal septal lines in the peripheral 20 mm of both lower lobes."""
    lower = ["lung_lower_lobe_left", "lung_lower_lobe_right"]
    _, h, w = s.grid.shape
    depth = np.repeat(np.repeat(s.lung_depth(), 2, axis=1), 2, axis=2)[:, :h, :w]  # back to (D,H,W)
    region = s.lung(lower) & (depth < 20)
    period = 12.0
    lines = (np.abs((s.grid.x % period) - period / 2) > period / 2 - 2.5) | \
            (np.abs((s.grid.y % period) - period / 2) > period / 2 - 2.5)
    s.canvas.lesion(FULL, region, "1d", "interlobular septal thickening in both lower lobes")
    s.canvas.paint(FULL, region & lines, hu=-350)
    s.details["Interlobular septal thickening"] = {}


def mosaic_attenuation(s: Scene) -> None:
    lobes = sorted({_choose_lobe(s, LOBES, min_vox=500) for _ in range(2)}, key=LOBES.index)
    region = s.lung(lobes)
    hu = np.where(s.smooth_noise(30.0) > 0, -760.0, -930.0) + 10 * s.smooth_noise(10.0)
    s.canvas.lesion(FULL, region, "1f", "mosaic attenuation pattern", hu=hu)
    s.details["Mosaic attenuation pattern"] = {"lobes": lobes}


# ---------------------------------------------------------------- mediastinum and chest wall
def arterial_calcification(s: Scene) -> None:
    """Bright plaques in the aortic wall (shell from 1.5 mm inside to 3 mm outside the lumen)."""
    sites, k = set(), s.canvas.new_lesion("2h", "calcified atherosclerotic plaques in the aortic wall")
    for _ in range(int(s.rng.integers(3, 7))):
        i = int(s.rng.choice(len(s.aorta_columns), p=[0.3, 0.7]))
        x, y, r, z0, z1 = s.aorta_columns[i]
        sites.add(["ascending aorta", "descending aorta"][i])
        ang, zc = s.rng.uniform(0, 2 * np.pi), s.rng.uniform(z0 + 10, z1 - 10)
        c = np.array([zc, y + r * np.sin(ang), x + r * np.cos(ang)])
        half = np.maximum([10, 9, 9], s.grid.spacing)  # plaque extent, at least one voxel
        sl, zz, yy, xx = s.grid.box(c - half, c + half)
        q = ((zz - c[0]) / half[0]) ** 2 + ((yy - c[1]) / half[1]) ** 2 + ((xx - c[2]) / half[2]) ** 2
        rad = np.sqrt((yy - y) ** 2 + (xx - x) ** 2)
        wall = (rad >= r - 1.5) & (rad <= r + max(3.0, s.grid.spacing[1]))
        m = (q <= 1) & wall & (s.canvas.anat[sl] != CLS["vertebrae"])
        s.canvas.paint(sl, m, hu=float(s.rng.uniform(600, 900)), label=CLS["aorta"], lesion=k)
    s.details["Arterial wall calcification"] = {"sites": sorted(sites)}


def coronary_calcification(s: Scene) -> None:
    """Calcified spots along an anterior-left epicardial course (LAD-like)."""
    k = s.canvas.new_lesion("2h", "coronary artery calcification")
    for t in np.linspace(0.2, 0.8, int(s.rng.integers(2, 5))):
        theta = 0.35 * np.pi + t * 0.5 * np.pi  # from superior towards the apex
        d = np.array([np.cos(theta), -0.7, 0.7 * np.sin(theta)])
        c = s.heart_c + s.heart_r * d / np.linalg.norm(d) * 0.97
        sl, q = s.grid.ellipsoid(c, np.maximum(5.0, 0.6 * np.asarray(s.grid.spacing)))  # >= 1 voxel
        s.canvas.paint(sl, q <= 1, hu=700, label=CLS["heart"], lesion=k)
    s.details["Coronary artery wall calcification"] = {"vessel": "left anterior descending artery"}


def lymphadenopathy(s: Scene) -> None:
    stations = {
        "subcarinal": np.array([s.z_carina - 25, s.oesophagus[0] - 12, 0.0]),
        "right paratracheal": np.array([s.z_carina + 25, s.oesophagus[0] - 22, -20.0]),
        "prevascular": np.array([s.z_carina + 5, -0.5 * s.cav[1], 8.0]),
        "right hilar": s.hila["right"] + np.array([-5, 12, -5]),
        "left hilar": s.hila["left"] + np.array([-5, 12, 5]),
    }
    chosen = [str(x) for x in s.rng.choice(list(stations), size=int(s.rng.integers(1, 4)), replace=False)]
    short = int(s.rng.integers(15, 25))
    k = s.canvas.new_lesion("2h", "enlarged mediastinal lymph nodes")
    for name in chosen:
        sl, q = s.grid.ellipsoid(stations[name], np.array([1.4, 1.0, 1.2]) * short / 2)
        ok = np.isin(s.canvas.anat[sl], [CLS["body"], *[CLS[x] for x in LOBES]])
        s.canvas.paint(sl, (q <= 1) & ok & (s.canvas.hu[sl] < 100), hu=40, label=CLS["body"], lesion=k)
    s.details["Lymphadenopathy"] = {"stations": sorted(chosen), "short_axis_mm": short}


def hiatal_hernia(s: Scene) -> None:
    """Stomach herniated above the hemidiaphragm behind the heart, with anterior air (supine)."""
    size = int(s.rng.integers(40, 60))
    r = np.array([0.45, 0.35, 0.5]) * size
    iy, ix = (int(np.argmin(np.abs(a - v))) for a, v in zip(s.grid.axes[1:], s.oesophagus, strict=True))
    c = np.array([s.dome[iy, ix] + 0.6 * r[0], s.oesophagus[0] - 5, s.oesophagus[1] + 6])
    sl, q = s.grid.ellipsoid(c, r)
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
            sl, dist, _ = g.segment((zc, y, -16), (zc, y, 16), 3)
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
            sl, dist, _ = g.segment(p0, p1, 3)
            s.canvas.paint(sl, (dist <= 1.5) & (s.canvas.anat[sl] > 0), hu=metal)
    s.details["Medical material"] = {"kind": kind}


# Painting order = priority: the eight findings that must stay clearly visible first (compact before
# diffuse), then the others, which fill the lung that is left.
RENDERERS: dict[str, Callable[[Scene], None]] = {
    "Pleural effusion": pleural_effusion,
    "Pericardial effusion": pericardial_effusion,
    "Lung nodule": lung_nodule,
    "Atelectasis": atelectasis,
    "Consolidation": consolidation,
    "Emphysema": emphysema,
    "Bronchiectasis": bronchiectasis,
    "Peribronchial thickening": peribronchial_thickening,
    "Pulmonary fibrotic sequela": fibrotic_sequela,
    "Lung opacity": lung_opacity,
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
