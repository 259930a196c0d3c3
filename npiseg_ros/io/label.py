"""SemanticKITTI ``.label`` words: one little-endian uint32 per point, the semantic class in
the lower 16 bits and the instance id in the upper 16 bits."""
from __future__ import annotations

import numpy as np

from npiseg_ros.core.types import MAX_OBJECT_ID

__all__ = ["encode_object_labels", "decode_label_words"]


def encode_object_labels(labels: np.ndarray) -> np.ndarray:
    """Object ids as ``.label`` words, the id in both halves (class and instance).

    Args:
        labels: (N,) int object id per point; negative ids (dropped points) become 0, ids
            above :data:`MAX_OBJECT_ID` are clipped to it.

    Returns:
        (N,) ``<u4`` words, ready for ``tobytes()``.
    """
    ids = np.clip(np.asarray(labels), 0, MAX_OBJECT_ID).astype(np.uint32)
    return ((ids << 16) | ids).astype("<u4")


def decode_label_words(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) uint32 ``.label`` words -> ((N,) uint32 semantic class, (N,) uint32 instance id)."""
    words = np.asarray(words).astype(np.uint32, copy=False)
    return words & 0xFFFF, words >> 16
