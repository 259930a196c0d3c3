"""Interactive-session speed and memory: scene encode, then per-click decode.

    .venv/bin/python benchmarks/bench_session.py --out benchmarks/results/session.json

For each model preset x scene x sparse-conv backend present, in a fresh subprocess (so peak RSS
is the case's own), repeated in ``--processes`` fresh processes, the cases taking turns (on a
shared VM one process can run ~30-50 % slower than the next): voxel count, scene-encode ms
(``set_cloud``: voxelise, backbone, voxel graph; median over processes x --repeats), per-click ms with S = --samples for
the 1st, 5th and 20th click (median over processes x --click-repeats NEW clicks at that count,
each on a point not clicked before, so each pays its graph search; the model's decode and the
whole ``predict`` incl. full-resolution mapping and the next-click suggestion), peak RSS.
Scenes: the 150k-point coloured room and the 120k-point 64-beam LiDAR-like scan of
``bench_backbone.py``, and ``kitti``: the bundled real 124,668-point SemanticKITTI sweep
(``../shared/data/semantickitti``). Preset ``shipped`` is the default shipped checkpoint
(``npiseg_ros.resources.shipped_checkpoint``: the coarse-decoding model), ``shipped-rgb`` the
one for coloured clouds (``shipped_rgb_checkpoint``: full-resolution decoding); other presets
have random weights (speed does not depend on them, except through how many voxels a prior
model's correction touches). ``--decode-strides 1 4`` also times other decode strides
(``ModelConfig.decode_stride``) with the same weights, ``--voxel-size 0.1`` another voxel size:
speed only (the labels are not what a model trained that way would give). ``--thread``: where
the PyTorch work runs (``THREADS``): ``main`` (default), ``worker`` (as the ROS node runs it)
or ``split`` (models loaded on one thread, used on another: two OpenMP teams, see
docs/backbone.md); ``--checkpoint FILE`` times that checkpoint as preset ``file``.
Goals (issue 9, not tests): per-click ``predict`` <= 50 ms, encode <= 0.5 s, 2 threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import make_lidar, make_room  # noqa: E402
from npiseg_ros.core.sparse.backends import available_backends  # noqa: E402
from npiseg_ros.core.build import build_model, preset_config  # noqa: E402
from npiseg_ros.core.session import SegmentationSession  # noqa: E402

CLICK_COUNTS = (1, 5, 20)
CHECKPOINT_VARIABLE = "NPISEG_BENCH_CHECKPOINT"  # --checkpoint, handed to the case processes
THREADS = {
    "main": "everything on the process's main thread (a library user's script)",
    "worker": "the model loaded and the session run on one other thread (the ROS node: its "
              "worker thread does all of its PyTorch work)",
    "split": "the model loaded on the main thread, the session run on another (the node "
             "before 2026-12-06: two OpenMP thread teams)",
}


KITTI_SWEEP = (Path(__file__).resolve().parents[2]
               / "shared/data/semantickitti/sequences/00/velodyne/000000.bin")


def scene(name: str) -> dict:
    if name == "kitti":
        return {"xyz": np.fromfile(KITTI_SWEEP, np.float32).reshape(-1, 4)[:, :3].copy()}
    if name == "room":
        xyz, rgb = make_room()
        return {"xyz": xyz, "colors": rgb.astype(np.float32)}
    return {"xyz": make_lidar()}


def run_case(preset: str, scene_name: str, backend: str, samples: int, repeats: int,
             decode_stride: int = 0, click_repeats: int = 5, voxel_size: float = 0.0,
             thread: str = "main") -> dict:
    """One case in this process, on the thread(s) ``thread`` names (see ``THREADS``)."""
    model = _load(preset, backend) if thread == "split" else None

    def work() -> dict:
        return _run_case(model or _load(preset, backend), scene_name, samples, repeats,
                         decode_stride, click_repeats, voxel_size)

    row = work() if thread == "main" else _on_new_thread(work)
    return {"preset": preset, "backend": backend, "thread": thread, **row}


def _on_new_thread(work):
    """``work()`` run on a new thread; its result, or its exception re-raised here."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # re-raised on the calling thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="bench-worker")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _load(preset: str, backend: str):
    torch.manual_seed(0)
    if preset in ("shipped", "shipped-rgb", "file"):  # default model / coloured clouds' / file
        from npiseg_ros.core.checkpoint import load_model
        from npiseg_ros.resources import shipped_checkpoint, shipped_rgb_checkpoint

        path = {"shipped": shipped_checkpoint, "shipped-rgb": shipped_rgb_checkpoint,
                "file": lambda: os.environ.get(CHECKPOINT_VARIABLE, "")}[preset]()
        if not path:
            raise SystemExit(f"no {preset} checkpoint is installed")
        model = load_model(path, backend=backend)
    else:
        model = build_model(preset_config(preset), backend=backend)
    return model


def _run_case(model, scene_name: str, samples: int, repeats: int, decode_stride: int,
              click_repeats: int, voxel_size: float) -> dict:
    if decode_stride:
        model.config = dataclasses.replace(model.config, decode_stride=decode_stride)
    session = SegmentationSession(model, device="cpu", num_samples=samples, seed=0,
                                  voxel_size=voxel_size or None)
    cloud = scene(scene_name)
    encode_ms = []
    for _ in range(repeats + 1):  # first run warms allocator and kernel-map code paths
        summary = session.set_cloud(**cloud)
        encode_ms.append(summary.encode_ms)
    rng = np.random.default_rng(0)
    points = rng.choice(len(cloud["xyz"]), size=max(CLICK_COUNTS) * (click_repeats + 1),
                        replace=False)
    spare = iter(points[max(CLICK_COUNTS):])
    decode_ms: dict[int, list[float]] = {}
    predict_ms: dict[int, list[float]] = {}
    for count in range(1, max(CLICK_COUNTS) + 1):
        # 4 objects clicked in turn, every 5th click a background click.
        object_id = 0 if count % 5 == 0 else 1 + count % 4
        if count in CLICK_COUNTS:
            # the count-th click, click_repeats times on points never clicked before (so each
            # pays its own graph search, like a user's click), each undone again
            for _ in range(click_repeats):
                session.add_click(point_index=int(next(spare)), object_id=object_id)
                start = time.perf_counter()
                prediction = session.predict()
                predict_ms.setdefault(count, []).append((time.perf_counter() - start) * 1e3)
                decode_ms.setdefault(count, []).append(prediction.decode_ms)
                session.undo()
        session.add_click(point_index=int(points[count - 1]), object_id=object_id)
        session.predict()
    return {
        "scene": scene_name, "samples": samples,
        "decode_stride": model.config.decode_stride, "voxel_size": session.voxel_size,
        "decode_tokens": session.num_decode_tokens,
        "points": int(summary.num_points), "voxels": int(summary.num_voxels),
        "encode_ms": encode_ms[1:],
        "encode_ms_median": statistics.median(encode_ms[1:]), "encode_ms_min": min(encode_ms[1:]),
        "decode_ms_after_clicks": decode_ms, "predict_ms_after_clicks": predict_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "threads": torch.get_num_threads(),
    }


def _merge(runs: list[dict]) -> dict:
    """One case's processes -> one row: every sample kept, medians over all of them."""
    row = {key: value for key, value in runs[0].items() if not key.startswith(("encode_ms",
                                                                               "decode_ms",
                                                                               "predict_ms"))}
    row["processes"] = len(runs)
    row["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    row["encode_ms"] = [v for run in runs for v in run["encode_ms"]]
    row["encode_ms_median"] = statistics.median(row["encode_ms"])
    for name in ("decode_ms", "predict_ms"):
        samples = {c: [v for run in runs for v in run[f"{name}_after_clicks"][str(c)]]
                   for c in CLICK_COUNTS}
        row[f"{name}_after_clicks"] = samples
        row[f"{name}_median"] = {c: statistics.median(v) for c, v in samples.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--scenes", nargs="+", default=["room", "lidar"])
    parser.add_argument("--backends", nargs="+", default=None,
                        help="default: every backend importable here")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-strides", nargs="+", type=int, default=[0],
                        help="decode strides to time (0 = the model's own)")
    parser.add_argument("--voxel-size", type=float, default=0.0,
                        help="voxel edge in metres (0 = the model's own); another size times "
                             "the model where it was not trained: speed only")
    parser.add_argument("--processes", type=int, default=3,
                        help="fresh processes per case (their speed differs by up to ~30-50 %% "
                             "on a shared VM); medians are over all processes' samples")
    parser.add_argument("--click-repeats", type=int, default=5,
                        help="new clicks timed at each click count, per process")
    parser.add_argument("--thread", nargs="+", choices=sorted(THREADS), default=["main"],
                        help="where the PyTorch work runs: " + "; ".join(
                            f"{name}: {text}" for name, text in THREADS.items()))
    parser.add_argument("--checkpoint", type=Path,
                        help="a .safetensors model, timed as preset 'file'")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/session.json"))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        preset, scene_name, backend, stride, thread = args.case.split(":")
        print(json.dumps(run_case(preset, scene_name, backend, args.samples, args.repeats,
                                  int(stride), args.click_repeats, args.voxel_size, thread)))
        return
    if args.checkpoint is not None:
        os.environ[CHECKPOINT_VARIABLE] = str(args.checkpoint.resolve())
        if "file" not in args.presets:
            args.presets.append("file")
    backends = args.backends or available_backends()
    results = []
    header = (f"{'preset':11} {'scene':6} {'backend':8} {'thread':6} {'stride':>6} {'voxels':>7} "
              f"{'tokens':>7} {'encode ms':>10} "
              + " ".join(f"{'dec@' + str(c):>8}" for c in CLICK_COUNTS) + " "
              + " ".join(f"{'pred@' + str(c):>8}" for c in CLICK_COUNTS) + f" {'RSS MB':>7}")
    print(header)
    cases = list(itertools.product(args.presets, args.scenes, backends, args.decode_strides,
                                   args.thread))
    runs: dict[tuple, list[dict]] = {case: [] for case in cases}
    failed: set[tuple] = set()
    # Processes are the outer loop: the cases take turns, so a slow spell of a shared machine
    # falls on all of them alike instead of on one case.
    for _ in range(args.processes):
        for case in cases:
            if case in failed:
                continue
            command = [sys.executable, __file__, "--case", ":".join(map(str, case)),
                       "--samples", str(args.samples), "--repeats", str(args.repeats),
                       "--threads", str(args.threads), "--click-repeats", str(args.click_repeats),
                       "--voxel-size", str(args.voxel_size)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{' '.join(map(str, case))}: FAILED\n{done.stderr[-2000:]}")
                failed.add(case)
                continue
            runs[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for case in cases:
        if case in failed:
            continue
        preset, scene_name, backend, _, thread = case
        row = _merge(runs[case])
        results.append(row)
        decodes = " ".join(f"{row['decode_ms_median'][c]:8.0f}" for c in CLICK_COUNTS)
        predicts = " ".join(f"{row['predict_ms_median'][c]:8.0f}" for c in CLICK_COUNTS)
        print(f"{preset:11} {scene_name:6} {backend:8} {thread:6} {row['decode_stride']:6d} "
              f"{row['voxels']:7d} {row['decode_tokens']:7d} "
              f"{row['encode_ms_median']:10.0f} {decodes} {predicts} "
              f"{row['peak_rss_mb']:7.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": args.threads,
                    "cuda": torch.cuda.is_available()},
        "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
