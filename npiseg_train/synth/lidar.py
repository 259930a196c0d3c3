"""Outdoor street scenes seen by a spinning HDL-64-like LiDAR.

``street_layout`` builds the street (road with markings, optional crossing and parking
strips, raised sidewalks whose edges are the curbs, building rows / fenced yards / green
segments, vehicles, people, poles, plants). Here the sensor scans it: it sits on the road at
~1.73 m, tilted with the road grade plus a little noise; the ground and every primitive are
ray-cast, then range noise, mixed pixels, intensity and dropouts are applied. Points come
back in the sensor frame, like a KITTI scan.
"""
from __future__ import annotations

import numpy as np

from npiseg_train.synth import street
from npiseg_train.synth.scene import BOX, Part, SynthScene, compact_labels, rotation_zyx
from npiseg_train.synth.sensors import HDL64_ELEVATIONS_DEG, SpinningLidar
from npiseg_train.synth.shapes import cast_grid, hit_normals, primitive_bounds
from npiseg_train.synth.street_layout import Grade, StreetLayout, build_street

def generate_lidar_scene(seed: int, name: str | None = None,
                         elevations_deg: np.ndarray = HDL64_ELEVATIONS_DEG,
                         azimuth_steps: int = 2083, max_range: float = 80.0,
                         sensor_height: float = 1.73) -> SynthScene:
    """Generate one street scene scanned by a spinning LiDAR.

    Args:
        seed: every random choice derives from it (same seed, same scene).
        name: scene name (default ``"lidar_<seed>"``).
        elevations_deg: (B,) beam elevations, degrees, highest first.
        azimuth_steps: firings per revolution (HDL-64E at 10 Hz: ~2083).
        max_range: returns beyond this are dropped, metres.
        sensor_height: sensor origin above the road, metres.

    Returns:
        ``SynthScene`` with xyz in the sensor frame, intensity in [0, 1], colors None.
    """
    rng = np.random.default_rng(seed)
    layout = build_street(rng)

    heading = rng.normal(0, 0.04) + (np.pi if rng.random() < 0.5 else 0.0)
    # The car stands on the grade; suspension and load add a little pitch and roll.
    tilt = layout.grade.tilt(0.0) @ rotation_zyx(heading, rng.normal(0, 0.015),
                                                 rng.normal(0, 0.015))
    # Road camber puts the road under the sensor a little lower than nominal.
    position = np.array([0.0, 0.0, sensor_height + rng.uniform(-0.02, 0.2)])
    # The carrying vehicle hides the steepest beams to the front and back; its hits are
    # dropped (instance 0), as a real driver filters them.
    layout.put(_ego_vehicle(), 0, 0.0, 0.0, heading)
    sensor = SpinningLidar(position, tilt, elevations_deg, azimuth_steps, 0.02, rng)
    ground = _ground_depth(layout.grade, position, sensor.directions, max_range)
    hits = cast_grid(position, sensor.directions_cm, layout.primitives, sensor.window, rng,
                     max_range, depth=ground,
                     windows=sensor.windows(*primitive_bounds(layout.primitives)))
    rows, cols = np.nonzero(np.isfinite(hits.depth))
    depth = hits.depth[rows, cols]
    directions = sensor.directions[rows, cols]
    owner = hits.primitive[rows, cols]
    points = position + directions * depth[:, None]

    labels, reflect, normals = _surface_attributes(layout, owner, points)
    # Range noise along the beam and bumpy, uneven terrain.
    noisy = depth + rng.normal(0.0, rng.uniform(0.01, 0.03), depth.shape)
    noisy = _mixed_pixels(rng, hits.depth, rows, cols, noisy)
    points = position + directions * noisy[:, None]
    on_terrain = (owner < 0) & np.isin(labels, _ids(layout, "terrain"))
    points[on_terrain, 2] += _terrain_height(rng, points[on_terrain])

    cos_incidence = np.abs(np.einsum("ij,ij->i", normals, directions))
    # Remission stays nearly flat to ~25 m and then fades fast (seen in KITTI scans: the
    # median return beyond 50 m is close to 0), so use a soft step in range.
    falloff = 1.0 / (1.0 + (noisy / rng.uniform(30.0, 40.0)) ** 4)
    # Sensors differ in their intensity calibration: a per-scan gain.
    gain = rng.uniform(1.0, 1.4)
    intensity = gain * reflect * (0.75 + 0.25 * cos_incidence) * falloff
    intensity *= rng.normal(1.0, 0.12, intensity.shape)
    intensity = np.clip(intensity + rng.normal(0, 0.015, intensity.shape), 0.0, 1.0)
    # Weak returns (dark, far, grazing) drop out more often; a small base rate everywhere.
    weak = np.clip(1.0 - intensity / 0.08, 0.0, 1.0) * np.clip(noisy / max_range, 0, 1)
    # Per-laser dropout: a few lasers of a real head are weak, most often the lowest ones.
    laser_rate = rng.uniform(0.0, 0.03, len(sensor.elevations))
    laser_rate += np.where(sensor.elevations < np.radians(-21.0),
                           rng.uniform(0.1, 0.5, len(sensor.elevations)), 0.0)
    keep = rng.random(depth.shape) >= (laser_rate[rows] + 0.3 * weak)
    keep &= labels > 0
    dropout = np.array([p.dropout for p in layout.primitives])
    keep &= (owner < 0) | (rng.random(depth.shape) >= dropout[np.maximum(owner, 0)])
    local = sensor.to_sensor(points[keep])
    labels, names = compact_labels(labels[keep], layout.table.class_names)
    return SynthScene(
        name=name or f"lidar_{seed:06d}", kind="lidar", xyz=local.astype(np.float32),
        colors=None, intensity=intensity[keep].astype(np.float32), labels=labels,
        class_names=names, sensor_origins=np.zeros((1, 3), dtype=np.float32),
        bounds=np.array([[-max_range, -max_range, -sensor_height - 1.0],
                         [max_range, max_range, 30.0]], dtype=np.float32))


def _ground_depth(grade: Grade, origin: np.ndarray, directions: np.ndarray,
                  max_range: float) -> np.ndarray:
    """(B, A) distance along each ray to the graded ground z = g(x) (inf = no hit in range).

    Flat ground is a plane hit. Otherwise each ray is sampled at log-spaced distances, the
    first sample below the ground brackets the hit, then bisection and a secant step refine
    it to millimetres.
    """
    dx, dz = directions[..., 0], directions[..., 2]
    if grade.flat:
        return np.where(dz < -1e-6, origin[2] / np.maximum(-dz, 1e-6), np.inf)
    samples = np.geomspace(0.3, max_range, 16)  # the grade is smooth: coarse brackets do

    def above(t: np.ndarray) -> np.ndarray:  # height of the ray point over the ground
        return origin[2] + t * dz[..., None] - grade.height(origin[0] + t * dx[..., None])

    below = above(samples) <= 0.0
    hit = below.any(axis=-1)
    first = below.argmax(axis=-1)
    low = np.where(first > 0, samples[np.maximum(first - 1, 0)], 0.0)[..., None]
    high = samples[first][..., None]
    for _ in range(6):
        middle = (low + high) / 2
        under = above(middle) <= 0.0
        high = np.where(under, middle, high)
        low = np.where(under, low, middle)
    # The bracket is now < 1 % of the range: one secant step lands within millimetres.
    f_low, f_high = above(low), above(high)
    t = low - f_low * (high - low) / np.minimum(f_high - f_low, -1e-9)
    return np.where(hit, np.clip(t, low, high)[..., 0], np.inf)


def _mixed_pixels(rng: np.random.Generator, grid_depth: np.ndarray, rows: np.ndarray,
                  cols: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Mixed pixels: a beam that straddles an object edge returns a range between the near
    and the far surface, leaving stray points around silhouettes (real scans show them).

    Args:
        grid_depth: (B, A) first-hit distance per beam and azimuth step (inf = none).
        rows, cols: (M,) grid cell of each return.
        depth: (M,) noisy ranges of the returns, metres.

    Returns:
        (M,) ranges with a fraction of edge returns moved between the two surfaces.
    """
    neighbour = grid_depth[rows, (cols + 1) % grid_depth.shape[1]]
    previous = grid_depth[rows, cols - 1]
    other = np.where(np.abs(neighbour - depth) > np.abs(previous - depth), neighbour, previous)
    edge = np.isfinite(other) & (np.abs(other - depth) > 0.5) & (rng.random(depth.shape) < 0.25)
    gap = other[edge] - depth[edge]
    # Move at most half-way (and at most 0.5 m) so every point stays nearer to the surface
    # whose label it carries: short tails, coherent labels.
    shift = rng.uniform(0.05, 1.0, gap.shape) * np.minimum(np.abs(gap) / 2, 0.5)
    moved = depth.copy()
    moved[edge] = depth[edge] + np.sign(gap) * shift
    return moved


def _ego_vehicle() -> list[Part]:
    """Body and cabin of the car carrying the sensor (sensor origin above the roof centre)."""
    return [Part(BOX, (-0.1, 0.0, 0.62), (2.0, 0.9, 0.33), street.GREY),
            Part(BOX, (-0.4, 0.0, 1.1), (0.9, 0.78, 0.15), street.GREY)]


def _ids(layout: StreetLayout, class_name: str) -> list[int]:
    return [i for i, n in layout.table.class_names.items() if n == class_name]


def _surface_attributes(layout: StreetLayout, owner: np.ndarray,
                        points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance ids (M,), reflectivities (M,) and normals (M, 3) of hits; ``owner`` -1 means
    the ground, labelled by the first ground region containing the point."""
    labels = np.zeros(len(owner), dtype=np.int64)
    reflect = np.zeros(len(owner))
    normals = np.tile([0.0, 0.0, 1.0], (len(owner), 1))
    solid = owner >= 0
    instance = np.array([p.instance for p in layout.primitives], dtype=np.int64)
    refl = np.array([p.reflectivity for p in layout.primitives])
    labels[solid] = instance[owner[solid]]
    # Same material, different object: paint, dirt and wear change remission.
    count = len(layout.table.class_names) + 1
    by_instance = np.where(layout.rng.random(count) < 0.2, layout.rng.uniform(0.2, 0.6, count),
                           layout.rng.uniform(0.75, 1.25, count))  # some are dark (black paint)
    reflect[solid] = refl[owner[solid]] * by_instance[labels[solid]]
    normals[solid] = hit_normals(layout.primitives, owner[solid], points[solid])
    ground = np.flatnonzero(~solid)
    if not layout.grade.flat:
        rise = layout.grade.gradient(points[ground, 0])
        normals[ground] = np.stack([-rise, np.zeros_like(rise), np.ones_like(rise)], axis=1)
        normals[ground] /= np.linalg.norm(normals[ground], axis=1, keepdims=True)
    x, y = points[ground, 0], points[ground, 1]
    unset = np.ones(len(ground), dtype=bool)
    unlit = np.ones(len(ground), dtype=bool)
    for region in layout.regions:
        inside = (x >= region.x0) & (x <= region.x1) & (y >= region.y0) & (y <= region.y1)
        reflect[ground[inside & unlit]] = region.reflectivity
        unlit &= ~inside
        if region.marking:
            # A marking brightens the road but keeps the road's label below it.
            continue
        labels[ground[inside & unset]] = region.instance
        unset &= ~inside
    reflect[ground[unlit]] = 0.3
    labels[ground[unset]] = _ids(layout, "terrain")[0]
    return labels, reflect, normals


def _terrain_height(rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    """(M,) height offsets of natural ground: gentle undulation plus grass roughness."""
    phase = rng.uniform(0, 2 * np.pi, 4)
    freq = rng.uniform(0.05, 0.25, 4)
    amp = rng.uniform(0.0, 0.4)
    x, y = points[:, 0], points[:, 1]
    wave = np.sin(freq[0] * x + phase[0]) * np.sin(freq[1] * y + phase[1])
    wave += 0.5 * np.sin(freq[2] * x + freq[3] * y + phase[2])
    return amp * (wave + 0.5) + np.abs(rng.normal(0.0, 0.03, len(points)))
