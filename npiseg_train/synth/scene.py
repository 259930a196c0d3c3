"""In-memory synthetic scene type, scene-building primitives and shared helpers.

Conventions everywhere in ``npiseg_train.synth``: metres, z up, right-handed frames; RGB
floats in [0, 1]; instance ids start at 1 and every generated point carries one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INDOOR_CLASSES: tuple[str, ...] = (
    "floor", "wall", "ceiling", "door", "window", "picture", "whiteboard", "radiator",
    "cabinet", "bed", "pillow", "chair", "sofa", "table", "desk", "bookshelf", "lamp",
    "monitor", "keyboard", "box", "trash_can", "plant", "cup", "bottle", "book", "bag", "rug",
    "counter", "sink", "refrigerator", "microwave", "toilet", "bathtub", "mirror", "tv",
    "curtain", "shelf",
)
"""Semantic classes an indoor room can contain (names follow ScanNet where one exists)."""

LIDAR_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "parking", "terrain", "building", "fence", "vegetation", "tree",
    "pole", "traffic_sign", "car", "van", "truck", "pedestrian", "cyclist", "trash_can",
    "bench",
)
"""Semantic classes an outdoor LiDAR scan can contain (names follow SemanticKITTI)."""

STUFF_CLASSES: frozenset[str] = frozenset(
    {"floor", "wall", "ceiling", "road", "sidewalk", "parking", "terrain", "building",
     "fence", "vegetation"}
)
"""Classes that are surfaces or regions rather than countable objects; they still get one
instance id per region (each wall, each building, ...) so any of them can be a target."""

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
"""Primitive kinds. All are unit shapes (cube [-1, 1]^3, cylinder x²+y² ≤ 1 with |z| ≤ 1,
unit sphere) mapped to the world by ``center + rotation @ (half_size * local)``."""


@dataclass(frozen=True)
class SynthScene:
    """One generated scene.

    Attributes:
        name: scene name, unique within a dataset (e.g. ``"lidar_000007"``).
        kind: ``"indoor"`` or ``"lidar"``.
        xyz: (N, 3) float32 point coordinates, metres, z up (LiDAR: sensor frame).
        colors: (N, 3) float32 RGB in [0, 1], or None (LiDAR).
        intensity: (N,) float32 return intensity in [0, 1], or None (indoor).
        labels: (N,) int64 instance id of every point, >= 1.
        class_names: instance id -> semantic class name, for every id in ``labels``.
        sensor_origins: (S, 3) float32 sensor positions in the frame of ``xyz`` (one per
            camera; the LiDAR origin is (0, 0, 0)).
        bounds: (2, 3) float32 [min, max] of the scene's nominal extent (indoor: the room's
            interior; LiDAR: the generated street around the sensor), metres.
    """

    name: str
    kind: str
    xyz: np.ndarray
    colors: np.ndarray | None
    intensity: np.ndarray | None
    labels: np.ndarray
    class_names: dict[int, str]
    sensor_origins: np.ndarray
    bounds: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    def object_ids(self) -> np.ndarray:
        """Sorted (K,) int64 ids of the instances that received at least one point."""
        return np.unique(self.labels)


@dataclass
class Primitive:
    """One analytic solid that rays are cast against.

    Attributes:
        kind: ``BOX``, ``CYLINDER`` (axis = local z) or ``ELLIPSOID``.
        center: (3,) float64 world position of the shape's centre, metres.
        rotation: (3, 3) float64; columns are the local x, y, z axes in world coordinates.
        half_size: (3,) float64 half extents along the local axes (cylinder: radii x, y and
            half height), metres.
        instance: instance id the surface belongs to.
        color: (3,) float64 base RGB in [0, 1] (indoor shading starts from it).
        reflectivity: LiDAR surface reflectivity in [0, 1].
        penetration: mean depth (metres) a LiDAR ray travels into the volume before it
            returns — foliage; 0 for solid surfaces.
        transmit: probability that a ray passes through this primitive (glass, wire fences).
        dropout: probability that a return from this surface is lost (specular or absorbing
            surfaces such as window panes); the surface still occludes what is behind it.
    """

    kind: int
    center: np.ndarray
    rotation: np.ndarray
    half_size: np.ndarray
    instance: int
    color: np.ndarray = field(default_factory=lambda: np.full(3, 0.5))
    reflectivity: float = 0.3
    penetration: float = 0.0
    transmit: float = 0.0
    dropout: float = 0.0

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounds (min (3,), max (3,)) that contain the primitive."""
        extent = np.abs(self.rotation) @ self.half_size
        return self.center - extent, self.center + extent


def rotation_zyx(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(3, 3) rotation R = Rz(yaw) @ Ry(pitch) @ Rx(roll), radians."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


@dataclass
class Part:
    """A primitive described in an object's local frame (origin on the floor at the
    footprint centre, x = width, y = depth / forward, z up) before placement."""

    kind: int
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    color: np.ndarray
    rotation: np.ndarray | None = None
    reflectivity: float = 0.3
    penetration: float = 0.0
    transmit: float = 0.0
    dropout: float = 0.0


def place_parts(parts: list[Part], instance: int, position: np.ndarray,
                yaw: float) -> list[Primitive]:
    """Turn local ``parts`` into world primitives of one instance.

    Args:
        parts: parts in the object's local frame.
        instance: instance id given to every primitive.
        position: (3,) world position of the local origin, metres.
        yaw: rotation of the object about z, radians.
    """
    frame = rotation_zyx(yaw)
    placed = []
    for part in parts:
        local_rot = np.eye(3) if part.rotation is None else part.rotation
        placed.append(Primitive(
            kind=part.kind,
            center=np.asarray(position, dtype=np.float64) + frame @ np.asarray(part.center),
            rotation=frame @ local_rot,
            half_size=np.asarray(part.half_size, dtype=np.float64),
            instance=instance,
            color=np.asarray(part.color, dtype=np.float64),
            reflectivity=part.reflectivity,
            penetration=part.penetration,
            transmit=part.transmit,
            dropout=part.dropout,
        ))
    return placed


class InstanceTable:
    """Hands out instance ids (from 1) and remembers each id's class name."""

    def __init__(self) -> None:
        self.class_names: dict[int, str] = {}

    def new(self, class_name: str) -> int:
        instance = len(self.class_names) + 1
        self.class_names[instance] = class_name
        return instance


def jitter_color(rng: np.random.Generator, base: tuple[float, float, float] | np.ndarray,
                 spread: float = 0.06) -> np.ndarray:
    """(3,) float64 RGB near ``base``: a shared brightness change plus a small per-channel
    shift, clipped to [0, 1]; makes two 'white' walls or 'oak' tables differ slightly."""
    base = np.asarray(base, dtype=np.float64)
    gain = 1.0 + rng.normal(0.0, spread * 2.0)
    return np.clip(base * gain + rng.normal(0.0, spread, 3), 0.0, 1.0)


def compact_labels(labels: np.ndarray,
                   class_names: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """Renumber instance ids to 1..K in order of first id so ids without points vanish.

    Args:
        labels: (N,) integer instance ids (all >= 1).
        class_names: id -> class name for at least every id in ``labels``.

    Returns:
        (N,) int64 labels in 1..K and the matching id -> class name dict.
    """
    present, inverse = np.unique(labels, return_inverse=True)
    names = {int(i + 1): class_names[int(old)] for i, old in enumerate(present)}
    return (inverse + 1).astype(np.int64), names


def nearby_object_samples(scene: SynthScene, num_samples: int, rng: np.random.Generator,
                          max_objects: int = 10, min_points: int = 50) -> list[list[int]]:
    """Pick multi-object samples of 1..``max_objects`` mutually nearby instances.

    Each sample starts at a random instance and adds the instances whose centroids are
    nearest to it, mirroring how the benchmark lists choose "1..10 nearby objects".

    Args:
        scene: the scene whose instances are sampled.
        num_samples: samples wanted (fewer come back if the scene has too few objects).
        rng: random generator (the caller owns the seed).
        max_objects: largest sample size.
        min_points: instances with fewer points are never chosen (too small to click).

    Returns:
        a list of samples, each a list of distinct instance ids (as in ``scene.labels``).
    """
    ids, counts = np.unique(scene.labels, return_counts=True)
    ids = ids[counts >= min_points]
    if ids.size == 0:
        return []
    centroids = np.stack([scene.xyz[scene.labels == i].mean(axis=0) for i in ids])
    samples: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(num_samples * 4):
        if len(samples) >= num_samples:
            break
        seed_index = int(rng.integers(ids.size))
        count = int(rng.integers(1, min(max_objects, ids.size) + 1))
        distance = np.linalg.norm(centroids - centroids[seed_index], axis=1)
        chosen = tuple(sorted(int(ids[j]) for j in np.argsort(distance, kind="stable")[:count]))
        if chosen not in seen:
            seen.add(chosen)
            samples.append(list(chosen))
    return samples
