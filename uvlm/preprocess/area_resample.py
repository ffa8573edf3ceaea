"""Exact area-average resampling of a whole volume onto the corner-aligned output grid, in one pass.

Output voxel j along an axis covers input index range [j f, (j + 1) f), f = n_in / n_out (the grid spans
the whole field of view, first and last corners aligned, as `resample_to_grid` builds it). Downsampling
(f >= 1) averages the input voxels over exactly that range, each weighted by its overlap: the ideal
anti-aliasing box, with no Gaussian to approximate it. Upsampling (f < 1) is linear interpolation at the
output voxel centre, clamped at the edges.

The volume is read in chunks of stored z slices, reduced along stored y then x (integer factors as sums
of strided views, other factors as weighted gathers), and accumulated into the z output; reorientation
(`sitk.DICOMOrient`'s axis permutation and flips) is applied to the small result. No full-size float copy
exists. Scanner padding is replaced by air before averaging, as a count: the operator is linear, so
R(v with padding -> a) = R(v) + (a - padding) R(v == padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class AxisOp:
    """One axis's resampling: out[j] = sum_k weights[k, j] * in[start[j] + k] (indices past the end unused)."""

    n_in: int
    n_out: int
    start: np.ndarray    # (n_out,) first input index of each output voxel
    weights: np.ndarray  # (K, n_out) float64, zero where an output voxel has fewer than K inputs
    stride: int          # > 0: integer-factor box (start = stride * j, every weight 1 / stride); 0 otherwise

    def matrix(self) -> np.ndarray:
        """The (n_out, n_in) weight matrix (for the z axis and for tests)."""
        w = np.zeros((self.n_out, self.n_in))
        for k in range(self.weights.shape[0]):
            idx = np.minimum(self.start + k, self.n_in - 1)
            np.add.at(w, (np.arange(self.n_out), idx), self.weights[k])
        return w


def axis_op(n_in: int, n_out: int) -> AxisOp:
    """Box overlap weights when n_out <= n_in (exact, from integer arithmetic), else clamped linear weights."""
    j = np.arange(n_out)
    if n_out <= n_in:
        if n_in % n_out == 0:
            f = n_in // n_out
            return AxisOp(n_in, n_out, f * j, np.full((f, n_out), 1.0 / f), f)
        # in units of 1 / n_out input voxels: output j spans [j n_in, (j + 1) n_in), input i spans [i n_out, ...)
        lo, hi = j * n_in, (j + 1) * n_in
        start = lo // n_out
        taps = int(((hi - 1) // n_out - start).max()) + 1
        weights = np.zeros((taps, n_out))
        for k in range(taps):
            i = start + k
            overlap = np.minimum((i + 1) * n_out, hi) - np.maximum(i * n_out, lo)
            weights[k] = np.maximum(overlap, 0) / n_in
        return AxisOp(n_in, n_out, start, weights, 0)
    centre = np.clip((j + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    start = np.minimum(np.floor(centre).astype(int), n_in - 1)
    t = centre - start
    return AxisOp(n_in, n_out, start, np.stack([1 - t, t]), 0)


def reduce_axis(x: np.ndarray, op: AxisOp, axis: int, dtype: type) -> tuple[np.ndarray, float]:
    """(op applied along `axis` up to a scale, that scale): integer factors are left as sums of `stride`
    strided views (scale 1 / stride), so integer voxels and padding counts are summed exactly."""
    if op.stride:
        dtype = np.float32 if np.issubdtype(x.dtype, np.floating) else dtype  # weighted sums stay float
        views = [x[(slice(None),) * axis + (slice(k, None, op.stride),)] for k in range(op.stride)]
        if op.stride == 1:
            return views[0].astype(dtype), 1.0
        out = np.add(views[0], views[1], dtype=dtype)
        for view in views[2:]:
            np.add(out, view, out=out)
        return out, 1.0 / op.stride
    shape = [1] * x.ndim
    shape[axis] = op.n_out
    out = None
    for k in range(op.weights.shape[0]):
        term = np.take(x, np.minimum(op.start + k, op.n_in - 1), axis=axis).astype(np.float32)
        term *= op.weights[k].astype(np.float32).reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out, 1.0


def dicom_orient_axes(img: sitk.Image, orientation: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """(permutation, flips) that `sitk.DICOMOrient(img, orientation)` applies, in ITK (x, y, z) axis order:
    output axis i is input axis perm[i], reversed when flips[i]. Asked of ITK on a 2x2x2 image."""
    probe = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    probe.SetDirection(img.GetDirection())
    orient = sitk.DICOMOrientImageFilter()
    orient.SetDesiredCoordinateOrientation(orientation)
    orient.Execute(probe)
    return tuple(int(p) for p in orient.GetPermuteOrder()), tuple(bool(f) for f in orient.GetFlipAxes())


def output_grid(img: sitk.Image, grid_dhw: tuple[int, int, int], orientation: str) -> dict:
    """Geometry (ITK x, y, z order) of the grid `resample_to_grid` resamples onto: size, spacing, origin,
    direction of the reoriented image, spacing stretched so the corners of the field of view are kept."""
    perm, flips = dicom_orient_axes(img, orientation)
    size, spacing = np.array(img.GetSize()), np.array(img.GetSpacing())
    direction = np.array(img.GetDirection()).reshape(3, 3)
    first = [int(size[p] - 1) if f else 0 for p, f in zip(perm, flips, strict=True)]  # stored index of new 0
    index = [0, 0, 0]
    for i, p in enumerate(perm):
        index[p] = first[i]
    new_dir = direction[:, list(perm)] * np.where(flips, -1.0, 1.0)
    new_spacing = spacing[list(perm)]
    out_size = np.array(grid_dhw[::-1], dtype=float)
    out_spacing = size[list(perm)] * new_spacing / out_size
    corner = np.array(img.TransformIndexToPhysicalPoint(index)) - new_dir @ (new_spacing / 2)
    return {"size": [int(s) for s in out_size], "spacing": out_spacing.tolist(),
            "origin": (corner + new_dir @ (out_spacing / 2)).tolist(), "direction": new_dir.ravel().tolist()}


def area_resample(arr: np.ndarray, perm: tuple[int, ...], flips: tuple[bool, ...], grid_dhw: tuple[int, int, int],
                  padding: float | None = None, pad_to: float = 0.0, line: tuple[float, float] = (1.0, 0.0),
                  chunk: int = 8) -> np.ndarray:
    """Stored (z, y, x) voxels -> float32 (D, H, W) on the reoriented grid (a view, C-ordered when no axis
    moves), `padding` voxels counted as the stored value `pad_to`, then mapped by stored * line[0] + line[1]
    (the HU correction: weights sum to 1, so it is applied through the z weights and the initial value).
    perm/flips as `dicom_orient_axes` gives them."""
    grid_xyz = grid_dhw[::-1]
    n_out = [0, 0, 0]  # per stored ITK axis (x, y, z)
    for i, p in enumerate(perm):
        n_out[p] = grid_xyz[i]
    nz, ny, nx = arr.shape
    oz, oy, ox = axis_op(nz, n_out[2]), axis_op(ny, n_out[1]), axis_op(nx, n_out[0])
    wz = oz.matrix().astype(np.float32)  # (n_out z, nz)
    acc = np.empty((oz.n_out, oy.n_out, ox.n_out), np.float32)  # (z', y', x') in stored order
    untouched = np.ones(oz.n_out, bool)  # every output slice has an input of nonzero weight
    count_type = np.uint8 if max(oy.stride, 1) * max(ox.stride, 1) < 256 else np.uint16
    tmp = np.empty(acc.shape[1:], np.float32)
    for z0 in range(0, nz, chunk):
        block = arr[z0:z0 + chunk]  # (c, y, x) stored type, a view
        part, scale_y = reduce_axis(block, oy, 1, np.float32)
        part, scale_x = reduce_axis(part, ox, 2, np.float32)  # (c, y', x')
        if padding is not None:
            hits = block == padding
            if hits.any():  # R(v with padding -> a) = R(v) + (a - padding) R(v == padding), R linear
                counts, _ = reduce_axis(hits.view(np.uint8), oy, 1, count_type)
                counts, _ = reduce_axis(counts, ox, 2, count_type)
                part += counts * np.float32(pad_to - padding)
        for k in range(part.shape[0]):
            rows = np.flatnonzero(wz[:, z0 + k])
            for j in rows:
                weight = wz[j, z0 + k] * np.float32(scale_y * scale_x * line[0])
                if untouched[j]:  # the first contribution initialises the slice: no pass to fill it first
                    np.multiply(part[k], weight, out=acc[j])
                    acc[j] += np.float32(line[1])
                    untouched[j] = False
                else:
                    np.multiply(part[k], weight, out=tmp)
                    acc[j] += tmp
    # stored array axis of oriented array axis a (a = 0 is D): ITK axis 2 - a is stored ITK axis perm[2 - a]
    out = acc.transpose([2 - perm[2 - a] for a in range(3)])
    flip_axes = tuple(2 - i for i in range(3) if flips[i])
    return np.flip(out, axis=flip_axes) if flip_axes else out
