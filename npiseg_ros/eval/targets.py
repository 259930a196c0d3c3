"""Segmentation targets of a labelled scan: clean things, stuff pieces, whole classes.

The real scans carry instances made in different ways (``../shared/data/real/README.md``):
panoptic labels (SemanticKITTI), points inside annotated cuboids (PandaSet, KITTI,
Argoverse 2: the road under the wheels and overhanging branches are inside the box) and
connected components of one class. A model trained on box instances learns to leak onto the
ground, and one trained on instances only never sees the stuff a panoptic labeller clicks
(road, vegetation, poles...). This module turns every scan into the targets the product is
meant to segment:

* **things**: each instance, minus the points whose own semantic class differs from the
  instance's class (files with semantics), or minus the ground under it (box-only files:
  ``ground_mask``); points of a thing class without any instance become connected pieces;
* **stuff pieces**: every stuff class split into connected pieces (``PIECE_LINK_M``);
* **whole classes** (``targets="classes"``): each semantic class as one target, the hardest
  case (all vegetation of a sweep).

Pure numpy + scipy; the training package and ``npiseg-eval`` use the same rules.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.ndimage import minimum_filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from npiseg_ros.core.voxelize import voxelize
from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud

__all__ = ["TARGET_KINDS", "ScanSemantics", "read_scan_semantics", "ground_mask",
           "connected_pieces", "scan_targets", "is_thing_name", "is_ignored_name"]

TARGET_KINDS = ("raw", "things", "stuff", "mixed", "classes")
"""``raw``: the file's instances as stored; ``things``: clean thing instances; ``stuff``:
stuff pieces; ``mixed``: both (training); ``classes``: one target per semantic class."""

THING_WORDS = ("car", "truck", "bus", "vehicle", "van", "person", "pedestrian", "bicycl",
               "motorcycl", "cyclist", "trailer", "tram", "rail", "animal", "dog", "cone",
               "pylon", "barrel", "stroller", "wheelchair", "scooter", "rider")
"""Lower-case name fragments of countable object classes across the datasets' ontologies."""

IGNORED_WORDS = ("unlabel", "outlier", "noise", "reflection", "void", "ignore", "background",
                 "unknown")
"""Classes that are not a segmentation target (sensor artefacts, the 'rest' class)."""

PIECE_LINK_M = 0.5
"""Points closer than this (metres) belong to the same piece: the gap a LiDAR leaves between
rings near the sensor is smaller, a gap between two hedges larger."""

PIECE_GRID_M = 0.2
"""Pieces are linked on one representative point per cell of this size (fast on 100k-point
sweeps; every point takes its cell's piece)."""

MIN_PIECE_POINTS = 20
"""Smaller pieces stay unlabelled (0): not a target a user would click."""

GROUND_CELL_M = 0.5
GROUND_WINDOW_CELLS = 2
GROUND_HEIGHT_M = 0.2
"""``ground_mask``: a point is ground when it lies less than ``GROUND_HEIGHT_M`` above the
lowest point of the (2 w + 1)^2 cells of ``GROUND_CELL_M`` around it (w = window). Chosen on
the semantic files of ``train/`` only (PandaSet, RELLIS-3D, semkitti_sub: 24 choices of cell,
window and height): inside the instances it removes 98.9 % of the ground-class points and
3.8 % of the points of the instance's own class (docs/model.md, "Targets")."""


def is_ignored_name(name: str) -> bool:
    lowered = name.strip().lower()
    return not lowered or any(word in lowered for word in IGNORED_WORDS)


def is_thing_name(name: str) -> bool:
    lowered = name.strip().lower()
    return any(word in lowered for word in THING_WORDS) and not is_ignored_name(lowered)


class ScanSemantics:
    """The optional semantic layers of a real-scan ``.npz`` (README of ``shared/data/real``).

    Attributes:
        semantic: (N,) int64 class id per point (-1 = unlabelled), or None (box-only files).
        names: class id -> name (``semantic_names``), empty without semantics.
        instance_class: (K + 1,) int64 class of each instance (index 0 unused), or None.
        instance_class_names: class names that ``instance_class`` indexes in box-only files.
    """

    def __init__(self, semantic: np.ndarray | None, names: list[str],
                 instance_class: np.ndarray | None,
                 instance_class_names: list[str]) -> None:
        self.semantic = semantic
        self.names = names
        self.instance_class = instance_class
        self.instance_class_names = instance_class_names

    @property
    def has_semantics(self) -> bool:
        return self.semantic is not None

    def class_name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else ""


def read_scan_semantics(path: str | os.PathLike) -> ScanSemantics:
    """The semantic layers of a scan file; files other than ``.npz`` have none."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        return ScanSemantics(None, [], None, [])
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            semantic = archive["semantic"].astype(np.int64) if "semantic" in keys else None
            names = ([str(n) for n in archive["semantic_names"].tolist()]
                     if "semantic_names" in keys else [])
            instance_class = (archive["instance_class"].astype(np.int64)
                              if "instance_class" in keys else None)
            box_names = ([str(n) for n in archive["instance_class_names"].tolist()]
                         if "instance_class_names" in keys else [])
    except (OSError, ValueError) as error:
        raise DatasetFormatError(f"{path}: not a readable .npz ({error})") from None
    if semantic is not None and not names:
        raise DatasetFormatError(f"{path}: 'semantic' without 'semantic_names'")
    return ScanSemantics(semantic, names, instance_class, box_names)


def ground_mask(xyz: np.ndarray, *, cell_m: float = GROUND_CELL_M,
                window_cells: int = GROUND_WINDOW_CELLS,
                height_m: float = GROUND_HEIGHT_M) -> np.ndarray:
    """(N,) bool: points near the local ground (no semantics needed).

    The local ground height of a point is the lowest z over the (2 w + 1)^2 horizontal cells
    around its own: under a car the road is seen beside the wheels, about a metre away.
    Chosen and measured on the semantic files of ``train/`` (``GROUND_HEIGHT_M``; docs/training.md,
    run ``anyobject_v1``).
    """
    xyz = np.asarray(xyz, np.float64)
    cells = np.floor(xyz[:, :2] / cell_m).astype(np.int64)
    cells -= cells.min(axis=0)
    lowest = np.full(tuple(cells.max(axis=0) + 1), np.inf)
    np.minimum.at(lowest, (cells[:, 0], cells[:, 1]), xyz[:, 2])
    ground = minimum_filter(lowest, size=2 * window_cells + 1, mode="constant", cval=np.inf)
    return xyz[:, 2] - ground[cells[:, 0], cells[:, 1]] < height_m


def connected_pieces(xyz: np.ndarray, *, link_m: float = PIECE_LINK_M,
                     grid_m: float = PIECE_GRID_M) -> np.ndarray:
    """(N,) int64 piece index per point (0..P-1): points linked by chains of neighbours closer
    than ``link_m``, computed on one point per ``grid_m`` cell."""
    if xyz.shape[0] == 0:
        return np.zeros(0, np.int64)
    cells = voxelize(np.asarray(xyz, np.float64), grid_m)
    representatives = np.asarray(xyz, np.float64)[cells.representative]
    pairs = cKDTree(representatives).query_pairs(link_m + grid_m * np.sqrt(3.0) / 2,
                                                 output_type="ndarray")
    count = representatives.shape[0]
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(count, count))
    _, piece_of_cell = connected_components(graph, directed=False)
    return piece_of_cell[cells.point_to_voxel].astype(np.int64)


def _assign_pieces(labels: np.ndarray, xyz: np.ndarray, members: np.ndarray,
                   next_id: int, min_points: int) -> tuple[list[int], int]:
    """Label the connected pieces of the points ``members`` (indices) with fresh ids."""
    pieces = connected_pieces(xyz[members])
    counts = np.bincount(pieces)
    new_ids = []
    for piece in np.flatnonzero(counts >= min_points):
        labels[members[pieces == piece]] = next_id
        new_ids.append(next_id)
        next_id += 1
    return new_ids, next_id


def scan_targets(cloud: LabelledCloud, semantics: ScanSemantics, targets: str, *,
                 min_piece_points: int = MIN_PIECE_POINTS) -> LabelledCloud:
    """The cloud with ``labels`` replaced by the chosen targets (see the module docstring).

    ``names`` gets each target's class name, ``things`` the ids of thing targets. Box-only
    files have no stuff: ``stuff`` gives no target there, ``things`` the boxes minus the ground.
    Raises ``DatasetFormatError`` for ``classes`` on a file without semantics.
    """
    if targets not in TARGET_KINDS:
        raise DatasetFormatError(f"targets must be one of {TARGET_KINDS}, got {targets!r}")
    if targets == "raw":
        return cloud
    instance = cloud.labels
    labels = np.zeros_like(instance)
    names: dict[int, str] = {}
    things: list[int] = []
    xyz = cloud.xyz
    semantic = semantics.semantic
    if semantic is not None and semantic.shape != instance.shape:
        raise DatasetFormatError(f"semantic has {semantic.shape[0]} entries for "
                                 f"{instance.shape[0]} points")
    if targets == "classes":
        if semantic is None:
            raise DatasetFormatError("whole-class targets need a file with semantics")
        for class_id in np.unique(semantic):
            name = semantics.class_name(int(class_id))
            if class_id < 0 or is_ignored_name(name):
                continue
            new_id = len(names) + 1
            labels[semantic == class_id] = new_id
            names[new_id] = name
            if is_thing_name(name):
                things.append(new_id)
        return _with_labels(cloud, labels, names, things)

    next_id = 1
    want_things = targets in ("things", "mixed")
    want_stuff = targets in ("stuff", "mixed")
    thing_classes: set[int] = set()
    if semantic is not None and semantics.instance_class is not None:
        thing_classes = {int(c) for c in semantics.instance_class[1:] if c >= 0}
    if semantic is not None:
        thing_classes |= {c for c, name in enumerate(semantics.names) if is_thing_name(name)}
    covered = np.zeros(instance.shape, bool)  # points already a thing (never a stuff piece)
    if want_things or want_stuff:
        on_ground = None if semantic is not None else ground_mask(xyz)
        for object_id in np.unique(instance[instance > 0]):
            members = instance == object_id
            if semantic is not None:
                own = int(semantics.instance_class[object_id]) if (
                    semantics.instance_class is not None
                    and object_id < semantics.instance_class.shape[0]) else -1
                if own >= 0:
                    members &= semantic == own
            else:
                members &= ~on_ground
            covered |= members
            if want_things and np.count_nonzero(members):
                labels[members] = next_id
                names[next_id] = _instance_name(semantics, int(object_id))
                things.append(next_id)
                next_id += 1
    if semantic is not None:
        for class_id in np.unique(semantic):
            name = semantics.class_name(int(class_id))
            if class_id < 0 or is_ignored_name(name):
                continue
            is_thing = int(class_id) in thing_classes
            if (is_thing and not want_things) or (not is_thing and not want_stuff):
                continue
            members = np.flatnonzero((semantic == class_id) & ~covered)
            if members.size < min_piece_points:
                continue
            new_ids, next_id = _assign_pieces(labels, xyz, members, next_id, min_piece_points)
            for new_id in new_ids:
                names[new_id] = name
                if is_thing:
                    things.append(new_id)
    return _with_labels(cloud, labels, names, things)


def _instance_name(semantics: ScanSemantics, object_id: int) -> str:
    if semantics.instance_class is None or object_id >= semantics.instance_class.shape[0]:
        return ""
    class_id = int(semantics.instance_class[object_id])
    if semantics.has_semantics:
        return semantics.class_name(class_id)
    names = semantics.instance_class_names
    return names[class_id] if 0 <= class_id < len(names) else ""


def _with_labels(cloud: LabelledCloud, labels: np.ndarray, names: dict[int, str],
                 things: list[int]) -> LabelledCloud:
    return LabelledCloud(xyz=cloud.xyz, labels=labels, colors=cloud.colors,
                         intensity=cloud.intensity, names=names, things=tuple(things))
