"""Training scenes: a deterministic stream of augmented, voxelised, size-capped scenes.

Scenes come from the synthetic generator (on the fly: every training step sees new scenes) or
from benchmark-format folders read with ``npiseg_ros.eval`` readers. Each scene is augmented
point-wise (tiny ``(dict, rng) -> dict`` callables), voxelised at the model's voxel size and
cropped to at most ``max_voxels`` voxels around a random anchor object.

Determinism: the scene and every random choice of (step, rank, slot) derive from
``numpy.random.SeedSequence([seed, step, rank, slot])``, so a resumed run sees exactly the
scenes the uninterrupted run would have seen, without storing any data-loader state.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from npiseg_ros.core.geodesic import GraphConfig, VoxelGraph, build_voxel_graph
from npiseg_ros.core.voxelize import voxelize
from npiseg_ros.eval.cloud import LabelledCloud
from npiseg_train.augment import Points, build_augmentation
from npiseg_train.config import DataSection

GENERATOR_RETRIES = 5
"""Consecutive scene indices tried when the generator raises on one (never fail a long run
on one bad seed; the failure is reported once as a warning)."""


@dataclass(frozen=True)
class TrainScene:
    """One voxelised training scene.

    Attributes:
        features: (V, C) float32 model input per voxel (as ``SegmentationSession`` builds it).
        coords: (V, 3) int64 voxel grid coordinates.
        xyz: (V, 3) float32 position of each voxel's representative point, metres.
        labels: (V,) int64 instance id per voxel (0 = unlabelled).
        name: source scene name (for logs).
        graph: the voxel graph of the geodesic prior over these V voxels, or None (models
            without the prior).
        things: the ids in ``labels`` that are things (cars, people...; ``targets`` of
            ``things`` / ``mixed``); empty when the source does not say.
    """

    features: np.ndarray
    coords: np.ndarray
    xyz: np.ndarray
    labels: np.ndarray
    name: str
    graph: VoxelGraph | None = None
    things: tuple[int, ...] = ()

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


# ------------------------------------------------------------------------- features and crop


def input_features(points: Points, input_mode: str) -> np.ndarray:
    """(N, C) float32 model input, exactly as ``SegmentationSession`` builds it at run time."""
    num = points["xyz"].shape[0]
    if input_mode == "rgb":
        colors = points["colors"]
        return (np.zeros((num, 3), np.float32) if colors is None
                else np.asarray(colors, np.float32))
    if input_mode == "intensity":
        intensity = points["intensity"]
        return (np.zeros((num, 1), np.float32) if intensity is None
                else np.asarray(intensity, np.float32).reshape(-1, 1))
    return np.ones((num, 1), np.float32)


def voxelize_and_crop(points: Points, *, voxel_size: float, input_mode: str, max_voxels: int,
                      min_object_voxels: int, rng: np.random.Generator,
                      name: str = "") -> TrainScene:
    """Voxelise (first point of each voxel represents it) and keep at most ``max_voxels``.

    Larger scenes keep the voxels horizontally nearest to the centroid of a random object
    with >= ``min_object_voxels`` voxels: a vertical-cylinder crop like the evaluation's
    SemanticKITTI crops, sized by count so every step costs about the same.
    """
    xyz = np.asarray(points["xyz"], np.float32)
    voxels = voxelize(xyz, voxel_size)
    rep = voxels.representative
    voxel_xyz = xyz[rep]
    labels = np.asarray(points["labels"], np.int64)[rep]
    keep = np.arange(rep.size)
    if rep.size > max_voxels:
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        candidates = ids[counts >= min_object_voxels]
        if candidates.size:
            anchor = voxel_xyz[labels == rng.choice(candidates), :2].mean(axis=0)
        else:
            anchor = voxel_xyz[rng.integers(rep.size), :2]
        distance = np.linalg.norm(voxel_xyz[:, :2] - anchor, axis=1)
        keep = np.sort(np.argpartition(distance, max_voxels - 1)[:max_voxels])
    features = input_features(points, input_mode)[rep[keep]]
    return TrainScene(features=np.ascontiguousarray(features, np.float32),
                      coords=voxels.coords[keep], xyz=voxel_xyz[keep], labels=labels[keep],
                      name=name)


# --------------------------------------------------------------------------------- sources


def synth_points(kind: str, seed: int, index: int) -> tuple[Points, str]:
    """Scene ``index`` of the synthetic stream ``(kind, seed)``; skips indices the generator
    fails on (up to ``GENERATOR_RETRIES``)."""
    from npiseg_train.synth.cli import make_scene

    error: Exception | None = None
    for attempt in range(GENERATOR_RETRIES):
        try:
            scene = make_scene(kind, seed, index + attempt * 1_000_003)
        except Exception as caught:  # noqa: BLE001 - a generator bug must not stop a run
            error = caught
            continue
        if error is not None:
            warnings.warn(f"synth {kind} scene {index} failed ({error!r}); used a retry")
        return ({"xyz": scene.xyz.astype(np.float32), "colors": scene.colors,
                 "intensity": scene.intensity, "labels": scene.labels.astype(np.int64)},
                scene.name)
    raise RuntimeError(f"synthetic {kind} generator failed {GENERATOR_RETRIES} times "
                       f"from index {index}: {error!r}")


def cloud_points(cloud: LabelledCloud) -> Points:
    return {"xyz": cloud.xyz.astype(np.float32), "colors": cloud.colors,
            "intensity": cloud.intensity, "labels": cloud.labels.astype(np.int64)}


def scan_files_per_root(roots: tuple[str, ...] | list[str],
                        exclude: tuple[str, ...] | list[str] = ()) -> list[list[Path]]:
    """Every ``.npz`` / ``.ply`` / ``.pcd`` scan of each folder, sorted, one list per folder,
    without the files whose name matches a glob pattern of ``exclude`` (e.g. ``pandaset_*``:
    a leave-one-dataset-out run)."""
    per_root = []
    for root in roots:
        found = sorted(p for p in Path(root).iterdir() if p.suffix in (".npz", ".ply", ".pcd")
                       and not any(fnmatch.fnmatch(p.name, pattern) for pattern in exclude))
        if not found:
            raise FileNotFoundError(f"{root}: no .npz / .ply / .pcd scans"
                                    + (f" left after excluding {list(exclude)}" if exclude else ""))
        per_root.append(found)
    return per_root


def scan_files(roots: tuple[str, ...] | list[str],
               exclude: tuple[str, ...] | list[str] = ()) -> list[Path]:
    """Every ``.npz`` / ``.ply`` / ``.pcd`` scan in the folders, sorted per folder."""
    return [path for found in scan_files_per_root(roots, exclude) for path in found]


def file_probabilities(per_root: list[list[Path]], root_weights: tuple[float, ...]) -> np.ndarray:
    """Probability of each file (in ``scan_files`` order): root by weight, then uniform."""
    if not root_weights:
        total = sum(len(found) for found in per_root)
        return np.full(total, 1.0 / total)
    weights = np.asarray(root_weights, dtype=np.float64)
    weights = weights / weights.sum()
    return np.concatenate([np.full(len(found), w / len(found))
                           for w, found in zip(weights, per_root)])


@dataclass(frozen=True)
class CachedScan:
    """One whole scan voxelised at the model's voxel size, with its voxel graph."""

    name: str
    coords: np.ndarray      # (V, 3) int64
    xyz: np.ndarray         # (V, 3) float32, representative points
    labels: np.ndarray      # (V,) int64 instance ids
    features: np.ndarray    # (V, C) float32 model input
    graph: VoxelGraph | None
    things: tuple[int, ...] = ()   # ids in ``labels`` that are things


def cache_scan(path: Path, *, voxel_size: float, input_mode: str,
               graph_config: GraphConfig | None, targets: str = "raw") -> CachedScan:
    """Read, voxelise and (for prior models) build the voxel graph of one scan; its labels
    are the ``targets`` of ``npiseg_ros.eval.targets.scan_targets``."""
    from npiseg_ros.eval.readers import read_cloud
    from npiseg_ros.eval.targets import read_scan_semantics, scan_targets

    cloud = read_cloud(path)
    if targets != "raw":
        cloud = scan_targets(cloud, read_scan_semantics(path), targets)
    points = cloud_points(cloud)
    voxels = voxelize(points["xyz"], voxel_size)
    rep = voxels.representative
    xyz = points["xyz"][rep]
    colors = None if points["colors"] is None else np.asarray(points["colors"])[rep]
    graph = None if graph_config is None else build_voxel_graph(xyz, colors, graph_config)
    return CachedScan(path.stem, voxels.coords, xyz, points["labels"][rep],
                      np.ascontiguousarray(input_features(points, input_mode)[rep]), graph,
                      things=tuple(cloud.things))


def grid_symmetry(coords: np.ndarray, xyz: np.ndarray, voxel_size: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the grid about z (flips x / y, swap x and y), applied to
    integer coordinates and positions alike. Exact: voxels stay unique and keep their points,
    so the cached graph (distances are invariant) stays valid."""
    coords, xyz = coords.copy(), xyz.copy()
    if rng.random() < 0.5:
        coords[:, [0, 1]], xyz[:, [0, 1]] = coords[:, [1, 0]], xyz[:, [1, 0]]
    for axis in (0, 1):
        if rng.random() < 0.5:
            # floor(-x / s) = -floor(x / s) - 1 for points inside a voxel: mirror the cells
            coords[:, axis] = -coords[:, axis] - 1
            xyz[:, axis] = -xyz[:, axis]
    return coords, xyz


def pick_anchor(candidates: np.ndarray, things: tuple[int, ...], thing_fraction: float | None,
                rng: np.random.Generator) -> int:
    """One of ``candidates`` (non-empty ids): uniform when ``thing_fraction`` is None (the
    draws of earlier runs), else a thing with probability ``thing_fraction`` and another
    object otherwise (uniform within the kind; the other kind when one is absent)."""
    if thing_fraction is None:
        return int(rng.choice(candidates))
    is_thing = np.isin(candidates, np.asarray(things, np.int64))
    want_thing = rng.random() < thing_fraction
    pool = candidates[is_thing] if want_thing else candidates[~is_thing]
    return int(rng.choice(pool if pool.size else candidates))


def crop_cached(scan: CachedScan, *, max_voxels: int, min_object_voxels: int,
                voxel_size: float, rng: np.random.Generator,
                thing_fraction: float | None = None) -> TrainScene:
    """A TrainScene of at most ``max_voxels`` voxels (horizontal nearest around a random
    object, as ``voxelize_and_crop``; a thing with probability ``thing_fraction`` when set),
    under a random grid symmetry, with its subgraph."""
    keep = np.arange(scan.xyz.shape[0])
    if keep.size > max_voxels:
        ids, counts = np.unique(scan.labels[scan.labels > 0], return_counts=True)
        candidates = ids[counts >= min_object_voxels]
        if candidates.size:
            chosen = pick_anchor(candidates, scan.things, thing_fraction, rng)
            anchor = scan.xyz[scan.labels == chosen, :2].mean(axis=0)
        else:
            anchor = scan.xyz[rng.integers(keep.size), :2]
        distance = np.linalg.norm(scan.xyz[:, :2] - anchor, axis=1)
        keep = np.sort(np.argpartition(distance, max_voxels - 1)[:max_voxels])
    coords, xyz = grid_symmetry(scan.coords[keep], scan.xyz[keep], voxel_size, rng)
    graph = None
    if scan.graph is not None:
        graph = scan.graph if keep.size == scan.xyz.shape[0] else scan.graph.subgraph(keep)
    return TrainScene(features=scan.features[keep], coords=coords, xyz=xyz,
                      labels=scan.labels[keep], name=scan.name, graph=graph, things=scan.things)


def benchmark_scene_names(root: str | Path) -> list[str]:
    """Scene names of a benchmark folder (``scans/*.ply``), sorted."""
    names = sorted(p.stem for p in (Path(root) / "scans").glob("*.ply"))
    if not names:
        raise FileNotFoundError(f"{root}/scans has no .ply scenes")
    return names


class SceneStream:
    """Deterministic training scenes for (step, rank, slot).

    Args:
        config: the data section.
        voxel_size: the model's voxel edge, metres.
        input_mode: the model's input mode (``rgb``, ``intensity``, ``none``).
    """

    def __init__(self, config: DataSection, *, voxel_size: float, input_mode: str,
                 graph_config: GraphConfig | None = None) -> None:
        self.config = config
        self.voxel_size = voxel_size
        self.input_mode = input_mode
        self.graph_config = graph_config
        self.augment = build_augmentation(config)
        self._scenes: list[tuple[str, str]] = []
        self._scan_files: list[Path] = []
        self._scan_cache: dict[int, CachedScan] = {}
        self._file_probabilities: np.ndarray | None = None
        if config.source == "scans":
            per_root = scan_files_per_root(config.roots, config.exclude)
            self._scan_files = [path for found in per_root for path in found]
            if config.root_weights:
                self._file_probabilities = file_probabilities(per_root, config.root_weights)
        if config.source == "benchmark":
            self._scenes = [(root, name) for root in config.roots
                            for name in benchmark_scene_names(root)]

    def rng(self, step: int, rank: int, slot: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, step, rank, slot]))

    def scene(self, step: int, rank: int, slot: int, world_size: int = 1,
              batch_size: int = 1) -> tuple[TrainScene, np.random.Generator]:
        """The scene of one batch slot and the generator the caller continues with (clicks)."""
        rng = self.rng(step, rank, slot)
        # Unique index per (step, rank, slot): the on-the-fly stream never repeats a scene.
        index = (step * world_size + rank) * batch_size + slot
        if self.config.source == "scans":
            if self._file_probabilities is None:  # the unweighted stream of earlier runs
                choice = int(rng.integers(len(self._scan_files)))
            else:
                choice = int(rng.choice(len(self._scan_files), p=self._file_probabilities))
            if choice not in self._scan_cache:
                self._scan_cache[choice] = cache_scan(
                    self._scan_files[choice], voxel_size=self.voxel_size,
                    input_mode=self.input_mode, graph_config=self.graph_config,
                    targets=self.config.targets)
            scene = crop_cached(self._scan_cache[choice], max_voxels=self.config.max_voxels,
                                min_object_voxels=self.config.min_object_voxels,
                                voxel_size=self.voxel_size, rng=rng,
                                thing_fraction=self.config.thing_fraction)
            return scene, rng
        if self.config.source == "synth":
            kind = self.config.kinds[index % len(self.config.kinds)]
            points, name = synth_points(kind, self.config.seed, index)
        else:
            from npiseg_ros.eval.readers import read_benchmark_scene

            root, name = self._scenes[int(rng.integers(len(self._scenes)))]
            points = cloud_points(read_benchmark_scene(root, name))
        points = self.augment(points, rng)
        scene = voxelize_and_crop(points, voxel_size=self.voxel_size,
                                  input_mode=self.input_mode,
                                  max_voxels=self.config.max_voxels,
                                  min_object_voxels=self.config.min_object_voxels, rng=rng,
                                  name=name)
        if self.graph_config is not None:
            # augmented geometry: the graph is built per scene (geometry only, as the model's
            # input; the cached ``scans`` source keeps colours in its graphs)
            scene = dataclasses.replace(scene, graph=build_voxel_graph(scene.xyz, None,
                                                                       self.graph_config))
        return scene, rng


def write_validation_set(kind: str, num: int, seed: int, out: str | Path,
                         samples_per_scene: int = 2) -> Path:
    """Held-out synthetic scenes in the benchmark format (skips generator failures).

    Uses a ``seed`` different from training so no validation scene is ever trained on.
    Returns the path of ``val_list.json``.
    """
    from npiseg_ros.eval.writers import write_benchmark_scene, write_val_list
    from npiseg_train.synth.cli import make_scene, scene_samples, scene_seed, to_labelled_cloud

    entries: list[tuple[str, list[int]]] = []
    index = written = 0
    while written < num and index < 4 * num:
        try:
            scene = make_scene(kind, seed, index)
        except Exception as error:  # noqa: BLE001 - report and skip a bad generator seed
            warnings.warn(f"validation {kind} scene {index} failed: {error!r}")
            index += 1
            continue
        write_benchmark_scene(out, scene.name, to_labelled_cloud(scene))
        for ids in scene_samples(scene, samples_per_scene, scene_seed(seed, index) + 1):
            entries.append((scene.name, ids))
        written += 1
        index += 1
    return write_val_list(out, entries)
