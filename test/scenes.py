"""Small procedural scenes for core tests: a floor with a few coloured boxes on it."""
from __future__ import annotations

import numpy as np


def box_surface(rng: np.random.Generator, centre: np.ndarray, size: np.ndarray,
                spacing: float) -> np.ndarray:
    """Points on the 5 visible faces (no bottom) of an axis-aligned box, (P, 3)."""
    faces = []
    lo = centre - size / 2
    hi = centre + size / 2
    for axis in range(3):
        for side, value in ((0, lo[axis]), (1, hi[axis])):
            if axis == 2 and side == 0:
                continue
            others = [a for a in range(3) if a != axis]
            count = max(int(size[others[0]] * size[others[1]] / spacing**2), 4)
            face = rng.uniform(lo, hi, size=(count, 3))
            face[:, axis] = value
            faces.append(face)
    return np.concatenate(faces)


def floor_with_boxes(seed: int = 0, num_boxes: int = 3, spacing: float = 0.03,
                     extent: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A floor (label 0) with ``num_boxes`` separated boxes (labels 1..num_boxes).

    Returns xyz (N, 3) float32 metres, colors (N, 3) float32 in [0, 1], labels (N,) int64.
    """
    rng = np.random.default_rng(seed)
    count = int(extent * extent / spacing**2)
    floor = np.column_stack([rng.uniform(0, extent, (count, 2)), rng.normal(0, 0.003, count)])
    points, colors, labels = [floor], [np.tile([0.5, 0.5, 0.5], (count, 1))], [np.zeros(count)]
    slots = rng.permutation(9)[:num_boxes]
    for index, slot in enumerate(slots, start=1):
        cell = np.array([slot % 3, slot // 3]) * (extent / 3) + extent / 6
        size = rng.uniform(0.3, 0.6, 3)
        centre = np.array([*cell, size[2] / 2])
        surface = box_surface(rng, centre, size, spacing)
        points.append(surface)
        colors.append(np.tile(rng.uniform(0.1, 0.9, 3), (len(surface), 1)))
        labels.append(np.full(len(surface), index))
    xyz = np.concatenate(points).astype(np.float32)
    rgb = np.clip(np.concatenate(colors) + rng.normal(0, 0.02, (len(xyz), 3)), 0, 1)
    return xyz, rgb.astype(np.float32), np.concatenate(labels).astype(np.int64)
