"""Pinhole projection of LiDAR points into a camera image, and drawing them in the page's colours.

Pure numpy (no ROS, no bag): :func:`project_points` applies a LiDAR -> camera transform, the
camera matrix and plumb_bob distortion (the ``sensor_msgs/CameraInfo`` model; ``image_rect``
topics use P and R without distortion); :func:`draw_points` paints the projected points far to
near so the nearest point wins each pixel; :func:`point_colours` gives each point the colour the
browser tool's page gives it (object palette, height shading, uncertainty scale). The camera
overlay (:mod:`npiseg_ros.annotate.camera`) reads the images and calibration from a bag and
calls these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CameraError", "Intrinsics", "Projection", "project_points", "draw_points",
           "point_colours", "object_colour", "COLOURINGS"]

MIN_DEPTH_M = 0.05
"""Points nearer the camera plane than this (or behind it) are not drawn."""
COLOURINGS = ("labels", "uncertainty")
UNCERTAINTY_MAX = 0.7
"""Top of the uncertainty colour scale, as the page's (``app.js``)."""
HEIGHT_RANGE = (-2.5, 3.5)
"""Metres (sensor frame) over which the page shades background points from dark to light."""
OUT_OF_RANGE_RGB = (45, 45, 55)
OBJECT_RADIUS_PX = 2
OTHER_RADIUS_PX = 1


class CameraError(ValueError):
    """No overlay for this camera or sweep; the message says why in one line."""


# --------------------------------------------------------------------------- colours


def _hsl(hue: float, saturation: float, lightness: float) -> tuple[int, int, int]:
    """The page's ``hsl`` (app.js) with JavaScript's rounding, 8-bit RGB."""
    chroma = (1 - abs(2 * lightness - 1)) * saturation
    x = chroma * (1 - abs((hue / 60) % 2 - 1))
    m = lightness - chroma / 2
    sector = [(chroma, x, 0), (x, chroma, 0), (0, chroma, x), (0, x, chroma), (x, 0, chroma),
              (chroma, 0, x)][min(int(hue // 60), 5)]
    return tuple(int(np.floor((value + m) * 255 + 0.5)) for value in sector)


def object_colour(object_id: int) -> tuple[int, int, int]:
    """The colour the page gives object ``object_id`` (> 0) in the 3-D view (``objectColour``
    in app.js: the hue walks the circle by the golden angle)."""
    return _hsl((object_id * 137.508) % 360, 0.85, 0.55)


def _ramp(values: np.ndarray) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) uint8 on the page's ramp (dark blue, cyan, yellow, red)."""
    stops = np.array([[20, 30, 110], [0, 170, 200], [240, 220, 40], [230, 40, 30]], np.float64)
    scaled = np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * (len(stops) - 1)
    low = np.minimum(np.floor(scaled).astype(np.int64), len(stops) - 2)
    fraction = (scaled - low)[:, None]
    rgb = stops[low] + (stops[low + 1] - stops[low]) * fraction
    return np.floor(rgb + 0.5).astype(np.uint8)


def point_colours(z: np.ndarray, labels: np.ndarray | None, uncertainty: np.ndarray | None,
                  colouring: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """The page's colour of every point and the radius it is drawn with.

    Args:
        z: (N,) height in the sensor frame (shades the background as the page does).
        labels: (N,) object id per point (0 background, -1 outside ``--max-range``), or None
            (nothing decoded yet: all background).
        uncertainty: (N,) per-point uncertainty or None.
        colouring: ``labels`` or ``uncertainty`` (without uncertainty: labels).

    Returns:
        (N, 3) uint8 RGB and (N,) int radius in pixels (objects larger than the rest).
    """
    count = z.shape[0]
    labels = np.zeros(count, np.int64) if labels is None else np.asarray(labels, np.int64)
    rgb = np.zeros((count, 3), np.uint8)
    if colouring == "uncertainty" and uncertainty is not None:
        rgb[:] = _ramp(np.asarray(uncertainty, np.float64) / UNCERTAINTY_MAX)
    else:
        span = HEIGHT_RANGE[1] - HEIGHT_RANGE[0]
        shade = np.clip((np.nan_to_num(z) - HEIGHT_RANGE[0]) / span, 0, 1)
        rgb[:] = (70 + np.floor(110 * shade + 0.5)).astype(np.uint8)[:, None]
        for object_id in np.unique(labels[labels > 0]):
            rgb[labels == object_id] = object_colour(int(object_id))
    rgb[labels < 0] = OUT_OF_RANGE_RGB
    radius = np.where(labels > 0, OBJECT_RADIUS_PX, OTHER_RADIUS_PX)
    return rgb, radius


# --------------------------------------------------------------------------- projection


@dataclass(frozen=True)
class Intrinsics:
    """How a camera maps points of its optical frame (x right, y down, z forward) to pixels.

    Attributes:
        width, height: image size, pixels.
        matrix: (3, 3) camera matrix (K; P's left 3x3 for rectified images).
        distortion: (5,) plumb_bob k1 k2 p1 p2 k3 (zeros: none).
        image_from_optical: (4, 4) the frame the matrix applies in <- the optical frame
            (identity; for rectified images the rectification R and P's translation).
    """

    width: int
    height: int
    matrix: np.ndarray
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))
    image_from_optical: np.ndarray = field(default_factory=lambda: np.eye(4))

    @classmethod
    def from_camera_info(cls, info, rectified: bool) -> Intrinsics:
        """Intrinsics of a CameraInfo message; ``rectified``: the image is rectified (its
        topic is ``image_rect...``), so P and R apply and the distortion does not.

        Raises:
            CameraError: an unknown distortion model, binning or a region of interest, or no
                calibration at all.
        """
        if int(info.binning_x) > 1 or int(info.binning_y) > 1:
            raise CameraError(f"CameraInfo binning {info.binning_x}x{info.binning_y} is not "
                              "supported (full-resolution images only)")
        roi = info.roi
        if int(roi.width) and int(roi.height) and (
                int(roi.width), int(roi.height)) != (int(info.width), int(info.height)):
            raise CameraError(f"CameraInfo region of interest {roi.width}x{roi.height} is not "
                              "supported (full images only)")
        if rectified:
            projection = np.asarray(info.p, np.float64).reshape(3, 4)
            matrix = projection[:, :3]
            _check_matrix(matrix, "P")
            image_from_optical = np.eye(4)
            image_from_optical[:3, :3] = np.asarray(info.r, np.float64).reshape(3, 3)
            image_from_optical[:3, 3] = np.linalg.solve(matrix, projection[:, 3])
            if not np.any(image_from_optical[:3, :3]):  # R unset: the image frame itself
                image_from_optical[:3, :3] = np.eye(3)
            return cls(int(info.width), int(info.height), matrix,
                       image_from_optical=image_from_optical)
        matrix = np.asarray(info.k, np.float64).reshape(3, 3)
        _check_matrix(matrix, "K")
        return cls(int(info.width), int(info.height), matrix,
                   _distortion(str(info.distortion_model), info.d))

    def sized(self, width: int, height: int) -> Intrinsics:
        """These intrinsics for an image of ``width`` x ``height`` pixels.

        Raises:
            CameraError: the CameraInfo gives another size (0 x 0 means: the image's).
        """
        if (self.width, self.height) not in ((0, 0), (width, height)):
            raise CameraError(f"the image is {width}x{height} but its CameraInfo says "
                              f"{self.width}x{self.height}")
        return Intrinsics(width, height, self.matrix, self.distortion, self.image_from_optical)


def _check_matrix(matrix: np.ndarray, name: str) -> None:
    if not np.isfinite(matrix).all() or matrix[0, 0] <= 0 or matrix[1, 1] <= 0 \
            or matrix[2, 2] != 1:
        raise CameraError(f"CameraInfo {name} is not a calibrated camera matrix "
                          f"(fx {matrix[0, 0]:g}, fy {matrix[1, 1]:g}, [2,2] {matrix[2, 2]:g})")


def _distortion(model: str, coefficients) -> np.ndarray:
    """(5,) k1 k2 p1 p2 k3 of a plumb_bob model; all-zero coefficients mean no distortion
    whatever the model is called.

    Raises:
        CameraError: another model with non-zero coefficients, or plumb_bob with more than 5.
    """
    values = np.asarray(coefficients, np.float64).reshape(-1)
    if not np.any(values):
        return np.zeros(5)
    if model != "plumb_bob":
        raise CameraError(f"distortion model {model!r} is not supported (plumb_bob, or all "
                          "coefficients zero)")
    if values.size > 5 and np.any(values[5:]):
        raise CameraError(f"plumb_bob with {values.size} non-zero coefficients: expected 5 "
                          "(k1 k2 p1 p2 k3)")
    return np.pad(values[:5], (0, max(0, 5 - values.size)))


def _monotonic_radius2(k1: float, k2: float, k3: float) -> float:
    """Squared normalised radius up to which the radial distortion r (1 + k1 r^2 + k2 r^4 +
    k3 r^6) still grows with r: beyond it, points far outside the view would fold back into
    the image, so they are dropped (inf: it grows everywhere)."""
    roots = np.roots([7 * k3, 5 * k2, 3 * k1, 1.0])  # d/dr of the above, in s = r^2
    positive = [r.real for r in roots if abs(r.imag) < 1e-12 and r.real > 0]
    return min(positive, default=np.inf)


@dataclass
class Projection:
    """The points that land in the image: their indices, pixel coordinates (u right, v down;
    pixel (0, 0)'s centre at 0, 0) and depth along the optical axis, metres."""

    index: np.ndarray
    uv: np.ndarray
    depth: np.ndarray


def project_points(xyz: np.ndarray, camera_from_points: np.ndarray,
                   intrinsics: Intrinsics) -> Projection:
    """Project points into the image: rigid transform to the camera's optical frame, pinhole,
    plumb_bob (radial-tangential) distortion, camera matrix. Points that are not finite,
    behind the camera (or nearer than :data:`MIN_DEPTH_M`), beyond the distortion's valid
    radius, or outside the image are dropped.

    Args:
        xyz: (N, 3) points, metres.
        camera_from_points: (4, 4) optical frame <- the points' frame.
        intrinsics: the camera.
    """
    transform = intrinsics.image_from_optical @ np.asarray(camera_from_points, np.float64)
    points = np.asarray(xyz, np.float64) @ transform[:3, :3].T + transform[:3, 3]
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(points).all(axis=1) & (points[:, 2] > MIN_DEPTH_M)
    index = np.flatnonzero(keep)
    depth = points[index, 2]
    x, y = points[index, 0] / depth, points[index, 1] / depth
    k1, k2, p1, p2, k3 = intrinsics.distortion
    r2 = x * x + y * y
    valid = r2 <= _monotonic_radius2(k1, k2, k3)
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uvw = np.stack([xd, yd, np.ones_like(xd)], axis=1) @ intrinsics.matrix.T
    uv = uvw[:, :2] / uvw[:, 2:]
    valid &= ((uv[:, 0] >= -0.5) & (uv[:, 0] < intrinsics.width - 0.5)
              & (uv[:, 1] >= -0.5) & (uv[:, 1] < intrinsics.height - 0.5))
    return Projection(index[valid], uv[valid], depth[valid])


def _disc(radius: int) -> np.ndarray:
    """(K, 2) pixel offsets dx, dy of a disc of ``radius`` pixels."""
    span = np.arange(-radius, radius + 1)
    dx, dy = np.meshgrid(span, span)
    inside = dx * dx + dy * dy <= radius * radius
    return np.stack([dx[inside], dy[inside]], axis=1)


def draw_points(image: np.ndarray, uv: np.ndarray, depth: np.ndarray, colours: np.ndarray,
                radii: np.ndarray) -> np.ndarray:
    """A copy of ``image`` (H, W, 3 uint8) with each point drawn as a disc, far to near: at
    every pixel the nearest point's colour wins (painter's order, decided exactly).

    Args:
        uv: (M, 2) pixel coordinates; depth: (M,) metres; colours: (M, 3) uint8;
        radii: (M,) int disc radius in pixels (0 = one pixel).
    """
    out = np.array(image, np.uint8, copy=True)
    height, width = out.shape[:2]
    if len(depth) == 0:
        return out
    order = np.argsort(depth, kind="stable")  # near first: the first claim on a pixel wins
    centre = np.floor(uv[order] + 0.5).astype(np.int64)
    offsets = _disc(int(np.max(radii)))
    reach = (offsets ** 2).sum(axis=1)[None, :] <= (radii[order] ** 2)[:, None]
    cols = centre[:, :1] + offsets[None, :, 0]
    rows = centre[:, 1:] + offsets[None, :, 1]
    inside = reach & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    pixel = np.where(inside, rows * width + cols, -1).reshape(-1)
    point = np.repeat(order, offsets.shape[0])
    used = pixel >= 0
    pixel, point = pixel[used], point[used]
    first_pixel, first = np.unique(pixel, return_index=True)  # nearest point per pixel
    out.reshape(-1, 3)[first_pixel] = colours[point[first]]
    return out
