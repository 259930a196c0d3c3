"""Shutdown and ~/new_object: the worker's last batch, and the real node process under
repeated SIGINT/SIGTERM (what `ros2 launch` sends on Ctrl-C).

Waits are on conditions (a state, an event, the process ending); the timeouts only turn a
hang into a failure.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading

import numpy as np
import pytest

from npiseg_ros.core.types import Click, CloudSummary, ObjectStats, Prediction

try:
    from npiseg_ros.io.autosave import cloud_fingerprint, load_autosave
    from npiseg_ros.ros.client import SegmentationClient
    from npiseg_ros.ros.processes import stop_process
    from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,
                                        save_tiny_checkpoint, start_test_node, street_scene)
    from npiseg_ros.ros.worker import AnnotationWorker, ClickRequest, WorkerOptions
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

DOMAIN_ID = domain_for(__name__)


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


@pytest.mark.parametrize("signals", [
    ("SIGINT",),
    ("SIGINT", "SIGINT", "SIGTERM"),
], ids=["SIGINT", "SIGINT and SIGTERM"])
def test_node_exits_cleanly_on_repeated_signals(tmp_path, signals):
    """The real node process: clicks in flight, then signals sent over and over until it has
    exited. Exit code 0, no traceback, the clicks it received are in the autosave (before: a
    KeyboardInterrupt traceback and exit code -2 when a signal hit the shutdown)."""
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    xyz, intensity, picks = street_scene(seed=2)
    with ros_test_context(DOMAIN_ID):
        process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, num_samples=20)
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
            code = _signal_until_exit(process, signals)
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
