"""Carrying labels from one sweep to the next (ego motion, each object's own motion)."""
from __future__ import annotations

import numpy as np
import pytest

from npiseg_ros.core.carry import carry_labels, rigid_align, transform_points


def _pose(yaw: float, tx: float, ty: float, tz: float = 0.0) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    pose = np.eye(4)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[:3, 3] = [tx, ty, tz]
    return pose


def _scene(rng: np.random.Generator, car_x: float) -> tuple[np.ndarray, np.ndarray]:
    """World points: ground, two walls, a 4 x 2 x 1.5 m box ('car', label 1) at car_x."""
    ground = np.column_stack([rng.uniform(-20, 20, 6000), rng.uniform(-20, 20, 6000),
                              rng.normal(0, 0.01, 6000)])
    wall = np.column_stack([rng.uniform(-20, 20, 3000), np.full(3000, 12.0),
                            rng.uniform(0, 4, 3000)])
    side = np.column_stack([np.full(2000, -15.0), rng.uniform(-12, 12, 2000),
                            rng.uniform(0, 4, 2000)])
    faces = rng.integers(0, 3, 1500)
    car = rng.uniform([0, 0, 0.3], [4, 2, 1.8], (1500, 3))
    car[faces == 0, 2] = 1.8
    car[faces == 1, 1] = 0.0
    car[faces == 2, 0] = 4.0
    car += [car_x, 3.0, 0.0]
    xyz = np.concatenate([ground, wall, side, car])
    labels = np.concatenate([np.zeros(11000, np.int64), np.ones(1500, np.int64)])
    return xyz, labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_rigid_align_recovers_a_yaw_and_translation():
    rng = np.random.default_rng(0)
    world, _ = _scene(rng, 2.0)
    truth = _pose(0.05, 0.8, -0.3)
    result = rigid_align(world, transform_points(truth, world), iterations=30, max_pair_m=2.0)
    assert result.inlier_ratio > 0.95
    np.testing.assert_allclose(result.transform, truth, atol=2e-3)


def test_static_scene_moving_sensor_keeps_the_object():
    rng = np.random.default_rng(1)
    world, labels = _scene(rng, 2.0)
    sensor_before, sensor_after = _pose(0.0, 0.0, 0.0), _pose(0.1, 1.0, 0.5)
    previous = transform_points(np.linalg.inv(sensor_before), world)
    new_world, new_labels = _scene(np.random.default_rng(2), 2.0)   # a new sampling
    current = transform_points(np.linalg.inv(sensor_after), new_world)
    ego = np.linalg.inv(sensor_after) @ sensor_before
    carried = carry_labels(previous, labels, current, ego)
    assert _iou(carried.labels == 1, new_labels == 1) > 0.95
    np.testing.assert_allclose(carried.object_motion[1], ego, atol=0.05)


def test_a_moving_object_is_followed_by_its_own_motion():
    rng = np.random.default_rng(3)
    previous, labels = _scene(rng, 2.0)
    current, new_labels = _scene(np.random.default_rng(4), 2.8)  # the car drove 0.8 m
    tracked = carry_labels(previous, labels, current, np.eye(4))
    untracked = carry_labels(previous, labels, current, np.eye(4), track_objects=False)
    assert _iou(tracked.labels == 1, new_labels == 1) > 0.9
    assert _iou(untracked.labels == 1, new_labels == 1) < 0.7
    assert abs(tracked.object_motion[1][0, 3] - 0.8) < 0.1


def test_ego_motion_is_estimated_when_no_transform_is_given():
    rng = np.random.default_rng(5)
    world, labels = _scene(rng, 2.0)
    motion = _pose(-0.04, 0.6, 0.2)
    carried = carry_labels(world, labels, transform_points(motion, world))
    np.testing.assert_allclose(carried.ego, motion, atol=0.02)
    assert _iou(carried.labels == 1, labels == 1) > 0.95


def test_bad_input_is_refused_and_non_finite_points_are_unknown():
    rng = np.random.default_rng(6)
    world, labels = _scene(rng, 2.0)
    with pytest.raises(ValueError, match="labels"):
        carry_labels(world, labels[:-1], world, np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        carry_labels(world, labels, world, np.eye(3))
    current = world.copy()
    current[:5] = np.nan
    carried = carry_labels(world, labels, current, np.eye(4))
    assert (carried.labels[:5] == -1).all()
    assert set(np.unique(carried.labels[5:]).tolist()) <= {0, 1}
