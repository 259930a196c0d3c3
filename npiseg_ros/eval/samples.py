"""Turn datasets into evaluation samples (scene + target objects) for both protocols.

Benchmark format: multi-object samples are the entries of ``val_list.json``; single-object
samples are the rows of ``object_ids.npy`` (crops when a ``crops/`` folder sits beside it, else
the full scan with the object's id), or -- without that file -- every distinct object of the
``val_list.json`` samples. SemanticKITTI: see ``semantickitti_samples``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud, Sample
from npiseg_ros.io.ply import read_ply
from npiseg_ros.eval.readers import (
    read_benchmark_scene, read_cloud, read_semantickitti, read_single_object_list, read_val_list,
    semantickitti_frames)
from npiseg_ros.eval.targets import TARGET_KINDS, read_scan_semantics, scan_targets

__all__ = ["benchmark_samples", "semantickitti_samples", "scan_samples", "dataset_samples",
           "check_object_counts", "SCAN_OBJECT_COUNTS"]

SCAN_OBJECT_COUNTS = (1, 3, 5)
"""Objects per multi-object sample of a whole scan (the independent evaluation's 1, 3 and 5)."""


def _single_from_val_list(root: Path) -> list[tuple[str, int]]:
    seen: dict[tuple[str, int], None] = {}
    for _, scene, ids in read_val_list(root):
        for object_id in ids:
            seen[(scene, object_id)] = None
    return list(seen)


def benchmark_samples(root: str | os.PathLike, mode: str = "multi") -> Iterator[Sample]:
    """Samples of a benchmark-format folder, grouped by scene (each scene is read once)."""
    root = Path(root)
    if mode == "multi":
        entries = [(name, scene, ids) for name, scene, ids in read_val_list(root)]
    elif mode == "single":
        try:
            rows, folder = read_single_object_list(root)
        except DatasetFormatError:
            rows, folder = _single_from_val_list(root), None
        crops = folder / "crops" if folder is not None else None
        if crops is not None and crops.is_dir():
            for scene, object_id in rows:
                path = crops / scene / f"{scene}_crop_{object_id}.ply"
                fields = read_ply(path)
                if "label" not in fields:
                    raise DatasetFormatError(f"{path}: crop has no 'label' field")
                cloud = LabelledCloud(
                    xyz=np.stack([fields["x"], fields["y"], fields["z"]], 1),
                    labels=(fields["label"] == 1).astype(np.int64),
                    colors=(np.stack([fields[c] for c in "RGB"], 1) / 255.0
                            if all(c in fields for c in "RGB") else None))
                yield Sample(name=f"{scene}_{object_id}", scene=f"{scene}_crop_{object_id}",
                             cloud=cloud, object_ids=(1,))
            return
        entries = [(f"{scene}_{object_id}", scene, (object_id,)) for scene, object_id in rows]
    else:
        raise DatasetFormatError(f"mode must be 'multi' or 'single', got {mode!r}")
    order = sorted(range(len(entries)), key=lambda i: (entries[i][1], i))
    cached: tuple[str, LabelledCloud] | None = None
    for i in order:
        name, scene, ids = entries[i]
        if cached is None or cached[0] != scene:
            cached = (scene, read_benchmark_scene(root, scene))
        missing = [o for o in ids if not np.any(cached[1].labels == o)]
        if missing:
            raise DatasetFormatError(f"sample {name!r}: objects {missing} have no points in "
                                     f"scans/{scene}.ply")
        yield Sample(name=name, scene=scene, cloud=cached[1], object_ids=tuple(ids))


def semantickitti_samples(cloud: LabelledCloud, scene: str, mode: str = "multi", *,
                          crop_radius: float = 15.0, max_objects: int = 10,
                          min_points: int = 50, seed: int = 0) -> list[Sample]:
    """Samples of one SemanticKITTI frame (a LiDAR sweep is too large and too sparse far away
    to be one sample; the KITTI-360 benchmark of the field also uses crops).

    Anchors are the thing instances with >= ``min_points`` points, in id order. For each anchor
    the cloud is cropped to a vertical cylinder of ``crop_radius`` metres around the anchor's
    centroid. Multi mode: K ~ uniform{1..max_objects} (seeded) and the targets are the anchor
    plus the K-1 objects (things or stuff, each with >= ``min_points`` points in the crop)
    whose in-crop centroids are nearest to it. Single mode: one sample per anchor (binary).

    Args:
        cloud: frame from ``read_semantickitti`` (``things`` must be set).
        scene: scene name, e.g. ``"00_000000"``.
        mode: ``"multi"`` or ``"single"``.
        crop_radius: metres, horizontal distance from the anchor centroid.
        max_objects: most targets per multi-object sample.
        min_points: smallest object (points in the crop) that may be a target.
        seed: seed of the K draw.
    """
    if mode not in ("multi", "single"):
        raise DatasetFormatError(f"mode must be 'multi' or 'single', got {mode!r}")
    rng = np.random.default_rng(seed)
    samples = []
    counts = np.bincount(cloud.labels)
    for anchor in cloud.things:
        if counts[anchor] < min_points:
            continue
        centre = cloud.xyz[cloud.labels == anchor, :2].mean(axis=0)
        inside = np.linalg.norm(cloud.xyz[:, :2] - centre, axis=1) <= crop_radius
        crop = cloud.subset(inside)
        name = f"{scene}_{anchor}"
        if mode == "single":
            samples.append(Sample(name=name, scene=name, cloud=crop, object_ids=(anchor,)))
            continue
        crop_counts = np.bincount(crop.labels)
        candidates = [int(o) for o in np.flatnonzero(crop_counts >= min_points)
                      if o > 0 and o != anchor]
        distance = [np.linalg.norm(crop.xyz[crop.labels == o, :2].mean(axis=0) - centre)
                    for o in candidates]
        k = int(rng.integers(1, max_objects + 1))
        nearest = [candidates[i] for i in np.argsort(distance, kind="stable")[:k - 1]]
        samples.append(Sample(name=f"{name}_obj_{1 + len(nearest)}", scene=name, cloud=crop,
                              object_ids=(anchor, *nearest)))
    return samples


def scan_samples(cloud: LabelledCloud, scene: str, mode: str = "multi", *,
                 object_counts: Sequence[int] = SCAN_OBJECT_COUNTS, min_points: int = 50,
                 seed: int = 0) -> list[Sample]:
    """Samples of one WHOLE labelled scan (no crop: what the node receives).

    Objects with >= ``min_points`` points are candidates. Multi mode: for each K in
    ``object_counts`` an anchor is drawn (seeded by ``seed`` and the scene name, so a sample
    does not change when other files are added) and the targets are the anchor plus its K-1
    nearest candidates (centroid distance): neighbouring objects are the hard case of
    annotation. A K above the number of candidates takes them all; a sample with the same
    targets as an earlier one of the scan is not repeated. Single mode: one sample per
    candidate, at most ``max(object_counts)`` per scan.
    """
    if mode not in ("multi", "single"):
        raise DatasetFormatError(f"mode must be 'multi' or 'single', got {mode!r}")
    object_counts = check_object_counts(object_counts)
    counts = np.bincount(cloud.labels)
    candidates = [int(o) for o in np.flatnonzero(counts >= min_points) if o > 0]
    if not candidates:
        return []
    digest = int.from_bytes(scene.encode("utf-8")[-8:].rjust(8, b"\0"), "little")
    rng = np.random.default_rng([seed, digest])
    centroids = np.stack([cloud.xyz[cloud.labels == o].mean(axis=0) for o in candidates])
    if mode == "single":
        chosen = rng.permutation(len(candidates))[:max(object_counts)]
        return [Sample(name=f"{scene}_{candidates[i]}", scene=scene, cloud=cloud,
                       object_ids=(candidates[i],)) for i in sorted(chosen)]
    samples: list[Sample] = []
    seen: set[frozenset[int]] = set()
    for k in object_counts:
        anchor = int(rng.integers(len(candidates)))  # drawn for every K: seeds stay aligned
        distance = np.linalg.norm(centroids - centroids[anchor], axis=1)
        nearest = np.argsort(distance, kind="stable")[:k]
        ids = tuple(candidates[i] for i in nearest)
        if frozenset(ids) in seen:
            continue
        seen.add(frozenset(ids))
        samples.append(Sample(name=f"{scene}_obj_{len(ids)}", scene=scene, cloud=cloud,
                              object_ids=ids))
    return samples


def check_object_counts(object_counts: Sequence[int]) -> tuple[int, ...]:
    """The object counts per sample as a tuple; raises for an empty list or a count < 1."""
    counts = tuple(int(k) for k in object_counts)
    if not counts or min(counts) < 1:
        raise DatasetFormatError(f"object counts per sample must be >= 1, got {list(counts)}")
    return counts


def dataset_samples(path: str | os.PathLike, data_format: str, mode: str = "multi", *,
                    seed: int = 0, targets: str = "raw",
                    object_counts: Sequence[int] | None = None,
                    skipped: list[str] | None = None,
                    **semantickitti_options: float) -> Iterator[Sample]:
    """All samples of a dataset folder (``data_format``: ``"benchmark"``, ``"semantickitti"``
    or ``"scans"``: a folder of whole labelled scans, ``.npz`` / ``.ply`` / ``.pcd``, read
    with ``read_cloud``, sampled by ``scan_samples``); SemanticKITTI options go to
    ``semantickitti_samples``.

    Scans only: ``targets`` (``eval.targets.TARGET_KINDS``) replaces each scan's stored
    instances by ``scan_targets`` of that kind (``"raw"`` keeps them), and ``object_counts``
    sets the objects per multi-object sample (default ``SCAN_OBJECT_COUNTS``). A scan that
    cannot have the chosen targets (whole classes of a file without semantics) gives no
    sample; its name is appended to ``skipped`` when a list is passed.
    """
    if data_format != "scans" and (targets != "raw" or object_counts is not None):
        raise DatasetFormatError("targets and object counts apply to --format scans only")
    if data_format == "benchmark":
        yield from benchmark_samples(path, mode)
    elif data_format == "scans":
        counts = check_object_counts(SCAN_OBJECT_COUNTS if object_counts is None
                                     else object_counts)
        if targets not in TARGET_KINDS:
            raise DatasetFormatError(f"targets must be one of {TARGET_KINDS}, got {targets!r}")
        files = sorted(p for p in Path(path).iterdir() if p.suffix in (".npz", ".ply", ".pcd"))
        if not files:
            raise DatasetFormatError(f"{path}: no .npz / .ply / .pcd scans")
        for file in files:
            cloud = read_cloud(file)
            if targets != "raw":
                semantics = read_scan_semantics(file)
                if targets == "classes" and not semantics.has_semantics:
                    if skipped is not None:
                        skipped.append(file.name)
                    continue
                cloud = scan_targets(cloud, semantics, targets)
            yield from scan_samples(cloud, file.stem, mode, object_counts=counts, seed=seed)
    elif data_format == "semantickitti":
        for sequence, frame in semantickitti_frames(path):
            cloud = read_semantickitti(path, sequence, frame)
            yield from semantickitti_samples(cloud, f"{sequence}_{frame}", mode, seed=seed,
                                             **semantickitti_options)
    else:
        raise DatasetFormatError(
            f"format must be 'benchmark', 'semantickitti' or 'scans', got {data_format!r}")
