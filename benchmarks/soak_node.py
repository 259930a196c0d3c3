"""Soak the real node over DDS: clouds at 10 Hz in follow mode with a click a second, then
latch mode with a click a second; sample RSS / open files / threads / click latency every 10 s.

    python benchmarks/soak_node.py --follow-s 3600 --latch-s 3600     # the real soak
    python benchmarks/soak_node.py --follow-s 120 --latch-s 120       # a short one

The node runs in its own process (own ROS domain, localhost discovery) with the shipped
checkpoint (``--checkpoint``; a random tiny model when none is shipped), ``num_samples`` 2.
Clouds are the test street scene (2410 points) with 1 mm of fresh noise each time, like a
sensor: in follow mode every one is a new cloud (new fingerprint) that the node re-encodes and
re-applies the clicks to. A click is sent once a second at a random point of box a or b while
no click is waiting; its latency is the time until ``~/state`` shows it applied (the decode
that includes it finished). Clicks are reset every ``--reset-every`` clicks, as a user
starting on a new object set would. Writes a JSON time series.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npiseg_ros.resources import shipped_checkpoint  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node, street_scene)


def process_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": round(int(values["VmRSS"].split()[0]) / 1024, 1),
            "threads": int(values["Threads"]),
            "open_files": len(os.listdir(f"/proc/{pid}/fd"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--follow-s", type=float, default=3600.0)
    parser.add_argument("--latch-s", type=float, default=3600.0)
    parser.add_argument("--cloud-hz", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--reset-every", type=int, default=30)
    parser.add_argument("--checkpoint", default=shipped_checkpoint())
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    parser.add_argument("--domain-id", type=int, default=80 + os.getpid() % 10)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="npiseg_soak_"))
    checkpoint = args.checkpoint or str(save_tiny_checkpoint(work / "tiny.safetensors"))
    xyz, intensity, picks = street_scene(seed=0)
    targets = {1: np.arange(1800, 2100), 2: np.arange(2100, 2400)}
    rng = np.random.default_rng(0)
    samples, latencies_all, phases = [], [], []
    with ros_test_context(args.domain_id):
        process = start_test_node(work, checkpoint, args.domain_id, "node",
                                  cloud_policy="follow", qos_reliability="reliable")
        client = SegmentationClient("npiseg_soak_client")
        try:
            client.wait_for_node(timeout_s=180)
            client.publish_cloud_until(cloud_msg(xyz, intensity),
                                       lambda s: s.num_points == xyz.shape[0])
            start_stats = process_stats(process.pid)
            started = time.monotonic()
            for phase, duration in (("follow", args.follow_s), ("latch", args.latch_s)):
                if duration <= 0:
                    continue
                assert client.set_parameter("cloud_policy", phase).successful
                phase_start = time.monotonic()
                end = phase_start + duration
                next_cloud = next_click = next_sample = phase_start
                next_sample += args.sample_s
                pending, window, clicks_sent, timeouts, clouds = None, [], 0, 0, 0
                current = xyz
                while time.monotonic() < end:
                    now = time.monotonic()
                    if now >= next_cloud:
                        current = xyz + rng.normal(0, 0.001, xyz.shape).astype(np.float32)
                        client.publish_cloud(cloud_msg(current, intensity))
                        clouds += 1
                        next_cloud += 1.0 / args.cloud_hz
                        if next_cloud < now:          # fell behind: no burst to catch up
                            next_cloud = now + 1.0 / args.cloud_hz
                    if now >= next_click and pending is None:
                        if clicks_sent and clicks_sent % args.reset_every == 0:
                            client.call("reset")
                            client.wait_for_state(lambda s: s.num_clicks == 0, 120, "reset")
                        object_id = int(rng.integers(1, 3))
                        index = int(rng.choice(targets[object_id]))
                        expected = client.latest["state"].num_clicks + 1
                        client.click(tuple(float(v) for v in current[index]),
                                     object_id=object_id, frame_id=FRAME)
                        pending, clicks_sent = (time.monotonic(), expected), clicks_sent + 1
                        next_click = max(next_click + 1.0, now)
                    client._executor.spin_once(timeout_sec=0.01)
                    if pending is not None:
                        waited = time.monotonic() - pending[0]
                        if client.latest["state"].num_clicks >= pending[1]:
                            window.append(waited * 1000)
                            pending = None
                        elif waited > 60:
                            timeouts, pending = timeouts + 1, None
                    if time.monotonic() >= next_sample:
                        state = client.latest["state"]
                        sample = {"t_s": round(time.monotonic() - started, 1), "phase": phase,
                                  **process_stats(process.pid),
                                  "clicks_applied": int(state.num_clicks),
                                  "error_count": int(state.error_count),
                                  "latency_ms_median": round(float(np.median(window)), 1)
                                  if window else None,
                                  "latency_ms_max": round(float(np.max(window)), 1)
                                  if window else None, "clicks_in_window": len(window)}
                        samples.append(sample)
                        print(f"[soak] {json.dumps(sample)}", flush=True)
                        latencies_all += [(phase, v) for v in window]
                        window = []
                        next_sample += args.sample_s
                    if process.poll() is not None:
                        raise RuntimeError(f"the node exited with {process.returncode}")
                phases.append({"phase": phase, "seconds": duration, "clouds_sent": clouds,
                               "clicks_sent": clicks_sent, "click_timeouts": timeouts})
            end_stats = process_stats(process.pid)
        finally:
            client.close()
            exit_code = stop_process(process)

    def summary(phase):
        values = [v for p, v in latencies_all if p == phase]
        return {"clicks": len(values),
                "latency_ms_median": round(float(np.median(values)), 1) if values else None,
                "latency_ms_p95": round(float(np.percentile(values, 95)), 1) if values else None,
                "latency_ms_max": round(float(np.max(values)), 1) if values else None}
    result = {
        "shortened": args.follow_s < 3600 or args.latch_s < 3600,
        "follow_s": args.follow_s, "latch_s": args.latch_s, "cloud_hz": args.cloud_hz,
        "checkpoint": checkpoint, "points_per_cloud": int(xyz.shape[0]),
        "phases": phases, "latency": {p: summary(p) for p in ("follow", "latch")},
        "node_start": start_stats, "node_end": end_stats,
        "node_exit_code_on_sigint": exit_code, "samples": samples,
        "machine": f"{os.cpu_count()} CPUs shared with other jobs; nice 19",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("phases", "latency", "node_start", "node_end")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
