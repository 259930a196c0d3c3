"""The demo: the segmentation node and a scripted user in two processes over real DDS.

    python -m npiseg_ros.ros.demo [--scan PATH.bin | --synthetic] [--out DIR] [--checkpoint F]

The user process publishes a LiDAR scan (default: the SemanticKITTI scan in
``../shared/data``), clicks objects one by one from the ground truth, prints per-click latency
and IoU, writes top-down PNGs of labels and uncertainty, and saves the annotation through the
node's service. Both processes use the shared-memory Fast DDS profile and localhost-only
discovery, in a ROS domain of their own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from npiseg_ros.ros.processes import (ros_environment, share_path, shipped_checkpoint,
                                      start_module, stop_process)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from npiseg_ros.ros.demo_user import DEFAULT_SCAN

    parser = argparse.ArgumentParser(description="npiseg_ros demo: node + scripted user "
                                     "over real DDS")
    parser.add_argument("--scan", default=str(DEFAULT_SCAN),
                        help="SemanticKITTI velodyne .bin (labels/<frame>.label beside it)")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the project's synthetic scene instead of a scan")
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--checkpoint", default=None,
                        help="model checkpoint (default: the shipped one if present, else an "
                        "untrained model)")
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS domain (default: derived from the process id)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = shipped_checkpoint() if args.checkpoint is None else args.checkpoint
    scan = Path(args.scan)
    if not args.synthetic and not scan.is_file():
        print(f"[demo] scan {scan} not found: using the synthetic scene (--synthetic)")
        args.synthetic = True
    domain = args.domain_id if args.domain_id is not None else 101 - os.getpid() % 50
    env = ros_environment(domain)

    # The node reads the shipped config, then the demo's overrides (later files win).
    overrides = out / "demo_params.yaml"
    overrides.write_text(
        "/**:\n  ros__parameters:\n"
        f"    checkpoint: '{checkpoint}'\n    device: '{args.device}'\n"
        # No model shipped or given: the demo says so (below) and runs an untrained one.
        f"    allow_untrained: {'false' if checkpoint else 'true'}\n"
        "    model_preset: small\n"
        f"    output_directory: '{out.absolute()}'\n"
        f"    autosave_directory: '{out / 'autosave'}'\n    resume: false\n"
        "    max_click_distance: 0.5\n")
    node_args = ["--ros-args", "--params-file", str(share_path("config/segment.yaml")),
                 "--params-file", str(overrides)]
    profile = env.get("FASTDDS_DEFAULT_PROFILES_FILE", "none")
    print(f"[demo] ROS_DOMAIN_ID={domain}, Fast DDS profile {profile}")
    print(f"[demo] model: {checkpoint or 'NONE - untrained model, labels will be poor'}")
    print(f"[demo] node log: {out / 'node.log'}")
    node = start_module("npiseg_ros.ros.node", node_args, env, out / "node.log")
    user_args = ["--out", str(out), "--objects", str(args.objects), "--clicks", str(args.clicks)]
    user_args += ["--synthetic"] if args.synthetic else ["--scan", str(scan.absolute())]
    start = time.perf_counter()
    user = start_module("npiseg_ros.ros.demo_user", user_args, env)
    try:
        code = user.wait()
    except KeyboardInterrupt:
        code = 130
        stop_process(user)
    finally:
        node_code = stop_process(node)
    print(f"[demo] finished in {time.perf_counter() - start:.1f} s (user exit {code}, node exit "
          f"{node_code}); outputs in {out}")
    if code != 0:
        print((out / "node.log").read_text(errors="replace")[-3000:], file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
