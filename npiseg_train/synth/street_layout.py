"""Street layout for the LiDAR generator: road, markings, crossing, parking strips, raised
sidewalks, building rows / fenced yards / green segments, vehicles, people, poles, plants.

World frame: main road along x, z up; the ground follows a road grade z = g(x) (a slope and
one long wave: crests and sags). Vehicles, fences, hedges and sidewalk slabs tilt with the
grade; buildings, trees, poles and people stay upright.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npiseg_train.synth import street
from npiseg_train.synth.scene import (BOX, InstanceTable, Part, Primitive, place_parts,
                                      rotation_zyx)


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


@dataclass
class Grade:
    """Road profile z = g(x) = slope·x + amplitude·(sin(2πx/wavelength + phase) − sin(phase)),
    metres; g(0) = 0 under the sensor."""

    slope: float = 0.0
    amplitude: float = 0.0
    wavelength: float = 200.0
    phase: float = 0.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Grade:
        """Flat (40 %) or a gentle slope with a long crest/sag (60 %)."""
        if rng.random() < 0.4:
            return cls()
        return cls(float(np.clip(rng.normal(0.0, 0.03), -0.08, 0.08)), rng.uniform(0.0, 0.8),
                   rng.uniform(120.0, 300.0), rng.uniform(0.0, 2 * np.pi))

    @property
    def flat(self) -> bool:
        return self.slope == 0.0 and self.amplitude == 0.0

    def height(self, x: np.ndarray | float) -> np.ndarray:
        k = 2 * np.pi / self.wavelength
        return self.slope * x + self.amplitude * (np.sin(k * x + self.phase) - np.sin(self.phase))

    def gradient(self, x: np.ndarray | float) -> np.ndarray:
        k = 2 * np.pi / self.wavelength
        return self.slope + self.amplitude * k * np.cos(k * x + self.phase)

    def tilt(self, x: float) -> np.ndarray:
        """(3, 3) rotation that lays a level object onto the road surface at ``x``."""
        return rotation_zyx(pitch=-float(np.arctan(self.gradient(x))))


class StreetLayout:
    """Collects primitives, ground regions and occupied footprints while a scene is built."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.grade = Grade.draw(rng)
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

    def put(self, parts: list[Part], instance: int, x: float, y: float, yaw: float,
            z: float = 0.0, upright: bool = False) -> None:
        """Place parts at (x, y) on the graded ground (+ ``z``); unless ``upright`` they tilt
        with the road (vehicles, slabs, fences), else they stand plumb (buildings, trees)."""
        origin = np.array([x, y, z + float(self.grade.height(x))])
        placed = place_parts(parts, instance, origin, yaw)
        if not upright and not self.grade.flat:
            tilt = self.grade.tilt(x)
            for primitive in placed:
                primitive.center = origin + tilt @ (primitive.center - origin)
                primitive.rotation = tilt @ primitive.rotation
        self.primitives += placed

    def add(self, parts: list[Part], class_name: str, x: float, y: float, yaw: float,
            half: np.ndarray | None = None, z: float = 0.0, check: bool = True,
            upright: bool = False) -> bool:
        """Place a new instance; with ``half`` (footprint half size) refuse overlapping
        spots."""
        if half is not None:
            c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
            hx, hy = c * half[0] + s * half[1], s * half[0] + c * half[1]
            box = np.array([x - hx, x + hx, y - hy, y + hy])
            if check and not self.free(box):
                return False
            self.footprints.append(box)
        self.put(parts, self.table.new(class_name), x, y, yaw, z, upright)
        return True


def _vehicle(rng: np.random.Generator) -> tuple[list[Part], np.ndarray, str]:
    draw = rng.random()
    if draw < 0.75:
        return (*street.car(rng), "car")
    if draw < 0.92:
        return (*street.van(rng), "van")
    return (*street.truck(rng), "truck")


def _road(layout: StreetLayout, rng: np.random.Generator) -> dict:
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


def _side(layout: StreetLayout, rng: np.random.Generator, geometry: dict, side: int) -> None:
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
            # Short slabs, each laid on the grade, so a long sidewalk follows crests and sags.
            cuts = np.linspace(x0, x1, max(2, int((x1 - x0) / 12.0) + 1))
            for a, b in zip(cuts[:-1], cuts[1:]):
                part = Part(BOX, (0.0, 0.0, curb / 2 - 0.1), ((b - a) / 2 + 0.02, walk / 2,
                                                               curb / 2 + 0.1),
                            street.GREY, reflectivity=walk_refl)
                layout.put([part], walk_id, (a + b) / 2, edge + side * walk / 2, 0.0)
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
                       np.array([0.4, 0.4]), z=ground_z, upright=True)
    for x in rng.uniform(-EXTENT, EXTENT, int(rng.integers(2, 11))):
        parts, name = street.pole(rng)
        layout.add(parts, name, x, edge + side * rng.uniform(0.3, max(walk, 0.6)),
                   rng.uniform(0, 2 * np.pi) if name == "pole" else side * np.pi / 2,
                   np.array([0.2, 0.2]), z=ground_z, upright=True)
    for x in rng.uniform(-40, 40, int(rng.integers(0, 5))) if has_walk else []:
        layout.add(street.pedestrian(rng), "pedestrian", x,
                   walk_mid + rng.uniform(-walk / 3, walk / 3), rng.uniform(0, 2 * np.pi),
                   np.array([0.3, 0.3]), z=ground_z, upright=True)
    for x in rng.uniform(-40, 40, int(rng.integers(0, 3))) if has_walk else []:
        parts, name = street.street_furniture(rng)
        layout.add(parts, name, x, edge + side * (walk - 0.5), side * np.pi / 2,
                   np.array([0.9, 0.4]), z=ground_z)
    _beyond(layout, rng, edge + side * walk, side, geometry["crossing"])


def _beyond(layout: StreetLayout, rng: np.random.Generator, line: float, side: int,
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
                # Plumb walls on a graded street: sink the block so its uphill end does
                # not float.
                sink = abs(float(layout.grade.gradient(bx + frontage / 2))) * frontage / 2
                layout.add(parts, "building", bx + frontage / 2, line + side * setback, yaw,
                           z=-sink - 0.05, upright=True)
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
                layout.add(parts, "tree", px, depth_y, 0.0, check=False, upright=True)
            else:
                layout.add(street.bush(rng), "vegetation", px, depth_y, 0.0, check=False,
                           upright=True)
        x += length + rng.uniform(0.0, 4.0)


def _traffic(layout: StreetLayout, rng: np.random.Generator, geometry: dict) -> None:
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


def build_street(rng: np.random.Generator) -> StreetLayout:
    """Lay out a whole street: road, both sides, traffic."""
    layout = StreetLayout(rng)
    geometry = _road(layout, rng)
    for side in (-1, 1):
        _side(layout, rng, geometry, side)
    _traffic(layout, rng, geometry)
    return layout
