"""The scripted user of the demo: a separate ROS process that publishes a LiDAR scan and clicks
objects one by one from the ground truth, like the evaluation's click simulator.

Run by :mod:`npiseg_ros.ros.demo`; standalone (with a node already running):
``python -m npiseg_ros.ros.demo_user --scan PATH.bin --out out/demo``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from std_msgs.msg import Header

from npiseg_ros.eval.cloud import LabelledCloud
from npiseg_ros.eval.metrics import object_ious
from npiseg_ros.eval.simulator import initial_clicks, next_click
from npiseg_ros.ros import conversions
from npiseg_ros.ros.client import SegmentationClient
from npiseg_ros.ros.processes import PACKAGE_ROOT
from npiseg_ros.srv import SaveAnnotation

DEFAULT_SCAN = PACKAGE_ROOT.parent / "shared/data/semantickitti/sequences/00/velodyne/000000.bin"
"""The real SemanticKITTI scan shipped beside the repository (``../shared/data/...``)."""

SCAN_FRAME = "velodyne"


@dataclass(frozen=True)
class Target:
    """The demo's target objects: ground truth remapped to 0 (rest) and 1..K (targets)."""

    cloud: LabelledCloud
    ground_truth: np.ndarray       # (N,) int64, 0 or 1..K
    names: tuple[str, ...]         # name of target k at index k - 1


@dataclass(frozen=True)
class ClickReport:
    """One click of the demo, as printed and written to ``demo_summary.json``."""

    click: int
    target: int                    # 1..K, or 0 for a background click
    object_id: int                 # id given to the node (0 = background)
    point_index: int
    latency_ms: float              # click published -> its ~/segmented received (the labels)
    state_latency_ms: float        # click published -> labels and ~/state received (the node
                                   # publishes the state after the click's autosave is written)
    decode_ms: float               # decoder time reported by the node
    mean_iou: float
    ious: list[float]


def load_scene(scan: Path | None, num_objects: int, max_range_m: float) -> Target:
    """A SemanticKITTI scan (with its .label file) or the synthetic scene, and K targets.

    Targets are the K largest "thing" instances (cars, people, ...) within ``max_range_m`` of
    the sensor, falling back to the largest objects of any kind when there are fewer.
    """
    if scan is None:
        from npiseg_ros.eval.synthetic import boxes_on_ground

        cloud = boxes_on_ground(max(num_objects, 1) + 2, seed=0, spacing=0.08,
                                ground_size=20.0, with_colors=False)
        cloud = LabelledCloud(xyz=cloud.xyz, labels=cloud.labels,
                              intensity=np.full(cloud.xyz.shape[0], 0.5, np.float32),
                              names={k: f"box {k}" for k in np.unique(cloud.labels) if k})
    else:
        from npiseg_ros.eval.readers import read_semantickitti

        sequence_dir = scan.parent.parent
        cloud = read_semantickitti(sequence_dir.parent.parent, sequence_dir.name, scan.stem)
    near = np.linalg.norm(cloud.xyz[:, :2], axis=1) <= max_range_m
    counts = np.bincount(cloud.labels[near], minlength=cloud.labels.max() + 1)
    things = [k for k in cloud.things if counts[k] >= 50]
    pool = things if len(things) >= num_objects else [k for k in range(1, len(counts))
                                                      if counts[k] >= 50]
    chosen = sorted(pool, key=lambda k: -counts[k])[:num_objects]
    ground_truth = np.zeros(cloud.labels.shape[0], np.int64)
    for rank, label in enumerate(chosen, start=1):
        ground_truth[cloud.labels == label] = rank
    names = tuple(cloud.names.get(label, str(label)) for label in chosen)
    return Target(cloud=cloud, ground_truth=ground_truth, names=names)


def render(path: Path, xyz: np.ndarray, labels: np.ndarray, uncertainty: np.ndarray,
           clicks: list[tuple[int, int]], ground_truth: np.ndarray,
           to_object: dict[int, int], title: str) -> None:
    """Top-down PNG around the targets: ground truth, the node's labels, per-point uncertainty.

    ``clicks``: (point index, object id) so far, drawn as crosses (black = background);
    ``to_object`` maps target k to the node's object id so both label panels share colours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    focus = xyz[ground_truth > 0, :2]
    low, high = focus.min(axis=0) - 8.0, focus.max(axis=0) + 8.0
    inside = np.all((xyz[:, :2] >= low) & (xyz[:, :2] <= high), axis=1) & np.isfinite(xyz[:, 0])
    x, y = xyz[inside, 0], xyz[inside, 1]
    truth_ids = np.array([to_object.get(int(k), 0) for k in range(ground_truth.max() + 1)])
    figure, axes = plt.subplots(1, 3, figsize=(18, 6), dpi=100)
    for axis, ids, name in ((axes[0], truth_ids[ground_truth], "ground truth targets"),
                            (axes[1], np.where(labels < 0, 0, labels), "node labels")):
        shown_ids = ids[inside]
        colours = conversions.label_colors(shown_ids) / 255.0
        for points, size in ((shown_ids == 0, 0.5), (shown_ids > 0, 4.0)):  # objects on top
            axis.scatter(x[points], y[points], c=colours[points], s=size, linewidths=0)
        axis.set_title(f"{name} (grey = background)")
    shown = axes[2].scatter(x, y, c=uncertainty[inside], s=0.6, linewidths=0, cmap="inferno")
    figure.colorbar(shown, ax=axes[2], shrink=0.8, label="uncertainty")
    axes[2].set_title("per-point uncertainty")
    for axis in axes:
        for index, object_id in clicks:
            colour = (np.array(conversions.object_color(object_id)) / 255.0 if object_id
                      else np.zeros(3))
            axis.scatter(xyz[index, 0], xyz[index, 1], marker="X", s=90, c=[colour],
                         edgecolors="white", linewidths=0.8)
        axis.set_aspect("equal")
        axis.set_xlim(low[0], high[0])
        axis.set_ylim(low[1], high[1])
        axis.set_xlabel("x (m)")
        axis.set_ylabel("y (m)")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _wait_result(client: SegmentationClient, clicks_expected: int, errors_before: int,
                 segmented_before: int):
    """Wait for the node's answer to one click: new labels + state, or a rejection."""
    def answered():
        state = client.latest.get("state")
        if state is None:
            return None
        if state.error_count > errors_before:
            return state
        if state.num_clicks == clicks_expected and client.counts["segmented"] > segmented_before:
            return state
        return None
    return client.spin_until(answered, 300.0, f"the result of click {clicks_expected}")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scan = None if args.synthetic else Path(args.scan)
    if scan is not None and not scan.is_file():
        print(f"scan {scan} not found; pass --scan PATH.bin or --synthetic", file=sys.stderr)
        return 2
    target = load_scene(scan, args.objects, args.max_range)
    cloud, ground_truth = target.cloud, target.ground_truth
    xyz = cloud.xyz
    num_targets = len(target.names)
    print(f"[user] scene: {xyz.shape[0]} points, targets: "
          + ", ".join(f"{k}={name}" for k, name in enumerate(target.names, start=1)))

    client = SegmentationClient("npiseg_demo_user")
    client.wait_for_node(timeout_s=180)
    intensity = (cloud.intensity if cloud.intensity is not None
                 else np.zeros(xyz.shape[0], np.float32))
    message = conversions.arrays_to_cloud(Header(frame_id=SCAN_FRAME), [
        ("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2]), ("intensity", intensity)])
    start = time.perf_counter()
    state = client.publish_cloud_until(message, lambda s: s.num_points == xyz.shape[0], 300.0)
    print(f"[user] cloud of {len(message.data) / 1e6:.1f} MB taken by the node in "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms (encode {state.last_encode_ms:.0f} ms, "
          f"{state.num_voxels} voxels)")

    to_object: dict[int, int] = {0: 0}      # target k -> node object id
    prediction = np.zeros_like(ground_truth)
    reports: list[ClickReport] = []
    clicks_so_far: list[tuple[int, int]] = []
    plan = list(initial_clicks(xyz, ground_truth))
    png_after = {1, len(plan), args.clicks}
    while len(reports) < args.clicks:
        simulated = plan.pop(0) if plan else next_click(xyz, ground_truth, prediction)
        if simulated is None:
            print("[user] the prediction equals the ground truth: done")
            break
        if simulated.label not in to_object:
            to_object[simulated.label] = client.call("new_object").object_id
        object_id = to_object[simulated.label]
        errors = client.latest["state"].error_count
        segmented = client.counts["segmented"]
        sent = time.perf_counter()
        client.click(tuple(float(v) for v in xyz[simulated.point_index]), object_id=object_id,
                     background=object_id == 0, frame_id=SCAN_FRAME)
        state = _wait_result(client, len(reports) + 1, errors, segmented)
        state_latency_ms = (time.perf_counter() - sent) * 1e3
        latency_ms = (client.received_at["segmented"] - sent) * 1e3
        if state.error_count > errors:
            print(f"[user] click rejected: {state.last_error}")
            break
        labels = client.segmented_labels().astype(np.int64)
        lookup = np.zeros(max(int(labels.max()), *to_object.values()) + 1, np.int64)
        for k, oid in to_object.items():
            lookup[oid] = k
        prediction = lookup[labels]
        ious = object_ious(ground_truth, prediction, num_targets)
        report = ClickReport(len(reports) + 1, simulated.label, object_id,
                             simulated.point_index, round(latency_ms, 1),
                             round(state_latency_ms, 1),
                             round(float(state.last_decode_ms), 1), round(float(ious.mean()), 4),
                             [round(float(v), 4) for v in ious])
        reports.append(report)
        clicks_so_far.append((simulated.point_index, object_id))
        kind = f"object {object_id}" if object_id else "background"
        print(f"[user] click {report.click:2d}  {kind:<12s} latency {latency_ms:7.1f} ms  "
              f"(decode {report.decode_ms:6.1f} ms, state {state_latency_ms:6.1f} ms)  "
              f"mIoU {report.mean_iou:.3f}  "
              f"IoU {' '.join(f'{v:.2f}' for v in ious)}", flush=True)
        if report.click in png_after:
            uncertainty = conversions.cloud_to_arrays(client.latest["uncertainty"]).intensity
            path = out / f"click_{report.click:02d}.png"
            render(path, xyz, labels.astype(np.int64), uncertainty, clicks_so_far, ground_truth,
                   to_object, f"after click {report.click}: mIoU {report.mean_iou:.3f}")
            print(f"[user] wrote {path}")

    saved = []
    for fmt in ("npz", "ply", "label"):
        response = client.call("save_annotation", SaveAnnotation.Request(
            path=str((out / f"annotation.{fmt}").absolute()), format=fmt))
        print(f"[user] save_annotation {fmt}: {response.message}")
        saved.append(response.path)
    summary = {"points": int(xyz.shape[0]), "targets": list(target.names),
               "clicks": [asdict(r) for r in reports], "annotation": saved,
               "median_latency_ms": float(np.median([r.latency_ms for r in reports]))
               if reports else None,
               "median_state_latency_ms": float(np.median([r.state_latency_ms
                                                           for r in reports]))
               if reports else None}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    client.close()
    return 0 if reports else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", default=str(DEFAULT_SCAN),
                        help="SemanticKITTI velodyne .bin with labels/<frame>.label beside it")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the project's synthetic scene instead of a scan")
    parser.add_argument("--out", default="out/demo", help="folder for PNGs and annotations")
    parser.add_argument("--objects", type=int, default=4, help="objects to segment")
    parser.add_argument("--clicks", type=int, default=10, help="total clicks")
    parser.add_argument("--max-range", type=float, default=25.0,
                        help="pick target objects within this distance of the sensor, metres")
    return parser.parse_args(rclpy.utilities.remove_ros_args(argv or sys.argv)[1:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rclpy.init(args=argv)
    try:
        return run(args)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
