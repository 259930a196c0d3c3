"""Shutdown and ~/new_object: the worker's last batch, and the real node process under
SIGINT/SIGTERM once, twice and over and over (what `ros2 launch` sends on Ctrl-C), and during
its start-up; the start-up signal thread of node_main; faulthandler's stacks on a SIGSEGV.

Waits are on conditions (a state, an event, the process ending); the timeouts only turn a
hang into a failure.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from npiseg_ros.core.types import Click, CloudSummary, ObjectStats, Prediction

try:
    from npiseg_ros.io.autosave import cloud_fingerprint, load_autosave
    from npiseg_ros.ros.client import SegmentationClient
    from npiseg_ros.ros.processes import stop_process
    from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,
                                        save_tiny_checkpoint, start_test_node, street_scene)
    from npiseg_ros.ros.worker import AnnotationWorker
    from npiseg_ros.ros.worker_types import ClickRequest, WorkerOptions
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

DOMAIN_ID = domain_for(__name__)
ROOT = Path(__file__).resolve().parents[1]


class GatedSession:
    """The session calls the worker makes; ``predict`` waits for ``gate`` once it is armed."""

    def __init__(self) -> None:
        self.clicks: list[Click] = []
        self.points = 0
        self.gate: threading.Event | None = None
        self.in_predict = threading.Event()

    def set_cloud(self, xyz, colors=None, intensity=None) -> CloudSummary:
        self.points, self.clicks = xyz.shape[0], []
        return CloudSummary(xyz.shape[0], 0, xyz.shape[0], 1.0)

    def add_click(self, position=None, *, object_id, point_index=None) -> Click:
        index = len(self.clicks) if point_index is None else point_index
        click = Click(tuple(position or (0.0, 0.0, 0.0)), object_id, index, index, 0.0)
        self.clicks.append(click)
        return click

    def predict(self) -> Prediction:
        self.in_predict.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        labels = np.zeros(self.points, np.int32)
        for click in self.clicks:
            labels[click.point_index] = click.object_id
        return Prediction(labels, np.zeros(self.points, np.float32),
                          {0: ObjectStats(0, self.points, 0.0, 0)}, None, 1.0, len(self.clicks))


class Cloud:
    """Stand-in for conversions.CloudArrays."""

    def __init__(self, n: int) -> None:
        self.xyz = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
        self.frame_id, self.colors, self.intensity = "lidar", None, None


class Events:
    """WorkerEvents: keeps the published states, prints the rest."""

    def __init__(self, published: list) -> None:
        self.on_state, self.on_rejected = published.append, print
        self.on_labels = self.on_cloud_adopted = self.on_resumed = lambda reported: None


def _worker(session, published: list) -> AnnotationWorker:
    # Relative autosave directory: under the working directory (the tests chdir to tmp_path).
    return AnnotationWorker(session, events=Events(published),
                            options=WorkerOptions(autosave_directory="autosave"))


def test_stop_applies_and_autosaves_the_clicks_already_received(tmp_path, monkeypatch):
    """A click queued while a decode runs is still decoded and autosaved when the node stops
    (before: stop() dropped it, and a resume lost the user's last click)."""
    monkeypatch.chdir(tmp_path)
    session, published = GatedSession(), []
    worker = _worker(session, published)
    worker.start()
    cloud = Cloud(20)
    worker.submit_cloud(cloud)
    session.gate = threading.Event()
    worker.submit_click(ClickRequest(object_id=1, position=(0.0, 1.0, 2.0)))
    assert session.in_predict.wait(30)  # the worker decodes click 1 and waits at the gate
    worker.submit_click(ClickRequest(object_id=2, position=(3.0, 4.0, 5.0)))
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    session.gate.set()
    stopper.join(60)
    assert not stopper.is_alive()
    assert [len(snapshot.clicks) for snapshot in published] == [1, 2]
    record = load_autosave(tmp_path / "autosave", cloud_fingerprint(cloud.xyz))
    assert record is not None and [c.object_id for c in record.clicks] == [1, 2]


def test_new_object_is_never_the_active_object(tmp_path, monkeypatch):
    """~/new_object with no object yet and active object 1 answered 1 (the active object
    itself); it must give an id above the active one."""
    monkeypatch.chdir(tmp_path)
    session, published = GatedSession(), []
    worker = _worker(session, published)
    worker.start()
    try:
        assert worker.new_object() == (2, None)  # the node starts with active object 1
        assert worker.new_object() == (3, None)  # the one just handed out is active now
        worker.configure(active_object=7)         # the node's parameter, set by a user
        assert worker.new_object() == (8, None)
        worker.submit_cloud(Cloud(20))
        worker.submit_click(ClickRequest(object_id=12, position=(0.0, 0.0, 0.0)))
        worker.configure(active_object=8)
        assert worker.new_object() == (13, None)  # above the clicked ids too
    finally:
        worker.stop()


def _signal_until_exit(process, names: tuple[str, ...]) -> int:
    """Send the signals in turn, again and again, until the process has exited: every phase of
    the shutdown gets some (as with ros2 launch's forwarded SIGINT and its SIGTERM)."""
    for number in range(100_000):
        try:
            os.kill(process.pid, getattr(signal, names[number % len(names)]))
        except ProcessLookupError:
            break
        try:
            return process.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
    return process.wait(120)


def _ctrl_c_from_a_terminal_and_launch(process) -> int:
    """A terminal's Ctrl-C reaches the process group, then ``ros2 launch`` forwards one."""
    os.killpg(process.pid, signal.SIGINT)
    os.kill(process.pid, signal.SIGINT)
    return process.wait(120)


def _sigterm(process) -> int:
    os.killpg(process.pid, signal.SIGTERM)
    return process.wait(120)


@pytest.mark.parametrize("send, executable", [
    (lambda process: _signal_until_exit(process, ("SIGINT",)), False),
    (_ctrl_c_from_a_terminal_and_launch, True),
    (_sigterm, True),
    (lambda process: _signal_until_exit(process, ("SIGINT", "SIGINT", "SIGTERM")), True),
], ids=["SIGINT over and over, python -m", "SIGINT twice", "SIGTERM",
        "SIGINT and SIGTERM over and over"])
def test_node_exits_cleanly_on_signals(tmp_path, send, executable):
    """The real node process (``bin/segment_node`` as ``ros2 launch`` starts it, or ``python
    -m``): clicks in flight, then the signals. Exit code 0, no traceback, the clicks it
    received are in the autosave (before: exit -2 by the signal with two Ctrl-C, a
    KeyboardInterrupt traceback when a signal hit the shutdown)."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    xyz, intensity, picks = street_scene(seed=2)
    with ros_test_context(DOMAIN_ID):
        process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, executable=executable,
                                  num_samples=20)
        client = SegmentationClient("npiseg_shutdown_client")
        try:
            client.wait_for_node(timeout_s=120)
            client.publish_cloud_until(cloud_msg(xyz, intensity),
                                       lambda s: s.num_points == xyz.shape[0])
            client.click(tuple(xyz[picks["a"]]), object_id=1, frame_id=FRAME)
            client.click(tuple(xyz[picks["b"]]), object_id=2, frame_id=FRAME)
            # Both clicks received (waiting in the queue or decoded): then the signals.
            client.wait_for_state(lambda s: s.num_clicks + s.pending_clicks >= 2,
                                  what="both clicks received")
            code = send(process)
        finally:
            client.close()
            stop_process(process)
    log = (tmp_path / "node.log").read_text(errors="replace")
    print(log[-3000:])
    assert code == 0, f"exit code {code}"
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert "shutting down" in log
    record = load_autosave(tmp_path / "autosave", cloud_fingerprint(xyz))
    assert record is not None and [c.object_id for c in record.clicks] == [1, 2]


_EXIT_AT_ONCE = """
import os, signal, sys, time
from npiseg_ros.ros.node_main import ShutdownSignals
signals = ShutdownSignals().install()
with signals.exit_at_once("the test"):
    if sys.argv[1] == "inside":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # the start-up thread ends the process first
os.kill(os.getpid(), signal.SIGINT)  # after the block: kept for the main thread
print("taken", signals.wait(5), signals.first_name, flush=True)
"""


@pytest.mark.parametrize("where", ["inside", "after"])
def test_startup_signals_end_the_process_at_once_only_inside_the_block(where):
    """node_main's start-up watcher: during the imports a signal ends the process (exit 0, a
    message, no traceback); after the block the same signal is left to the main thread."""
    result = subprocess.run([sys.executable, "-c", _EXIT_AT_ONCE, where], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if where == "inside":
        assert "SIGTERM during the test, not started" in result.stderr
        assert "taken" not in result.stdout
    else:
        assert "taken True SIGINT" in result.stdout


def _runs_python(pid: int) -> bool:
    try:
        return "python" in os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:  # exited, or between two execs
        return False


def _maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("phase", ["interpreter", "importing torch", "loading the models"])
def test_node_exits_cleanly_when_signalled_during_startup(tmp_path, phase):
    """Ctrl-C before the node is ready, started as ``ros2 launch`` does (``bin/segment_node``):
    as soon as Python runs, once libtorch is being loaded, once the node has read its
    parameters. Exit 0 without starting, no traceback (before: a KeyboardInterrupt traceback
    inside ``import torch``, or death by the signal while the interpreter started). The probe
    ``benchmarks/probe_shutdown.py`` repeats this 10 times per phase."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    log = tmp_path / "node.log"
    reached = {"interpreter": _runs_python, "importing torch": _maps_torch,
               "loading the models": lambda pid: "writing only inside" in log.read_text(
                   errors="replace")}[phase]
    process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, executable=True)
    try:
        seen = False
        while process.poll() is None and not seen:
            seen = reached(process.pid)
            time.sleep(0.0002)  # fine-grained: the interpreter's start-up is short
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(120)
    finally:
        stop_process(process)
    text = log.read_text(errors="replace")
    print(text[-3000:])
    assert seen, f"the node ended before '{phase}' was seen"
    assert code == 0, f"exit code {code}"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def test_a_native_crash_leaves_every_thread_stack_in_the_log(tmp_path):
    """The fuzzing saw one SIGSEGV of the node and nothing to go on (issue 21): the node now
    runs with faulthandler, so a native crash writes the Python stack of every thread to its
    log (here a SIGSEGV sent to the running node stands in for a real one)."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    log = tmp_path / "node.log"
    process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, executable=True)
    try:
        while process.poll() is None and "model: " not in log.read_text(errors="replace"):
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGSEGV)
        code = process.wait(120)
    finally:
        stop_process(process)
    text = log.read_text(errors="replace")
    assert code == -signal.SIGSEGV, text[-3000:]
    assert "Fatal Python error: Segmentation fault" in text, text[-3000:]
    assert text.count("File ") >= 2 and ("Thread 0x" in text or "Current thread" in text)

