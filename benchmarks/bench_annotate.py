"""npiseg-annotate over HTTP, as the page uses it: click -> labels, and the next frame.

Starts ``python -m npiseg_ros.annotate`` (a separate process, whole sweeps: no --max-range) on
a five-frame KITTI folder made from the bundled SemanticKITTI sweep (frame 0 = the sweep,
frames 1-4 = the same sweep seen after the sensor moved 0.5 m and turned 1 degree per frame,
5 % of the points dropped: sweeps of the same size, not the same bytes), and measures:

- click -> labels: ``POST api/click`` (a point index) + ``GET api/labels`` (the page's two
  requests), clicks on the ``--click-objects`` largest cars of the sweep (a new object per
  car, then corrections on each in turn), one every ``--gap`` seconds (a quick person);
- next frame: ``POST api/step`` + ``GET api/cloud`` + ``GET api/labels`` once the page's
  server has encoded the next frame in the background (``next_ready``), and the same without
  waiting for it (the encode is then in the step);
- the decode time the server reports per click.

and (``--parts tracking``) tracking on a real drive: the PandaSet training frames
``../shared/data/real/lidar/train/pandaset_002_*.npz`` in order (0.4 s apart; no poses, so
the ego motion is estimated from the sweeps), truth = ``scan_targets(..., 'things')``. In the
first frame the largest ``--objects`` things are labelled by npiseg-eval's click simulator
(one click each, then its corrections, ``--first-clicks`` in all); the workspace then steps
through the frames with ``--carry masks`` and with ``--carry clicks`` and no more clicks, and
each object's IoU with its truth instance is recorded per frame. The truth instance of an
object is followed by its centroid (the nearest instance centroid within 3 m of the one
before: the files' instance ids are not kept in every frame); an object with none is left
out of that frame's mean.

Prints a summary and writes JSON (every sample) to ``--out``.

    .venv/bin/python benchmarks/bench_annotate.py --out benchmarks/results/annotate.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO.parent / "shared/data/semantickitti/sequences/00/velodyne/000000.bin"
LABELS = SWEEP.parent.parent / "labels" / "000000.label"
FRAMES = 5


def _moved(raw: np.ndarray, step: int, rng: np.random.Generator) -> np.ndarray:
    """The sweep (N, 4) seen from a sensor ``step`` * (0.5 m, 1 degree) further."""
    angle = np.radians(1.0 * step)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    moved = raw.copy()
    moved[:, :2] = (raw[:, :2] - [0.5 * step, 0.0]) @ rotation.T
    keep = rng.random(raw.shape[0]) >= 0.05
    return np.ascontiguousarray(moved[keep])


def _request(url: str, action: str | None = None, body: dict | None = None) -> bytes:
    if action is None:
        request = urllib.request.Request(url)
    else:
        request = urllib.request.Request(url + "api/" + action, method="POST",
                                         data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read()


def _state(url: str) -> dict:
    return json.loads(_request(url + "api/state"))


def _wait(url: str, condition, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(url)
        if condition(state):
            return state
        time.sleep(0.05)
    raise TimeoutError("the server did not reach the expected state")


def _targets(num_clicks: int, num_objects: int) -> list[tuple[str, int]]:
    """(action, point index): a new object per car (the ``num_objects`` largest) clicked at its
    middle, then corrections: on each car in turn its point farthest from the clicks so far."""
    raw = np.fromfile(SWEEP, "<f4").reshape(-1, 4)
    words = np.fromfile(LABELS, "<u4")
    semantic, instance = words & 0xFFFF, words >> 16
    cars = [i for i in np.unique(instance[semantic == 10]) if i]
    cars.sort(key=lambda i: -np.sum((instance == i) & (semantic == 10)))
    plan: list[tuple[str, int]] = []
    firsts = {}
    for car in cars[:num_objects]:
        points = np.flatnonzero((instance == car) & (semantic == 10))
        centre = raw[points, :3].mean(axis=0)
        first = int(points[np.argmin(np.linalg.norm(raw[points, :3] - centre, axis=1))])
        firsts[car] = (points, first)
        plan.append(("first", first))
        if len(plan) >= num_clicks:
            return plan
    clicked = {car: [first] for car, (_, first) in firsts.items()}
    while len(plan) < num_clicks:
        for car, (points, _) in firsts.items():
            distance = np.min([np.linalg.norm(raw[points, :3] - raw[c, :3], axis=1)
                               for c in clicked[car]], axis=0)
            far = int(points[np.argmax(distance)])
            clicked[car].append(far)
            plan.append(("correct", far))
            if len(plan) >= num_clicks:
                break
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between clicks")
    parser.add_argument("--click-objects", type=int, default=8,
                        help="objects (cars) the clicks are spread over")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/annotate.json"))
    parser.add_argument("--extra", default="", help="more options for npiseg-annotate")
    parser.add_argument("--parts", default="clicks,tracking")
    parser.add_argument("--frames", type=int, default=10, help="tracking: frames stepped")
    parser.add_argument("--objects", type=int, default=8, help="tracking: objects labelled")
    parser.add_argument("--first-clicks", type=int, default=16,
                        help="tracking: clicks in the first frame (all objects)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict = {}
    if "clicks" in parts:
        result.update(_clicks_part(args))
    if "tracking" in parts:
        result["tracking"] = _tracking_part(args)
    result.update(machine={"cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "load_average_at_end": os.getloadavg()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"load average at the end: {os.getloadavg()} on {os.cpu_count()} CPUs (a busy "
          f"machine makes every time longer) -> {args.out}")
    return 0


def _clicks_part(args) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        velodyne = Path(scratch) / "seq" / "velodyne"
        velodyne.mkdir(parents=True)
        raw = np.fromfile(SWEEP, "<f4").reshape(-1, 4)
        for step in range(FRAMES):
            (raw if step == 0 else _moved(raw, step, rng)).tofile(velodyne / f"{step:06d}.bin")
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # the tool picks its OpenMP wait policy
        process = subprocess.Popen(
            [sys.executable, "-m", "npiseg_ros.annotate", str(velodyne.parent), "--session",
             str(Path(scratch) / "session"), "--port", "0", *args.extra.split()],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            url = None
            for line in process.stdout:
                if "serving http://" in line:
                    url = line.split("serving ", 1)[1].split()[0]
                    break
            if url is None:
                raise RuntimeError("the tool did not start")
            result = _measure(url, args)
        finally:
            process.terminate()
            process.wait(timeout=120)
    result.update(sweep=str(SWEEP), points=int(raw.shape[0]), clicks=args.clicks,
                  click_objects=args.click_objects, gap_s=args.gap)
    click = result["click_to_labels_ms"]
    print(f"click -> labels (POST click + GET labels, {len(click)} clicks): median "
          f"{statistics.median(click):.1f} ms, min {min(click):.1f}, max {max(click):.1f}; "
          f"server decode median {statistics.median(result['decode_ms']):.1f} ms")
    print("next frame (POST step + GET cloud + GET labels), encoded ahead: "
          + ", ".join(f"{v:.0f}" for v in result["next_frame_prefetched_ms"])
          + " ms; not encoded ahead: "
          + ", ".join(f"{v:.0f}" for v in result["next_frame_cold_ms"]) + " ms")
    return result


def _tracking_part(args) -> dict:
    """Object IoU frame to frame on PandaSet with carried masks vs carried clicks."""
    from npiseg_ros.annotate.sources import open_source
    from npiseg_ros.annotate.session import load_shipped_session
    from npiseg_ros.annotate.workspace import Workspace
    from npiseg_ros.eval.readers import read_cloud
    from npiseg_ros.eval.simulator import initial_clicks, next_click
    from npiseg_ros.eval.targets import read_scan_semantics, scan_targets

    files = sorted((REPO.parent / "shared/data/real/lidar/train").glob("pandaset_002_*.npz"))
    files = files[:args.frames]
    truth = [scan_targets(read_cloud(f), read_scan_semantics(f), "things").labels for f in files]
    ids, counts = np.unique(truth[0][truth[0] > 0], return_counts=True)
    chosen = ids[np.argsort(-counts)][:args.objects]           # truth instance per object
    gt0 = np.zeros_like(truth[0])
    for number, instance in enumerate(chosen, start=1):
        gt0[truth[0] == instance] = number
    tracks = _truth_tracks(files, truth, chosen)
    session = load_shipped_session()[0]
    report = {"files": [f.name for f in files], "objects": {}}
    for mode in ("masks", "clicks"):
        with tempfile.TemporaryDirectory() as scratch:
            ws = Workspace(session, scratch, open_source([str(f) for f in files]),
                           source_path=[str(f) for f in files], carry=mode, log=lambda m: 0)
            xyz = ws.frame.xyz
            plan = initial_clicks(xyz, gt0)
            for click in plan:
                ws.set_active(click.label)
                ws.click(point_index=click.point_index)
            while len(ws.annotation.clicks) < args.first_clicks:
                click = next_click(xyz, gt0, np.maximum(ws.prediction.labels, 0))
                if click is None:
                    break
                if click.label:
                    ws.set_active(click.label)
                ws.click(point_index=click.point_index, background=click.label == 0)
            first_clicks = len(ws.annotation.clicks)
            per_frame, seconds = [], []
            for frame in range(len(files)):
                if frame:
                    start = time.perf_counter()
                    ws.step(1)
                    seconds.append(time.perf_counter() - start)
                labels = ws.prediction.labels
                per_frame.append([None if instance is None else
                                  _iou(labels == number, truth[frame] == instance)
                                  for number, instance in enumerate(tracks[frame], start=1)])
            means = [float(np.mean([v for v in row if v is not None])) for row in per_frame]
            report[mode] = {"iou_per_frame_per_object": per_frame, "mean_iou_per_frame": means,
                            "mean_iou_after_first": float(np.mean(means[1:])),
                            "step_s": seconds, "first_frame_clicks": first_clicks}
            print(f"tracking, carry {mode}: mean object IoU per frame "
                  + " ".join(f"{v:.3f}" for v in means) + f" (after the first frame: "
                  f"{report[mode]['mean_iou_after_first']:.3f})")
    report["objects"] = {int(i): int(c) for i, c in zip(ids, counts) if i in set(chosen)}
    report["truth_instances"] = [[None if i is None else int(i) for i in row] for row in tracks]
    return report


def _truth_tracks(files, truth, chosen, reach_m: float = 3.0) -> list[list]:
    """Per frame, the truth instance of each chosen object (None: not found), followed by
    centroid from frame to frame."""
    from npiseg_ros.eval.readers import read_cloud

    tracks = [list(chosen)]
    xyz = read_cloud(files[0]).xyz
    last = [xyz[truth[0] == i].mean(axis=0) for i in chosen]
    for path, labels in zip(files[1:], truth[1:]):
        xyz = read_cloud(path).xyz
        ids = np.unique(labels[labels > 0])
        centres = np.array([xyz[labels == i].mean(axis=0) for i in ids])
        row = []
        for number, centre in enumerate(last):
            distance = np.linalg.norm(centres - centre, axis=1)
            best = int(np.argmin(distance))
            if distance[best] <= reach_m:
                row.append(ids[best])
                last[number] = centres[best]
            else:
                row.append(None)
        tracks.append(row)
    return tracks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _timed_click(url: str, index: int) -> tuple[float, dict]:
    start = time.perf_counter()
    state = json.loads(_request(url, "click", {"point_index": index}))
    labels = _request(url + "api/labels")
    elapsed = (time.perf_counter() - start) * 1e3
    if state["error"] or len(labels) != 8 * state["num_points"]:
        raise RuntimeError(f"click on {index}: {state['error'] or 'labels missing'}")
    return elapsed, state


def _timed_step(url: str, delta: int) -> float:
    start = time.perf_counter()
    state = json.loads(_request(url, "step", {"delta": delta}))
    cloud = _request(url + "api/cloud")
    labels = _request(url + "api/labels")
    elapsed = (time.perf_counter() - start) * 1e3
    if not state["ok"] or len(cloud) != 12 * state["num_points"] or \
            len(labels) != 8 * state["num_points"]:
        raise RuntimeError(f"step {delta}: {state['error']}")
    return elapsed


def _measure(url: str, args) -> dict:
    _wait(url, lambda s: s["ok"] and s["next_ready"])
    clicks, decodes = [], []
    for number, (kind, index) in enumerate(_targets(args.clicks, args.click_objects)):
        if kind == "first" and number > 0:
            _request(url, "new_object")
        time.sleep(args.gap)
        elapsed, state = _timed_click(url, index)
        clicks.append(elapsed)
        decodes.append(state["decode_ms"])
    # next frame with the encode done ahead (waited for, as a person's look at the frame
    # does), then at once the next one, before the background thread could encode it
    prefetched, cold = [], []
    for _ in range(FRAMES // 2):
        _wait(url, lambda s: s["next_ready"])
        prefetched.append(_timed_step(url, 1))
        cold.append(_timed_step(url, 1))
    state = _state(url)
    return {"click_to_labels_ms": clicks, "decode_ms": decodes,
            "next_frame_prefetched_ms": prefetched, "next_frame_cold_ms": cold,
            "objects": len(state["objects"]) - 1}


if __name__ == "__main__":
    sys.exit(main())
