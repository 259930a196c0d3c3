"""Segmentation targets of labelled scans (npiseg_ros.eval.targets) on small synthetic streets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npiseg_ros.eval.cloud import DatasetFormatError
from npiseg_ros.eval.readers import read_cloud
from npiseg_ros.eval.targets import (
    MIN_PIECE_POINTS, connected_pieces, ground_mask, read_scan_semantics, scan_targets)

ROAD, VEGETATION, CAR = 1, 2, 3
NAMES = ["unlabeled", "road", "vegetation", "car"]
CAR_CENTRES = ((4.0, 4.0), (10.0, 4.0), (4.0, 10.0))
CAR_HALF = np.array([1.0, 0.6])


def street_scan(path: Path, *, semantics: bool = True, vegetation_gap: float = 1.0,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Write a small street as a real-scan ``.npz`` and return its arrays.

    A flat road (z = 0, 0.2 m grid, 16 x 16 m), three cars (box volumes 2 x 1.2 m, 0.3-1.5 m
    high) whose instances, like box instances, also hold the road points under them, two
    vegetation patches ``vegetation_gap`` metres apart, a 5-point vegetation speck (smaller
    than a piece may be) and 30 unlabelled points. ``semantics=False`` writes a box-only
    file (``instance_class_names`` instead of ``semantic``).
    """
    rng = np.random.default_rng(seed)
    grid = np.arange(0.0, 16.0, 0.2)
    road = np.column_stack([np.repeat(grid, grid.size), np.tile(grid, grid.size),
                            rng.normal(0.0, 0.005, grid.size ** 2)])
    parts = [(road, ROAD, 0)]
    for index, centre in enumerate(CAR_CENTRES, start=1):
        body = rng.uniform([*(np.array(centre) - CAR_HALF), 0.3],
                           [*(np.array(centre) + CAR_HALF), 1.5], (200, 3))
        parts.append((body, CAR, index))
    patch = rng.uniform([17.0, 0.0, 0.0], [18.5, 1.5, 1.0], (400, 3))
    parts.append((patch, VEGETATION, 0))
    parts.append((patch + [1.5 + vegetation_gap, 0.0, 0.0], VEGETATION, 0))
    parts.append((rng.uniform([30.0, 30.0, 0.0], [30.1, 30.1, 0.1], (5, 3)), VEGETATION, 0))
    parts.append((rng.uniform([0.0, 20.0, 0.0], [3.0, 23.0, 1.0], (30, 3)), -1, 0))
    xyz = np.concatenate([p for p, _, _ in parts]).astype(np.float32)
    semantic = np.concatenate([np.full(len(p), c) for p, c, _ in parts]).astype(np.int32)
    instance = np.concatenate([np.full(len(p), i) for p, _, i in parts]).astype(np.int32)
    for index, centre in enumerate(CAR_CENTRES, start=1):  # the road inside each box
        under = (np.all(np.abs(xyz[:, :2] - centre) <= CAR_HALF, axis=1)
                 & (semantic == ROAD))
        instance[under] = index
    arrays = dict(xyz=xyz, instance=instance)
    if semantics:
        arrays.update(semantic=semantic, semantic_names=np.array(NAMES),
                      instance_class=np.array([-1, CAR, CAR, CAR], np.int32))
    else:
        arrays.update(instance_class=np.array([-1, 0, 0, 0], np.int32),
                      instance_class_names=np.array(["Car"]))
    np.savez(path, **arrays)
    return {"xyz": xyz, "semantic": semantic, "instance": instance}


def _targets(path: Path, kind: str):
    return scan_targets(read_cloud(path), read_scan_semantics(path), kind)


def test_things_without_semantics_drop_the_ground_inside_the_boxes(tmp_path):
    truth = street_scan(tmp_path / "boxes.npz", semantics=False)
    cloud = _targets(tmp_path / "boxes.npz", "things")
    road_in_box = (truth["instance"] > 0) & (truth["semantic"] == ROAD)
    assert road_in_box.sum() > 50  # the boxes really held road points
    assert np.all(cloud.labels[road_in_box] == 0)
    body = truth["semantic"] == CAR
    # every car point keeps a target, one target per box, named after the box class
    assert np.all(cloud.labels[body] > 0)
    for index in range(1, 4):
        assert len(np.unique(cloud.labels[(truth["instance"] == index) & body])) == 1
    assert len(cloud.object_ids) == 3 and cloud.things == tuple(cloud.object_ids)
    assert set(cloud.names.values()) == {"Car"}
    assert np.all(cloud.labels[~body] == 0)  # no stuff in box-only files


def test_things_with_semantics_keep_only_points_of_the_instance_class(tmp_path):
    truth = street_scan(tmp_path / "street.npz")
    cloud = _targets(tmp_path / "street.npz", "things")
    for index in range(1, 4):
        own = (truth["instance"] == index) & (truth["semantic"] == CAR)
        target = np.unique(cloud.labels[own])
        assert target.size == 1 and target[0] > 0
        np.testing.assert_array_equal(cloud.labels == target[0], own)
        assert cloud.names[int(target[0])] == "car"
    assert np.all(cloud.labels[truth["semantic"] != CAR] == 0)  # road under a car dropped
    assert len(cloud.things) == 3


@pytest.mark.parametrize("gap, pieces", [(1.0, 2), (0.3, 1)])
def test_stuff_is_split_into_pieces_separated_by_more_than_the_link(tmp_path, gap, pieces):
    truth = street_scan(tmp_path / "street.npz", vegetation_gap=gap)
    cloud = _targets(tmp_path / "street.npz", "stuff")
    vegetation = [k for k, name in cloud.names.items() if name == "vegetation"]
    assert len(vegetation) == pieces
    assert [name for name in cloud.names.values() if name != "vegetation"] == ["road"]
    # the speck is smaller than a piece may be; things and unlabelled points are no stuff
    speck = np.flatnonzero(truth["semantic"] == VEGETATION)[-5:]
    assert np.all(cloud.labels[speck] == 0)
    assert np.all(cloud.labels[truth["semantic"] == CAR] == 0)
    assert np.all(cloud.labels[truth["semantic"] == -1] == 0)
    road = cloud.labels[truth["semantic"] == ROAD]
    assert np.unique(road).size == 1 and road[0] > 0  # the road is one piece, under cars too
    assert cloud.things == ()


def test_mixed_gives_things_and_stuff_and_no_point_twice(tmp_path):
    truth = street_scan(tmp_path / "street.npz")
    cloud = _targets(tmp_path / "street.npz", "mixed")
    things = set(cloud.things)
    assert len(things) == 3
    assert {cloud.names[k] for k in cloud.object_ids if k not in things} == {"road",
                                                                              "vegetation"}
    assert set(np.unique(cloud.labels[truth["semantic"] == CAR])) <= things
    assert not set(np.unique(cloud.labels[truth["semantic"] != CAR])) & things


def test_classes_give_one_target_per_named_class(tmp_path):
    truth = street_scan(tmp_path / "street.npz")
    cloud = _targets(tmp_path / "street.npz", "classes")
    assert sorted(cloud.names.values()) == ["car", "road", "vegetation"]
    for class_id, name in ((ROAD, "road"), (VEGETATION, "vegetation"), (CAR, "car")):
        target = [k for k, n in cloud.names.items() if n == name][0]
        np.testing.assert_array_equal(cloud.labels == target, truth["semantic"] == class_id)
    assert cloud.things == tuple(k for k, n in cloud.names.items() if n == "car")
    assert np.all(cloud.labels[truth["semantic"] == -1] == 0)
    street_scan(tmp_path / "boxes.npz", semantics=False)
    with pytest.raises(DatasetFormatError, match="semantics"):
        _targets(tmp_path / "boxes.npz", "classes")


def test_raw_keeps_the_stored_instances(tmp_path):
    street_scan(tmp_path / "street.npz")
    cloud = read_cloud(tmp_path / "street.npz")
    assert scan_targets(cloud, read_scan_semantics(tmp_path / "street.npz"), "raw") is cloud


def test_ground_mask_and_pieces_on_their_own():
    grid = np.arange(0.0, 6.0, 0.2)
    ground = np.column_stack([np.repeat(grid, grid.size), np.tile(grid, grid.size),
                              np.zeros(grid.size ** 2)])
    box = np.random.default_rng(0).uniform([2, 2, 0.4], [3, 3, 1.2], (100, 3))
    mask = ground_mask(np.concatenate([ground, box]))
    assert np.all(mask[:len(ground)]) and not np.any(mask[len(ground):])
    assert connected_pieces(np.zeros((0, 3))).shape == (0,)
    two = connected_pieces(np.concatenate([box, box + [3.0, 0.0, 0.0]]))
    assert len(np.unique(two)) == 2 and len(np.unique(two[:100])) == 1
    assert MIN_PIECE_POINTS > 5  # the speck of street_scan must stay below it


def test_bad_input_raises_clear_errors(tmp_path):
    street_scan(tmp_path / "street.npz")
    cloud = read_cloud(tmp_path / "street.npz")
    semantics = read_scan_semantics(tmp_path / "street.npz")
    with pytest.raises(DatasetFormatError, match="targets must be one of"):
        scan_targets(cloud, semantics, "objects")
    semantics.semantic = semantics.semantic[:-1]
    with pytest.raises(DatasetFormatError, match="semantic has"):
        scan_targets(cloud, semantics, "things")
    np.savez(tmp_path / "no_names.npz", xyz=np.zeros((3, 3), np.float32),
             semantic=np.zeros(3, np.int32))
    with pytest.raises(DatasetFormatError, match="semantic_names"):
        read_scan_semantics(tmp_path / "no_names.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetFormatError, match="not a readable"):
        read_scan_semantics(tmp_path / "broken.npz")
    assert not read_scan_semantics(tmp_path / "scan.ply").has_semantics  # only .npz carry them
