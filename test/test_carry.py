"""Carrying labels from one sweep to the next (ego motion, each object's own motion), on
synthetic scenes and on the bundled real SemanticKITTI sweep (moved, resampled, one car
driving): the carried cars must match the truth (IoU), whatever the implementation's speed-ups
(column index, subsampled alignments)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npiseg_ros.core.carry import _ColumnIndex, carry_labels, rigid_align, transform_points

KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantickitti"
if not KITTI.is_dir():
    KITTI = Path("/work/shared/data/semantickitti")
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(),
                                 reason=f"SemanticKITTI sample scan not found at {KITTI}")


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
    # a dropped (NaN) point that kept its object's label does not lose the object
    previous = world.copy()
    previous[np.flatnonzero(labels == 1)[:3]] = np.nan
    carried = carry_labels(previous, labels, world, np.eye(4))
    assert _iou(carried.labels == 1, labels == 1) > 0.95


def test_alignment_schedule_split_in_two_calls_is_the_same_alignment():
    rng = np.random.default_rng(7)
    world, _ = _scene(rng, 2.0)
    target = transform_points(_pose(0.02, 1.5, 0.3), world)
    whole = rigid_align(world, target, iterations=10, max_pair_m=2.0, yaw_only=False)
    pair_m = np.linspace(2.0, 2.0 / 3.0, 10)
    first = rigid_align(world, target, iterations=6, max_pair_m=pair_m[0],
                        final_pair_m=pair_m[5], yaw_only=False)
    second = rigid_align(world, target, first.transform, iterations=4, max_pair_m=pair_m[6],
                         final_pair_m=pair_m[9], yaw_only=False)
    np.testing.assert_allclose(second.transform, whole.transform, atol=1e-4)
    assert second.inlier_ratio == pytest.approx(whole.inlier_ratio, abs=1e-3)


def test_column_index_finds_the_points_of_a_ball_like_a_pass_over_the_sweep():
    rng = np.random.default_rng(8)
    xyz = np.concatenate([rng.normal(0, 30, (20000, 3)),          # a sweep around the sensor
                          rng.uniform(-2000, 2000, (500, 3))])    # beyond the grid's columns
    xyz = xyz.astype(np.float32)
    xyz[rng.choice(xyz.shape[0], 300, replace=False)] = np.nan
    valid = np.isfinite(xyz).all(axis=1) & (rng.random(xyz.shape[0]) > 0.1)
    index = _ColumnIndex(xyz, valid)
    centres = np.concatenate([rng.normal(0, 40, (30, 3)), [[390.0, -385.0, 0.0]],
                              [[1500.0, 1500.0, 0.0]], [[2.9999, 3.0, 0.0]]])
    radii = np.r_[rng.uniform(0.5, 12.0, centres.shape[0]), 800.0]    # 800: border columns
    centres = np.concatenate([centres, [[1500.0, 1500.0, 0.0]]])
    distance = np.linalg.norm(xyz.astype(np.float64)[:, None] - centres[None], axis=2)
    for number, (centre, radius) in enumerate(zip(centres, radii)):
        found = index.within(centre, float(radius))
        assert (np.diff(found) > 0).all()        # ascending, each point once
        expected = np.flatnonzero(valid & (distance[:, number] <= radius))
        # the same points, but for float32 rounding at the ball's surface
        differ = np.setxor1d(found, expected)
        assert (np.abs(distance[differ, number] - radius) < 1e-3).all()


# ---------------------------------------------------------------- the real sweep
def _real_sweeps(car_motion: np.ndarray):
    """The bundled SemanticKITTI sweep as two sweeps, as ``benchmarks/bench_carry.py`` makes
    them: 10 % of the points dropped and 1 cm noise each; the second seen from a sensor moved
    0.8 m forward, 0.2 m sideways and turned 1 degree, with car 1 (the nearest) driven by
    ``car_motion`` (x, y, z metres). Objects: the six cars nearest the sensor with >= 50 points
    (ids 1-6, by distance), background 0. Returns (previous xyz, labels, new xyz, new truth,
    previous -> new ego)."""
    from npiseg_ros.eval.readers import read_semantickitti

    scan = read_semantickitti(KITTI, "00", "000000")
    cars = sorted((float(np.linalg.norm(scan.xyz[scan.labels == t].mean(axis=0)[:2])), t)
                  for t in scan.things if scan.names[t].startswith("car")
                  and (scan.labels == t).sum() >= 50)[:6]
    truth = np.zeros(scan.xyz.shape[0], np.int64)
    for object_id, (_, target) in enumerate(cars, start=1):
        truth[scan.labels == target] = object_id
    world = scan.xyz.astype(np.float64)
    rng = np.random.default_rng(0)
    sensor = _pose(np.radians(1.0), 0.8, 0.2)

    def sampled(points: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = rng.random(points.shape[0]) > 0.1
        xyz = transform_points(np.linalg.inv(pose), points[keep])
        return (xyz + rng.normal(0.0, 0.01, xyz.shape)).astype(np.float32), truth[keep]

    previous, labels = sampled(world, np.eye(4))
    moved = world.copy()
    moved[truth == 1] += car_motion
    current, current_truth = sampled(moved, sensor)
    return previous, labels, current, current_truth, np.linalg.inv(sensor)


@needs_kitti
@pytest.mark.parametrize("ego_given", [True, False])
def test_real_sweep_cars_keep_their_labels_from_a_moving_sensor(ego_given):
    car_motion = np.array([0.6, 0.1, 0.0])
    previous, labels, current, truth, ego = _real_sweeps(car_motion)
    carried = carry_labels(previous, labels, current, ego if ego_given else None)
    if not ego_given:   # the ego motion found by aligning the sweeps: about a centimetre off
        assert np.abs(carried.ego - ego)[:3, 3].max() < 0.05
        assert np.abs(carried.ego - ego)[:3, :3].max() < np.radians(0.2)
    ious = [_iou(carried.labels == k, truth == k) for k in range(1, 7)]
    assert min(ious) > 0.97, ious
    assert (carried.labels == truth).mean() > 0.999
    # the driving car was followed: its own motion found, and without it the label is lost
    car_alone = np.linalg.inv(ego) @ carried.object_motion[1]
    np.testing.assert_allclose(car_alone[:3, 3], car_motion, atol=0.1)
    untracked = carry_labels(previous, labels, current, ego, track_objects=False)
    assert _iou(untracked.labels == 1, truth == 1) < ious[0] - 0.1
