"""Small synthetic labelled scenes for tests, demos and smoke runs (no dataset needed)."""
from __future__ import annotations

import numpy as np

from npiseg_ros.eval.cloud import LabelledCloud

__all__ = ["boxes_on_ground"]


def _box_surface(rng: np.random.Generator, centre: np.ndarray, size: np.ndarray,
                 spacing: float) -> np.ndarray:
    """Points on the five visible faces (no bottom) of an axis-aligned box, (M, 3) metres."""
    faces = []
    for axis in range(3):
        for side in (-0.5, 0.5):
            if axis == 2 and side < 0:
                continue
            other = [a for a in range(3) if a != axis]
            count = max(4, int(size[other[0]] * size[other[1]] / spacing ** 2))
            face = np.empty((count, 3))
            face[:, axis] = centre[axis] + side * size[axis]
            for a in other:
                face[:, a] = centre[a] + (rng.random(count) - 0.5) * size[a]
            faces.append(face)
    return np.concatenate(faces)


def boxes_on_ground(num_boxes: int = 2, *, seed: int = 0, spacing: float = 0.05,
                    ground_size: float = 8.0, with_colors: bool = True) -> LabelledCloud:
    """Boxes standing apart on a flat ground plane.

    Box k (1-based, label k) is about 1 m wide and 0.6-1.2 m high, placed on a circle of radius
    2.5 m; the ground (label 0) is a ``ground_size`` square at z = 0. Colours (if requested):
    grey ground, one random colour per box.

    Args:
        num_boxes: number of objects.
        seed: random seed; the scene is a pure function of the arguments.
        spacing: approximate point spacing in metres.
        ground_size: side of the ground square, metres.
        with_colors: attach RGB colours in [0, 1].
    """
    rng = np.random.default_rng(seed)
    count = int((ground_size / spacing) ** 2)
    ground = np.column_stack([(rng.random((count, 2)) - 0.5) * ground_size, np.zeros(count)])
    parts, labels, colors = [ground], [np.zeros(count, np.int64)], [np.full((count, 3), 0.5)]
    for k in range(num_boxes):
        angle = 2 * np.pi * k / max(num_boxes, 1)
        size = np.array([0.8 + 0.4 * rng.random(), 0.8 + 0.4 * rng.random(),
                         0.6 + 0.6 * rng.random()])
        centre = np.array([2.5 * np.cos(angle), 2.5 * np.sin(angle), size[2] / 2])
        points = _box_surface(rng, centre, size, spacing)
        parts.append(points)
        labels.append(np.full(len(points), k + 1, np.int64))
        colors.append(np.tile(rng.random(3), (len(points), 1)))
    xyz = np.concatenate(parts).astype(np.float32)
    return LabelledCloud(xyz=xyz, labels=np.concatenate(labels),
                         colors=np.concatenate(colors) if with_colors else None,
                         names={k + 1: f"box{k + 1}" for k in range(num_boxes)})
