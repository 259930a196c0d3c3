"""Send N fuzzed messages through the real node over DDS; count crashes, rejections, answers.

    python benchmarks/fuzz_node.py --count 10000 [--seed 0] [--wait 1.0]
        [--out benchmarks/results/fuzz.json]
    python benchmarks/fuzz_node.py --replay benchmarks/results/fuzz_crash1.json   # a crash again

The node runs in its own process (own ROS domain, localhost discovery, tiny random model,
``num_samples`` 2). Messages, drawn from a seeded generator:

- malformed PointCloud2 (fields missing / repeated / overlapping / outside ``point_step``, count
  0 or huge, unknown datatypes, wrong ``point_step``/``row_step``, truncated data, 10^7 declared
  points over a few bytes, 0 points) and valid layouts with NaN / inf / 1e30 coordinates,
  big-endian, organised;
- ``~/click`` with NaN / inf / far / valid positions, any object id (0..2^32-1), any point
  index, empty / known / unknown / random frames; RViz ``/clicked_point`` likewise;
- service calls: ``~/save_annotation`` with paths escaping the output directory (and valid
  ones), ``~/undo``, ``~/reset``, ``~/new_object``; parameter sets with bad values.

Lock-step: after each message the script waits until the node answers - ``~/state`` with a
higher ``error_count`` (rejected, with the reason's first words as category), a new
``~/state`` without one (accepted), a service / parameter response - or ``--wait`` seconds pass
(no visible answer: e.g. a valid cloud the latch policy keeps for later). The node process is
checked after every message; a crash is counted and the node restarted. At the end a valid
click must still be segmented (the node still works), and the node's RSS / threads / open files
are compared with the start. Writes a JSON summary.

A crash (the node process ended) is recorded with the tail of the node's log, where
``faulthandler`` (always on in the node, :mod:`npiseg_ros.ros.node_main`) has written the Python
stack of every thread, and the last :data:`RECENT` messages sent before it, serialised, in
``<out>_crash<N>.json``; ``--replay`` sends such a file's messages again, in order, to a fresh
node and says whether it survived.
"""
from __future__ import annotations

import argparse
import atexit
import base64
import collections
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from npiseg_ros.msg import Click  # noqa: E402
from npiseg_ros.io.autosave import cloud_fingerprint  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node, street_scene)
from npiseg_ros.srv import NewObject, SaveAnnotation  # noqa: E402

SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3.4e38, 0.0, 1e8, 5.0], np.float32)
BAD_PATHS = ["../escape.npz", "/etc/npiseg_fuzz.npz", "/tmp/npiseg_fuzz_escape.npz",
             "a/../../escape.npz", "~/npiseg_fuzz.npz", "", "x.txt", "ok/fuzz.npz",
             "fuzz.ply", "fuzz.label", "\u00e9\u00e8/\u2603.npz", "a" * 300 + ".npz"]
BAD_PARAMETERS = [("autosave_directory", "../out"), ("autosave_directory", "/etc"),
                  ("num_samples", 0), ("num_samples", 2), ("cloud_policy", "maybe"),
                  ("active_object", 70000), ("max_click_distance", -1.0), ("active_object", 2)]
RECENT = 50
"""Messages kept for a crash record (the crash may come from an earlier one than the last)."""


class Fuzzer:
    """Seeded generator of fuzzed messages around a valid base cloud."""

    def __init__(self, rng: np.random.Generator, xyz: np.ndarray, intensity: np.ndarray):
        self.rng, self.xyz, self.intensity = rng, xyz, intensity

    def _layout_fields(self):
        return [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                for i, n in enumerate(("x", "y", "z", "intensity"))]

    def cloud(self) -> tuple[str, PointCloud2]:
        rng = self.rng
        n = int(rng.integers(1, 400))
        index = rng.choice(self.xyz.shape[0], n, replace=False)
        base = cloud_msg(self.xyz[index], self.intensity[index])
        kind = rng.choice(["drop_field", "repeat_field", "overlap", "offset_out", "count",
                           "datatype", "point_step", "row_step", "truncate", "huge_declared",
                           "empty", "special_values", "big_endian", "organised", "random"])
        fields = list(base.fields)
        data = bytes(base.data)
        if kind == "drop_field":
            fields.pop(int(rng.integers(0, 3)))
        elif kind == "repeat_field":
            fields.append(PointField(name=str(rng.choice(["x", "y", "z", "intensity"])),
                                     offset=int(rng.integers(0, 16)), datatype=7, count=1))
        elif kind == "overlap":
            fields = [PointField(name=f.name, offset=int(rng.integers(0, 4)), datatype=f.datatype,
                                 count=1) for f in fields]
        elif kind == "offset_out":
            fields[int(rng.integers(0, 4))].offset = int(rng.choice([14, 16, 1000, 2**32 - 1]))
        elif kind == "count":
            fields[int(rng.integers(0, 4))].count = int(rng.choice([0, 2, 5, 2**20, 2**32 - 1]))
        elif kind == "datatype":
            fields[int(rng.integers(0, 4))].datatype = int(rng.integers(0, 256))
        elif kind == "point_step":
            base.point_step = int(rng.choice([0, 1, 8, 15, 17, 32, 2**31]))
            base.row_step = base.point_step * base.width % 2**32
        elif kind == "row_step":
            base.row_step = int(rng.integers(0, base.row_step + 1))
        elif kind == "truncate":
            data = data[:int(rng.integers(0, len(data)))]
        elif kind == "huge_declared":
            base.width = int(rng.choice([10**7, 2**32 - 1]))
            base.row_step = base.width * base.point_step % 2**32
        elif kind == "empty":
            base.width, base.row_step, data = 0, 0, b""
        elif kind == "special_values":
            values = np.frombuffer(data, np.float32).copy().reshape(n, 4)
            hit = rng.random(values[:, :3].shape) < rng.choice([0.01, 0.3, 1.0])
            values[:, :3][hit] = rng.choice(SPECIAL, int(hit.sum()))
            data = values.tobytes()
        elif kind == "big_endian":
            values = np.frombuffer(data, "<f4").astype(">f4")
            data, base.is_bigendian = values.tobytes(), True
        elif kind == "organised":
            rows = int(rng.choice([d for d in range(1, 9) if n % d == 0]))
            base.height, base.width = rows, n // rows
            base.row_step = base.width * base.point_step
        else:
            data = rng.bytes(int(rng.integers(0, 4096)))
            base.height, base.width = int(rng.integers(0, 5)), int(rng.integers(0, 300))
            base.point_step = int(rng.integers(0, 40))
            base.row_step = int(rng.integers(0, 12000))
        base.fields = fields
        base.data = data
        return f"cloud:{kind}", base

    def position(self) -> tuple[float, float, float]:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5:
            return tuple(float(v) for v in self.xyz[int(rng.integers(0, 2400))])
        if choice < 0.8:
            return tuple(float(v) for v in rng.choice(SPECIAL, 3))
        return tuple(float(v) for v in rng.uniform(-1e3, 1e3, 3))

    def frame(self) -> str:
        return str(self.rng.choice(["", FRAME, FRAME, "map", "no_such_frame", "\u2603",
                                    "x" * 200]))

    def click(self) -> tuple[str, object]:
        rng = self.rng
        msg = Click(header=Header(frame_id=self.frame()),
                    object_id=int(rng.choice([0, 1, 2, 3, 65535, 65536, 2**32 - 1,
                                              int(rng.integers(0, 2**32))])),
                    background=bool(rng.random() < 0.2),
                    point_index=int(rng.choice([-1, -1, -1, 0, 5, 2409, 2410, 10**12, -2**63])))
        x, y, z = self.position()
        msg.point = Point(x=x, y=y, z=z)
        return "click", msg

    def rviz_click(self) -> tuple[str, object]:
        x, y, z = self.position()
        return "clicked_point", PointStamped(header=Header(frame_id=self.frame()),
                                             point=Point(x=x, y=y, z=z))


def draw_message(fuzzer: Fuzzer, rng: np.random.Generator) -> tuple[str, object]:
    """One fuzzed input: (kind, message or service request)."""
    draw = rng.random()
    if draw < 0.45:
        return fuzzer.cloud()
    if draw < 0.75:
        return fuzzer.click()
    if draw < 0.90:
        return fuzzer.rviz_click()
    if draw < 0.95:
        path = str(rng.choice(BAD_PATHS))
        return "save_annotation", SaveAnnotation.Request(
            path=path, format=str(rng.choice(["", "npz", "ply", "label", "exe"])))
    if draw < 0.98:
        kind = str(rng.choice(["undo", "reset", "new_object"]))
        return kind, (NewObject.Request() if kind == "new_object" else Trigger.Request())
    name, value = BAD_PARAMETERS[int(rng.integers(0, len(BAD_PARAMETERS)))]
    return "set_parameter", SetParameters.Request(
        parameters=[Parameter(name, value=value).to_parameter_msg()])


def send(client: SegmentationClient, kind: str, msg) -> object:
    """Publish ``msg`` or call the service; the response (None for a topic)."""
    if kind.startswith("cloud"):
        client.publish_cloud(msg)
    elif kind == "click":
        client.click_pub.publish(msg)
    elif kind == "clicked_point":
        client.clicked_point_pub.publish(msg)
    elif kind == "set_parameter":
        return client.call("set_parameters", msg).results[0]
    else:
        return client.call(kind, msg)
    return None


def record(kind: str, msg) -> dict:
    """``msg`` serialised (CDR, base64) with its type: replayable, no pickle."""
    kind_of = type(msg)
    return {"kind": kind, "type": f"{kind_of.__module__}.{kind_of.__name__}",
            "cdr": base64.b64encode(serialize_message(msg)).decode("ascii")}


def restore(entry: dict) -> tuple[str, object]:
    module, name = entry["type"].rsplit(".", 1)
    kind_of = getattr(importlib.import_module(module), name)
    return entry["kind"], deserialize_message(base64.b64decode(entry["cdr"]), kind_of)


def replay(path: Path, domain_id: int, wait_s: float) -> int:
    """Send the messages of a crash record to a fresh node; 0 when it survives them all."""
    entries = json.loads(path.read_text())["messages"]
    work = Path(tempfile.mkdtemp(prefix="npiseg_fuzz_replay_"))
    checkpoint = save_tiny_checkpoint(work / "tiny.safetensors")
    xyz, intensity, _ = street_scene(seed=json.loads(path.read_text()).get("seed", 0))
    with ros_test_context(domain_id):
        process = start_test_node(work, checkpoint, domain_id, "node",
                                  output_directory=str(work / "out"),
                                  autosave_directory=str(work / "out" / "autosave"))
        atexit.register(stop_process, process)
        client = SegmentationClient("npiseg_fuzz_replay")
        client.wait_for_node(timeout_s=180)
        client.publish_cloud_until(cloud_msg(xyz, intensity),
                                   lambda s: s.num_points == xyz.shape[0])
        for number, entry in enumerate(entries):
            kind, msg = restore(entry)
            send(client, kind, msg)
            try:
                client.spin_until(lambda: process.poll() is not None, wait_s, "a crash")
            except TimeoutError:
                pass
            if process.poll() is not None:
                print(f"[replay] the node ended (exit {process.returncode}) after message "
                      f"{number} ({kind}); log: {work / 'node.log'}")
                return 1
        client.close()
        code = stop_process(process)
    print(f"[replay] {len(entries)} messages, the node survived (exit {code} on SIGINT)")
    return 0


def rss_threads_files(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(values["VmRSS"].split()[0]) / 1024,
            "threads": int(values["Threads"]),
            "open_files": len(os.listdir(f"/proc/{pid}/fd"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait", type=float, default=1.0,
                        help="seconds to wait for a visible answer to one message")
    parser.add_argument("--out", default="benchmarks/results/fuzz.json")
    parser.add_argument("--domain-id", type=int, default=90 + os.getpid() % 10)
    parser.add_argument("--replay", type=Path,
                        help="a crash record (<out>_crash<N>.json) to send again")
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.replay, args.domain_id, args.wait)

    # A native crash (node or this client) then leaves a Python stack of every thread in the
    # node log / on stderr.
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="npiseg_fuzz_"))
    checkpoint = save_tiny_checkpoint(work / "tiny.safetensors")
    xyz, intensity, picks = street_scene(seed=args.seed)
    fuzzer = Fuzzer(rng, xyz, intensity)
    outcomes: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes, restarts, started = [], 0, time.monotonic()
    recent: collections.deque = collections.deque(maxlen=RECENT)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    with ros_test_context(args.domain_id):
        def start():
            process = start_test_node(work, checkpoint, args.domain_id, "node",
                                      output_directory=str(work / "out"),
                                      autosave_directory=str(work / "out" / "autosave"))
            # Never leave a node behind, whatever ends this script (exception, Ctrl-C).
            atexit.register(stop_process, process)
            return process
        process = start()
        client = SegmentationClient("npiseg_fuzz_client")
        client.wait_for_node(timeout_s=180)
        client.publish_cloud_until(cloud_msg(xyz, intensity),
                                   lambda s: s.num_points == xyz.shape[0])
        before = rss_threads_files(process.pid)
        for number in range(args.count):
            state = client.latest["state"]
            errors, states = state.error_count, client.counts["state"]
            kind, msg = draw_message(fuzzer, rng)
            recent.append(record(kind, msg))
            try:
                response = send(client, kind, msg)
            except TimeoutError:  # a service that never answered: crashed? (checked below)
                response = None
            try:
                client.spin_until(lambda: client.latest["state"].error_count > errors
                                  or client.counts["state"] > states, args.wait, "an answer")
            except TimeoutError:
                pass
            state = client.latest["state"]
            if state.error_count > errors:
                outcome = "rejected"
                reasons[" ".join(state.last_error.split(":")[0].split()[:4])] += 1
            elif response is not None:
                ok = getattr(response, "success", getattr(response, "successful", None))
                outcome = "service_ok" if ok else "service_refused"
            elif client.counts["state"] > states:
                outcome = "accepted"
            else:
                outcome = "no_visible_answer"
            outcomes[outcome] += 1
            by_kind[kind.split(":")[0] if not kind.startswith("cloud") else kind][outcome] += 1
            if process.poll() is not None:
                crash_file = Path(args.out).with_name(
                    f"{Path(args.out).stem}_crash{len(crashes) + 1}.json")
                log_tail = (work / "node.log").read_text(errors="replace")[-6000:]
                crash_file.write_text(json.dumps({"seed": args.seed, "message": number,
                                                  "exit": process.returncode,
                                                  "node_log_tail": log_tail,
                                                  "messages": list(recent)}) + "\n")
                crashes.append({"message": number, "kind": kind, "exit": process.returncode,
                                "record": str(crash_file), "node_log_tail": log_tail})
                print(f"[fuzz] CRASH after message {number} ({kind}), exit {process.returncode}"
                      f"; the last {len(recent)} messages: {crash_file}", flush=True)
                process, restarts = start(), restarts + 1
                client.wait_for_node(timeout_s=180)
                client.publish_cloud_until(cloud_msg(xyz, intensity),
                                           lambda s: s.num_points == xyz.shape[0])
            if (number + 1) % 500 == 0:
                print(f"[fuzz] {number + 1}/{args.count} {dict(outcomes)} "
                      f"{time.monotonic() - started:.0f} s", flush=True)
                partial = {"messages_so_far": number + 1, "crashes": len(crashes),
                           "crash_details": crashes, "outcomes": dict(outcomes),
                           "node_log": str(work / "node.log"), "finished": False}
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(partial, indent=2) + "\n")
        # Still working? Back to the base cloud (latch: published, then taken on reset), one
        # valid click, labels back.
        base_fingerprint = cloud_fingerprint(xyz)

        def on_base_cloud():
            client.publish_cloud(cloud_msg(xyz, intensity))
            client.call("reset")
            return client.latest["state"].cloud_fingerprint == base_fingerprint
        client.spin_until(on_base_cloud, 120, "the base cloud again")
        client.click(tuple(float(v) for v in xyz[picks["a"]]), object_id=1, frame_id=FRAME)
        labels = client.wait_for_labels(lambda lab: lab[picks["a"]] == 1, timeout_s=120)
        after = rss_threads_files(process.pid)
        final_state = client.latest["state"]
        client.close()
        exit_code = stop_process(process)

    result = {
        "messages": args.count, "seed": args.seed, "crashes": len(crashes),
        "crash_details": crashes, "restarts": restarts,
        "outcomes": dict(outcomes), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "rejection_reasons": dict(reasons.most_common()),
        "node_error_count_at_end": int(final_state.error_count),
        "works_after_fuzzing": bool(labels[picks["a"]] == 1),
        "node_exit_code_on_sigint": exit_code,
        "node_before": before, "node_after": after,
        "wall_s": round(time.monotonic() - started, 1), "wait_per_message_s": args.wait,
        "ros_domain_id": args.domain_id, "node_log": str(work / "node.log"), "finished": True,
        "machine": f"{os.cpu_count()} CPUs, shared; nice 19",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("messages", "crashes", "outcomes",
                                             "works_after_fuzzing", "wall_s")}))
    escaped = [p for p in ("/etc/npiseg_fuzz.npz", "/tmp/npiseg_fuzz_escape.npz",
                           os.path.expanduser("~/npiseg_fuzz.npz"), str(work / "escape.npz"))
               if Path(p).exists()]
    if escaped:
        print(f"[fuzz] FILES WRITTEN OUTSIDE THE OUTPUT DIRECTORY: {escaped}")
        return 1
    return 0 if not crashes and result["works_after_fuzzing"] else 1


if __name__ == "__main__":
    sys.exit(main())
