"""Synthetic chest CT phantom: HU volume, fine anatomy label map and lesion masks.

Stands in for CT-RATE + TotalSegmentator + ReXGroundingCT so that the whole pipeline can run and be
tested without gated data. Geometry is built in mm (see Grid), so it does not depend
on the voxel grid; `PhantomConfig.with_shape` keeps the field of view when the grid is made smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from uvlm.constants import CT_RATE_LABELS
from uvlm.demo.abnormalities import render_abnormalities
from uvlm.demo.scene import ANATOMY_CLASSES, CLS, FULL, Canvas, Scene

__all__ = ["ANATOMY_CLASSES", "Grid", "PatientAnatomy", "Phantom", "PhantomConfig", "make_phantom",
           "make_reconstructions"]

HU = {"fat": -100.0, "mediastinal_fat": -90.0, "muscle": 45.0, "liver": 60.0, "spleen": 45.0,
      "myocardium": 80.0, "blood": 220.0, "pa": 230.0, "pv": 200.0, "cancellous": 380.0,
      "cortex": 750.0, "bone": 650.0, "sternum": 550.0, "disc": 90.0, "csf": 15.0, "soft": 40.0}


@dataclass
class Grid:
    """Voxel-centre coordinates in mm, (z, y, x) = (superior, posterior, patient-left) as in LPS.

    z counts from the inferior edge, y and x from the centre; offset moves the patient on the table.
    """

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

    def ellipsoid(self, c, r, pad: float = 0.0):
        """(slices, q): q = normalised radius (1 on the surface) in the bounding box grown by pad mm."""
        c, r = np.asarray(c, float), np.asarray(r, float)
        sl, z, y, x = self.box(c - r - pad, c + r + pad)
        return sl, np.sqrt(((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2)

    def segment(self, p0, p1, pad: float):
        """(slices, dist, t): distance to the segment p0-p1 and the position t in [0, 1] along it."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        sl, z, y, x = self.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
        d = p1 - p0
        t = np.clip(((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / max(d @ d, 1e-6), 0, 1)
        dist = np.sqrt((z - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2
                       + (x - p0[2] - t * d[2]) ** 2)
        return sl, dist, t


@dataclass(frozen=True)
class PhantomConfig:
    """Voxel grid and acquisition noise; anatomy comes from PatientAnatomy, findings from labels."""

    shape: tuple[int, int, int] = (64, 128, 128)  # (D, H, W)
    spacing_mm: tuple[float, float, float] = (5.0, 2.8, 2.8)  # (z, y, x)
    noise_hu: float = 12.0  # noise std; smooth kernel x0.7, sharp kernel x1.4
    spacing_jitter: float = 0.05  # relative in-plane spacing variation between scans

    def with_shape(self, shape: tuple[int, int, int]) -> PhantomConfig:
        """Same field of view on another grid (small grids for tests)."""
        fov = np.asarray(self.shape) * np.asarray(self.spacing_mm)
        spacing = tuple(round(float(f / n), 4) for f, n in zip(fov, shape, strict=True))
        return replace(self, shape=tuple(shape), spacing_mm=spacing)


@dataclass(frozen=True)
class PatientAnatomy:
    """Per-patient shape parameters, so that all scans of one patient look alike."""

    sex: str
    age: int
    body_x: float  # body half-width as a fraction of the in-plane half field of view
    body_ratio: float  # antero-posterior / left-right body size
    fat_mm: float
    muscle_mm: float
    heart_ctr: float  # cardiothoracic ratio when there is no cardiomegaly
    aorta_mm: float  # descending aorta radius
    carina_frac: float  # carina height / field-of-view height
    recess_frac: float  # costophrenic recess height / field-of-view height
    dome_mm: float  # diaphragm dome height above the recess
    shift_mm: tuple[float, float, float]  # table position of the patient (z, y, x)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> PatientAnatomy:
        sex = str(rng.choice(["M", "F"]))
        return cls(sex=sex, age=int(rng.integers(25, 90)),
                   body_x=float(rng.uniform(0.80, 0.90)) * (0.96 if sex == "F" else 1.0),
                   body_ratio=float(rng.uniform(0.66, 0.76)), fat_mm=float(rng.uniform(8, 22)),
                   muscle_mm=float(rng.uniform(18, 24)), heart_ctr=float(rng.uniform(0.40, 0.47)),
                   aorta_mm=float(rng.uniform(11, 14)), carina_frac=float(rng.uniform(0.56, 0.62)),
                   recess_frac=float(rng.uniform(0.08, 0.13)), dome_mm=float(rng.uniform(35, 50)),
                   shift_mm=tuple(float(v) for v in rng.uniform(-6, 6, size=3)))

    def follow_up(self, rng: np.random.Generator) -> PatientAnatomy:
        """The same patient on a later scan: repositioned, slightly different breath hold and weight."""
        return replace(self, age=self.age + int(rng.integers(0, 2)),
                       fat_mm=float(np.clip(self.fat_mm + rng.uniform(-2, 2), 6, 24)),
                       dome_mm=self.dome_mm + float(rng.uniform(-4, 4)),
                       shift_mm=tuple(float(v) for v in rng.uniform(-6, 6, size=3)))


@dataclass
class Phantom:
    """One reconstruction: what a CT-RATE volume, its TotalSegmentator map and ReXGroundingCT masks hold."""

    hu: np.ndarray  # int16 (D,H,W)
    anatomy: np.ndarray  # uint8 (D,H,W), ANATOMY_CLASSES
    lesions: np.ndarray  # uint8 (F,D,H,W), one binary channel per finding
    lesion_categories: list[str]  # ReXGroundingCT codes, len F
    lesion_texts: list[str]  # len F
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    details: dict[str, Any] = field(default_factory=dict)  # per label, for the report text


def _normal_anatomy(rng: np.random.Generator, cfg: PhantomConfig, p: PatientAnatomy,
                    abnormalities: set[str]) -> Scene:
    """Body, bones, mediastinum and lobed lungs; heart size and pericardial space follow the labels."""
    j = 1 + cfg.spacing_jitter * rng.uniform(-1, 1)
    sz, sy, sx = cfg.spacing_mm
    g = Grid(cfg.shape, (sz, round(sy * j, 4), round(sx * j, 4)), p.shift_mm)
    cv = Canvas(cfg.shape)
    fz, _, fx = g.fov
    Y, X = g.y[0], g.x[0]  # (H,1), (1,W)

    def ell(ax: float, ay: float) -> np.ndarray:
        return (X / ax) ** 2 + (Y / ay) ** 2  # (H,W)

    bx = p.body_x * fx / 2
    by = bx * p.body_ratio
    cax, cay = bx - p.fat_mm - p.muscle_mm, by - p.fat_mm - p.muscle_mm
    body2, musc2, cav2 = ell(bx, by) <= 1, ell(bx - p.fat_mm, by - p.fat_mm) <= 1, ell(cax, cay) <= 1
    cv.hu[:] = np.where(cav2, HU["mediastinal_fat"], np.where(musc2, HU["muscle"],
                        np.where(body2, HU["fat"], -1000.0)))[None]
    cv.anat[:] = (body2 * CLS["body"]).astype(np.uint8)[None]

    # Diaphragm: one dome per side (right higher), deepest in the lateral and posterior recesses.
    recess, z_car = p.recess_frac * fz, p.carina_frac * fz

    def cap(xc: float, height: float) -> np.ndarray:
        u, v = (X - xc) / (0.55 * cax), (Y + 0.1 * cay) / (1.05 * cay)
        return recess + height * np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))

    dome = np.where(X < 0, cap(-0.45 * cax, p.dome_mm + 12), cap(0.45 * cax, p.dome_mm))  # (H,W)
    abdomen = cav2[None] & (g.z <= dome[None])
    cv.hu[abdomen] = np.broadcast_to(np.where(X < 0, HU["liver"], HU["spleen"]), abdomen.shape)[abdomen]

    # Spine: vertebral bodies with discs, canal, posterior elements.
    yv, rv = cay - 10, 16.0
    r2 = X**2 + (Y - yv) ** 2
    canal_y = yv + rv + 8
    rc2 = X**2 + (Y - canal_y) ** 2
    post2 = (((rc2 > 64) & (rc2 <= 196) & (Y >= canal_y - 4)) | ((np.abs(X) < 4) & (Y > canal_y) &
             (Y < canal_y + 26)) | ((np.abs(X) < 32) & (np.abs(Y - canal_y + 2) < 4))) & musc2 & (rc2 > 64)
    disc = (g.z % 28) < 5  # (D,1,1)
    cv.paint(FULL, (r2 <= rv**2)[None] & disc, hu=HU["disc"])
    cv.paint(FULL, (r2 <= rv**2)[None] & ~disc, hu=np.where(r2 >= (rv - 2.5) ** 2, HU["cortex"],
             HU["cancellous"])[None], label=CLS["vertebrae"])
    cv.paint(FULL, np.broadcast_to(post2[None], cfg.shape), hu=HU["bone"], label=CLS["vertebrae"])
    cv.paint(FULL, np.broadcast_to((rc2 <= 64)[None], cfg.shape), hu=HU["csf"])

    # Ribs: a shell outside the cavity, banded in z and sloping down anteriorly; sternum in front.
    shell2 = (ell(cax, cay) > 1) & (ell(cax + 11, cay + 11) <= 1) & (np.abs(X) >= 22)
    ys, xs = np.nonzero(shell2)
    rib = ((g.z[:, :, 0] - 0.35 * g.axes[1][ys][None]) % 27.0) < 10.0  # (D, N)
    cv.hu[:, ys, xs] = np.where(rib, HU["bone"], cv.hu[:, ys, xs])
    cv.anat[:, ys, xs] = np.where(rib, CLS["ribs"], cv.anat[:, ys, xs])
    st2 = (np.abs(X) < 14) & (Y > -cay - 12) & (Y < -cay + 1) & musc2
    cv.paint(FULL, st2[None] & (g.z > z_car - 120) & (g.z < z_car + 60), hu=HU["sternum"],
             label=CLS["sternum"])

    # Heart: myocardium around a contrast blood pool, resting on the diaphragm.
    cardio = "Cardiomegaly" in abnormalities
    ctr = float(rng.uniform(0.58, 0.66)) if cardio else p.heart_ctr
    hr = np.array([0.72, 0.68, 1.0]) * ctr * cax  # (z, y, x) semi-axes
    hc = np.array([recess + p.dome_mm + 0.5 * hr[0], -cay + hr[1] + 8, 0.25 * hr[2]])
    peri = float(rng.uniform(9, 16)) if "Pericardial effusion" in abnormalities else 0.0
    sl, q = g.ellipsoid(hc, hr)
    inside = cav2[sl[1:]][None]
    cv.paint(sl, (q <= 1) & inside, hu=np.where(q <= 1 - 9 / hr.mean(), HU["blood"], HU["myocardium"]),
             label=CLS["heart"])
    rsl, rq = g.ellipsoid(hc, hr + peri + 3)
    reserved = np.zeros(cfg.shape, bool)
    reserved[rsl] = rq <= 1

    # Great vessels, oesophagus, trachea and central pulmonary vessels.
    y_oes = cay - 34
    y_tr = y_oes - 18
    asc = (-10.0, -0.35 * cay, p.aorta_mm + 2, hc[0] + 0.5 * hr[0], z_car + 10)
    desc = (30.0, cay - 12, p.aorta_mm, float(g.axes[0][0]) - 10, z_car + 10)
    for x0, y0, r, z0, z1 in (asc, desc):
        csl, zz, yy, xx = g.box((z0, y0 - r, x0 - r), (z1, y0 + r, x0 + r))
        cv.paint(csl, ((yy - y0) ** 2 + (xx - x0) ** 2 <= r**2) & (zz >= z0), hu=HU["blood"],
                 label=CLS["aorta"])
    _arch(g, cv, np.array([asc[1], asc[0]]), np.array([desc[1], desc[0]]), z_car + 10, p.aorta_mm + 1)
    csl, zz, yy, xx = g.box((dome.min(), y_oes - 7, -3), (fz, y_oes + 7, 11))
    cv.paint(csl, ((yy - y_oes) ** 2 + (xx - 4) ** 2 <= 49) & (cv.anat[csl] == CLS["body"]), hu=HU["soft"])
    csl, zz, yy, xx = g.box((z_car, y_tr - 10, -13), (fz, y_tr + 10, 7))
    rr = (yy - y_tr) ** 2 + (xx + 3) ** 2
    cv.paint(csl, np.broadcast_to(rr <= 100, zz.shape[:1] + rr.shape[1:]),
             hu=np.where(rr <= 56, -1000.0, 50.0), label=CLS["trachea"])
    carina = np.array([z_car, y_tr, -3.0])
    hila = {"right": np.array([z_car - 22, y_tr + 5, -0.33 * cax]),
            "left": np.array([z_car - 40, y_tr + 8, 0.36 * cax])}
    pa0, pab = hc + np.array([0.6, -0.45, 0.2]) * hr, np.array([z_car - 12, y_tr - 25, 12.0])
    pa_end = {"right": np.array([z_car - 25, y_tr - 8, -0.38 * cax]),
              "left": np.array([z_car - 28, y_tr + 5, 0.40 * cax])}
    la = hc + np.array([0.3, 0.75, 0.0]) * hr
    pv_end = {"right": np.array([z_car - 60, y_tr + 10, -0.34 * cax]),
              "left": np.array([z_car - 60, y_tr + 10, 0.34 * cax])}
    tubes = [(pa0, pab, 13, "pulmonary_artery", HU["pa"])]
    tubes += [(pab, pa_end[s], 10, "pulmonary_artery", HU["pa"]) for s in pa_end]
    tubes += [(la, pv_end[s], 7, "pulmonary_vein", HU["pv"]) for s in pv_end]
    for a, b, r, name, hu in tubes:
        tsl, dist, _ = g.segment(a, b, r)
        cv.paint(tsl, (dist <= r) & (cv.anat[tsl] == CLS["body"]) & cav2[tsl[1:]][None], hu=hu,
                 label=CLS[name])

    # Lungs: two cavity-bound ellipses tapering to the apex, above the diaphragm, split into lobes.
    z0, z_apex = z_car - 10, min(fz - 10 - p.shift_mm[0], z_car + 95)
    taper = np.where(g.z > z0, np.clip(1 - ((g.z - z0) / (z_apex - z0)) ** 2, 0, 1), 1.0)  # (D,1,1)
    free = (cv.anat == CLS["body"]) & ~reserved & (g.z > dome[None])
    z_h = z_car - 30
    lower = g.z < z_h + 1.1 * (g.y - 0.1 * cay)  # oblique fissure (D,H,1)
    for side, sgn in (("right", -1), ("left", 1)):
        q2 = ((X - sgn * (0.5 * cax + 2)) / (0.53 * cax)) ** 2 + ((Y - 0.05 * cay) / cay) ** 2
        lung = ((q2 <= 1) & cav2 & (sgn * X > 15))[None] & (q2[None] <= taper) & free
        if side == "left":
            lobe = np.where(lower, CLS["lung_lower_lobe_left"], CLS["lung_upper_lobe_left"])
        else:
            lobe = np.where(lower, CLS["lung_lower_lobe_right"], np.where(
                g.z < z_car - 25, CLS["lung_middle_lobe_right"], CLS["lung_upper_lobe_right"]))
        cv.anat[lung] = np.broadcast_to(lobe, cfg.shape)[lung]
    scene = Scene(g, cv, rng, (cax, cay), z_car, dome, hc, hr, peri, [asc, desc], (y_oes, 4.0), hila,
                  lambda a: np.array([-by * np.sin(a), bx * np.cos(a)]))
    is_lung = scene.lung(free=False)
    tex = -855 + 14 * scene.smooth_noise(8.0) + 30 * (g.y / cay)
    cv.hu[is_lung] = np.broadcast_to(tex, cfg.shape)[is_lung]

    # Main bronchi and intrapulmonary vessel branches (these override lung voxels).
    for side in hila:
        tsl, dist, _ = g.segment(carina, hila[side], 7)
        cv.paint(tsl, dist <= 7, hu=np.where(dist <= 5, -1000.0, 50.0), label=CLS["bronchi"])
    for side in hila:
        lobes = [n for n in ANATOMY_CLASSES.values() if n.startswith("lung") and n.endswith(side)]
        for start, n, name, hu in ((pa_end[side], 6, "pulmonary_artery", HU["pa"]),
                                   (pv_end[side], 5, "pulmonary_vein", HU["pv"])):
            for _ in range(n):
                target = scene.pick(scene.lung(lobes, free=False))
                if target is None:
                    continue
                tsl, dist, t = g.segment(start, target, 5)
                m = (dist <= 4.5 - 3.0 * t) & scene.lung(free=False, sl=tsl)
                cv.paint(tsl, m, hu=hu, label=CLS[name])
    if cardio:
        scene.details["Cardiomegaly"] = {"ctr": round(ctr, 2)}
    return scene


def _arch(g: Grid, cv: Canvas, a: np.ndarray, b: np.ndarray, z0: float, r: float) -> None:
    """Half torus from a to b ((y, x) points) rising above height z0, tube radius r."""
    mid, half = (a + b) / 2, np.linalg.norm(b - a) / 2
    u = (b - a) / (2 * half)
    n = np.array([-u[1], u[0]])
    lo, hi = np.minimum(a, b) - r - 2, np.maximum(a, b) + r + 2
    sl, zz, yy, xx = g.box((z0 - r, lo[0], lo[1]), (z0 + half + r, hi[0], hi[1]))
    s_ = (yy - mid[0]) * u[0] + (xx - mid[1]) * u[1]
    w_ = (yy - mid[0]) * n[0] + (xx - mid[1]) * n[1]
    h = np.maximum(zz - z0, 0)
    dist = np.sqrt((np.sqrt(s_**2 + h**2) - half) ** 2 + w_**2)
    cv.paint(sl, (dist <= r) & (cv.anat[sl] == CLS["body"]), hu=HU["blood"], label=CLS["aorta"])


def _reconstruct(hu: np.ndarray, rng: np.random.Generator, noise_hu: float, spacing,
                 recon: int) -> np.ndarray:
    """Odd reconstructions: smooth kernel (1.5 mm in-plane blur), low noise. Even: sharp, noisier. int16."""
    sharp = recon % 2 == 0
    img = hu if sharp else ndi.gaussian_filter(hu, (0.0, 1.5 / spacing[1], 1.5 / spacing[2]))
    noise = rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu * (1.4 if sharp else 0.7))
    return np.clip(np.rint(img + noise), -1024, 3071).astype(np.int16)


def make_reconstructions(rng: np.random.Generator, cfg: PhantomConfig, abnormalities: set[str],
                         patient: PatientAnatomy, recons: tuple[int, ...] = (1,)) -> list[Phantom]:
    """One scan, several reconstructions: same anatomy and findings, different kernel and noise."""
    unknown = set(abnormalities) - set(CT_RATE_LABELS)
    if unknown:
        raise ValueError(f"unknown abnormalities {sorted(unknown)}; use CT_RATE_LABELS names")
    scene = _normal_anatomy(rng, cfg, patient, abnormalities)
    render_abnormalities(scene, abnormalities)
    cv, spacing = scene.canvas, scene.grid.spacing
    counts = np.bincount(cv.owner.ravel(), minlength=len(cv.lesions) + 1)
    keep = [k for k in range(len(cv.lesions)) if counts[k + 1]]  # findings left with visible voxels
    lesions = (cv.owner[None] == (np.array(keep, np.uint8) + 1)[:, None, None, None]).astype(np.uint8)
    noise_seed = int(rng.integers(2**63))
    return [Phantom(hu=_reconstruct(cv.hu, np.random.default_rng([noise_seed, r]), cfg.noise_hu, spacing, r),
                    anatomy=cv.anat.copy(), lesions=lesions.copy(),
                    lesion_categories=[cv.lesions[k][0] for k in keep],
                    lesion_texts=[cv.lesions[k][1] for k in keep],
                    spacing_mm=spacing, details=dict(scene.details)) for r in recons]


def make_phantom(rng: np.random.Generator, cfg: PhantomConfig, abnormalities: set[str],
                 patient: PatientAnatomy, recon: int = 1) -> Phantom:
    """One reconstruction of one synthetic chest CT with the given CT-RATE abnormalities."""
    return make_reconstructions(rng, cfg, abnormalities, patient, (recon,))[0]
