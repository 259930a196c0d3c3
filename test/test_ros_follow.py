"""Follow mode: carrying the last decode onto every new sweep (``annotation.follow``), the
carrying thread's ordering (``annotation.stream``), and the node over real DDS answering every
sweep of a moving sensor with the sweep's own stamp, the clicked object kept.

No timing assertions: the DDS test sends one sweep at a time and waits for its answer; speed
and the share of sweeps answered at 10 Hz are measured by ``benchmarks/bench_follow.py``.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from npiseg_ros.annotation.follow import Follower, move_click, snap_to_object
from npiseg_ros.annotation.stream import SweepStream
from npiseg_ros.core.carry import transform_points


def pose(yaw: float, x: float, y: float = 0.0) -> np.ndarray:
    """(4, 4) rotation about z by ``yaw`` radians, then translation (x, y, 0) metres."""
    c, s = np.cos(yaw), np.sin(yaw)
    matrix = np.eye(4)
    matrix[:2, :2] = [[c, -s], [s, c]]
    matrix[:2, 3] = [x, y]
    return matrix


def world(rng: np.random.Generator, car_x: float) -> tuple[np.ndarray, np.ndarray]:
    """World points: ground, two walls, a pole row and a 4 x 2 x 1.5 m car (label 1) at
    car_x."""
    ground = np.c_[rng.uniform(-25, 25, (8000, 2)), rng.normal(0, 0.01, 8000)]
    wall = np.c_[rng.uniform(-25, 25, 2000), np.full(2000, 14.0), rng.uniform(0, 4, 2000)]
    side = np.c_[np.full(1000, -22.0), rng.uniform(-10, 14, 1000), rng.uniform(0, 4, 1000)]
    poles = np.c_[np.repeat(np.arange(-20, 21, 5.0), 100), np.full(900, -8.0),
                  rng.uniform(0, 3, 900)]
    car = rng.uniform([0, 0, 0.3], [4, 2, 1.8], (1500, 3))
    face = rng.integers(0, 3, 1500)
    car[face == 0, 2], car[face == 1, 1], car[face == 2, 0] = 1.8, 0.0, 4.0
    car += [car_x, 4.0, 0.0]
    return (np.r_[ground, wall, side, poles, car],
            np.r_[np.zeros(11900, np.int64), np.ones(1500, np.int64)])


def sweep(seed: int, sensor: np.ndarray, car_x: float):
    """A new sampling of the world seen from ``sensor`` (fixed <- sensor): (xyz float32 in the
    sensor frame, truth labels)."""
    points, labels = world(np.random.default_rng(seed), car_x)
    return transform_points(np.linalg.inv(sensor), points).astype(np.float32), labels


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def reference_follower(fallback: str = "align"):
    """A follower whose reference is sweep 0 (sensor at the origin, car at x = 2), labelled
    with the truth, uncertainty 0.1 on the car and 0.0 elsewhere, one click on the car."""
    xyz, labels = sweep(0, np.eye(4), 2.0)
    follower = Follower(fallback)
    click = xyz[labels == 1][0]
    follower.set_reference(xyz, labels, np.where(labels == 1, 0.1, 0.0).astype(np.float32),
                           pose=np.eye(4), stamp=0.0, clicks=[(click, 1)])
    return follower, xyz, labels, click


@pytest.mark.parametrize("fallback", ["tf", "align"])
def test_a_driving_car_keeps_its_label_and_its_click_from_a_moving_sensor(fallback):
    follower, _, _, click = reference_follower()
    sensor = pose(0.03, 1.0, 0.2)                     # the sensor drove 1 m and turned
    xyz, truth = sweep(1, sensor, 2.8)                 # the car drove 0.8 m on its own
    answer = follower.carry(xyz, 0.1, sensor if fallback == "tf" else None)
    assert answer.ego_source == fallback and answer.carried
    np.testing.assert_allclose(answer.pose, sensor, atol=0.05)
    assert iou(answer.labels == 1, truth == 1) > 0.9
    # the click moved with the car: 0.8 m along x in the world, then into the new frame
    expected = transform_points(np.linalg.inv(sensor), (click + [0.8, 0.0, 0.0])[None])[0]
    [(position, object_id)] = answer.clicks
    assert object_id == 1 and np.linalg.norm(position - expected) < 0.15


def test_an_older_sweep_carried_after_newer_ones_gets_its_own_pose():
    # the worker carries the sweep it encodes, older than the ones the carrying thread has
    # answered meanwhile: its alignment must start from ITS time, not from the newest pose
    follower, _, _, _ = reference_follower()
    for k in range(1, 7):                              # 1.5 m per sweep, 0.1 s apart
        sensor = pose(0.0, 1.5 * k)
        answer = follower.carry(sweep(k, sensor, 2.0)[0], 0.1 * k)
        np.testing.assert_allclose(answer.pose, sensor, atol=0.1)
    sensor = pose(0.0, 3.0)                            # a new sampling of the time of sweep 2
    answer = follower.carry(sweep(20, sensor, 2.0)[0], 0.2)
    np.testing.assert_allclose(answer.pose, sensor, atol=0.1)


def test_static_fallback_assumes_the_sensor_did_not_move():
    follower, xyz, labels, _ = reference_follower("static")
    answer = follower.carry(xyz[::-1].copy(), 0.1)    # the same points, another order
    assert answer.ego_source == "static"
    np.testing.assert_array_equal(answer.pose, np.eye(4))
    np.testing.assert_array_equal(answer.labels, labels[::-1])


def test_carried_uncertainty_is_the_references_and_unknown_points_get_the_maximum():
    follower, xyz, labels, _ = reference_follower()
    new = np.r_[xyz, [[200.0, 200.0, 0.0], [np.nan, 0.0, 0.0]]].astype(np.float32)
    answer = follower.carry(new, 0.1, np.eye(4))
    assert np.allclose(answer.uncertainty[:-2][labels == 1], 0.1)
    assert np.allclose(answer.uncertainty[:-2][labels == 0][:100], 0.0)
    assert answer.labels[-2] in (0, -1) and answer.uncertainty[-2] == pytest.approx(0.1)
    assert answer.labels[-1] == -1 and np.isnan(answer.uncertainty[-1])


def test_no_reference_no_answer_and_a_bad_fallback_is_refused():
    assert Follower().carry(np.zeros((5, 3), np.float32), 0.0) is None
    with pytest.raises(ValueError, match="ego_fallback must be one of align, static"):
        Follower("odometry")


def test_a_click_on_one_sweep_moves_with_its_object_onto_another():
    follower, _, _, _ = reference_follower()
    sensor_d, sensor_e = pose(0.0, 1.0), pose(0.0, 2.0)
    xyz_d, truth_d = sweep(1, sensor_d, 2.5)           # the car drives 0.5 m per sweep
    xyz_e, truth_e = sweep(2, sensor_e, 3.0)
    shown, encoded = (follower.carry(xyz_d, 0.1, sensor_d), follower.carry(xyz_e, 0.2, sensor_e))
    on_car = xyz_d[truth_d == 1][10]
    moved = move_click(on_car, shown, encoded)
    expected = transform_points(np.linalg.inv(sensor_e) @ sensor_d, on_car[None])[0] + [0.5, 0, 0]
    assert np.linalg.norm(moved - expected) < 0.15
    index = snap_to_object(xyz_e, encoded.labels, moved, 1, 0.5)
    assert index is not None and truth_e[index] == 1
    on_ground = xyz_d[truth_d == 0][0]                 # background: moves with the sensor only
    np.testing.assert_allclose(move_click(on_ground, shown, encoded), transform_points(
        np.linalg.inv(sensor_e) @ sensor_d, on_ground[None])[0], atol=0.05)


def test_snap_to_object_prefers_the_clicks_object_and_respects_the_distance():
    xyz = np.array([[0.0, 0, 0], [0.3, 0, 0], [2.0, 0, 0]], np.float32)
    labels = np.array([0, 1, 1])
    assert snap_to_object(xyz, labels, (0.05, 0, 0), 1, 0.5) == 1   # not the nearer ground
    assert snap_to_object(xyz, labels, (0.05, 0, 0), 2, 0.5) is None
    assert snap_to_object(xyz, labels, (1.0, 0, 0), 1, 0.5) is None


class Sweep:
    """Stand-in for conversions.CloudArrays: points and a stamp."""

    def __init__(self, xyz: np.ndarray, seconds: float) -> None:
        self.xyz = xyz
        self.stamp = type("Stamp", (), {"sec": int(seconds),
                                         "nanosec": int(round(seconds % 1 * 1e9))})()


def test_the_stream_answers_in_stamp_order_and_reanswers_the_sweep_on_screen():
    follower, xyz, labels, _ = reference_follower()
    reported, ready = [], threading.Condition()

    def report(cloud, answer):
        with ready:
            reported.append((cloud, answer))
            ready.notify_all()

    def wait(count):
        with ready:
            assert ready.wait_for(lambda: len(reported) >= count, 30)

    stream = SweepStream(follower, report)
    try:
        old, new = Sweep(xyz, 1.0), Sweep(xyz[::-1].copy(), 2.0)
        stream.offer(new)
        wait(1)
        assert reported[0][0] is new and reported[0][1].carried and stream.shown is new
        # a decode of an OLDER sweep finishes: not shown; the sweep on screen is answered
        # again from the new reference (its labels: the decode's, carried)
        decoded = follower.set_reference(xyz, np.where(labels == 1, 2, 0), np.zeros(len(xyz)),
                                         pose=np.eye(4), stamp=1.0)
        stream.decoded(old, decoded)
        wait(2)
        cloud, answer = reported[1]
        assert cloud is new and answer.carried and answer.reference == decoded.reference
        assert set(np.unique(answer.labels)) == {0, 2}
        # a decode of the sweep on screen (or newer) is shown as it is
        stream.decoded(new, decoded)
        wait(3)
        assert reported[2] == (new, decoded)
        stats = stream.stats
        assert (stats.received, stats.answered, stats.carried) == (1, 3, 2)
    finally:
        stream.stop()


# ---------------------------------------------------------------- the node over DDS
try:
    from npiseg_ros.ros.client import SegmentationClient
    from npiseg_ros.ros.processes import stop_process
    from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,
                                        save_tiny_checkpoint, start_test_node, street_scene)
    HAVE_ROS = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_ROS = False


@pytest.mark.skipif(not HAVE_ROS, reason="rclpy not installed (run scripts/setup.sh)")
def test_the_node_answers_every_sweep_with_its_stamp_and_keeps_the_clicked_box(tmp_path):
    """A sensor driving 0.3 m per sweep past the street scene, no tf (ego by alignment):
    every sweep is answered on ~/segmented with its own stamp, and after one click on box a
    every answer labels that box's clicked point with the click's object."""
    from builtin_interfaces.msg import Time

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    scene, intensity, picks = street_scene(seed=5)
    rng = np.random.default_rng(0)
    target = picks["a"]
    domain = domain_for(__name__)
    with ros_test_context(domain):
        process = start_test_node(tmp_path, checkpoint, domain, cloud_policy="follow")
        client = SegmentationClient("npiseg_follow_client")
        try:
            client.wait_for_node(timeout_s=120)
            answered = {}
            for number in range(8):
                order = rng.permutation(scene.shape[0])   # a new sweep: new point order
                xyz = scene[order] - np.float32([0.3 * number, 0.0, 0.0])
                msg = cloud_msg(xyz, intensity[order])
                msg.header.stamp = Time(sec=100 + number)
                if number == 0:
                    client.publish_cloud_until(msg, lambda s: s.num_points == xyz.shape[0])
                else:
                    client.publish_cloud(msg)

                def answer_of(sec=100 + number):
                    latest = client.latest.get("segmented")
                    return latest if latest is not None and latest.header.stamp.sec == sec \
                        else None
                client.spin_until(answer_of, 60, f"the answer to sweep {number}")
                labels = client.segmented_labels()
                answered[number] = labels[int(np.flatnonzero(order == target)[0])]
                if number == 1:   # click box a where this sweep shows it
                    client.click(tuple(float(v) for v in xyz[np.flatnonzero(order == target)[0]]),
                                 object_id=3, frame_id=FRAME)
                    client.wait_for_state(lambda s: s.num_clicks == 1, what="the click")
                    client.spin_until(lambda: client.segmented_labels()[
                        int(np.flatnonzero(order == target)[0])] == 3, 60, "the click's answer")
            assert all(answered[number] == 3 for number in range(2, 8)), answered
            assert process.poll() is None
        finally:
            client.close()
            stop_process(process)
            print((tmp_path / "node.log").read_text(errors="replace")[-3000:])
