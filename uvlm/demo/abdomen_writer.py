"""Write a synthetic dataset in exactly the AbdomenAtlas 3.0 on-disk layout.

Lets ingest, the label step and the RadGPT lesion labels run without the gated data, through the
same readers. Layout under out_root (see uvlm.data.abdomen_atlas):

    BDMAP_00000001/ct.nii.gz                       int16 HU, (D, H, W) = shape, spacing (z, y, x)
    BDMAP_00000001/segmentations/{class}.nii.gz    all 41 classes, uint8 0/1, the CT's geometry
    AbdomenAtlas3.0MiniWithMeta.csv                ids, reports, lesion volumes
    TrainTestIDS/IID_train.csv, IID_test.csv       case_id, about 90/10

Each liver, kidney and pancreas gets a lesion with probability LESION_PROB. A lesion is either real
(a hypodense ball inside the organ, reported) or a speck: one voxel of lesion mask just outside the
organ, the annotation noise RadGPT's rule removes (it ANDs the lesion with its organ), absent from
the report. Whenever there are two cases or more, at least one of each kind exists. At the default
5 x 6 x 6 mm voxels a single in-organ voxel already survives the rule (48 mm^3), so specks outside
the organ are what the rule rejects here.

Every file is written under a temporary name and renamed; the CSV index files are removed first and
written last, so an interrupted run never looks complete. Cases of an earlier, larger demo in the
same folder are not removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.ndimage as ndi
import SimpleITK as sitk

from uvlm.data.abdomen_atlas import ALL_CLASSES, LESION_CLASSES, LESION_VOLUME_COLUMNS, META_CSV, SPLIT_FILES
from uvlm.demo.phantom import Grid
from uvlm.io import atomic_path
from uvlm.labels.radgpt import LESION_ORGANS

__all__ = ["write_demo_abdomen_atlas"]

LESION_PROB, SPECK_FRACTION, LESION_HU = 0.35, 0.3, 20.0
LESION_RADIUS_MM = {"liver_lesion": (7.0, 14.0), "kidney_lesion": (6.0, 11.0), "pancreatic_lesion": (5.0, 9.0)}
# Painted in this order (later wins). (u, v, t): u left+, v posterior+ in body half-axes, t superior+
# as a fraction of the scan length. Ellipsoid: (centre, radii); tube: (polyline, radius in mm).
STRUCTURES: list[tuple[str, float, str, tuple]] = [
    ("intestine", 40, "ell", ((0.0, -0.3, 0.32), (0.5, 0.45, 0.18))),
    ("colon", 25, "tube", ([(-0.6, 0.05, 0.15), (-0.6, 0.0, 0.58), (0.6, -0.15, 0.62), (0.62, 0.05, 0.2),
                            (0.15, 0.4, 0.12)], 15)),
    ("rectum", 30, "tube", ([(0.15, 0.4, 0.12), (0.0, 0.5, 0.0)], 13)),
    ("bladder", 15, "ell", ((0.0, -0.35, 0.1), (0.22, 0.25, 0.09))),
    ("prostate", 40, "ell", ((0.0, -0.1, 0.03), (0.08, 0.1, 0.04))),
    ("femur_left", 550, "ell", ((0.55, 0.0, 0.06), (0.11, 0.15, 0.08))),
    ("femur_right", 550, "ell", ((-0.55, 0.0, 0.06), (0.11, 0.15, 0.08))),
    ("lung_left", -850, "ell", ((0.45, 0.15, 1.12), (0.4, 0.6, 0.2))),
    ("lung_right", -850, "ell", ((-0.45, 0.15, 1.12), (0.4, 0.6, 0.2))),
    ("liver", 60, "ell", ((-0.35, 0.05, 0.76), (0.5, 0.6, 0.18))),
    ("hepatic_vessel", 165, "tube", ([(-0.15, 0.38, 0.9), (-0.65, 0.1, 0.82)], 5)),
    ("gall_bladder", 10, "ell", ((-0.38, -0.45, 0.62), (0.08, 0.12, 0.07))),
    ("spleen", 50, "ell", ((0.62, 0.35, 0.74), (0.17, 0.28, 0.12))),
    ("stomach", 35, "ell", ((0.3, -0.25, 0.74), (0.22, 0.3, 0.12))),
    ("kidney_left", 65, "ell", ((0.4, 0.55, 0.5), (0.15, 0.2, 0.14))),
    ("kidney_right", 65, "ell", ((-0.4, 0.55, 0.46), (0.15, 0.2, 0.14))),
    ("adrenal_gland_left", 35, "ell", ((0.28, 0.5, 0.65), (0.05, 0.07, 0.05))),
    ("adrenal_gland_right", 35, "ell", ((-0.28, 0.5, 0.62), (0.05, 0.07, 0.05))),
    ("duodenum", 35, "tube", ([(0.05, -0.15, 0.64), (-0.2, 0.0, 0.58), (-0.2, 0.1, 0.47), (0.05, 0.12, 0.43)], 9)),
    ("pancreas_head", 45, "ell", ((-0.08, 0.1, 0.52), (0.12, 0.14, 0.06))),
    ("pancreas_body", 45, "ell", ((0.13, 0.18, 0.55), (0.12, 0.1, 0.05))),
    ("pancreas_tail", 45, "ell", ((0.34, 0.28, 0.58), (0.12, 0.1, 0.05))),
    ("esophagus", 40, "tube", ([(0.0, 0.35, 1.05), (0.18, -0.05, 0.8)], 8)),
    ("veins", 160, "tube", ([(-0.38, 0.55, 0.47), (-0.14, 0.42, 0.48), (0.38, 0.55, 0.5)], 5)),
    ("postcava", 160, "tube", ([(-0.14, 0.42, 1.05), (-0.14, 0.42, 0.12), (-0.4, 0.25, -0.05)], 11)),
    ("aorta", 180, "tube", ([(0.06, 0.42, 1.05), (0.06, 0.42, 0.12), (0.35, 0.25, -0.05)], 11)),
    ("superior_mesenteric_artery", 180, "tube", ([(0.06, 0.36, 0.56), (0.06, 0.0, 0.3)], 5)),
    ("celiac_trunk", 185, "tube", ([(0.06, 0.4, 0.63), (0.06, 0.28, 0.64)], 5)),
    ("celiac_aa", 180, "tube", ([(-0.3, 0.15, 0.68), (0.06, 0.28, 0.64), (0.5, 0.32, 0.68)], 4)),
    ("portal_vein_and_splenic_vein", 170, "tube", ([(-0.3, 0.12, 0.7), (0.0, 0.22, 0.58), (0.55, 0.32, 0.68)], 7)),
    ("common_bile_duct", 15, "tube", ([(-0.32, -0.3, 0.64), (-0.1, 0.08, 0.5)], 4)),
]
# Background: air, subcutaneous fat, muscle wall, visceral fat, spine (not a class).
BACKGROUND = {"air": -1000, "fat": -100, "muscle": 50, "visceral_fat": -80, "spine": 450}


class _Body:
    """Normalised body coordinates -> mm on the Grid (z from the inferior edge, y/x from the centre)."""

    def __init__(self, grid: Grid, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.grid, self.shape, self.spacing = grid, shape, spacing
        self.a, self.b, self.length = 0.42 * shape[2] * spacing[2], 0.32 * shape[1] * spacing[1], shape[0] * spacing[0]

    def mm(self, p) -> np.ndarray:
        u, v, t = p
        return np.array([t * self.length, v * self.b, u * self.a])  # (z, y, x)

    def region(self, kind: str, geom: tuple, jitter: np.ndarray) -> np.ndarray:
        out = np.zeros(self.shape, bool)
        if kind == "ell":
            c, r = geom
            radii = np.array([r[2] * self.length, r[1] * self.b, r[0] * self.a])
            sl, q = self.grid.ellipsoid(self.mm(c) + jitter, radii)
            out[sl] = q <= 1
        else:
            pts, radius = geom
            for p0, p1 in zip(pts[:-1], pts[1:], strict=True):
                sl, dist, _ = self.grid.segment(self.mm(p0) + jitter, self.mm(p1) + jitter, radius)
                out[sl] |= dist <= radius
        return out

    def nearest(self, p_mm: np.ndarray) -> tuple[int, ...]:
        return tuple(int(np.clip(np.searchsorted(ax, v), 0, len(ax) - 1)) for ax, v in zip(self.grid.axes, p_mm, strict=True))


def _liver_segments(body: _Body, liver: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Couinaud segments 1..8 of the liver by simple planes; (D, H, W) uint8, 0 outside."""
    c, r = next(g for n, _, _, g in STRUCTURES if n == "liver")
    ctr = body.mm(c) + jitter
    radii = np.array([r[2] * body.length, r[1] * body.b, r[0] * body.a])
    g = body.grid
    dt, dv, du = (g.z - ctr[0]) / radii[0], (g.y - ctr[1]) / radii[1], (g.x - ctr[2]) / radii[2]
    sup, ant = dt >= 0, dv < 0
    seg = np.where(ant, np.where(sup, 8, 5), np.where(sup, 7, 6))                 # right lobe
    seg = np.where(du >= 0.2, 4, seg)                                             # left medial
    seg = np.where(du >= 0.55, np.where(sup, 2, 3), seg)                          # left lateral
    seg = np.where((du >= 0.05) & (du < 0.45) & (dv >= 0.35), 1, seg)             # caudate
    return np.where(liver, np.broadcast_to(seg, liver.shape), 0).astype(np.uint8)


def _make_case(rng: np.random.Generator, body: _Body, sex: str, states: dict[str, str]):
    """(hu (D,H,W) int16, {class: mask}, {lesion: (kind, raw volume mm^3, where)})."""
    shape, grid = body.shape, body.grid
    names = [*BACKGROUND, *(n for n, *_ in STRUCTURES)]
    hu_of = np.array([*BACKGROUND.values(), *(h for _, h, *_ in STRUCTURES)], np.float32)
    hu_of[names.index("femur_left")] = hu_of[names.index("femur_right")] = rng.uniform(400, 700)
    ell = ((grid.y / body.b) ** 2 + (grid.x / body.a) ** 2)[0]  # (H, W), 1 at the skin
    lab = np.broadcast_to(np.select([ell <= 0.72, ell <= 0.85, ell <= 1.0], [3, 2, 1], 0), shape).astype(np.uint8)
    sl, dist, _ = grid.segment(body.mm((0, 0.72, 1.1)), body.mm((0, 0.72, -0.1)), 0.16 * body.b)
    lab[sl][dist <= 0.16 * body.b] = 4
    masks: dict[str, np.ndarray] = {}
    liver_jitter = np.zeros(3)
    for name, _, kind, geom in STRUCTURES:
        if name == "prostate" and sex != "M":
            continue
        jitter = rng.normal(0, 4.0, 3)  # mm
        region = body.region(kind, geom, jitter)
        if name == "liver":
            liver_jitter = jitter
        elif name == "hepatic_vessel":
            region &= lab == names.index("liver")
        if not region.any():  # tiny grids: keep every structure at least one voxel
            centre = geom[0] if kind == "ell" else geom[0][len(geom[0]) // 2]
            region[body.nearest(body.mm(centre) + jitter)] = True
        lab[region] = names.index(name)
    for name in names[len(BACKGROUND):]:
        masks[name] = lab == names.index(name)
    segments = _liver_segments(body, masks.pop("liver"), liver_jitter)
    for i in range(1, 9):
        masks[f"liver_segment_{i}"] = segments == i
    masks.setdefault("prostate", np.zeros(shape, bool))
    hu = hu_of[lab]

    findings = {}
    voxel_mm3 = float(np.prod(body.spacing))
    for lesion, state in states.items():
        masks[lesion] = np.zeros(shape, bool)
        if state == "none":
            continue
        organs = LESION_ORGANS[lesion]
        if lesion == "kidney_lesion":  # one kidney
            organs = [organs[int(rng.integers(2))]]
        organ = np.logical_or.reduce([masks[o] for o in organs])
        if state == "real":
            edt = ndi.distance_transform_edt(organ, sampling=body.spacing)
            cand = np.argwhere(edt >= 0.5 * edt.max())
            c = tuple(cand[rng.integers(len(cand))])
            r = rng.uniform(*LESION_RADIUS_MM[lesion])
            sl, q = grid.ellipsoid(grid.point(c), (r, r, r))
            masks[lesion][sl] = q <= 1
            masks[lesion] &= organ
            masks[lesion][c] = True
            where = next((o for o in LESION_ORGANS[lesion] if masks[o][c]), organs[0])
        else:
            shell = ndi.binary_dilation(organ) & ~organ & (lab > 0)
            cand = np.argwhere(shell)
            masks[lesion][tuple(cand[rng.integers(len(cand))])] = True
            where = ""
        hu[masks[lesion]] = LESION_HU
        findings[lesion] = (state, float(masks[lesion].sum()) * voxel_mm3, where)
    hu = hu + rng.normal(0, 8.0, shape).astype(np.float32)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), masks, findings


WHERE = {"kidney_left": "the left kidney", "kidney_right": "the right kidney", "pancreas_head": "the pancreatic head",
         "pancreas_body": "the pancreatic body", "pancreas_tail": "the pancreatic tail",
         **{f"liver_segment_{i}": f"segment {i}" for i in range(1, 9)}}
LESION_TITLE = {"liver_lesion": ("Liver lesion", "liver"), "kidney_lesion": ("Kidney lesion", "kidney"),
                "pancreatic_lesion": ("Pancreatic lesion", "pancreatic")}


def _reports(masks: dict[str, np.ndarray], findings: dict, voxel_mm3: float) -> tuple[str, str]:
    """(structured, narrative) report; only real lesions are reported, specks are not findings."""
    def cm3(*names: str) -> float:
        return sum(int(masks[n].sum()) for n in names) * voxel_mm3 / 1000

    def lesion_line(lesion: str) -> str:
        title, adj = LESION_TITLE[lesion]
        kind, vol, where = findings.get(lesion, ("none", 0.0, ""))
        if kind != "real":
            return f"No focal {adj} lesion."
        return f"{title}: 1 hypoattenuating lesion in {WHERE[where]}, {vol / 1000:.1f} cm^3."

    liver = cm3(*(f"liver_segment_{i}" for i in range(1, 9)))
    structured = "\n".join([
        "FINDINGS:",
        f"LIVER: Liver volume {liver:.1f} cm^3. {lesion_line('liver_lesion')}",
        "GALLBLADDER: Unremarkable.",
        f"SPLEEN: Spleen volume {cm3('spleen'):.1f} cm^3. Unremarkable.",
        f"PANCREAS: Pancreas volume {cm3('pancreas_head', 'pancreas_body', 'pancreas_tail'):.1f} cm^3. "
        f"{lesion_line('pancreatic_lesion')}",
        f"KIDNEYS: Left kidney {cm3('kidney_left'):.1f} cm^3, right kidney {cm3('kidney_right'):.1f} cm^3. "
        f"{lesion_line('kidney_lesion')}",
        "STOMACH AND BOWEL: Unremarkable.",
        "VESSELS: Aorta and postcava normal in caliber.",
        "BLADDER: Unremarkable.", "ESOPHAGUS: Unremarkable.", "LUNG BASES: Clear.",
        "BONES: Femoral heads unremarkable.",
    ])
    real = [lesion for lesion, (kind, *_) in findings.items() if kind == "real"]
    impression = " ".join(lesion_line(lesion) for lesion in real) or "No focal liver, kidney or pancreatic lesion."
    structured += f"\nIMPRESSION:\n{impression}"
    narrative = (f"The liver measures {liver:.0f} cm^3. The spleen, stomach, gallbladder, bladder, esophagus, "
                 f"aorta and postcava are unremarkable. The lung bases are clear and the femoral heads intact. "
                 f"{impression}")
    return structured, narrative


def _plan(n: int, seed: int) -> list[dict[str, str]]:
    """Lesion state (none / real / speck) per case and lesion class; one of each kind when n >= 2."""
    rng = np.random.default_rng([seed, 0])
    plan = [{lesion: ("none" if rng.random() >= LESION_PROB else "speck" if rng.random() < SPECK_FRACTION
                      else "real") for lesion in LESION_CLASSES} for _ in range(n)]
    if n >= 2:
        states = [s for p in plan for s in p.values()]
        if "real" not in states:
            plan[0]["liver_lesion"] = "real"
        if "speck" not in states:
            plan[-1]["liver_lesion"] = "speck"
    return plan


def _write_image(arr: np.ndarray, ref: sitk.Image, path: Path) -> None:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(True)
    writer.SetCompressionLevel(1)  # fast: the demo must stay quick
    with atomic_path(path, suffix=".nii.gz") as tmp:
        writer.SetFileName(str(tmp))
        writer.Execute(img)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def write_demo_abdomen_atlas(out_root: str | Path, n_cases: int = 12, seed: int = 0,
                             shape: tuple[int, int, int] = (48, 64, 64),
                             spacing_mm: tuple[float, float, float] = (5.0, 6.0, 6.0)) -> None:
    """Write the synthetic AbdomenAtlas 3.0 dataset described in the module docstring to out_root."""
    out_root = Path(out_root)
    index_files = [out_root / META_CSV, *(out_root / p for p in SPLIT_FILES.values())]
    for old in index_files:  # a rerun over an older demo must not look complete midway
        old.unlink(missing_ok=True)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing_mm)
    body = _Body(Grid(shape, spacing), shape, spacing)
    voxel_mm3 = float(np.prod(spacing))
    rows = []
    for i, states in enumerate(_plan(n_cases, seed), start=1):
        case = f"BDMAP_{i:08d}"
        rng = np.random.default_rng([seed, 1, i])
        sex, age = ("M", "F")[int(rng.integers(2))], int(rng.integers(25, 86))
        hu, masks, findings = _make_case(rng, body, sex, states)
        ref = sitk.GetImageFromArray(hu)  # numpy (D, H, W) -> image (x=W, y=H, z=D)
        ref.SetSpacing(spacing[::-1])
        ref.SetOrigin((float(body.grid.axes[2][0]), float(body.grid.axes[1][0]), -round(float(rng.uniform(200, 400)), 1)))
        _write_image(hu, ref, out_root / case / "ct.nii.gz")
        for name in ALL_CLASSES:
            _write_image(masks[name].astype(np.uint8), ref, out_root / case / "segmentations" / f"{name}.nii.gz")
        structured, narrative = _reports(masks, findings, voxel_mm3)
        rows.append({"BDMAP ID": case, "sex": sex, "age": age, "spacing": str(list(spacing)),
                     "shape": str(list(shape)), "structured report": structured, "narrative report": narrative,
                     **{col: round(findings.get(lesion, ("", 0.0))[1] / 1000, 4)
                        for lesion, col in LESION_VOLUME_COLUMNS.items()}})
    cases = [r["BDMAP ID"] for r in rows]
    n_test = max(1, round(0.1 * len(cases))) if len(cases) >= 2 else 0
    order = np.random.default_rng([seed, 2]).permutation(len(cases))
    test = sorted(cases[j] for j in order[:n_test])
    _write_csv(pd.DataFrame({"case_id": [c for c in cases if c not in test]}), out_root / SPLIT_FILES["train"])
    _write_csv(pd.DataFrame({"case_id": test}), out_root / SPLIT_FILES["valid"])
    _write_csv(pd.DataFrame(rows), out_root / META_CSV)  # last: marks the demo complete
