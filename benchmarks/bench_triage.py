"""Fleet triage throughput: frames/s with 1 and 2 Ray workers (and in process), peak memory per
worker, on the bundled SemanticKITTI sweep repeated N times as a KITTI sequence folder.

    python benchmarks/bench_triage.py --frames 40 --out benchmarks/results/triage.json
    python benchmarks/bench_triage.py --frames 2 --workers 1 --out out/bench_triage_smoke.json

Each case triages the same folder into a fresh output folder (``npiseg_ros.annotate.fleet``,
the shipped model, automatic prompts). ``frames_per_s`` counts the whole run (Ray start and model
loading included), ``steady_frames_per_s`` only the time after every worker was ready, which is
what a long fleet run sees. Repeating one sweep measures compute, not reading: every frame
costs the same. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCAN = REPO.parent / "shared/data/semantickitti/sequences/00/velodyne/000000.bin"


def _sequence(scan: Path, frames: int, folder: Path) -> Path:
    """``folder/velodyne/000000.bin ...``: ``frames`` links to ``scan``."""
    velodyne = folder / "velodyne"
    velodyne.mkdir(parents=True)
    for index in range(frames):
        (velodyne / f"{index:06d}.bin").symlink_to(scan.resolve())
    return folder


def _case(sequence: Path, work: Path, *, workers: int | None, args) -> dict:
    from npiseg_ros.annotate.fleet import run_fleet_triage

    out = work / f"out_{'inprocess' if workers is None else f'ray{workers}'}"
    shutil.rmtree(out, ignore_errors=True)
    summary = run_fleet_triage(
        [str(sequence)], out, use_ray=workers is not None, workers=workers,
        chunk_frames=args.chunk_frames, samples=args.samples, max_range=args.max_range,
        progress=False, log=lambda message: print(message, file=sys.stderr))
    ok = sum(row["status"] == "ok" for row in summary.rows)
    if ok != args.frames:
        raise SystemExit(f"bench_triage: {ok} of {args.frames} frames scored")
    steady = summary.seconds - summary.ready_seconds
    frame_ms = sorted(row["frame_ms"] for row in summary.rows)
    return {"mode": "in-process" if workers is None else "ray",
            "workers": summary.workers, "frames": ok, "seconds": round(summary.seconds, 2),
            "ready_seconds": round(summary.ready_seconds, 2),
            "frames_per_s": round(ok / summary.seconds, 3),
            "steady_frames_per_s": round(ok / steady, 3) if steady > 0 else None,
            "median_frame_ms": round(frame_ms[len(frame_ms) // 2], 1),
            "peak_rss_mb_per_worker": [round(m, 1) for m in summary.peak_rss_mb]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", type=Path, default=SCAN, help="sweep to repeat (.bin)")
    parser.add_argument("--frames", type=int, default=40, help="N: times the sweep is repeated")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, comma separated")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip the in-process case (no Ray)")
    parser.add_argument("--chunk-frames", type=int, default=4)
    parser.add_argument("--samples", type=int, default=10, help="Monte-Carlo samples per decode")
    parser.add_argument("--max-range", type=float, default=None,
                        help="metres around the sensor to prompt (default: the whole sweep)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/triage.json")
    args = parser.parse_args(argv)
    if not args.scan.is_file():
        raise SystemExit(f"bench_triage: {args.scan} not found")
    if args.frames < 1:
        raise SystemExit("bench_triage: --frames must be >= 1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cases: list[int | None] = [] if args.no_in_process else [None]
    cases += [int(w) for w in args.workers.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_triage_") as temporary:
        work = Path(temporary)
        sequence = _sequence(args.scan, args.frames, work / "sequence")
        results = [_case(sequence, work, workers=workers, args=args) for workers in cases]
    report = {"scan": str(args.scan), "frames": args.frames, "samples": args.samples,
              "max_range": args.max_range, "chunk_frames": args.chunk_frames,
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d"), "results": results}
    print(f"{'mode':<11} {'workers':>7} {'s':>7} {'ready s':>8} {'frames/s':>9} "
          f"{'steady':>7} {'frame ms':>9}  peak MB per worker")
    for r in results:
        print(f"{r['mode']:<11} {r['workers']:>7} {r['seconds']:>7} {r['ready_seconds']:>8} "
              f"{r['frames_per_s']:>9} {r['steady_frames_per_s']!s:>7} "
              f"{r['median_frame_ms']:>9}  {r['peak_rss_mb_per_worker']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
