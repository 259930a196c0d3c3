"""Probe the node's shutdown: SIGINT / SIGTERM at every phase, N runs each; exit codes, tracebacks.

    python benchmarks/probe_shutdown.py [--runs 10] [--cases all] [--entry bin|module]
        [--out benchmarks/results/shutdown_probe.json]

Each run starts a fresh node process (own ROS domain, localhost discovery, a tiny random model)
the way ``ros2 launch`` does (``bin/segment_node``; ``--entry module``: ``python -m
npiseg_ros.ros.node``, what the tests and the demo start), in its own process group, and signals
it in one phase:

- ``startup_interpreter``: SIGINT as soon as the process runs the Python interpreter (for
  ``bin/segment_node``: once its shell has exec'd it), i.e. during the interpreter's own start-up;
- ``startup_importing``: SIGINT once ``libtorch`` is mapped into the process (``import torch``);
- ``startup_loading``: SIGINT once the node logs its output directory (the models load next);
- ``startup_random``: SIGINT after a seeded random delay of 0-4 s (any moment of the start-up);
- ``ready_sigint``, ``ready_sigint_twice``, ``ready_sigterm``: the node segmented a cloud and
  took a click; then SIGINT to the process group, the same plus a second SIGINT to the process
  at once (a terminal's Ctrl-C, then ``ros2 launch`` forwarding it), or SIGTERM;
- ``ready_storm``: SIGINT, SIGINT, SIGTERM over and over until the process has exited.

Not probed: the first ~1 ms after the exec, before ``bin/segment_node``'s shell has set its trap
(no program can act on a signal before its first instructions; there a signal ends the process
by its default action).

A run passes when the process exits with code 0, its output has no ``Traceback`` or
``KeyboardInterrupt``, and (``ready_*``) the click is in the autosave. The issue's bar: 10 of 10
runs of every case. Writes a JSON summary; the exit latency (first signal -> exit) is reported,
never judged (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npiseg_ros.io.autosave import cloud_fingerprint, load_autosave  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node, street_scene)

STARTUP_CASES = ("startup_interpreter", "startup_importing", "startup_loading", "startup_random")
READY_CASES = ("ready_sigint", "ready_sigint_twice", "ready_sigterm", "ready_storm")


def wait_for(predicate, process: subprocess.Popen, timeout_s: float, poll_s: float) -> bool:
    """Poll ``predicate`` until true; False if the process exits or the time is up first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


def runs_python(pid: int) -> bool:
    try:
        return "python" in os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:  # exited, or between two execs
        return False


def maps_contain(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # exited, or between two execs
        return False


def signal_startup(case: str, process: subprocess.Popen, log: Path, rng: random.Random) -> str:
    """Send SIGINT at the case's moment; returns what was waited for (or 'missed')."""
    if case == "startup_interpreter":
        seen = wait_for(lambda: runs_python(process.pid), process, 60, 0.0001)
    elif case == "startup_importing":
        seen = wait_for(lambda: maps_contain(process.pid, "libtorch"), process, 120, 0.002)
    elif case == "startup_loading":
        seen = wait_for(lambda: "writing only inside" in log.read_text(errors="replace"),
                        process, 120, 0.005)
    elif case == "startup_random":
        time.sleep(rng.uniform(0.0, 4.0))
        seen = True
    os.killpg(process.pid, signal.SIGINT)
    return "sent" if seen else "missed (process ended or phase not seen)"


def signal_ready(case: str, process: subprocess.Popen) -> None:
    if case == "ready_sigterm":
        os.killpg(process.pid, signal.SIGTERM)
    elif case in ("ready_sigint", "ready_sigint_twice"):
        os.killpg(process.pid, signal.SIGINT)
        if case == "ready_sigint_twice":
            os.kill(process.pid, signal.SIGINT)
    else:
        names = (signal.SIGINT, signal.SIGINT, signal.SIGTERM)
        for number in range(100_000):
            try:
                os.kill(process.pid, names[number % 3])
            except ProcessLookupError:
                return
            try:
                process.wait(0.05)
                return
            except subprocess.TimeoutExpired:
                pass


def make_ready(client: SegmentationClient, xyz, intensity, picks) -> None:
    """The node took the cloud and one click (queued or decoded)."""
    client.wait_for_node(timeout_s=180)
    client.publish_cloud_until(cloud_msg(xyz, intensity), lambda s: s.num_points == xyz.shape[0])
    client.click(tuple(float(v) for v in xyz[picks["a"]]), object_id=1, frame_id=FRAME)
    client.wait_for_state(lambda s: s.num_clicks + s.pending_clicks >= 1, 120, "the click")


def run_case(case: str, run: int, root: Path, checkpoint: Path, domain_id: int, entry: str,
             scene, rng: random.Random) -> dict:
    work = root / f"{case}_{run}"
    work.mkdir()
    log = work / "node.log"
    xyz, intensity, picks = scene
    process = start_test_node(work, checkpoint, domain_id, executable=entry == "bin")
    phase, autosaved = "", None
    try:
        if case in STARTUP_CASES:
            phase = signal_startup(case, process, log, rng)
        else:
            client = SegmentationClient(f"npiseg_probe_{case}_{run}")
            try:
                make_ready(client, xyz, intensity, picks)
            finally:
                client.close()
            phase = "ready"
        signalled = time.monotonic()
        if case in READY_CASES:
            signal_ready(case, process)
        code = process.wait(120)
        exit_s = time.monotonic() - signalled
    finally:
        stop_process(process)
    text = log.read_text(errors="replace")
    if case in READY_CASES:
        record = load_autosave(work / "autosave", cloud_fingerprint(xyz))
        autosaved = record is not None and [c.object_id for c in record.clicks] == [1]
    clean = "Traceback" not in text and "KeyboardInterrupt" not in text
    passed = code == 0 and clean and autosaved is not False
    return {"case": case, "run": run, "exit_code": code, "clean_output": clean,
            "autosave_has_click": autosaved, "phase": phase, "exit_s": round(exit_s, 3),
            "passed": passed, "log_tail": "" if passed else text[-2000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cases", nargs="+", default=["all"],
                        choices=["all", *STARTUP_CASES, *READY_CASES])
    parser.add_argument("--entry", choices=("bin", "module"), default="bin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/shutdown_probe.json")
    parser.add_argument("--domain-id", type=int, default=70 + os.getpid() % 10)
    args = parser.parse_args(argv)
    cases = [*STARTUP_CASES, *READY_CASES] if "all" in args.cases else args.cases

    root = Path(tempfile.mkdtemp(prefix="npiseg_shutdown_probe_"))
    checkpoint = save_tiny_checkpoint(root / "tiny.safetensors")
    scene = street_scene(seed=0)
    rng = random.Random(args.seed)
    results, started = [], time.monotonic()
    with ros_test_context(args.domain_id):
        for run in range(args.runs):  # cases take turns: a slow moment of the machine is shared
            for case in cases:
                result = run_case(case, run, root, checkpoint, args.domain_id, args.entry,
                                  scene, rng)
                results.append(result)
                print(f"[probe] {case} run {run}: exit {result['exit_code']}, "
                      f"{'clean' if result['clean_output'] else 'TRACEBACK'}, "
                      f"autosave {result['autosave_has_click']}, {result['exit_s']} s, "
                      f"{'ok' if result['passed'] else 'FAILED'}", flush=True)
    summary = {}
    for case in cases:
        rows = [r for r in results if r["case"] == case]
        summary[case] = {"passed": sum(r["passed"] for r in rows), "runs": len(rows),
                         "exit_codes": sorted({r["exit_code"] for r in rows}),
                         "exit_s": [r["exit_s"] for r in rows]}
    output = {"entry": args.entry, "runs_per_case": args.runs, "summary": summary,
              "runs": results, "wall_s": round(time.monotonic() - started, 1),
              "machine": f"{os.cpu_count()} CPUs, shared with other jobs", "work": str(root)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(output, indent=2) + "\n")
    for case, row in summary.items():
        print(f"{case:22s} {row['passed']}/{row['runs']} passed, exit codes {row['exit_codes']}")
    return 0 if all(row["passed"] == row["runs"] for row in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
