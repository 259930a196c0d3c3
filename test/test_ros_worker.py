"""The worker thread's ordering, batching and crash-safety logic, with a scripted fake session.

No ROS graph: the worker reports through ``WorkerEvents`` (here a recorder) and takes clicks
already in the cloud's frame, so these tests drive it directly.
"""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from npiseg_ros.core.errors import ClickRejectedError, InvalidCloudError
from npiseg_ros.core.types import Click, CloudSummary, ObjectStats, Prediction

try:
    from npiseg_ros.io import autosave as annotation
    from npiseg_ros.io.autosave import load_autosave
    from npiseg_ros.ros.worker import MAX_PENDING_CLICKS, AnnotationWorker
    from npiseg_ros.ros.worker_types import ClickRequest, WorkerOptions
except ImportError:  # pragma: no cover - the ros package imports message modules
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)


@dataclass(frozen=True)
class Stamp:
    """Stand-in for builtin_interfaces/Time."""

    sec: int = 0
    nanosec: int = 0


@dataclass(eq=False)
class Cloud:
    """Stand-in for conversions.CloudArrays (compared by identity, like the node's)."""

    xyz: np.ndarray
    frame_id: str = "lidar"
    colors: None = None
    intensity: None = None
    stamp: Stamp = Stamp()


class FakeSession:
    """Records calls; snaps positions to the nearest point; ``gate`` (when set) blocks
    predict until released."""

    max_click_distance = 5.0

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.clicks: list[Click] = []
        self.points = 0
        self.xyz = np.zeros((0, 3))
        self.gate: threading.Event | None = None
        self.in_predict = threading.Event()
        self.busy = False

    def set_cloud(self, xyz, colors=None, intensity=None) -> CloudSummary:
        assert not self.busy, "set_cloud during a decode"
        if not np.isfinite(xyz).any():
            raise InvalidCloudError("all points have NaN/inf coordinates")
        self.calls.append("set_cloud")
        self.points, self.clicks, self.xyz = xyz.shape[0], [], np.asarray(xyz, np.float64)
        return CloudSummary(xyz.shape[0], 0, xyz.shape[0], 1.0)

    def add_click(self, position=None, *, object_id, point_index=None) -> Click:
        assert not self.busy, "add_click during a decode"
        index = point_index
        if position is not None:
            distance = np.linalg.norm(np.nan_to_num(self.xyz, nan=1e9) - position, axis=1)
            index = int(np.argmin(distance))
            if distance[index] > self.max_click_distance:
                raise ClickRejectedError("too far from the nearest point")
        self.calls.append(f"click{object_id}")
        click = Click(tuple(position if position is not None else self.xyz[index]), object_id,
                      index, index, 0.0)
        self.clicks.append(click)
        return click

    def undo(self):
        return self.clicks.pop() if self.clicks else None

    def reset(self) -> None:
        self.clicks = []

    def predict(self) -> Prediction:
        self.busy = True
        self.in_predict.set()
        if self.gate is not None:
            self.gate.wait(30)
        self.calls.append(f"predict{len(self.clicks)}")
        labels = np.zeros(self.points, np.int32)
        for click in self.clicks:
            labels[click.point_index] = click.object_id
        self.busy = False
        stats = {0: ObjectStats(0, self.points, 0.0, 0)}
        return Prediction(labels, np.zeros(self.points, np.float32), stats, None, 1.0,
                          len(self.clicks))


class Recorder:
    """The node's side of ``WorkerEvents``: records what the worker reports, in order."""

    def __init__(self) -> None:
        self.snapshots, self.errors, self.resumed, self.adopted = [], [], [], []
        self.answers, self.removed = [], []
        self.order: list[tuple[str, int]] = []   # (event, clicks in its snapshot)
        self.published = threading.Condition()
        self.on_labels_hook = None

    def on_cloud_adopted(self, summary) -> None:
        self.adopted.append(summary)

    def on_resumed(self, outcome) -> None:
        self.resumed.append(outcome)

    def on_labels(self, snapshot) -> None:
        self.order.append(("labels", len(snapshot.clicks)))
        if self.on_labels_hook is not None:
            self.on_labels_hook(snapshot)

    def on_state(self, snapshot) -> None:
        self.order.append(("state", len(snapshot.clicks)))
        with self.published:
            self.snapshots.append(snapshot)
            self.published.notify_all()

    def on_rejected(self, reason: str) -> None:
        self.errors.append(reason)

    def on_answer(self, answer) -> None:
        with self.published:
            self.answers.append(answer)
            self.published.notify_all()

    def on_output_removed(self, removed) -> None:
        self.removed.extend(removed)


class Harness:
    def __init__(self, tmp_path, output_directory: str | None = None, pose_of=None,
                 max_output_mb: float = 0.0, **options) -> None:
        self.session = FakeSession()
        self.events = Recorder()
        self.snapshots, self.errors = self.events.snapshots, self.events.errors
        self.worker = AnnotationWorker(
            self.session, events=self.events,
            options=WorkerOptions(**{"autosave_directory": str(tmp_path / "autosave"),
                                     **options}),
            output_directory=output_directory or str(tmp_path), pose_of=pose_of,
            max_output_mb=max_output_mb)
        self.worker.start()

    def wait_answers(self, predicate, what: str = "answers"):
        """The answers so far, once ``predicate(answers)`` holds."""
        with self.events.published:
            assert self.events.published.wait_for(lambda: predicate(self.events.answers),
                                                  30), f"timed out waiting for {what}"
            return list(self.events.answers)

    def wait_snapshots(self, count: int):
        with self.events.published:
            assert self.events.published.wait_for(lambda: len(self.snapshots) >= count, 30)
        return self.snapshots[-1]

    def flush(self):
        """Returns once everything submitted before has been processed."""
        self.worker.new_object()

    def click_saved(self, object_id: int, point_index: int, snapshots: int):
        """Click; return the ``snapshots``-th state once its batch is done (autosaved)."""
        self.worker.submit_click(ClickRequest(object_id=object_id, point_index=point_index))
        snapshot = self.wait_snapshots(snapshots)
        self.flush()
        return snapshot


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(**options):
        made.append(Harness(tmp_path, **options))
        return made[-1]
    yield make
    for item in made:
        item.worker.stop()


def cloud(n: int = 20, offset: float = 0.0) -> Cloud:
    return Cloud(np.arange(n * 3, dtype=np.float32).reshape(n, 3) + offset)


def test_clicks_arriving_during_a_decode_are_applied_together(harness):
    h = harness()
    h.worker.submit_cloud(cloud())
    h.wait_snapshots(1)
    h.session.gate, h.session.in_predict = threading.Event(), threading.Event()
    h.worker.submit_click(ClickRequest(object_id=1, point_index=1))
    assert h.session.in_predict.wait(30)           # first decode is running...
    for object_id in (2, 3, 4):                    # ...while three more clicks arrive
        h.worker.submit_click(ClickRequest(object_id=object_id, point_index=object_id))
    h.worker.submit_cloud(cloud(offset=100.0))     # and a new cloud (latched: ignored)
    h.session.gate.set()
    snapshot = h.wait_snapshots(3)
    assert h.session.calls[-5:] == ["predict1", "click2", "click3", "click4", "predict4"]
    assert [c.object_id for c in snapshot.clicks] == [1, 2, 3, 4]
    assert snapshot.pending_clicks == 0 and h.session.calls.count("set_cloud") == 1


def test_a_full_click_queue_refuses_new_clicks_with_a_reason_and_keeps_the_queued(harness):
    h = harness()
    h.worker.submit_cloud(cloud(200))
    h.wait_snapshots(1)
    h.session.gate, h.session.in_predict = threading.Event(), threading.Event()
    h.worker.submit_click(ClickRequest(object_id=1, point_index=0))
    assert h.session.in_predict.wait(30)           # a long decode; a client floods clicks
    for index in range(MAX_PENDING_CLICKS):
        h.worker.submit_click(ClickRequest(object_id=1, point_index=1 + index))
    with pytest.raises(ClickRejectedError, match="clicks already wait"):
        h.worker.submit_click(ClickRequest(object_id=1, point_index=150))
    assert h.worker.pending_clicks == MAX_PENDING_CLICKS
    h.session.gate.set()
    snapshot = h.wait_snapshots(3)
    assert len(snapshot.clicks) == 1 + MAX_PENDING_CLICKS   # every accepted click applied
    h.worker.submit_click(ClickRequest(object_id=1, point_index=150))  # room again
    assert h.wait_snapshots(4).clicks[-1].point_index == 150


def moving_sensor(num_sweeps: int, seed: int = 0):
    """A static world seen by a sensor that moves 1 m along x per sweep (0.1 s apart).

    Returns (world (N, 3) float64, sweeps, pose_of): sweep k holds the world points in the
    sensor's frame, shuffled (a new sweep has its own point order), stamped k * 0.1 s, with
    ``order`` = world index of each of its points; ``pose_of`` stands in for tf.
    """
    rng = np.random.default_rng(seed)
    world = np.c_[rng.uniform(-10, 10, (400, 2)), rng.uniform(0, 2, 400)]
    sweeps, poses = [], {}
    for k in range(num_sweeps):
        order = rng.permutation(world.shape[0])
        stamp = Stamp(0, k * 100_000_000)
        sweep = Cloud((world[order] - [k, 0, 0]).astype(np.float32), stamp=stamp)
        sweep.order = order
        pose = np.eye(4)
        pose[0, 3] = k                 # fixed <- sensor: the sensor is at x = k
        poses[stamp] = pose
        sweeps.append(sweep)
    return world, sweeps, lambda cloud: poses.get(cloud.stamp)


def index_of(sweep, world_index: int) -> int:
    return int(np.flatnonzero(sweep.order == world_index)[0])


def test_follow_policy_switches_cloud_after_the_decode_and_reapplies_clicks(harness):
    world, sweeps, pose_of = moving_sensor(2)
    h = harness(cloud_policy="follow", pose_of=pose_of)
    h.worker.submit_cloud(sweeps[0])
    h.wait_snapshots(1)
    h.session.gate = threading.Event()
    h.session.in_predict.clear()
    target = 17                                    # a world point, clicked on sweep 0
    h.worker.submit_click(ClickRequest(object_id=1, position=tuple(world[target])))
    assert h.session.in_predict.wait(30)
    h.worker.submit_cloud(sweeps[1])               # the FakeSession asserts no overlap
    h.session.gate.set()
    snapshot = h.wait_snapshots(3)
    assert h.session.calls.count("set_cloud") == 2 and snapshot.cloud is sweeps[1]
    # the click stays on its world point although the sensor moved and the order changed
    [click] = snapshot.clicks
    assert click.point_index == index_of(sweeps[1], target)
    np.testing.assert_allclose(click.position, world[target] - [1, 0, 0], atol=1e-5)
    assert snapshot.prediction.num_clicks == 1


def test_follow_answers_every_sweep_with_its_own_stamp(harness):
    world, sweeps, pose_of = moving_sensor(5)
    h = harness(cloud_policy="follow", pose_of=pose_of)
    h.worker.submit_cloud(sweeps[0])
    [first] = h.wait_answers(lambda answers: answers, "the first decode's answer")
    assert first.cloud is sweeps[0] and not first.carried
    target = 123
    h.worker.submit_click(ClickRequest(object_id=1, position=tuple(world[target]),
                                       sweep=h.worker.click_target))
    h.wait_answers(lambda answers: answers[-1].labels.max() == 1, "the click's answer")
    for sweep in sweeps[1:]:                       # one at a time: none is dropped
        h.worker.submit_cloud(sweep)
        h.wait_answers(lambda answers: any(a.cloud is sweep for a in answers), "its answer")
    stamps = [(a.cloud.stamp.sec, a.cloud.stamp.nanosec) for a in h.events.answers]
    assert stamps == sorted(stamps)                # never back in time on screen
    for k, sweep in enumerate(sweeps):
        answer = [a for a in h.events.answers if a.cloud is sweep][-1]
        assert answer.labels[index_of(sweep, target)] == 1          # its own labels
        [(position, object_id)] = [(c.position, c.object_id) for c in answer.clicks]
        np.testing.assert_allclose(position, world[target] - [k, 0, 0], atol=1e-4)
    stats = h.worker.stream_stats
    assert stats.received == len(sweeps) and stats.answered >= len(sweeps)


def test_commands_run_in_arrival_order_with_clicks(harness):
    h = harness()
    h.worker.submit_cloud(cloud())
    h.worker.submit_click(ClickRequest(object_id=1, point_index=1))
    h.worker.submit_click(ClickRequest(object_id=2, point_index=2))
    removed, error = h.worker.undo()
    assert error is None and removed.object_id == 2
    object_id, _ = h.worker.new_object()
    assert object_id == 2
    _, error = h.worker.reset()
    assert error is None
    assert h.worker.undo() == (None, "nothing to undo")


def test_rejections_are_reported_and_do_not_stop_the_worker(harness):
    h = harness()
    h.worker.submit_click(ClickRequest(object_id=1, position=(0.0, 0.0, 0.0), source="click"))
    h.flush()
    assert "no cloud yet" in h.errors[-1]
    h.worker.submit_cloud(Cloud(np.full((4, 3), np.nan, np.float32)))
    h.flush()
    assert "cloud rejected" in h.errors[-1]
    h.worker.submit_cloud(cloud())
    h.worker.submit_click(ClickRequest(object_id=1, position=(99.0, 0.0, 0.0), source="click"))
    h.flush()
    assert h.errors[-1].startswith("click rejected: too far")
    h.worker.submit_click(ClickRequest(object_id=1, point_index=3))
    assert h.wait_snapshots(2).clicks[-1].point_index == 3


def test_autosave_after_every_batch_and_resume_on_the_same_cloud(harness, tmp_path):
    h = harness()
    h.worker.submit_cloud(cloud())
    h.wait_snapshots(1)
    h.worker.submit_click(ClickRequest(object_id=1, point_index=4))
    h.wait_snapshots(2)
    h.worker.submit_click(ClickRequest(object_id=0, point_index=6))
    h.wait_snapshots(3)
    record = load_autosave(tmp_path / "autosave", h.snapshots[-1].fingerprint)
    assert [(c.object_id, c.point_index) for c in record.clicks] == [(1, 4), (0, 6)]
    assert record.active_object == 1 and record.decoded_at == (1, 2)
    h.worker.stop()

    again = Harness(tmp_path)
    try:
        again.worker.submit_cloud(cloud())
        snapshot = again.wait_snapshots(1)
        assert [(c.object_id, c.point_index) for c in snapshot.clicks] == [(1, 4), (0, 6)]
        [outcome] = again.events.resumed
        assert (outcome.saved_clicks, outcome.replayed, outcome.active_object) == (2, 2, 1)
        # the saved decode sequence is replayed: a decode after each click, as they came
        assert again.session.calls[:5] == ["set_cloud", "click1", "predict1", "click0",
                                           "predict2"]
    finally:
        again.worker.stop()


def test_save_command_writes_the_current_prediction(harness, tmp_path):
    h = harness()
    assert "nothing to save" in h.worker.save("")[1]
    h.worker.submit_cloud(cloud())
    h.worker.submit_click(ClickRequest(object_id=2, point_index=5))
    path, error = h.worker.save(str(tmp_path / "a.npz"))
    assert error is None
    with np.load(path) as saved:
        assert saved["labels"][5] == 2       # the click before the save is in it


def test_latch_keeps_the_first_cloud_until_reset_then_takes_the_newest(harness):
    h = harness(cloud_policy="latch")
    h.worker.submit_cloud(cloud())
    first = h.wait_snapshots(1).fingerprint
    h.worker.submit_click(ClickRequest(object_id=1, point_index=2))
    h.worker.submit_cloud(cloud(offset=1.0))
    h.worker.submit_cloud(cloud(offset=2.0))   # only the newest unused cloud is kept
    h.flush()
    assert h.snapshots[-1].fingerprint == first and len(h.snapshots[-1].clicks) == 1
    h.worker.reset()
    latest = h.snapshots[-1]
    assert latest.fingerprint != first and latest.clicks == ()
    assert np.array_equal(latest.cloud.xyz, cloud(offset=2.0).xyz)


# ---------------------------------------------------------------- where the worker may write
@pytest.mark.parametrize("bad", ["../escape.npz", "sub/../../escape.npz", "/etc/npiseg.npz",
                                 "OUTSIDE/escape.npz", "link/escape.npz", "alias.npz"])
def test_save_outside_the_output_directory_is_refused_and_nothing_is_written(harness, tmp_path,
                                                                             bad):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)   # a directory link out
    (root / "alias.npz").symlink_to(outside / "alias.npz")          # a file link out
    h = harness(output_directory=str(root), autosave_directory="autosave")
    h.worker.submit_cloud(cloud())
    h.wait_snapshots(1)
    path, error = h.worker.save(bad.replace("OUTSIDE", str(outside)))
    assert path is None and error and ("outside the output directory" in error or "'..'" in error)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.npz").exists()
    # The worker carries on: a name inside the directory is written there.
    path, error = h.worker.save("sub/ok.npz")
    assert error is None and path == str(root.resolve() / "sub" / "ok.npz")


def test_autosave_directory_outside_the_output_directory_is_not_written(harness, tmp_path):
    h = harness(output_directory=str(tmp_path / "root"),
                autosave_directory=str(tmp_path / "elsewhere"))
    h.worker.submit_cloud(cloud())
    snapshot = h.wait_snapshots(1)             # segmented and published all the same
    assert snapshot.prediction is not None
    assert any("outside the output directory" in e for e in h.errors)
    assert not (tmp_path / "elsewhere").exists()
    h.worker.configure(autosave_directory="inside")   # relative: under the output directory
    h.worker.submit_click(ClickRequest(object_id=1, point_index=2))
    h.wait_snapshots(2)
    h.flush()
    assert load_autosave(tmp_path / "root" / "inside", snapshot.fingerprint) is not None


# ---------------------------------------------------------------- crash safety of the autosave
def test_unwritable_autosave_directory_is_reported_at_start_and_the_state_is_kept(harness,
                                                                                 tmp_path):
    (tmp_path / "blocker").write_text("a file where the directory should be")
    h = harness(autosave_directory=str(tmp_path / "blocker"))
    h.worker.submit_cloud(cloud())
    h.worker.submit_click(ClickRequest(object_id=1, point_index=3))
    snapshot = h.wait_snapshots(1)
    assert "autosave directory not usable" in h.errors[0]
    assert any(e.startswith("autosave failed") for e in h.errors[1:])
    assert [c.point_index for c in snapshot.clicks] == [3]   # the annotation goes on in memory
    assert snapshot.prediction.labels[3] == 1


@pytest.mark.parametrize("failure,where", [(errno.ENOSPC, "write"), (errno.ENOSPC, "fsync"),
                                           (errno.EROFS, "fsync"), (errno.EACCES, "write")])
def test_failed_autosave_write_keeps_the_last_good_file(harness, tmp_path, monkeypatch, failure,
                                                        where):
    h = harness()
    h.worker.submit_cloud(cloud())
    fingerprint = h.click_saved(1, 4, 1).fingerprint
    assert len(load_autosave(tmp_path / "autosave", fingerprint).clicks) == 1

    def failing_fsync(fd):   # the disk fills up (or turns read-only) during the next write
        raise OSError(failure, os.strerror(failure))

    def failing_savez(file, **arrays):   # half the bytes reach the file, then the disk is full
        file.write(b"\0" * 4096)
        raise OSError(failure, os.strerror(failure))
    with monkeypatch.context() as patch:
        if where == "fsync":
            patch.setattr(annotation.os, "fsync", failing_fsync)
        else:
            patch.setattr(annotation.np, "savez", failing_savez)
        snapshot = h.click_saved(2, 6, 2)
    assert any(os.strerror(failure) in e for e in h.errors)
    assert len(snapshot.clicks) == 2 and snapshot.prediction.labels[6] == 2   # state kept
    kept = load_autosave(tmp_path / "autosave", fingerprint)                  # last good file
    assert [c.point_index for c in kept.clicks] == [4]
    assert not list((tmp_path / "autosave").glob(".*.tmp"))                   # no litter
    # Once the disk has room again, the next click is saved as usual.
    h.click_saved(2, 7, 3)
    assert len(load_autosave(tmp_path / "autosave", fingerprint).clicks) == 3


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other_version"])
def test_corrupt_autosave_at_start_falls_back_to_the_previous_generation(harness, tmp_path,
                                                                         damage):
    h = harness()
    h.worker.submit_cloud(cloud())
    fingerprint = h.click_saved(1, 4, 1).fingerprint
    h.click_saved(2, 8, 2)
    h.worker.stop()
    newest = annotation.autosave_path(tmp_path / "autosave", fingerprint)
    data = newest.read_bytes()
    if damage == "truncated":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        newest.write_bytes(bytes(range(256)) * 10)
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        record = annotation.load_autosave(tmp_path / "autosave", fingerprint)
        with np.load(newest) as arrays:
            values = dict(arrays)
        values["version"] = np.array(99)
        with open(newest, "wb") as file:
            np.savez(file, **values)
        assert record is not None

    again = harness()
    again.worker.submit_cloud(cloud())
    snapshot = again.wait_snapshots(1)
    # The damaged newest file is kept aside and the generation before it is resumed.
    assert [c.point_index for c in snapshot.clicks] == [4]
    assert any("cannot read autosave" in e for e in again.errors)
    assert newest.with_name(newest.name + ".corrupt").is_file()


def test_corrupt_autosave_without_a_previous_generation_starts_empty(harness, tmp_path):
    h = harness()
    fingerprint = annotation.cloud_fingerprint(cloud().xyz)
    newest = annotation.autosave_path(tmp_path / "autosave", fingerprint)
    newest.parent.mkdir(exist_ok=True)   # the worker may have created it already
    newest.write_bytes(b"PK\x03\x04 not really a zip")
    h.worker.submit_cloud(cloud())
    snapshot = h.wait_snapshots(1)
    assert snapshot.clicks == () and any("cannot read autosave" in e for e in h.errors)
    h.worker.submit_click(ClickRequest(object_id=1, point_index=4))   # and it goes on
    assert h.wait_snapshots(2).prediction.labels[4] == 1


def test_labels_are_published_before_the_autosave_and_the_state_after_it(harness, tmp_path):
    """The labelled clouds must not wait for the disk; the state (``on_state``) comes after
    the write, so a state that reports N clicks means they are autosaved."""
    h = harness()
    on_disk = []
    h.events.on_labels_hook = lambda snapshot: on_disk.append(_saved_clicks(tmp_path, snapshot))
    h.worker.submit_cloud(cloud())
    h.wait_snapshots(1)
    h.worker.submit_click(ClickRequest(object_id=1, point_index=4))
    state = h.wait_snapshots(2)
    assert h.events.order == [("labels", 0), ("state", 0), ("labels", 1), ("state", 1)]
    # each batch: labels while the disk still holds the batch before, then the state after
    assert on_disk == [None, 0] and _saved_clicks(tmp_path, state) == 1


def _saved_clicks(tmp_path, snapshot):
    record = load_autosave(tmp_path / "autosave", snapshot.fingerprint)
    return None if record is None else len(record.clicks)


class ThreadRecordingSession(FakeSession):
    """A FakeSession that records the thread of every set_cloud / predict."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def set_cloud(self, xyz, colors=None, intensity=None) -> CloudSummary:
        self.threads.add(threading.get_ident())
        return super().set_cloud(xyz, colors, intensity)

    def predict(self) -> Prediction:
        self.threads.add(threading.get_ident())
        return super().predict()


def test_a_session_factory_runs_on_the_worker_thread_with_everything_else(tmp_path):
    # The node builds its session (loads the models) this way, so that one thread runs all
    # of its PyTorch work (one OpenMP team; see AnnotationWorker).
    built_on, sessions = [], []

    def factory():
        built_on.append(threading.get_ident())
        sessions.append(ThreadRecordingSession())
        return sessions[0]

    events = Recorder()
    worker = AnnotationWorker(session_factory=factory, events=events,
                              output_directory=str(tmp_path))
    assert built_on == []  # nothing is built before start
    worker.start()
    try:
        assert len(built_on) == 1 and built_on[0] != threading.get_ident()
        worker.submit_cloud(cloud())
        worker.submit_click(ClickRequest(object_id=1, point_index=2))
        with events.published:
            assert events.published.wait_for(lambda: events.snapshots, 30)
        worker.new_object()
        assert sessions[0].threads == {built_on[0]}
        assert sessions[0].calls[0] == "set_cloud" and "predict1" in sessions[0].calls
    finally:
        worker.stop()


def test_a_failing_session_factory_is_raised_by_start_and_ends_the_worker(tmp_path):
    from npiseg_ros.core.errors import CheckpointError

    def factory():
        raise CheckpointError("no checkpoint at /nowhere.safetensors")

    worker = AnnotationWorker(session_factory=factory, events=Recorder(),
                              output_directory=str(tmp_path))
    with pytest.raises(CheckpointError, match="nowhere"):
        worker.start()
    assert not worker._thread.is_alive()


def test_the_worker_takes_exactly_one_of_session_and_factory(tmp_path):
    for session, factory in ((None, None), (FakeSession(), FakeSession)):
        with pytest.raises(ValueError, match="exactly one"):
            AnnotationWorker(session, session_factory=factory, events=Recorder(),
                             output_directory=str(tmp_path))


def test_configure_changes_options_session_settings_and_the_active_object(harness):
    h = harness()
    with pytest.raises(ValueError, match="cannot configure"):
        h.worker.configure(seed=3)                 # read-only: not configurable at run time
    h.worker.configure(max_click_distance=0.25, num_samples=3, active_object=7)
    assert h.worker.new_object() == (8, None)     # above the active object set just before
    assert (h.session.max_click_distance, h.session.num_samples) == (0.25, 3)
    h.worker.configure(cloud_policy="follow")
    h.worker.submit_cloud(cloud())
    h.wait_snapshots(1)
    h.worker.submit_cloud(cloud(offset=1.0))     # followed, as configured
    assert np.array_equal(h.wait_snapshots(2).cloud.xyz, cloud(offset=1.0).xyz)


def test_cloud_frame_is_where_the_next_click_will_be_applied(harness):
    h = harness(cloud_policy="latch")
    assert h.worker.cloud_frame is None           # no cloud: nothing to transform into
    gate = threading.Event()
    h.session.gate = gate                         # hold the worker in its first decode
    h.worker.submit_cloud(Cloud(cloud().xyz, frame_id="lidar"))
    assert h.session.in_predict.wait(30)
    h.worker.submit_cloud(Cloud(cloud(offset=1.0).xyz, frame_id="other"))
    assert h.worker.cloud_frame == "lidar"        # latched: the waiting cloud is not taken
    h.worker.configure(cloud_policy="follow")
    gate.set()
    h.flush()
    h.worker.submit_cloud(Cloud(cloud(offset=2.0).xyz, frame_id="next"))
    frame = h.worker.cloud_frame                  # "next" while it waits, then adopted
    assert frame == "next"


def test_a_click_on_the_sweep_on_screen_lands_on_the_annotated_sweep_first(harness):
    world, sweeps, pose_of = moving_sensor(2)
    h = harness(cloud_policy="follow", pose_of=pose_of)
    h.worker.submit_cloud(sweeps[0])
    h.wait_snapshots(1)
    h.session.gate, h.session.in_predict = threading.Event(), threading.Event()
    h.worker.submit_click(ClickRequest(object_id=2, position=tuple(world[5])))
    assert h.session.in_predict.wait(30)            # the worker is busy on sweep 0...
    h.worker.submit_cloud(sweeps[1])                # ...while sweep 1 is carried and shown
    h.wait_answers(lambda answers: answers[-1].cloud is sweeps[1], "sweep 1 on screen")
    assert h.worker.click_target is sweeps[1]
    target = 250                                     # clicked where sweep 1 shows it
    h.worker.submit_click(ClickRequest(object_id=1, position=tuple(world[target] - [1, 0, 0]),
                                       sweep=h.worker.click_target))
    h.session.gate.set()
    h.wait_snapshots(4)
    # clicks first: applied on sweep 0, moved there from sweep 1, before sweep 1 is encoded
    on_first = [s for s in h.snapshots if s.cloud is sweeps[0] and len(s.clicks) == 2][0]
    assert on_first.clicks[1].point_index == index_of(sweeps[0], target)
    final = h.snapshots[-1]
    assert final.cloud is sweeps[1]
    assert [c.point_index for c in final.clicks] == [index_of(sweeps[1], 5),
                                                     index_of(sweeps[1], target)]


def test_follow_autosaves_the_clicks_after_edits_only(harness, tmp_path):
    world, sweeps, pose_of = moving_sensor(4)
    h = harness(cloud_policy="follow", pose_of=pose_of)
    folder = tmp_path / "autosave"
    h.worker.submit_cloud(sweeps[0])
    h.wait_snapshots(1)
    h.flush()
    assert not list(folder.glob("*.npz"))           # a followed sweep alone: nothing written
    h.worker.submit_click(ClickRequest(object_id=1, position=tuple(world[9])))
    snapshot = h.wait_snapshots(2)
    h.flush()
    record = load_autosave(folder, snapshot.fingerprint)
    assert [c.object_id for c in record.clicks] == [1]
    assert record.labels is None and record.uncertainty is None     # clicks only
    for number, sweep in enumerate(sweeps[1:], start=3):
        h.worker.submit_cloud(sweep)
        h.wait_snapshots(number)
    h.flush()
    assert [p.name for p in folder.glob("*.npz")] == [f"{snapshot.fingerprint}.npz"]


def test_save_every_clicks_writes_the_labels_every_n_clicks(harness, tmp_path):
    h = harness(save_every="clicks", save_every_clicks=2)
    labels = tmp_path / "autosave" / "labels"
    h.worker.submit_cloud(cloud())
    h.click_saved(1, 4, 1)
    assert not labels.exists()
    h.click_saved(2, 6, 2)
    [written] = labels.glob("*.npz")
    with np.load(written) as saved:
        assert saved["labels"][4] == 1 and saved["labels"][6] == 2
    h.click_saved(1, 8, 3)
    assert len(list(labels.glob("*.npz"))) == 1     # the next after two more clicks


def test_save_every_cloud_writes_the_labels_of_the_cloud_being_left(harness, tmp_path):
    h = harness(cloud_policy="latch", save_every="cloud", save_format="label")
    labels = tmp_path / "autosave" / "labels"
    first = Cloud(cloud().xyz, stamp=Stamp(12, 5))
    h.worker.submit_cloud(first)
    h.click_saved(3, 7, 1)
    h.worker.submit_cloud(cloud(offset=1.0))        # latched: waits for the reset
    h.flush()
    assert not labels.exists()
    h.worker.reset()                                 # the first cloud is left
    [written] = labels.glob("*.label")
    assert written.name.startswith("0000000012_000000005_")
    words = np.fromfile(written, dtype=np.uint32)
    assert words.shape == (20,) and (words[7] & 0xFFFF) == 3


def test_output_cap_removes_the_oldest_own_files_and_nothing_else(harness, tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    foreign = root / "mine.label"                     # a user's file: never touched
    foreign.write_bytes(b"\1" * 50_000)
    h = harness(output_directory=str(root), autosave_directory="autosave",
                max_output_mb=0.02)                    # 20,000 bytes
    big = Cloud(np.random.default_rng(0).uniform(-5, 5, (2000, 3)).astype(np.float32))
    h.worker.submit_cloud(big)
    h.click_saved(1, 4, 1)
    written = []
    for number in range(4):                            # 8,000 bytes each
        path, error = h.worker.save(f"saves/s{number}.label")
        assert error is None
        written.append(Path(path))
        if number == 0:                                # the user edits the first one
            with open(path, "ab") as file:
                file.write(b"\0" * 4)
    assert written[3].is_file() and written[2].is_file()       # the newest fit
    assert not written[1].exists()                             # the oldest unchanged one went
    assert written[0].is_file()              # changed since the node wrote it: left alone
    assert foreign.read_bytes() == b"\1" * 50_000
    assert [Path(p).name for p in h.events.removed] == ["s1.label"]
    own = [written[2], written[3], *(root / "autosave").glob("*.npz")]
    assert sum(p.stat().st_size for p in own) <= 20_000


def test_a_link_in_place_of_the_ledger_is_not_followed(harness, tmp_path):
    root, outside = tmp_path / "out", tmp_path / "outside.txt"
    root.mkdir()
    outside.write_text("keep")
    (root / ".npiseg_files").symlink_to(outside)
    h = harness(output_directory=str(root), autosave_directory="autosave", max_output_mb=1.0)
    h.worker.submit_cloud(cloud())
    h.click_saved(1, 4, 1)
    assert h.worker.save("a.npz")[1] is None
    assert outside.read_text() == "keep"


def test_a_click_stamped_like_a_recent_sweep_is_taken_on_that_sweep(harness):
    _, sweeps, pose_of = moving_sensor(3)
    h = harness(cloud_policy="follow", pose_of=pose_of)
    for sweep in sweeps:
        h.worker.submit_cloud(sweep)
        h.wait_answers(lambda answers: any(a.cloud is sweep for a in answers), "its answer")
    assert h.worker.click_target is sweeps[2]                    # what a viewer shows now
    assert h.worker.click_target_at(sweeps[1].stamp) is sweeps[1]   # the sweep it names
    assert h.worker.click_target_at(Stamp(99, 0)) is sweeps[2]       # no such sweep: the last
    assert h.worker.click_target_at(Stamp(0, 0)) is sweeps[2]        # unstamped: the last
    h.worker.configure(cloud_policy="latch")
    h.flush()
    assert h.worker.click_target_at(sweeps[1].stamp) is h.worker.click_target
