"""Colours: PCL/RViz packed RGB and the display colour of every object id."""
from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["pack_rgb", "unpack_rgb", "label_colors", "object_color", "id_palette",
           "BACKGROUND_RGB"]

BACKGROUND_RGB = (150, 150, 150)
"""Display colour of background points (object id 0), 8-bit RGB."""


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Packed colour 0x00RRGGBB (PCL / RViz ``rgb``; the alpha byte of ``rgba`` is ignored) ->
    (N, 3) float32 RGB in [0, 1].

    Args:
        packed: (N,) 4-byte floats, whose BITS are the colour (PCL's FLOAT32 ``rgb``; any byte
            order), or integers / other floats, whose VALUES are the colour.
    """
    packed = np.asarray(packed)
    if packed.dtype.kind == "f" and packed.dtype.itemsize == 4:
        # the same bytes read as an unsigned integer of the same byte order
        packed = np.ascontiguousarray(packed).view(np.dtype(packed.dtype.str[0] + "u4"))
    packed = packed.astype(np.uint32, copy=False)
    channels = np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=1)
    return channels.astype(np.float32) / 255.0


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB, as RViz and PCL expect."""
    rgb = rgb.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed.view(np.float32)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """Display colour per object id: (N,) int -> (N, 3) uint8 RGB.

    Background (0) and invalid labels are grey; object ids walk the hue circle by the golden
    ratio so that consecutive ids get clearly different, stable colours for any number of objects.
    """
    palette, ids = id_palette(labels)
    return palette[ids]


def id_palette(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) object ids -> ((max id + 1, 3) uint8 colours of the ids present, (N,) int64 row of
    every point): a lookup table over the ids present (bincount, no sort), O(N) for any number
    of points; invalid (negative) ids take the background's row."""
    ids = np.maximum(np.asarray(labels, dtype=np.int64), 0).reshape(-1)
    present = np.flatnonzero(np.bincount(ids))
    palette = np.zeros((int(present[-1]) + 1 if present.size else 1, 3), dtype=np.uint8)
    for object_id in present:
        palette[object_id] = object_color(int(object_id))
    return palette, ids


def object_color(object_id: int) -> tuple[int, int, int]:
    """8-bit RGB display colour of one object id (grey for background and invalid ids)."""
    if object_id <= 0:
        return BACKGROUND_RGB
    hue = (object_id * 0.6180339887) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)
