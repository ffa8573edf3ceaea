"""Feature-map sizes of the encoder stages: pure arithmetic, importable without torch (the workflow uses it)."""

from __future__ import annotations


def stage_shapes(strides: list[int], input_dhw: tuple[int, ...] | list[int]) -> list[tuple[int, int, int]]:
    """Spatial size (D, H, W) of each stage's feature map for an input size (isotropic strides, 'same'
    padding: each stage divides by its stride, rounding up)."""
    shapes, cur = [], list(input_dhw)
    for s in strides:
        cur = [-(-c // s) for c in cur]
        shapes.append(tuple(cur))
    return shapes
