"""Vectorised ray casting against analytic primitives (boxes, cylinders, ellipsoids).

Every primitive is a unit shape seen through an affine map, so one transform takes a ray
into the primitive's normalised frame (o' = Rᵀ(o − c) / s, d' = Rᵀd / s; the ray parameter t
is unchanged), where the slab test (box), the quadratic of x² + y² = 1 plus a z slab
(cylinder) or of |p|² = 1 (ellipsoid) gives the entry and exit distances.

The caster is a z-buffer over a sensor's ray grid: each primitive is tested only against the
rays of the grid window that its bounding box can cover (the sensor computes that window),
which keeps the work near "rays that hit something" instead of rays × primitives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from npiseg_train.synth.scene import BOX, CYLINDER, ELLIPSOID, Primitive

_EPS = 1e-9
WindowFn = Callable[[np.ndarray, np.ndarray], list[tuple[int, int, int, int]]]
"""Maps a world AABB (min (3,), max (3,)) to grid windows (row0, row1, col0, col1)."""


def _safe(d: np.ndarray) -> np.ndarray:
    """Replace exact zeros so 1/d is a huge finite number and the slab test needs no NaN care."""
    return np.where(np.abs(d) < _EPS, _EPS, d)


def unit_box(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry/exit distances of rays o + t·d through the cube [-1, 1]³.

    Args:
        o: (3,) ray origin in the normalised frame.
        d: (3, M) ray directions in the normalised frame (not unit length); component-major
            so each axis is one contiguous row (reductions over a length-3 axis are slow).

    Returns:
        (t_near (M,), t_far (M,)); the ray hits iff t_near <= t_far.
    """
    t_near = t_far = None
    for axis in range(3):
        inv = 1.0 / _safe(d[axis])
        a = (-1.0 - o[axis]) * inv
        b = (1.0 - o[axis]) * inv
        low, high = np.minimum(a, b), np.maximum(a, b)
        t_near = low if t_near is None else np.maximum(t_near, low)
        t_far = high if t_far is None else np.minimum(t_far, high)
    return t_near, t_far


def unit_cylinder(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry/exit distances through the capped cylinder x² + y² ≤ 1, |z| ≤ 1 (same API)."""
    dx, dy, dz = d[0], d[1], d[2]
    a = np.maximum(dx * dx + dy * dy, _EPS)
    b = 2.0 * (o[0] * dx + o[1] * dy)
    c = o[0] * o[0] + o[1] * o[1] - 1.0
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    near = (-b - root) / (2.0 * a)
    far = (-b + root) / (2.0 * a)
    inv = 1.0 / _safe(dz)
    z1 = (-1.0 - o[2]) * inv
    z2 = (1.0 - o[2]) * inv
    t_near = np.maximum(near, np.minimum(z1, z2))
    t_far = np.minimum(far, np.maximum(z1, z2))
    return t_near, np.where(disc >= 0.0, t_far, -np.inf)


def unit_sphere(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry/exit distances through the unit ball (same API as ``unit_box``)."""
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = 2.0 * (o @ d)
    c = float(o @ o) - 1.0
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    return (-b - root) / (2.0 * a), np.where(disc >= 0.0, (-b + root) / (2.0 * a), -np.inf)


_UNIT_SHAPES = {BOX: unit_box, CYLINDER: unit_cylinder, ELLIPSOID: unit_sphere}


def intersect(primitive: Primitive, origin: np.ndarray,
              directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances of world rays through one primitive.

    Args:
        primitive: the solid.
        origin: (3,) float64 common ray origin, metres, world frame.
        directions: (3, M) float64 unit ray directions, world frame, component-major.

    Returns:
        (t_near (M,), t_far (M,)) in metres along the rays; a ray hits the outside of the
        solid iff 0 < t_near <= t_far (rays starting inside count as misses).
    """
    local_o = ((origin - primitive.center) @ primitive.rotation) / primitive.half_size
    local_d = (primitive.rotation.T / primitive.half_size[:, None]) @ directions
    return _UNIT_SHAPES[primitive.kind](local_o, local_d)


def surface_normals(primitive: Primitive, points: np.ndarray) -> np.ndarray:
    """(M, 3) outward unit normals of ``primitive`` at world ``points`` (M, 3) on its surface."""
    local = ((points - primitive.center) @ primitive.rotation) / primitive.half_size
    if primitive.kind == BOX:
        axis = np.abs(local).argmax(axis=1)
        normal = np.zeros_like(local)
        normal[np.arange(len(local)), axis] = np.sign(local[np.arange(len(local)), axis])
    elif primitive.kind == CYLINDER:
        radial = np.hypot(local[:, 0], local[:, 1])
        on_cap = np.abs(local[:, 2]) > radial
        normal = np.where(on_cap[:, None], np.stack(
            [np.zeros_like(radial), np.zeros_like(radial), np.sign(local[:, 2])], axis=1),
            np.stack([local[:, 0], local[:, 1], np.zeros_like(radial)], axis=1))
    else:
        normal = local
    # Normals transform with the inverse-transpose of the shape's scale.
    world = (normal / primitive.half_size) @ primitive.rotation.T
    return world / np.maximum(np.linalg.norm(world, axis=1, keepdims=True), _EPS)


@dataclass
class RayHits:
    """Result of casting a ray grid.

    Attributes:
        depth: (H, W) float64 distance along each ray to the first hit, metres (inf = miss).
        primitive: (H, W) int32 index into the primitive list of the hit (-1 = none).
    """

    depth: np.ndarray
    primitive: np.ndarray


def cast_grid(origin: np.ndarray, directions: np.ndarray, primitives: list[Primitive],
              window: WindowFn, rng: np.random.Generator, max_range: float,
              depth: np.ndarray | None = None,
              windows: list[list[tuple[int, int, int, int]]] | None = None) -> RayHits:
    """First hits of a grid of rays from one origin against all primitives (z-buffer).

    Args:
        origin: (3,) float64 ray origin, metres, world frame.
        directions: (3, H, W) float64 unit directions, world frame, component-major.
        primitives: the scene's solids.
        window: sensor function giving the grid windows a world AABB can cover.
        rng: draws foliage penetration depths and pass-through decisions.
        max_range: hits beyond this distance are ignored, metres.
        depth: optional (H, W) initial depth buffer (e.g. the ground plane); copied.
        windows: optional precomputed windows, one list per primitive (then ``window`` is
            not called).

    Returns:
        ``RayHits``; ``primitive`` is -1 wherever the initial buffer (or nothing) won.
    """
    height, width = directions.shape[1:]
    buffer = np.full((height, width), np.inf) if depth is None else depth.copy()
    buffer[buffer > max_range] = np.inf
    owner = np.full((height, width), -1, dtype=np.int32)
    for index, primitive in enumerate(primitives):
        reach = windows[index] if windows is not None else window(*primitive.aabb())
        for row0, row1, col0, col1 in reach:
            rays = directions[:, row0:row1, col0:col1].reshape(3, -1)
            if rays.shape[1] == 0:
                continue
            t_near, t_far = intersect(primitive, origin, rays)
            hit = (t_near > 1e-6) & (t_near <= t_far)
            if not hit.any():
                continue
            if primitive.transmit > 0.0:
                hit &= rng.random(hit.shape) >= primitive.transmit
            if primitive.penetration > 0.0:
                # Foliage returns from somewhere inside the crown, or not at all when the
                # beam finds a gap all the way through.
                t_near = t_near + rng.exponential(primitive.penetration, hit.shape)
                hit &= t_near <= t_far
            t = np.where(hit, t_near, np.inf).reshape(row1 - row0, col1 - col0)
            current = buffer[row0:row1, col0:col1]
            closer = t < current
            if closer.any():
                current[closer] = t[closer]
                owner[row0:row1, col0:col1][closer] = index
    buffer[buffer > max_range] = np.inf
    owner[~np.isfinite(buffer)] = -1
    return RayHits(depth=buffer, primitive=owner)


def primitive_bounds(primitives: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) lows and (P, 3) highs of the primitives' world AABBs."""
    centers = np.array([p.center for p in primitives])
    extents = np.einsum("pij,pj->pi", np.abs(np.array([p.rotation for p in primitives])),
                        np.array([p.half_size for p in primitives]))
    return centers - extents, centers + extents


def hit_normals(primitives: list[Primitive], owner: np.ndarray,
                points: np.ndarray) -> np.ndarray:
    """(M, 3) surface normals for hit ``points`` (M, 3) owned by primitive indices ``owner``
    (M,) (all >= 0); grouped by primitive so each shape's formula runs once."""
    normals = np.zeros_like(points)
    order = np.argsort(owner, kind="stable")
    bounds = np.flatnonzero(np.diff(owner[order])) + 1
    for group in np.split(order, bounds):
        if group.size:
            normals[group] = surface_normals(primitives[int(owner[group[0]])], points[group])
    return normals
