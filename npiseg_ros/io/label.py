"""Per-point label encodings of the driving datasets, numpy only.

- SemanticKITTI ``.label``: one little-endian uint32 per point, the semantic class in the lower
  16 bits and the instance id in the upper 16 bits.
- nuScenes-lidarseg ``.bin``: one uint8 class index per point.
- nuScenes-panoptic: one uint16 per point, ``class * 1000 + instance`` (instance 0 = none,
  at most 999); the devkit stores the array as ``data`` in an ``.npz``.

Every encoder checks its ranges and raises ``ValueError`` rather than wrap around silently.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npiseg_ros.core.types import MAX_OBJECT_ID

__all__ = ["encode_object_labels", "encode_label_words", "decode_label_words",
           "encode_lidarseg", "encode_nuscenes_panoptic", "decode_nuscenes_panoptic",
           "read_label_file", "read_lidarseg_file", "NUSCENES_MAX_INSTANCE"]

NUSCENES_MAX_INSTANCE = 999
"""Largest instance id a nuScenes-panoptic value holds (``class * 1000 + instance``)."""


def _as_ids(values: np.ndarray, name: str, high: int) -> np.ndarray:
    """``values`` as int64 ids, ValueError unless every one is in [0, high]."""
    ids = np.asarray(values)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be one value per point (N,), got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > high):
        raise ValueError(f"{name} must be in [0, {high}], got [{ids.min()}, {ids.max()}]")
    return ids


def encode_label_words(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """SemanticKITTI words: ``instance << 16 | semantic``.

    Args:
        semantic: (N,) int class id per point, in [0, 65535] (SemanticKITTI: 10 = car, ...).
        instance: (N,) int instance id per point, in [0, 65535] (0 = none).

    Returns:
        (N,) ``<u4`` words, ready for ``tobytes()``.

    Raises:
        ValueError: shapes differ or a value is outside 16 bits.
    """
    semantic = _as_ids(semantic, "semantic", 0xFFFF)
    instance = _as_ids(instance, "instance", 0xFFFF)
    if semantic.shape != instance.shape:
        raise ValueError(f"semantic {semantic.shape} and instance {instance.shape} differ")
    return ((instance.astype(np.uint32) << 16) | semantic.astype(np.uint32)).astype("<u4")


def encode_object_labels(labels: np.ndarray) -> np.ndarray:
    """Object ids without classes (the ROS node's export) as ``.label`` words, the id in both
    halves (class and instance).

    Args:
        labels: (N,) int object id per point; negative ids (dropped points) become 0, ids
            above :data:`MAX_OBJECT_ID` are clipped to it.

    Returns:
        (N,) ``<u4`` words, ready for ``tobytes()``.
    """
    ids = np.clip(np.asarray(labels).astype(np.int64), 0, MAX_OBJECT_ID)
    return encode_label_words(ids, ids)


def decode_label_words(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) uint32 ``.label`` words -> ((N,) uint32 semantic class, (N,) uint32 instance id)."""
    words = np.asarray(words).astype(np.uint32, copy=False)
    return words & 0xFFFF, words >> 16


def encode_lidarseg(classes: np.ndarray) -> np.ndarray:
    """(N,) int nuScenes-lidarseg class index per point (0..255) -> (N,) uint8."""
    return _as_ids(classes, "lidarseg class", 0xFF).astype(np.uint8)


def encode_nuscenes_panoptic(classes: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """(N,) class index (0..65) and (N,) instance id (0..999) -> (N,) uint16
    ``class * 1000 + instance`` (nuScenes-panoptic).

    Raises:
        ValueError: a class index above 65 or an instance above :data:`NUSCENES_MAX_INSTANCE`
            (renumber the instances of a frame first: they are per frame in nuScenes).
    """
    classes = _as_ids(classes, "panoptic class", 0xFFFF // 1000 - 1)
    instance = _as_ids(instance, "panoptic instance", NUSCENES_MAX_INSTANCE)
    if classes.shape != instance.shape:
        raise ValueError(f"classes {classes.shape} and instance {instance.shape} differ")
    return (classes * 1000 + instance).astype(np.uint16)


def decode_nuscenes_panoptic(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) uint16 panoptic values -> ((N,) class index, (N,) instance id), int64."""
    values = np.asarray(values).astype(np.int64)
    return values // 1000, values % 1000


def _read_exact(path: str | os.PathLike, dtype: str, what: str,
                num_points: int | None) -> np.ndarray:
    path = Path(path)
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise ValueError(f"{path}: {size} bytes is not a whole number of {itemsize}-byte "
                         f"{what} values (truncated?)")
    if num_points is not None and size // itemsize != num_points:
        raise ValueError(f"{path}: {size // itemsize} {what} values for a cloud of "
                         f"{num_points} points")
    return np.fromfile(path, dtype=dtype)


def read_label_file(path: str | os.PathLike,
                    num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A SemanticKITTI ``.label`` file -> ((N,) int64 semantic, (N,) int64 instance).

    Raises:
        ValueError: the size is not a multiple of 4 bytes or (``num_points``) not one word
            per point.
    """
    semantic, instance = decode_label_words(_read_exact(path, "<u4", ".label", num_points))
    return semantic.astype(np.int64), instance.astype(np.int64)


def read_lidarseg_file(path: str | os.PathLike, num_points: int | None = None) -> np.ndarray:
    """A nuScenes-lidarseg ``.bin`` file -> (N,) int64 class index per point.

    Raises:
        ValueError: (``num_points``) not one byte per point.
    """
    return _read_exact(path, "uint8", "lidarseg", num_points).astype(np.int64)
