"""A no-weights CPU labeler: body, left and right lung, airway, vertebrae, ribs and sternum from HU,
components, morphology and position.

For users without TotalSegmentator weights (and for the demo). Steps, on a working grid of about
`working_spacing_mm` (finer inputs are downsampled, the labels come back on the input grid):
1. body: tissue above `body_hu` (or, when the volume is masked to a constant that is not air,
   everything that differs from it), largest component, holes filled slice by slice (the table
   and the air around the patient fall away);
2. air inside the body below `air_hu`; components smaller than `min_lung_ml` are dropped (bowel
   gas, sinuses), so a head or abdomen CT gets no lungs; denser lung below `lung_dense_hu` that
   touches this air joins it (ground glass, fibrosis);
3. airway: the lumen grown from the top of the lung air (the trachea in a chest CT) under a
   threshold raised step by step until the grown volume jumps (leak into the lung), then widened
   by the wall thickness;
4. lungs: the remaining air, split into left and right by components (or, when the lungs touch,
   by erosion until two components appear), sides decided in patient coordinates (LPS);
5. bone: cortical bone above `bone_peak_hu`, plus the marrow it encloses in an axial slice (holes
   up to `max_marrow_mm2`, so a closed rib cage or skull does not turn the thorax or brain into bone)
   where it is above `bone_hu`. Contrast-filled vessels stay out unless they exceed `bone_peak_hu`;
6. bone split by position in each axial slice, relative to the body's centre: within
   `spine_half_width_mm` of the midline and behind the centre -> vertebrae, within
   `sternum_half_width_mm` and in front -> sternum, the rest -> ribs (names the chest label map
   and TotalSegmentator-style patterns understand).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk

CLASSES: dict[int, str] = {1: "body", 2: "lung_left", 3: "lung_right", 4: "airway", 5: "vertebrae", 6: "ribs",
                           7: "sternum"}
VALUE = {name: value for value, name in CLASSES.items()}


@dataclass(frozen=True)
class ClassicalConfig:
    working_spacing_mm: float = 2.0   # finer volumes are labelled on this grid (speed), then upsampled
    body_hu: float = -500.0
    air_hu: float = -400.0            # aerated lung and airway lumen are below this
    lung_dense_hu: float = -200.0     # denser lung (ground glass, fibrosis) joins when it touches aerated lung
    min_lung_ml: float = 100.0        # smaller air pockets inside the body are not lung
    airway_start_hu: float = -980.0   # airway growing threshold: first and last tried
    airway_stop_hu: float = -950.0
    airway_step_hu: float = 10.0
    airway_leak_ratio: float = 2.0    # a step that more than doubles the airway volume has leaked
    airway_wall_mm: float = 2.5       # lumen -> airway label incl. wall (TotalSegmentator-style)
    bone_hu: float = 150.0            # marrow enclosed by cortex
    bone_peak_hu: float = 500.0       # cortical bone
    max_marrow_mm2: float = 3000.0    # largest enclosed marrow area per slice (femoral head ~2000)
    min_bone_ml: float = 0.2          # smaller dense specks (calcifications) are not bone
    spine_half_width_mm: float = 35.0    # bone behind the body's centre, this close to the midline: vertebrae
    sternum_half_width_mm: float = 20.0  # bone in front of the body's centre, this close to it: sternum


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def _components_of_at_least(mask: np.ndarray, min_ml: float, voxel_ml: float) -> np.ndarray:
    """The connected components of mask whose volume is at least min_ml."""
    lab, _ = ndi.label(mask)
    sizes = np.bincount(lab.ravel()) * voxel_ml
    sizes[0] = 0
    return (sizes >= min_ml)[lab]


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndi.binary_fill_holes(s) for s in mask])


def _body(hu: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Tissue above body_hu; on a masked volume (outside set to a constant such as 0, e.g. a
    skull-stripped atlas) everything that differs from the border's value."""
    border = np.concatenate([hu[:, [0, -1]].ravel(), hu[:, :, [0, -1]].ravel()])
    background = float(np.median(border))
    tissue = np.abs(hu - background) > 0.5 if background > cfg.body_hu else hu > cfg.body_hu
    tissue = ndi.binary_opening(tissue, structure=np.ones((1, 3, 3), bool))  # detach the table
    return _fill_slices(_largest(tissue))


def _grow_airway(hu: np.ndarray, air: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Lumen connected to the most superior air voxels of the lung region, before it leaks."""
    zs = np.nonzero(air.any(axis=(1, 2)))[0]
    if len(zs) == 0:
        return np.zeros_like(air)
    top = zs.max()  # LPS array: the last slice is the most superior
    first = max(top - 1, 0)
    best = np.zeros_like(air)
    prev = 0
    for thr in np.arange(cfg.airway_start_hu, cfg.airway_stop_hu + 1e-6, cfg.airway_step_hu):
        lumen = (hu < thr) & air
        seeds = lumen[first:top + 1].any(axis=0)
        if not seeds.any():
            continue
        lab, _ = ndi.label(lumen)
        ids = np.unique(lab[first:top + 1][:, seeds])
        grown = np.isin(lab, ids[ids > 0])
        size = int(grown.sum())
        if prev and size > cfg.airway_leak_ratio * prev:
            break
        best, prev = grown, size
    return best


def _split_lungs(lungs: np.ndarray, min_vox: int) -> list[np.ndarray]:
    """Two lungs as separate masks; erode touching lungs until they separate, then regrow by nearness."""
    lab, n = ndi.label(lungs)
    sizes = np.bincount(lab.ravel())[1:]
    big = [i + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= min_vox]
    if len(big) >= 2:
        return [lab == big[0], lab == big[1]]
    if not big:
        return []
    core = lab == big[0]
    eroded = core
    for _ in range(8):
        eroded = ndi.binary_erosion(eroded, structure=np.ones((1, 3, 3), bool))
        elab, en = ndi.label(eroded)
        esizes = np.bincount(elab.ravel())[1:]
        parts = [i + 1 for i in np.argsort(esizes)[::-1][:2] if esizes[i] >= min_vox // 10]
        if len(parts) == 2:
            seeds = np.where(np.isin(elab, parts), elab, 0)
            _, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
            nearest = seeds[tuple(idx)]
            return [core & (nearest == parts[0]), core & (nearest == parts[1])]
    return [core]  # one lung only (e.g. after pneumonectomy) or inseparable


def _bone(hu: np.ndarray, body: np.ndarray, spacing_zyx: tuple[float, float, float],
          cfg: ClassicalConfig) -> np.ndarray:
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    cortex = _components_of_at_least((hu > cfg.bone_peak_hu) & body, cfg.min_bone_ml, voxel_ml)
    holes = _fill_slices(cortex) & ~cortex
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndi.generate_binary_structure(2, 1)
    hole_lab, _ = ndi.label(holes, structure=in_plane)
    area = np.bincount(hole_lab.ravel()) * spacing_zyx[1] * spacing_zyx[2]
    marrow = area <= cfg.max_marrow_mm2
    marrow[0] = False
    return cortex | (marrow[hole_lab] & (hu > cfg.bone_hu))


def _split_bone(bone: np.ndarray, body: np.ndarray, spacing_zyx: tuple[float, float, float],
                cfg: ClassicalConfig) -> dict[str, np.ndarray]:
    """Bone -> vertebrae, sternum, ribs by position in each axial slice, relative to the body's centre.

    Midline: the body's centre in x; front-back reference: the body's centre in y (the vertebral
    bodies lie behind it, the sternum in front). Bone within `spine_half_width_mm` of the midline and
    behind the centre is vertebrae (thoracic transverse processes reach about 35 mm), bone within
    `sternum_half_width_mm` of it and in front is sternum (the sternal body is about 40 mm wide), the
    rest is ribs. So rib necks next to the spine count as vertebrae, and the lateral manubrium,
    clavicles, scapulae and humeri as ribs (C merges the shoulder girdle into ribs anyway). The rule
    assumes the body's whole cross-section is in the field of view, as in a chest CT.
    """
    width = np.arange(bone.shape[2]) * spacing_zyx[2]  # mm, per x index
    depth = np.arange(bone.shape[1])                   # y index; LPS: grows towards the back
    area = np.maximum(body.sum(axis=(1, 2)), 1)
    x_centre = (body.sum(axis=1) * width).sum(axis=1) / area  # (D,) mm
    y_centre = (body.sum(axis=2) * depth).sum(axis=1) / area  # (D,) index
    lateral = np.abs(width[None, None, :] - x_centre[:, None, None])  # (D,1,W) mm from the midline
    posterior = depth[None, :, None] > y_centre[:, None, None]        # (D,H,1)
    vertebrae = bone & posterior & (lateral <= cfg.spine_half_width_mm)
    sternum = bone & ~posterior & (lateral <= cfg.sternum_half_width_mm)
    return {"vertebrae": vertebrae, "sternum": sternum, "ribs": bone & ~vertebrae & ~sternum}


def label_array(hu: np.ndarray, spacing_zyx: tuple[float, float, float], cfg: ClassicalConfig,
                left_is_high_x: bool = True) -> np.ndarray:
    """(D, H, W) HU in LPS array order -> uint8 map with CLASSES values.

    left_is_high_x: patient left lies at high x indices (true for LPS-oriented arrays).
    """
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    body = _body(hu, cfg)
    air = _components_of_at_least((hu < cfg.air_hu) & body, cfg.min_lung_ml, voxel_ml)
    dense_lab, _ = ndi.label((hu < cfg.lung_dense_hu) & body)
    touching = np.unique(dense_lab[air])
    lung_region = np.isin(dense_lab, touching[touching > 0])

    out = np.zeros(hu.shape, np.uint8)
    out[body] = VALUE["body"]
    lumen = _grow_airway(hu, air, cfg) if air.any() else np.zeros_like(air)
    min_vox = max(int(cfg.min_lung_ml / voxel_ml) // 2, 1)
    for lung in _split_lungs(lung_region & ~lumen, min_vox):
        lung = _fill_slices(lung) & body & ~lumen
        xs = np.nonzero(lung.any(axis=(0, 1)))[0]
        centre_x = xs.mean() if len(xs) else hu.shape[2] / 2
        is_left = (centre_x > hu.shape[2] / 2) == left_is_high_x
        out[lung] = VALUE["lung_left" if is_left else "lung_right"]
    if lumen.any():
        wall = ndi.distance_transform_edt(~lumen, sampling=spacing_zyx)
        reach = cfg.airway_wall_mm + 0.5 * max(spacing_zyx[1:])  # a voxel partly covered by the wall
        out[(wall <= reach) & body] = VALUE["airway"]

    for name, mask in _split_bone(_bone(hu, body, spacing_zyx, cfg), body, spacing_zyx, cfg).items():
        out[mask] = VALUE[name]
    return out


def label_image(image: sitk.Image, cfg: ClassicalConfig | None = None) -> sitk.Image:
    """Label a CT volume (HU); the result has the input's grid and geometry."""
    cfg = cfg or ClassicalConfig()
    orientation = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())
    lps = sitk.DICOMOrient(image, "LPS")
    spacing = np.asarray(lps.GetSpacing(), float)  # (x, y, z)
    work_spacing = np.maximum(spacing, cfg.working_spacing_mm)
    if np.any(work_spacing > spacing * 1.05):
        size = np.maximum(np.round(np.asarray(lps.GetSize()) * spacing / work_spacing), 1).astype(int)
        work_spacing = np.asarray(lps.GetSize()) * spacing / size
        smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(lps, sitk.sitkFloat32), (work_spacing / 2.5).tolist())
        work = sitk.Resample(smooth, size.tolist(), sitk.Transform(), sitk.sitkLinear, lps.GetOrigin(),
                             work_spacing.tolist(), lps.GetDirection(), -1024.0, sitk.sitkFloat32)
    else:
        work = lps
    hu = sitk.GetArrayFromImage(work).astype(np.float32)
    labels = label_array(hu, tuple(float(s) for s in reversed(work.GetSpacing())), cfg)
    lab_img = sitk.GetImageFromArray(labels)
    lab_img.CopyInformation(work)
    if work is not lps:
        lab_img = sitk.Resample(lab_img, lps, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out = sitk.DICOMOrient(lab_img, orientation)
    out.CopyInformation(image)
    return out
