"""Point-wise augmentations of training scenes: tiny ``(points, rng) -> points`` callables
chained by :func:`compose`; :func:`build_augmentation` makes the chain a data config asks for.
Every random choice comes from the caller's generator (``data.SceneStream`` seeds it per step,
rank and slot), so a resumed run sees the same scenes."""
from __future__ import annotations

from typing import Callable

import numpy as np

from npiseg_train.config import DataSection

Points = dict[str, np.ndarray | None]
"""Point-level scene: ``xyz`` (N, 3) float32 m, ``colors`` (N, 3) [0, 1] or None,
``intensity`` (N,) or None, ``labels`` (N,) int64 instance ids (0 = unlabelled)."""

Augmentation = Callable[[Points, np.random.Generator], Points]


def random_flip(points: Points, rng: np.random.Generator) -> Points:
    """Mirror x and / or y with probability 1/2 each."""
    signs = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    xyz = points["xyz"].copy()
    xyz[:, :2] *= signs.astype(np.float32)
    return {**points, "xyz": xyz}


def random_rotate_z(points: Points, rng: np.random.Generator) -> Points:
    """Rotate about the vertical axis by a uniform angle (scenes have no canonical heading)."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], np.float32)
    return {**points, "xyz": points["xyz"] @ rotation.T}


def random_scale(low: float, high: float) -> Augmentation:
    """Uniform isotropic scale in [low, high] (object sizes vary between datasets)."""
    def apply(points: Points, rng: np.random.Generator) -> Points:
        return {**points, "xyz": points["xyz"] * np.float32(rng.uniform(low, high))}
    return apply


def jitter(std_m: float) -> Augmentation:
    """Gaussian noise of ``std_m`` metres on every coordinate (sensor noise)."""
    def apply(points: Points, rng: np.random.Generator) -> Points:
        noise = rng.normal(0.0, std_m, points["xyz"].shape).astype(np.float32)
        return {**points, "xyz": points["xyz"] + noise}
    return apply


def point_dropout(low: float, high: float) -> Augmentation:
    """Remove a uniform fraction in [low, high] of the points (sparser real scans)."""
    def apply(points: Points, rng: np.random.Generator) -> Points:
        keep = rng.random(points["xyz"].shape[0]) >= rng.uniform(low, high)
        return {k: (v[keep] if v is not None else None) for k, v in points.items()}
    return apply


def color_jitter(std: float) -> Augmentation:
    """Per-scene brightness / contrast change plus per-point noise (camera differences)."""
    def apply(points: Points, rng: np.random.Generator) -> Points:
        if points["colors"] is None:
            return points
        gain = rng.normal(1.0, 2 * std)
        offset = rng.normal(0.0, std, 3)
        colors = points["colors"] * gain + offset + rng.normal(0.0, std / 2,
                                                               points["colors"].shape)
        return {**points, "colors": np.clip(colors, 0.0, 1.0).astype(np.float32)}
    return apply


def drop_colors(probability: float) -> Augmentation:
    """Remove the colours with ``probability`` (the model then sees zeros, as for LiDAR)."""
    def apply(points: Points, rng: np.random.Generator) -> Points:
        if points["colors"] is None or rng.random() >= probability:
            return points
        return {**points, "colors": None}
    return apply


def compose(augmentations: list[Augmentation]) -> Augmentation:
    def apply(points: Points, rng: np.random.Generator) -> Points:
        for augmentation in augmentations:
            points = augmentation(points, rng)
        return points
    return apply


def build_augmentation(config: DataSection) -> Augmentation:
    """The augmentation chain a data config asks for (order: drop, geometry, noise, colour)."""
    chain: list[Augmentation] = []
    if config.dropout[1] > 0:
        chain.append(point_dropout(*config.dropout))
    if config.flip:
        chain.append(random_flip)
    if config.rotate_z:
        chain.append(random_rotate_z)
    if config.scale[0] != 1.0 or config.scale[1] != 1.0:
        chain.append(random_scale(*config.scale))
    if config.jitter_m > 0:
        chain.append(jitter(config.jitter_m))
    if config.color_jitter > 0:
        chain.append(color_jitter(config.color_jitter))
    if config.drop_colors > 0:
        chain.append(drop_colors(config.drop_colors))
    return compose(chain)
