"""What the browser tool writes for a labelled frame: per-point labels with classes, and boxes.

Per-point files (encodings in :mod:`npiseg_ros.io.label`):

- ``export/<frame>.label``: SemanticKITTI words, the object's class id in the lower 16 bits,
  its object (track) id in the upper 16 bits (0 for stuff classes and the background);
- ``export/<frame>.ply`` / ``.npz``: x y z, object id, uncertainty (the node's writers;
  npiseg-eval's ``read_cloud`` reads the object ids back);
- with a nuScenes ontology: ``export/lidarseg/<frame>_lidarseg.bin`` (uint8 class index) and
  ``export/panoptic/<frame>_panoptic.npz`` (``data``: uint16 class * 1000 + instance, the
  devkit's layout);

and boxes, one oriented 3-D box fitted to each object's points (:func:`fit_box`):
``export/label_2/<frame>.txt`` (KITTI label_2 lines) and ``export/boxes/<frame>.json``.
Without a camera calibration the label_2 lines are in the LiDAR frame (see
:func:`kitti_lines`); with ``--calib`` (a KITTI ``calib.txt``) they are in KITTI's rectified
camera frame with 2-D boxes projected by ``P2``.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npiseg_ros.annotate.ontology import Ontology
from npiseg_ros.io.atomic import atomic_write_bytes
from npiseg_ros.io.autosave import ClickRecord, save_annotation
from npiseg_ros.io.label import (NUSCENES_MAX_INSTANCE, encode_label_words, encode_lidarseg,
                                 encode_nuscenes_panoptic)

__all__ = ["Box3D", "fit_box", "fit_boxes", "KittiCalib", "read_kitti_calib", "kitti_lines",
           "semantic_and_instance", "FrameExport", "write_frame_exports", "export_paths"]


@dataclass(frozen=True)
class Box3D:
    """An oriented box, rotated about z only.

    Attributes:
        center: (3,) float64 box centre, metres, the cloud's frame.
        size: (3,) float64 length (along the heading), width, height, metres.
        yaw: heading of the length axis about z from the x axis, radians in (-pi/2, pi/2].
        num_points: points it was fitted to.
    """

    center: np.ndarray
    size: np.ndarray
    yaw: float
    num_points: int

    def corners(self) -> np.ndarray:
        """(8, 3) float64 corners: bottom four then top four."""
        half = self.size / 2
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        local = np.array([[sx * half[0], sy * half[1], sz * half[2]]
                          for sz in (-1, 1) for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        return local @ rotation.T + self.center

    def contains(self, xyz: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
        """(N,) bool: points inside the box (``tolerance`` metres of slack)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        offset = np.asarray(xyz, np.float64) - self.center
        local = np.column_stack([c * offset[:, 0] + s * offset[:, 1],
                                 -s * offset[:, 0] + c * offset[:, 1], offset[:, 2]])
        return (np.abs(local) <= self.size / 2 + tolerance).all(axis=1)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of (P, 2) points (monotone chain), counter-clockwise, no repeated end."""
    unique = np.unique(points, axis=0)
    if unique.shape[0] < 3:
        return unique
    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower: list = []
    for point in unique:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], point) <= 0:
            lower.pop()
        lower.append(point)
    upper: list = []
    for point in unique[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], point) <= 0:
            upper.pop()
        upper.append(point)
    return np.array(lower[:-1] + upper[:-1])


def fit_box(xyz: np.ndarray) -> Box3D:
    """The smallest box about z holding every point: the minimum-area rectangle of the
    footprint (one of the convex hull's edge directions, rotating calipers), the z extent.

    Args:
        xyz: (P, 3) float points of one object, metres (non-finite rows ignored).

    Raises:
        ValueError: no finite point.
    """
    xyz = np.asarray(xyz, np.float64)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if xyz.shape[0] == 0:
        raise ValueError("no finite point to fit a box to")
    hull = _hull(xyz[:, :2])
    angles = [0.0]
    if hull.shape[0] >= 2:
        edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
        angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)).tolist()
    best = None
    for angle in angles:  # a minimum rectangle has a side along a hull edge
        c, s = math.cos(angle), math.sin(angle)
        u = c * hull[:, 0] + s * hull[:, 1]
        v = -s * hull[:, 0] + c * hull[:, 1]
        area = (u.max() - u.min()) * (v.max() - v.min())
        if best is None or area < best[0] - 1e-12:
            best = (area, angle, u.min(), u.max(), v.min(), v.max())
    _, angle, u0, u1, v0, v1 = best
    length, width = u1 - u0, v1 - v0
    if width > length:  # the length axis is the longer side
        angle, length, width = angle + np.pi / 2, width, length
    centre_u, centre_v = (u0 + u1) / 2, (v0 + v1) / 2
    c, s = math.cos(best[1]), math.sin(best[1])
    centre_xy = (c * centre_u - s * centre_v, s * centre_u + c * centre_v)
    yaw = math.atan2(math.sin(angle), math.cos(angle))
    if yaw <= -np.pi / 2:
        yaw += np.pi
    elif yaw > np.pi / 2:
        yaw -= np.pi
    z0, z1 = float(xyz[:, 2].min()), float(xyz[:, 2].max())
    return Box3D(np.array([centre_xy[0], centre_xy[1], (z0 + z1) / 2]),
                 np.array([length, width, z1 - z0]), float(yaw), int(xyz.shape[0]))


def fit_boxes(xyz: np.ndarray, labels: np.ndarray) -> dict[int, Box3D]:
    """Object id -> box of its points, for every id >= 1 in (N,) ``labels``."""
    labels = np.asarray(labels)
    return {int(i): fit_box(xyz[labels == i]) for i in np.unique(labels[labels > 0])}


@dataclass(frozen=True)
class KittiCalib:
    """KITTI object calibration: (3, 4) ``P2``, (3, 3) ``R0_rect``, (3, 4) ``Tr_velo_to_cam``."""

    p2: np.ndarray
    r0_rect: np.ndarray
    velo_to_cam: np.ndarray

    def to_camera(self, xyz: np.ndarray) -> np.ndarray:
        """(P, 3) LiDAR points -> (P, 3) rectified camera coordinates (x right, y down, z
        forward), metres."""
        xyz = np.atleast_2d(np.asarray(xyz, np.float64))
        return (self.r0_rect @ (self.velo_to_cam[:, :3] @ xyz.T + self.velo_to_cam[:, 3:])).T


def read_kitti_calib(path: str | os.PathLike) -> KittiCalib:
    """Read a KITTI ``calib.txt`` (object: ``P2``, ``R0_rect``, ``Tr_velo_to_cam``; odometry:
    ``P2``, ``Tr`` and no rectification).

    Raises:
        ValueError: unreadable, or a matrix missing or of the wrong size (file named).
    """
    values: dict[str, np.ndarray] = {}
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"calibration {path}: cannot read it: {error}") from None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            try:
                values[key.strip()] = np.array(rest.split(), np.float64)
            except ValueError:
                raise ValueError(f"calibration {path}: {key.strip()} is not a list of "
                                 "numbers") from None
    def matrix(names, size):
        for name in names:
            if name in values:
                if values[name].size != size[0] * size[1]:
                    raise ValueError(f"calibration {path}: {name} has {values[name].size} "
                                     f"numbers, expected {size[0] * size[1]}")
                return values[name].reshape(size)
        return None
    p2 = matrix(("P2",), (3, 4))
    velo = matrix(("Tr_velo_to_cam", "Tr_velo_cam", "Tr"), (3, 4))
    if p2 is None or velo is None:
        raise ValueError(f"calibration {path}: needs P2 and Tr_velo_to_cam (or Tr)")
    r0 = matrix(("R0_rect", "R_rect"), (3, 3))
    return KittiCalib(p2, np.eye(3) if r0 is None else r0, velo)


def _wrap(angle: float) -> float:
    return math.atan2(math.sin(angle), math.cos(angle))


def kitti_lines(boxes: dict[int, Box3D], types: dict[int, str],
                calib: KittiCalib | None = None) -> list[str]:
    """KITTI ``label_2`` lines: ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry``.

    Without ``calib`` the numbers are in the LiDAR frame, not KITTI's camera frame: (x, y, z)
    is the box's bottom centre in the sensor frame (x forward, y left, z up), ``ry`` the yaw
    about z, ``alpha`` the yaw minus the bearing of the centre, the 2-D box ``0 0 0 0``. With
    ``calib``: the bottom centre in the rectified camera frame, ``ry`` about the camera's y
    axis, the 2-D box the ``P2`` projection of the corners; boxes behind the camera are left
    out (KITTI labels only what the camera sees). Truncation and occlusion are written as 0.
    """
    lines = []
    for object_id in sorted(boxes):
        box = boxes[object_id]
        length, width, height = box.size
        bottom = box.center - [0.0, 0.0, height / 2]
        heading = np.array([math.cos(box.yaw), math.sin(box.yaw), 0.0])
        if calib is None:
            location = bottom
            rotation = box.yaw
            alpha = _wrap(rotation - math.atan2(bottom[1], bottom[0]))
            bbox = (0.0, 0.0, 0.0, 0.0)
        else:
            location = calib.to_camera(bottom)[0]
            if location[2] <= 0.1:
                continue
            direction = calib.r0_rect @ calib.velo_to_cam[:, :3] @ heading
            rotation = _wrap(-math.atan2(direction[2], direction[0]))
            alpha = _wrap(rotation - math.atan2(location[0], location[2]))
            corners = calib.to_camera(box.corners())
            front = corners[corners[:, 2] > 0.1]
            pixels = (calib.p2 @ np.vstack([front.T, np.ones(front.shape[0])])).T
            pixels = pixels[:, :2] / pixels[:, 2:]
            bbox = (*pixels.min(axis=0), *pixels.max(axis=0))
        numbers = [alpha, *bbox, height, width, length, *location, rotation]
        lines.append(f"{types.get(object_id, 'Misc')} 0.00 0 "
                     + " ".join(f"{float(v):.2f}" for v in numbers))
    return lines


def semantic_and_instance(labels: np.ndarray, objects: dict[int, dict],
                          ontology: Ontology) -> tuple[np.ndarray, np.ndarray]:
    """Per-point class ids and instance ids of the tool's object labels.

    Args:
        labels: (N,) int object id per point (0 background, -1 dropped / out of range).
        objects: object id -> {"class": name or None, "attributes": {...}}; ids missing
            here have no class.
        ontology: gives each class its export id (:meth:`Ontology.export_id`).

    Returns:
        (N,) int64 class id (``ontology.unassigned`` for background, dropped points and
        objects without class), (N,) int64 instance id (the object id for thing classes, 0
        otherwise).
    """
    labels = np.asarray(labels).astype(np.int64)
    ids = np.unique(labels[labels > 0])
    size = int(ids.max(initial=0)) + 1
    class_of = np.full(size, ontology.unassigned, np.int64)
    instance_of = np.zeros(size, np.int64)
    for object_id in ids:
        record = objects.get(int(object_id)) or {}
        name = record.get("class")
        class_of[object_id] = ontology.export_id(name, record.get("attributes"))
        found = ontology.get(name)
        instance_of[object_id] = object_id if found is not None and found.thing else 0
    clipped = np.maximum(labels, 0)
    return class_of[clipped], instance_of[clipped]


@dataclass(frozen=True)
class FrameExport:
    """Everything the exports of one frame need (immutable: written off the request thread).

    Attributes:
        name: frame name (file stem).
        xyz: (N, 3) float32 coordinates, metres, sensor frame.
        labels: (N,) int32 object ids (-1 dropped).
        uncertainty: (N,) float32.
        clicks: the clicks the labels come from.
        objects: object id -> {"class", "attributes"} (copies).
    """

    name: str
    xyz: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray
    clicks: tuple[ClickRecord, ...]
    objects: dict


def export_paths(folder: Path, name: str, ontology: Ontology) -> dict[str, Path]:
    """Format -> path of every file :func:`write_frame_exports` writes for frame ``name``."""
    export = folder / "export"
    paths = {fmt: export / f"{name}.{fmt}" for fmt in ("label", "ply", "npz")}
    paths["label_2"] = export / "label_2" / f"{name}.txt"
    paths["boxes"] = export / "boxes" / f"{name}.json"
    if ontology.format == "nuscenes":
        paths["lidarseg"] = export / "lidarseg" / f"{name}_lidarseg.bin"
        paths["panoptic"] = export / "panoptic" / f"{name}_panoptic.npz"
    for path in paths.values():
        resolved = path.resolve()
        if folder.resolve() not in resolved.parents:
            raise ValueError(f"refusing to write outside the session folder: {resolved}")
    return paths


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_frame_exports(folder: Path, frame: FrameExport, ontology: Ontology,
                        calib: KittiCalib | None = None, mode: int = 0o644,
                        base: np.ndarray | None = None) -> list[Path]:
    """Write every export of ``frame`` into ``folder``/export (each file atomically).

    ``base``: (N,) int class ids (export ids) of imported stuff, -1 elsewhere: written for the
    points the tool leaves as background (instance 0).

    Returns:
        The paths written.

    Raises:
        OSError: a file cannot be written.
        ValueError: more than 999 thing objects in the frame for a nuScenes panoptic file.
    """
    paths = export_paths(folder, frame.name, ontology)
    semantic, instance = semantic_and_instance(frame.labels, frame.objects, ontology)
    if base is not None:
        keep = (np.asarray(frame.labels) == 0) & (np.asarray(base) >= 0)
        semantic = np.where(keep, base, semantic)
    written = []

    def put(key: str, data: bytes) -> None:
        atomic_write_bytes(paths[key], data, mode=mode)
        written.append(paths[key])

    put("label", encode_label_words(semantic, instance).tobytes())
    for fmt in ("ply", "npz"):
        path = save_annotation(paths[fmt], fmt, frame.xyz, frame.labels, frame.uncertainty,
                               frame.clicks)
        os.chmod(path, mode)
        written.append(path)
    if ontology.format == "nuscenes":
        put("lidarseg", encode_lidarseg(semantic).tobytes())
        panoptic_instance = instance
        if instance.max(initial=0) > NUSCENES_MAX_INSTANCE:  # per-frame numbering, as nuScenes
            ids, inverse = np.unique(instance, return_inverse=True)
            panoptic_instance = inverse + (0 if ids[0] == 0 else 1)
        put("panoptic", _npz_bytes(data=encode_nuscenes_panoptic(semantic, panoptic_instance)))
    xyz = np.asarray(frame.xyz, np.float64)
    boxes = fit_boxes(xyz, frame.labels)
    types = {}
    records = []
    for object_id, box in sorted(boxes.items()):
        record = frame.objects.get(object_id) or {}
        found = ontology.get(record.get("class"))
        types[object_id] = found.kitti if found is not None else "Misc"
        records.append({"object_id": object_id, "class": record.get("class"),
                        "class_id": ontology.export_id(record.get("class"),
                                                       record.get("attributes")),
                        "attributes": record.get("attributes") or {},
                        "center": [round(float(v), 4) for v in box.center],
                        "size_lwh": [round(float(v), 4) for v in box.size],
                        "yaw": round(box.yaw, 5), "num_points": box.num_points})
    put("label_2", ("\n".join(kitti_lines(boxes, types, calib)) + "\n"
                    if boxes else "").encode())
    put("boxes", json.dumps({"frame": frame.name, "coordinate_frame": "lidar",
                             "box": "center x y z, size length width height, yaw about z",
                             "boxes": records}, indent=1, allow_nan=False).encode())
    return written
