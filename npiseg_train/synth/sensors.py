"""Sensor ray grids: a spinning multi-beam LiDAR and a pinhole RGB-D camera.

Each sensor owns a (rows, cols) grid of unit ray directions (also kept component-major as
``directions_cm`` (3, rows, cols) for the caster) and a ``window`` method that maps
a world axis-aligned box to the grid windows whose rays can reach it; ``shapes.cast_grid``
uses that to test each primitive against only those rays.
"""
from __future__ import annotations

import numpy as np

HDL64_ELEVATIONS_DEG: np.ndarray = np.concatenate([
    np.linspace(2.0, -8.33, 32),     # upper laser block: ~1/3 degree spacing
    np.linspace(-8.83, -24.9, 32),   # lower laser block: ~1/2 degree spacing
])
"""(64,) beam elevation angles of an HDL-64E-like sensor, degrees, highest first."""

LIDAR_MODELS: dict[str, dict] = {
    "hdl64": {"elevations_deg": HDL64_ELEVATIONS_DEG, "azimuth_steps": 2083,
              "max_range": 80.0, "sensor_height": 1.73},
    # 32 beams from +15° to −25°, packed around the horizon (VLP-32C-like).
    "vlp32": {"elevations_deg": np.concatenate([np.linspace(15.0, 2.0, 6),
                                                np.linspace(1.33, -4.0, 18),
                                                np.linspace(-5.33, -25.0, 8)]),
              "azimuth_steps": 1800, "max_range": 100.0, "sensor_height": 1.9},
    # 16 beams, ±15° in 2° steps (VLP-16-like).
    "vlp16": {"elevations_deg": np.linspace(15.0, -15.0, 16), "azimuth_steps": 1800,
              "max_range": 100.0, "sensor_height": 1.8},
    # 128 beams uniform over ±22.5° (OS1-128-like).
    "os128": {"elevations_deg": np.linspace(22.5, -22.5, 128), "azimuth_steps": 1024,
              "max_range": 100.0, "sensor_height": 1.8},
}
"""Beam layouts of common spinning LiDARs (keyword arguments of ``generate_lidar_scene``);
training on several makes a model less tied to one sensor's ring spacing."""


def rotate_rows(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``points @ matrix`` for (..., 3) points and a (3, 3) matrix, as three scaled adds:
    a BLAS call for a thin N×3 product is slower (and multi-threads on a busy machine)."""
    return (points[..., 0:1] * matrix[0] + points[..., 1:2] * matrix[1]
            + points[..., 2:3] * matrix[2])


def _corners(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(8, 3) corners of the box [low, high]."""
    pick = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
    return np.where(pick, high, low)


class SpinningLidar:
    """Rotating multi-beam LiDAR: one ray per (beam, azimuth step).

    Args:
        position: (3,) sensor origin in the world, metres.
        rotation: (3, 3) sensor-to-world rotation (columns = sensor axes in the world).
        elevations_deg: (B,) beam elevations, degrees, sorted from highest to lowest.
        azimuth_steps: firings per revolution.
        azimuth_jitter_deg: per-column random shift of the firing angle (timing jitter).
        rng: generator for the jitter (None = no jitter).
    """

    def __init__(self, position: np.ndarray, rotation: np.ndarray,
                 elevations_deg: np.ndarray = HDL64_ELEVATIONS_DEG, azimuth_steps: int = 2083,
                 azimuth_jitter_deg: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.position = np.asarray(position, dtype=np.float64)
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.elevations = np.radians(np.asarray(elevations_deg, dtype=np.float64))
        if np.any(np.diff(self.elevations) > 0):
            raise ValueError("beam elevations must be sorted from highest to lowest")
        self.steps = int(azimuth_steps)
        self.step = 2.0 * np.pi / self.steps
        azimuths = np.arange(self.steps) * self.step
        if rng is not None and azimuth_jitter_deg > 0:
            azimuths = azimuths + rng.normal(0.0, np.radians(azimuth_jitter_deg), self.steps)
        self.azimuths = azimuths
        cos_el = np.cos(self.elevations)[:, None]
        self.local_directions = np.stack([
            cos_el * np.cos(azimuths)[None, :],
            cos_el * np.sin(azimuths)[None, :],
            np.broadcast_to(np.sin(self.elevations)[:, None], (len(self.elevations), self.steps)),
        ], axis=-1)
        self.directions = rotate_rows(self.local_directions, self.rotation.T)
        self.directions_cm = np.ascontiguousarray(np.moveaxis(self.directions, -1, 0))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.elevations), self.steps

    def to_sensor(self, points: np.ndarray) -> np.ndarray:
        """(M, 3) world points -> sensor frame."""
        return rotate_rows(points - self.position, self.rotation)

    def window(self, low: np.ndarray, high: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Grid windows (row0, row1, col0, col1) whose rays can meet the world box [low, high]."""
        corners = self.to_sensor(_corners(low, high))
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        inside_xy = lo[0] <= 0 <= hi[0] and lo[1] <= 0 <= hi[1]
        near_xy = 0.0 if inside_xy else float(np.hypot(max(lo[0], 0.0, -hi[0]),
                                                       max(lo[1], 0.0, -hi[1])))
        far_xy = float(np.hypot(np.abs(corners[:, 0]).max(), np.abs(corners[:, 1]).max()))
        top = np.arctan2(hi[2], near_xy if hi[2] > 0 else far_xy)
        bottom = np.arctan2(lo[2], far_xy if lo[2] > 0 else near_xy)
        margin = 1e-3
        rows = np.flatnonzero((self.elevations <= top + margin)
                              & (self.elevations >= bottom - margin))
        if rows.size == 0:
            return []
        row0, row1 = int(rows[0]), int(rows[-1]) + 1
        if inside_xy:
            return [(row0, row1, 0, self.steps)]
        xy = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]])
        center = np.arctan2(xy[:, 1].mean(), xy[:, 0].mean())
        relative = np.angle(np.exp(1j * (np.arctan2(xy[:, 1], xy[:, 0]) - center)))
        col0 = int(np.floor((center + relative.min()) / self.step)) - 2
        col1 = int(np.ceil((center + relative.max()) / self.step)) + 3
        if col1 - col0 >= self.steps:
            return [(row0, row1, 0, self.steps)]
        col0, col1 = col0 % self.steps, col1 % self.steps
        if col0 < col1:
            return [(row0, row1, col0, col1)]
        return [(row0, row1, col0, self.steps), (row0, row1, 0, col1)]


    def windows(self, lows: np.ndarray,
                highs: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
        """``window`` for many boxes at once: (P, 3) lows and highs -> P window lists.

        Same result as calling ``window`` per box, in one vectorised pass (the per-box call
        costs more Python overhead than ray tests for the many small primitives of a scene).
        """
        pick = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
        corners = np.where(pick[None], highs[:, None, :], lows[:, None, :])
        local = (corners - self.position) @ self.rotation
        lo, hi = local.min(axis=1), local.max(axis=1)
        inside = (lo[:, 0] <= 0) & (hi[:, 0] >= 0) & (lo[:, 1] <= 0) & (hi[:, 1] >= 0)
        gap_x = np.maximum(np.maximum(lo[:, 0], -hi[:, 0]), 0.0)
        gap_y = np.maximum(np.maximum(lo[:, 1], -hi[:, 1]), 0.0)
        near = np.where(inside, 0.0, np.hypot(gap_x, gap_y))
        far = np.hypot(np.abs(local[..., 0]).max(axis=1), np.abs(local[..., 1]).max(axis=1))
        top = np.arctan2(hi[:, 2], np.where(hi[:, 2] > 0, near, far))
        bottom = np.arctan2(lo[:, 2], np.where(lo[:, 2] > 0, far, near))
        descending = -self.elevations  # ascending, for searchsorted
        row0 = np.searchsorted(descending, -(top + 1e-3), side="left")
        row1 = np.searchsorted(descending, -(bottom - 1e-3), side="right")
        xs = np.stack([lo[:, 0], lo[:, 0], hi[:, 0], hi[:, 0]], axis=1)
        ys = np.stack([lo[:, 1], hi[:, 1], lo[:, 1], hi[:, 1]], axis=1)
        center = np.arctan2(ys.mean(axis=1), xs.mean(axis=1))
        relative = np.angle(np.exp(1j * (np.arctan2(ys, xs) - center[:, None])))
        col0 = np.floor((center + relative.min(axis=1)) / self.step).astype(np.int64) - 2
        col1 = np.ceil((center + relative.max(axis=1)) / self.step).astype(np.int64) + 3
        out: list[list[tuple[int, int, int, int]]] = []
        for k in range(len(lows)):
            r0, r1 = int(row0[k]), int(row1[k])
            if r1 <= r0:
                out.append([])
            elif inside[k] or col1[k] - col0[k] >= self.steps:
                out.append([(r0, r1, 0, self.steps)])
            else:
                c0, c1 = int(col0[k]) % self.steps, int(col1[k]) % self.steps
                out.append([(r0, r1, c0, c1)] if c0 < c1 else
                           [(r0, r1, c0, self.steps), (r0, r1, 0, c1)])
        return out


class PinholeCamera:
    """Depth camera with a pinhole model (x right, y down, z forward in the camera frame).

    Args:
        position: (3,) optical centre in the world, metres.
        rotation: (3, 3) camera-to-world rotation.
        width, height: image size, pixels.
        fov_x_deg: horizontal field of view, degrees (square pixels).
    """

    def __init__(self, position: np.ndarray, rotation: np.ndarray, width: int, height: int,
                 fov_x_deg: float) -> None:
        self.position = np.asarray(position, dtype=np.float64)
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.width, self.height = int(width), int(height)
        self.focal = 0.5 * width / np.tan(np.radians(fov_x_deg) / 2.0)
        u = (np.arange(width) + 0.5 - width / 2.0) / self.focal
        v = (np.arange(height) + 0.5 - height / 2.0) / self.focal
        local = np.stack(np.broadcast_arrays(u[None, :], v[:, None], 1.0), axis=-1)
        self.local_directions = local / np.linalg.norm(local, axis=-1, keepdims=True)
        self.directions = rotate_rows(self.local_directions, self.rotation.T)
        self.directions_cm = np.ascontiguousarray(np.moveaxis(self.directions, -1, 0))

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @staticmethod
    def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(3, 3) camera-to-world rotation looking from ``position`` at ``target`` with the
        image's 'down' axis pointing as close to world −z as possible."""
        forward = np.asarray(target, float) - np.asarray(position, float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward], axis=1)

    def window(self, low: np.ndarray, high: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Pixel windows (row0, row1, col0, col1) whose rays can meet the world box."""
        local = (_corners(low, high) - self.position) @ self.rotation
        if np.all(local[:, 2] <= 0):
            return []
        if np.any(local[:, 2] < 0.05):
            return [(0, self.height, 0, self.width)]
        u = local[:, 0] / local[:, 2] * self.focal + self.width / 2.0
        v = local[:, 1] / local[:, 2] * self.focal + self.height / 2.0
        col0, col1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 1, self.width)
        row0 = max(int(np.floor(v.min())) - 1, 0)
        row1 = min(int(np.ceil(v.max())) + 1, self.height)
        if col0 >= col1 or row0 >= row1:
            return []
        return [(row0, row1, col0, col1)]
