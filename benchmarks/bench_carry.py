"""Follow mode's per-sweep cost on one core: carrying a segmentation onto a new sweep, packing
the two output clouds.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/bench_carry.py \
        --out benchmarks/results/carry.json

The carrying thread of the node's follow mode (``annotation/stream.py``) answers every sweep of
a 10 Hz LiDAR: it carries the last segmentation onto the sweep (``core.carry.carry_labels``
through ``annotation.follow.Follower.carry``) and publishes ``~/segmented`` and
``~/uncertainty`` (``ros.label_outputs``). This times those steps alone, without DDS, on the
bundled 124,668-point SemanticKITTI sweep (``../shared/data/semantickitti``, sequence 00 frame
000000) as ``bench_follow.py``'s stand-in driver makes its sweeps: each sweep is the scan with
10 % of its points dropped at random and 1 cm of noise; the new sweep is seen from a sensor
moved ``--step-m`` forward, a fifth of that sideways and turned ``--yaw-deg``. The segmentation
of the previous sweep: the ``--objects`` cars nearest the sensor with >= 50 points (the scan's
instance labels), background 0, uncertainty uniform random.

Cases (median and min ms over ``--repeats``; nothing is a pass/fail threshold):

* ``carry_tf``: ``carry_labels`` with the ego motion given (tf);
* ``carry_align``: ``carry_labels`` without it (the two sweeps aligned from scratch);
* ``follow_tf``: ``Follower.carry`` with a tf pose (adds the carried uncertainty and clicks);
* ``follow_align``: ``Follower.carry`` without tf, the steady state of a drive (LiDAR odometry
  against the sweep answered before, then the carry), each repeat on the drive's next sweep;
* ``pack``: the carrying thread's ``LabelPublishers.publish_answer`` for a new sweep (x, y, z
  packed, label / uncertainty / colour columns, both messages, the markers) with publishers
  that serialise each message as rclpy's ``publish`` does (no DDS).

The carried labels' agreement with the scan's truth (IoU per object, share of the sweep's
points labelled as the truth says) is printed and written beside the timings, so a faster
carry can be checked for the same accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from npiseg_ros.annotation.follow import Follower  # noqa: E402
from npiseg_ros.core.carry import carry_labels, transform_points  # noqa: E402
from npiseg_ros.eval.readers import read_semantickitti  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def sensor_pose(step: int, step_m: float, yaw_deg: float) -> np.ndarray:
    """Fixed <- sensor of the drive's ``step``-th sweep: forward, a little sideways, turning."""
    yaw = np.radians(yaw_deg) * step
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    pose[:3, 3] = [step_m * step, 0.2 * step_m * step, 0.0]
    return pose


def sweep(world: np.ndarray, truth: np.ndarray, pose: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The scan seen from ``pose``: 10 % of the points dropped, 1 cm noise (float32, sensor
    frame) and the truth of the points kept."""
    keep = rng.random(world.shape[0]) > 0.1
    xyz = transform_points(np.linalg.inv(pose), world[keep])
    xyz += rng.normal(0.0, 0.01, xyz.shape)
    return xyz.astype(np.float32), truth[keep]


def segmentation(scan, objects: int) -> np.ndarray:
    """(N,) int64: the ``objects`` cars nearest the sensor with >= 50 points as ids 1..k."""
    cars = []
    for target in scan.things:
        members = scan.labels == target
        if scan.names.get(target, "").startswith("car") and members.sum() >= 50:
            cars.append((float(np.linalg.norm(scan.xyz[members].mean(axis=0)[:2])), target))
    truth = np.zeros(scan.xyz.shape[0], np.int64)
    for object_id, (_, target) in enumerate(sorted(cars)[:objects], start=1):
        truth[scan.labels == target] = object_id
    return truth


def accuracy(carried: np.ndarray, truth: np.ndarray) -> dict:
    """IoU of every object of ``truth`` with the carried labels, and the share of points whose
    carried label is the truth (unsupported points count as wrong)."""
    ious = {}
    for object_id in np.unique(truth[truth > 0]):
        a, b = carried == object_id, truth == object_id
        ious[int(object_id)] = round(float((a & b).sum() / max((a | b).sum(), 1)), 4)
    return {"object_iou": ious, "agreement": round(float((carried == truth).mean()), 5),
            "unsupported": int((carried < 0).sum())}


def timed(function, repeats: int) -> tuple[dict, object]:
    """Median and min ms of ``function(i)`` over ``repeats`` calls, and the last result."""
    times, result = [], None
    for repeat in range(repeats):
        start = time.perf_counter()
        result = function(repeat)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1)}, result


class _SerialisingPublisher:
    """Stands in for an rclpy publisher: converts and serialises the message as ``publish``
    does, sends it nowhere."""

    def publish(self, msg) -> None:
        from rclpy.serialization import serialize_message

        serialize_message(msg)


class _Node:
    def create_publisher(self, *args, **kwargs) -> _SerialisingPublisher:
        return _SerialisingPublisher()


def pack_case(answers: list, repeats: int) -> dict:
    """``publish_answer`` of a new sweep per repeat (the carrying thread packs every sweep)."""
    from builtin_interfaces.msg import Time
    from rclpy.qos import QoSProfile

    from npiseg_ros.ros.conversions import CloudArrays
    from npiseg_ros.ros.label_outputs import LabelPublishers
    from npiseg_ros.ros.worker_types import SweepAnswer

    publishers = LabelPublishers(_Node(), QoSProfile(depth=1))
    publishers.publish_answer(SweepAnswer.of(      # warm-up: imports, typesupport
        CloudArrays(answers[0].xyz, None, None, 1, answers[0].xyz.shape[0], "velodyne",
                    Time(sec=0)), answers[0]))
    clouds = [CloudArrays(answer.xyz, None, None, 1, answer.xyz.shape[0], "velodyne",
                          Time(sec=number + 1)) for number, answer in enumerate(answers)]

    def publish(repeat: int) -> None:
        answer = answers[repeat % len(answers)]
        publishers.publish_answer(SweepAnswer.of(clouds[repeat % len(clouds)], answer))

    return timed(publish, repeats)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--objects", type=int, default=6,
                        help="cars of the segmentation (nearest first, >= 50 points each)")
    parser.add_argument("--step-m", type=float, default=0.75,
                        help="sensor motion between two sweeps, metres")
    parser.add_argument("--yaw-deg", type=float, default=1.0,
                        help="sensor turn between two sweeps, degrees")
    parser.add_argument("--no-pack", action="store_true", help="skip the packing case")
    parser.add_argument("--out", default="", help="write the results as JSON")
    args = parser.parse_args(argv)

    scan = read_semantickitti(SHARED / "semantickitti", "00", "000000")
    world = scan.xyz.astype(np.float64)
    truth = segmentation(scan, args.objects)
    rng = np.random.default_rng(0)
    # the drive: sweep 0 is the reference (segmented), every later one a step further
    drive = [sweep(world, truth, sensor_pose(step, args.step_m, args.yaw_deg), rng)
             for step in range(args.repeats + 2)]
    previous, previous_truth = drive[0]
    current, current_truth = drive[1]
    uncertainty = rng.uniform(0.0, 1.0, previous.shape[0]).astype(np.float32)
    ego = np.linalg.inv(sensor_pose(1, args.step_m, args.yaw_deg)) @ sensor_pose(
        0, args.step_m, args.yaw_deg)

    result: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_1min": round(os.getloadavg()[0], 2),   # other jobs slow the timings
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "points": {"previous": int(previous.shape[0]), "new": int(current.shape[0])},
        "objects": {int(i): int((previous_truth == i).sum())
                    for i in np.unique(previous_truth[previous_truth > 0])},
        "cases": {}, "accuracy": {},
    }
    cases, checks = result["cases"], result["accuracy"]

    cases["carry_tf"], carried = timed(
        lambda _: carry_labels(previous, previous_truth, current, ego), args.repeats)
    checks["carry_tf"] = accuracy(carried.labels, current_truth)
    cases["carry_align"], carried = timed(
        lambda _: carry_labels(previous, previous_truth, current), args.repeats)
    checks["carry_align"] = accuracy(carried.labels, current_truth)
    checks["carry_align"]["ego_error_m"] = round(float(np.abs(carried.ego - ego)[:3, 3].max()), 4)

    follower = Follower("align")
    follower.set_reference(previous, previous_truth, uncertainty, pose=np.eye(4), stamp=0.0)
    cases["follow_tf"], answer = timed(lambda _: follower.carry(
        current, 0.1, sensor_pose(1, args.step_m, args.yaw_deg)), args.repeats)
    checks["follow_tf"] = accuracy(answer.labels, current_truth)

    # a drive without tf: the first sweep is aligned from scratch (no motion known yet), each
    # later one by odometry against the sweep answered before it
    follower = Follower("align")
    follower.set_reference(previous, previous_truth, uncertainty, pose=np.eye(4), stamp=0.0)
    follower.carry(current, 0.1)
    answers = []

    def follow_align(repeat: int):
        answer = follower.carry(drive[repeat + 2][0], 0.1 * (repeat + 2))
        answers.append(answer)
        return answer

    cases["follow_align"], answer = timed(follow_align, args.repeats)
    checks["follow_align"] = accuracy(answer.labels, drive[-1][1])
    checks["follow_align"]["pose_error_m"] = round(float(np.abs(
        answer.pose - sensor_pose(args.repeats + 1, args.step_m, args.yaw_deg))[:3, 3].max()), 4)

    if not args.no_pack:
        cases["pack"] = pack_case(answers, args.repeats)

    width = max(len(name) for name in cases)
    for name, numbers in cases.items():
        line = (f"{name:<{width}}  median {numbers['median_ms']:7.1f} ms  "
                f"min {numbers['min_ms']:7.1f} ms")
        if name in checks:
            ious = checks[name]["object_iou"]
            line += (f"  agreement {checks[name]['agreement']:.4f}  object IoU min "
                     f"{min(ious.values()):.3f} median {statistics.median(ious.values()):.3f}")
        print(line, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
