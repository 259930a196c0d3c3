"""Outdoor street scenes seen by a spinning HDL-64-like LiDAR.

Layout (world frame, flat ground at z = 0, main road along x): a road with lane markings,
optionally a crossing road and parking strips; raised sidewalks (their edges are the curbs);
then per side a sequence of segments — building rows, fenced yards, or open terrain with
vegetation — plus parked and moving vehicles, people, cyclists, trees, poles and signs.
The sensor sits on the road at ~1.73 m with a small random tilt; points come back in the
sensor frame, like a KITTI scan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npiseg_train.synth import street
from npiseg_train.synth.scene import (BOX, InstanceTable, Part, Primitive, SynthScene,
                                      compact_labels, place_parts, rotation_zyx)
from npiseg_train.synth.sensors import HDL64_ELEVATIONS_DEG, SpinningLidar
from npiseg_train.synth.shapes import cast_grid, hit_normals

EXTENT = 90.0
"""Half length of the generated street along x, metres (beyond the 80 m sensor range)."""


@dataclass
class GroundRegion:
    """Axis-aligned ground rectangle [x0, x1] × [y0, y1] with a label and reflectivity; the
    first region (in list order) containing a ground hit decides its label."""

    x0: float
    x1: float
    y0: float
    y1: float
    instance: int
    reflectivity: float
    marking: bool = False


class _Layout:
    """Collects primitives, ground regions and occupied footprints while a scene is built."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.table = InstanceTable()
        self.primitives: list[Primitive] = []
        self.regions: list[GroundRegion] = []
        self.footprints: list[np.ndarray] = [np.array([-3.0, 3.0, -1.3, 1.3])]  # ego car

    def free(self, box: np.ndarray, margin: float = 0.3) -> bool:
        """Whether the xy box [x0, x1, y0, y1] keeps ``margin`` from every used footprint."""
        for other in self.footprints:
            if (box[0] < other[1] + margin and other[0] < box[1] + margin
                    and box[2] < other[3] + margin and other[2] < box[3] + margin):
                return False
        return True

    def add(self, parts: list[Part], class_name: str, x: float, y: float, yaw: float,
            half: np.ndarray | None = None, z: float = 0.0, check: bool = True) -> bool:
        """Place an object; with ``half`` (footprint half size) refuse overlapping spots."""
        if half is not None:
            c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
            hx, hy = c * half[0] + s * half[1], s * half[0] + c * half[1]
            box = np.array([x - hx, x + hx, y - hy, y + hy])
            if check and not self.free(box):
                return False
            self.footprints.append(box)
        instance = self.table.new(class_name)
        self.primitives += place_parts(parts, instance, np.array([x, y, z]), yaw)
        return True


def _vehicle(rng: np.random.Generator) -> tuple[list[Part], np.ndarray, str]:
    draw = rng.random()
    if draw < 0.75:
        return (*street.car(rng), "car")
    if draw < 0.92:
        return (*street.van(rng), "van")
    return (*street.truck(rng), "truck")


def _road(layout: _Layout, rng: np.random.Generator) -> dict:
    """Road, markings, optional crossing and parking strips; returns the street geometry."""
    lanes = int(rng.integers(2, 5))
    width = lanes * rng.uniform(2.8, 3.5)
    right = rng.uniform(1.4, width - 1.4)
    geometry = {"y_right": -right, "y_left": width - right, "crossing": None, "parking": {}}
    road = layout.table.new("road")
    road_refl = rng.uniform(0.17, 0.32)
    marking_refl = rng.uniform(0.45, 0.75)
    for k in range(1, lanes):  # dashed lane separators
        y = -right + k * width / lanes
        for x in np.arange(-EXTENT, EXTENT, 9.0) + rng.uniform(0, 9):
            layout.regions.append(GroundRegion(x, x + 3.0, y - 0.07, y + 0.07, road, marking_refl,
                                               True))
    for y in (-right + 0.3, width - right - 0.3):  # solid edge lines
        if rng.random() < 0.6:
            layout.regions.append(GroundRegion(-EXTENT, EXTENT, y - 0.07, y + 0.07, road,
                                               marking_refl, True))
    layout.regions.append(GroundRegion(-EXTENT, EXTENT, -right, width - right, road, road_refl))
    if rng.random() < 0.35:
        half = rng.uniform(3.0, 7.0)
        center = rng.choice([-1, 1]) * rng.uniform(half + 4.0, 40.0)  # clear of the ego car
        geometry["crossing"] = (center - half, center + half)
        layout.regions.append(GroundRegion(center - half, center + half, -EXTENT, EXTENT, road,
                                           road_refl))
        # Keep parked cars, roadside trees, poles and people off the crossing road.
        layout.footprints.append(np.array([center - half, center + half, -EXTENT, EXTENT]))
    for side in (-1, 1):
        if rng.random() < 0.35:
            strip = rng.uniform(2.0, 2.6)
            edge = geometry["y_left"] if side > 0 else geometry["y_right"]
            y0, y1 = sorted((edge, edge + side * strip))
            parking = layout.table.new("parking")
            layout.regions.append(GroundRegion(-EXTENT, EXTENT, y0, y1, parking,
                                               rng.uniform(0.2, 0.35)))
            geometry["parking"][side] = strip
    return geometry


def _x_spans(geometry: dict) -> list[tuple[float, float]]:
    """Stretches of the street along x not cut by the crossing road."""
    if geometry["crossing"] is None:
        return [(-EXTENT, EXTENT)]
    a, b = geometry["crossing"]
    return [(-EXTENT, a), (b, EXTENT)]


def _side(layout: _Layout, rng: np.random.Generator, geometry: dict, side: int) -> None:
    """Sidewalk, roadside objects and the segments beyond it on one side of the road."""
    edge = (geometry["y_left"] if side > 0 else geometry["y_right"])
    edge += side * geometry["parking"].get(side, 0.0)
    has_walk = rng.random() < 0.85
    walk = rng.uniform(1.5, 4.5) if has_walk else 0.0
    curb = rng.uniform(0.08, 0.2)
    spans = _x_spans(geometry)
    if has_walk:
        walk_id, walk_refl = layout.table.new("sidewalk"), rng.uniform(0.27, 0.45)
        for x0, x1 in spans:
            part = Part(BOX, ((x0 + x1) / 2, edge + side * walk / 2, curb / 2 - 0.05),
                        ((x1 - x0) / 2, walk / 2, curb / 2 + 0.05), street.GREY,
                        reflectivity=walk_refl)
            layout.primitives += place_parts([part], walk_id, np.zeros(3), 0.0)
    terrain = layout.table.new("terrain")
    layout.regions.append(GroundRegion(-EXTENT, EXTENT, *sorted((edge, side * EXTENT)), terrain,
                                       rng.uniform(0.3, 0.5)))
    ground_z = curb if has_walk else 0.0
    walk_mid = edge + side * walk * 0.5

    # Parked vehicles along the curb (in the parking strip or on the road edge), in a few
    # stretches with gaps rather than one endless row.
    if rng.random() < 0.55:
        lane_y = edge - side * rng.uniform(1.0, 1.3)
        fill = rng.uniform(0.3, 0.9)
        x = -EXTENT + rng.uniform(0, 10)
        while x < EXTENT:
            parts, half, name = _vehicle(rng)
            x += half[0] + rng.uniform(0.4, 1.5)
            if rng.random() < fill:
                yaw = (0.0 if rng.random() < 0.8 else np.pi) + rng.normal(0, 0.03)
                layout.add(parts, name, x, lane_y, yaw, half)
            x += half[0] + (rng.uniform(0.5, 2.0) if rng.random() < 0.7 else rng.uniform(8, 30))
    # Roadside trees and poles on the sidewalk.
    if has_walk and rng.random() < 0.75:
        for x in np.arange(-EXTENT, EXTENT, rng.uniform(5.0, 13.0)) + rng.uniform(0, 5):
            parts, crown = street.tree(rng)
            layout.add(parts, "tree", x, edge + side * min(0.8, walk / 2), 0.0,
                       np.array([0.4, 0.4]), z=ground_z)
    for x in rng.uniform(-EXTENT, EXTENT, int(rng.integers(2, 11))):
        parts, name = street.pole(rng)
        layout.add(parts, name, x, edge + side * rng.uniform(0.3, max(walk, 0.6)),
                   rng.uniform(0, 2 * np.pi) if name == "pole" else side * np.pi / 2,
                   np.array([0.2, 0.2]), z=ground_z)
    for x in rng.uniform(-40, 40, int(rng.integers(0, 5))) if has_walk else []:
        layout.add(street.pedestrian(rng), "pedestrian", x,
                   walk_mid + rng.uniform(-walk / 3, walk / 3), rng.uniform(0, 2 * np.pi),
                   np.array([0.3, 0.3]), z=ground_z)
    for x in rng.uniform(-40, 40, int(rng.integers(0, 3))) if has_walk else []:
        parts, name = street.street_furniture(rng)
        layout.add(parts, name, x, edge + side * (walk - 0.5), side * np.pi / 2,
                   np.array([0.9, 0.4]), z=ground_z)
    _beyond(layout, rng, edge + side * walk, side, geometry["crossing"])


def _beyond(layout: _Layout, rng: np.random.Generator, line: float, side: int,
            crossing: tuple[float, float] | None) -> None:
    """Segments behind the sidewalk: building rows, fenced yards or open vegetation (none
    of them across the crossing road)."""
    x = -EXTENT
    while x < EXTENT:
        length = rng.uniform(12.0, 45.0)
        if crossing is not None and x < crossing[1] + 1.0 and x + length > crossing[0] - 1.0:
            if crossing[0] - 1.0 - x < 4.0:
                x = crossing[1] + 1.0
                continue
            length = crossing[0] - 1.0 - x
        kind = rng.choice(["buildings", "fence", "green"], p=[0.55, 0.2, 0.25])
        setback = rng.uniform(0.0, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 8.0)
        # Depth bands (distance behind the sidewalk line) where vegetation may grow.
        bands = [(0.6, setback - 0.6)] if setback > 1.8 else []
        if kind == "buildings":
            bx, deepest = x, 0.0
            while x + length - bx >= 4.0:
                frontage = min(rng.uniform(6.0, 28.0), x + length - bx)
                depth = rng.uniform(7.0, 15.0)
                parts, _ = street.building(rng, frontage, depth)
                # Local +x (the building's depth) points away from the road.
                yaw = side * np.pi / 2 + rng.normal(0, 0.03)
                layout.add(parts, "building", bx + frontage / 2, line + side * setback, yaw)
                bx += frontage + (rng.uniform(0.0, 6.0) if rng.random() < 0.6 else 0.0)
                deepest = max(deepest, depth)
            length = bx - x
            bands.append((setback + deepest + 1.0, setback + deepest + 12.0))  # backyards
        else:
            if kind == "fence":
                layout.add(street.fence(rng, length), "fence", x + length / 2,
                           line + side * (setback + 0.05), np.pi / 2, check=False)
            bands.append((setback + 0.7, setback + 25.0))
        if bands and rng.random() < 0.55:
            near = bands[0][0]
            layout.add(street.bush(rng, length=rng.uniform(4.0, min(length, 25.0))),
                       "vegetation", x + length / 2, line + side * (near + 0.5),
                       rng.normal(0, 0.03), check=False)
        density = 1.0 if kind == "green" else 0.4  # plants per metre of street
        for _ in range(int(rng.poisson(density * length))):
            low, high = bands[int(rng.integers(len(bands)))]
            if high <= low:
                continue
            px, depth_y = rng.uniform(x, x + length), line + side * rng.uniform(low, high)
            if rng.random() < 0.55:
                parts, _ = street.tree(rng)
                layout.add(parts, "tree", px, depth_y, 0.0, check=False)
            else:
                layout.add(street.bush(rng), "vegetation", px, depth_y, 0.0, check=False)
        x += length + rng.uniform(0.0, 4.0)


def _traffic(layout: _Layout, rng: np.random.Generator, geometry: dict) -> None:
    """Moving vehicles in the lanes, cyclists on the road edge, traffic on the crossing."""
    y0, y1 = geometry["y_right"], geometry["y_left"]
    for _ in range(int(rng.integers(0, 5))):
        parts, half, name = _vehicle(rng)
        y = rng.uniform(y0 + half[1] + 0.3, y1 - half[1] - 0.3)
        yaw = (0.0 if y < (y0 + y1) / 2 else np.pi) + rng.normal(0, 0.04)
        layout.add(parts, name, rng.uniform(-60, 60), y, yaw, half)
    for _ in range(int(rng.integers(0, 3))):
        y = rng.choice([y0 + 0.8, y1 - 0.8])
        layout.add(street.cyclist(rng), "cyclist", rng.uniform(-40, 40), y,
                   (0.0 if y < 0 else np.pi) + rng.normal(0, 0.1), np.array([0.9, 0.4]))
    if geometry["crossing"] is not None:
        a, b = geometry["crossing"]
        for _ in range(int(rng.integers(0, 5))):
            parts, half, name = _vehicle(rng)
            # Unchecked: the crossing is itself a reserved footprint.
            layout.add(parts, name, rng.uniform(a + half[1] + 0.3, b - half[1] - 0.3),
                       rng.uniform(-50, 50), np.pi / 2 + rng.choice([0, np.pi]), half,
                       check=False)


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
    layout = _Layout(rng)
    geometry = _road(layout, rng)
    for side in (-1, 1):
        _side(layout, rng, geometry, side)
    _traffic(layout, rng, geometry)

    heading = rng.normal(0, 0.04) + (np.pi if rng.random() < 0.5 else 0.0)
    # Road slope and body roll relative to the sensor, as a small tilt of the sensor.
    tilt = rotation_zyx(heading, rng.normal(0, 0.02), rng.normal(0, 0.015))
    # Road camber and slope put the road under the sensor a little lower than nominal.
    position = np.array([0.0, 0.0, sensor_height + rng.uniform(-0.02, 0.2)])
    # The carrying vehicle hides the steepest beams to the front and back; its hits are
    # dropped (instance 0), as a real driver filters them.
    layout.primitives += place_parts(_ego_vehicle(), 0, np.zeros(3), heading)
    sensor = SpinningLidar(position, tilt, elevations_deg, azimuth_steps, 0.02, rng)
    down = sensor.directions[..., 2]
    ground = np.where(down < -1e-6, position[2] / np.maximum(-down, 1e-6), np.inf)
    hits = cast_grid(position, sensor.directions_cm, layout.primitives, sensor.window, rng,
                     max_range, depth=ground)
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
    gain = rng.uniform(0.95, 1.35)
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


def _ids(layout: _Layout, class_name: str) -> list[int]:
    return [i for i, n in layout.table.class_names.items() if n == class_name]


def _surface_attributes(layout: _Layout, owner: np.ndarray,
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
    by_instance = layout.rng.uniform(0.7, 1.3, len(layout.table.class_names) + 1)
    reflect[solid] = refl[owner[solid]] * by_instance[labels[solid]]
    normals[solid] = hit_normals(layout.primitives, owner[solid], points[solid])
    ground = np.flatnonzero(~solid)
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
