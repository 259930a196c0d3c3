"""npiseg-annotate tracking and review with the shipped model: the prior (previous-mask input),
clouds encoded ahead, a moving car followed over six frames of a synthetic drive, exact resume
on a carried frame, propagating edits forward, review status and triage, and the server's
background work (exports after an idle spell, the next frame encoded ahead)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs rosbags (pip install 'npiseg_ros[annotate]')")

from npiseg_ros.annotate.bag import write_cloud_bag  # noqa: E402
from npiseg_ros.annotate.session import (AnnotateSession, load_shipped_session,  # noqa: E402
                                         voxel_majority)
from npiseg_ros.annotate.sources import open_source  # noqa: E402
from npiseg_ros.annotate.synthdrive import synthetic_drive  # noqa: E402
from npiseg_ros.annotate.tracking import deepest_points  # noqa: E402
from npiseg_ros.annotate.workspace import Workspace  # noqa: E402
from npiseg_ros.resources import shipped_checkpoint  # noqa: E402

pytestmark = pytest.mark.skipif(not shipped_checkpoint(), reason="no shipped checkpoint")
MOVER = 134          # a car of street 0 (npiseg_train.synth seed 0), near the sensor
FRAMES = 7


@pytest.fixture(scope="module")
def session():
    return load_shipped_session(num_samples=4)[0]


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """Seven sweeps of one street, the sensor 0.4 m/frame forward (/tf), the car MOVER driving
    0.6 m/frame on its own; with the truth instance ids."""
    clouds, intensities, poses, truth = synthetic_drive(
        FRAMES, scene_every=FRAMES, azimuth_steps=512, movers={MOVER: (0.6, 0.0)},
        with_labels=True)
    bag = write_cloud_bag(tmp_path_factory.mktemp("drive") / "bag", clouds,
                          intensities=intensities, poses=poses, storage="mcap")
    return bag, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _middle(xyz: np.ndarray, members: np.ndarray) -> int:
    centre = xyz[members].mean(axis=0)
    return int(members[np.argmin(np.linalg.norm(xyz[members] - centre, axis=1))])


def test_voxel_majority_matches_a_loop():
    rng = np.random.default_rng(0)
    voxels = rng.integers(-1, 40, 3000)
    labels = rng.integers(-1, 5, 3000)
    fast = voxel_majority(labels, voxels, 45)
    for voxel in range(45):
        members = labels[(voxels == voxel) & (labels >= 0)]
        if members.size == 0:
            assert fast[voxel] == 0
        else:
            counts = np.bincount(members)
            assert counts[fast[voxel]] == counts.max()


def test_deepest_point_is_the_middle_of_a_box():
    grid = np.stack(np.meshgrid(*(np.arange(-1.0, 1.01, 0.1),) * 3), axis=-1).reshape(-1, 3)
    around = grid * 2.0 + [0.0, 0.0, 0.0]
    xyz = np.concatenate([grid, around[np.abs(around).max(axis=1) > 1.05]])
    labels = np.concatenate([np.ones(len(grid), int), np.zeros(len(xyz) - len(grid), int)])
    found = deepest_points(xyz, labels, [1, 2])
    assert list(found) == [1] and np.allclose(xyz[found[1]], 0.0, atol=1e-9)


def test_objects_tracked_ahead_serve_only_the_frame_and_labels_they_came_from():
    """What the background thread tracked into the next frame is not carried into another
    frame (a step back, a jump) nor after the labels on screen changed."""
    import threading

    from npiseg_ros.annotate.frames import Ahead, FrameSequence, Lookahead

    frames, key = FrameSequence(None), [(3, 7)]
    carried = object()
    frames.ahead = Ahead(4, None, None, carried=carried, carried_for=(3, 7))
    lookahead = Lookahead(frames, None, threading.RLock(), threading.Lock(),
                          key=lambda: key[0], left=lambda: None, tracks=True)
    assert lookahead.carried_into(4) is carried
    assert lookahead.carried_into(2) is None
    key[0] = (3, 8)
    assert lookahead.carried_into(4) is None


def test_a_cloud_encoded_ahead_decodes_exactly_like_one_encoded_in_place(session, drive):
    frame = open_source(drive[0]).frame(0)
    plain = AnnotateSession(session.router, num_samples=4)
    plain.set_cloud(frame.xyz)
    plain.add_click(point_index=_middle(frame.xyz, np.flatnonzero(drive[1][0] == MOVER)),
                    object_id=1)
    expected = plain.predict()
    ahead = AnnotateSession(session.router, num_samples=4)
    encoded = ahead.encode(frame.xyz)  # the core session's: no change to `ahead`
    ahead.set_cloud(np.zeros((10, 3), np.float32) + np.arange(10)[:, None])  # another cloud
    ahead.set_prior(np.ones(10, int))
    ahead.offer(encoded)
    summary = ahead.set_cloud(frame.xyz)
    assert summary.num_voxels == plain.num_voxels and ahead.clicks == ()
    assert not ahead.has_prior  # it belonged to the cloud before
    ahead.add_click(point_index=plain.clicks[0].point_index, object_id=1)
    adopted = ahead.predict()
    assert np.array_equal(adopted.labels, expected.labels)
    assert np.array_equal(adopted.uncertainty, expected.uncertainty, equal_nan=True)
    # an offer for other arrays is not taken
    ahead.offer(encoded)
    ahead.set_cloud(frame.xyz.copy())
    assert ahead._offered is None


def test_the_prior_is_the_first_decodes_previous_mask(session, drive, monkeypatch):
    from npiseg_ros.core.session import SegmentationSession

    seen = []  # the previous-mask input each decode hands the model
    run_model = SegmentationSession._run_model

    def record(self, model, scene, clicks, previous, generator):
        seen.append(None if previous is None else previous.cpu().numpy().copy())
        return run_model(self, model, scene, clicks, previous, generator)

    monkeypatch.setattr(SegmentationSession, "_run_model", record)
    xyz = open_source(drive[0]).frame(0).xyz
    car = np.flatnonzero(drive[1][0] == MOVER)
    wide = np.where(np.linalg.norm(xyz - xyz[car].mean(axis=0), axis=1) < 6.0, 7, 0)
    outputs = []
    for prior in (wide, np.zeros(len(xyz), int), None):
        seen.clear()
        probe = AnnotateSession(session.router, num_samples=4)
        probe.set_cloud(xyz)
        probe.set_prior(prior)
        probe.add_click(point_index=_middle(xyz, car), object_id=7)
        outputs.append(probe.predict())
        probe.add_click(point_index=_middle(xyz, car), object_id=7)
        probe.predict()
        if prior is None:
            assert seen[0] is None
        else:  # object 7 is the model's label 1; the voxels' majority of the point labels
            expected = np.where(voxel_majority(prior, probe.point_to_voxel,
                                               probe.num_voxels) == 7, 1, 0)
            assert np.array_equal(seen[0], expected)
        # the next decode gets the session's own previous labels, not the prior
        assert np.array_equal(seen[1], np.where(probe._history[0].voxel_labels == 7, 1, 0))
    wide_out, zero_out = outputs[0], outputs[1]
    assert not np.array_equal(wide_out.uncertainty, zero_out.uncertainty)  # the model sees it
    with pytest.raises(ValueError, match="labels for"):
        probe.set_prior(np.zeros(5, int))


def _track(session, drive, folder, mode: str) -> tuple[list[float], Workspace]:
    bag, truth = drive
    ws = Workspace(session, folder, open_source(bag), source_path=str(bag), carry=mode,
                   log=lambda m: 0)
    ws.set_class("car")
    ws.click(point_index=_middle(ws.frame.xyz, np.flatnonzero(truth[0] == MOVER)))
    ious = [_iou(ws.prediction.labels == 1, truth[0] == MOVER)]
    for index in range(1, FRAMES):
        ws.step(1)
        ious.append(_iou(ws.prediction.labels == 1, truth[index] == MOVER))
    return ious, ws


def test_a_moving_car_is_followed_with_its_track_id(session, drive, tmp_path):
    ious, ws = _track(session, drive, tmp_path / "masks", "masks")
    assert min(ious[1:]) >= 0.8, ious
    report = ws.state()["carry"]
    assert report["mode"] == "masks" and report["through_poses"] and list(report["objects"]) == \
        ["1"]
    assert ws.review.objects[1]["class"] == "car" and ws.state()["objects"][1]["class"] == "car"
    assert "carried from" in ws.prior_origin
    # carried clicks only: the car drives away from its click (0.6 m/frame)
    clicks, _ = _track(session, drive, tmp_path / "clicks", "clicks")
    assert clicks[-1] < 0.5 and min(ious[1:]) > max(clicks[-2:]), (ious, clicks)

    # a carried frame reopens exactly: its clicks replay on the stored carried mask
    ws.goto_index(3)
    labels = ws.prediction.labels.copy()
    again = Workspace(session, tmp_path / "masks", open_source(drive[0]),
                      source_path=str(drive[0]), log=lambda m: 0)
    again.goto_index(3)
    assert np.array_equal(again.prediction.labels, labels)
    assert "resumed" in again.notice and "carried from" in again.prior_origin


def test_propagate_review_status_and_triage(session, drive, tmp_path):
    from npiseg_ros.annotate.triage import run_triage

    bag, truth = drive
    folder = tmp_path / "s"
    ws = Workspace(session, folder, open_source(bag), source_path=str(bag), log=lambda m: 0)
    ws.click(point_index=_middle(ws.frame.xyz, np.flatnonzero(truth[0] == MOVER)))
    ws.step(1)
    ws.step(1)
    ws.goto_index(0)
    assert [c.object_id for c in ws.annotation.clicks] == [1]
    # an edit in a visited frame: a second object, then propagated forward on request
    ws.new_object()
    ws.click(point_index=_middle(ws.frame.xyz, np.flatnonzero(truth[0] == 136)))
    ws.goto_index(2)
    assert 2 not in {c.object_id for c in ws.annotation.clicks}  # not yet
    ws.goto_index(0)
    ws.set_status("accepted")
    ws.propagate(2)
    assert ws.frames.position == 0 and "propagated to 2 frames" in ws.notice
    ws.goto_index(2)
    assert {c.object_id for c in ws.annotation.clicks} >= {1, 2}
    assert (ws.prediction.labels == 2).any()
    ws.set_status("needs_fix")
    state = ws.state()
    assert state["status"] == "needs_fix" and state["status_counts"] == {
        "todo": FRAMES - 2, "accepted": 1, "needs_fix": 1}
    ws.set_status("great")
    assert "status must be one of" in ws.error
    saved = json.loads((folder / "session.json").read_text())
    assert saved["status"][ws.frames.names[0]] == "accepted"
    # propagating stops before an accepted frame
    ws.goto_index(1)
    ws.set_status("accepted")
    ws.goto_index(0)
    ws.set_status("todo")
    ws.propagate(3)
    assert "propagated to 0 frames" in ws.notice
    ws.goto_index(0)
    ws.set_status("accepted")
    ws.flush(wait=True)

    rows = run_triage(open_source(bag), session, folder, progress=False, log=lambda m: 0)
    by_index = {row["index"]: row for row in rows}
    assert by_index[0]["status"] == by_index[1]["status"] == "accepted"
    assert by_index[0]["score"] == "" and by_index[0]["rank"] > max(
        r["rank"] for r in rows if r["status"] != "accepted")
    # frame 2 holds only clicks the tool carried there: none confirmed by a person
    assert by_index[2]["own_clicks"] == 0 and by_index[2]["carried_clicks"] >= 2


def test_server_exports_when_idle_and_encodes_ahead(session, drive, tmp_path):
    import threading

    from annotate_helpers import get, post
    from npiseg_ros.annotate.server import AnnotateServer

    bag, truth = drive
    ws = Workspace(session, tmp_path / "s", open_source(bag), source_path=str(bag),
                   log=lambda m: 0)
    server = AnnotateServer(ws, port=0)
    ws.start_background()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = server.url
    try:
        assert json.loads(get(url + "api/ontology"))["name"] == "semantickitti"
        status, state = post(url, "class", {"class": "truck"})
        assert status == 200 and state["current_class"] == "truck"
        assert post(url, "class", {"class": "spaceship"})[1]["error"].startswith("class 'spac")
        status, state = post(url, "click", {"point_index": _middle(
            ws.frame.xyz, np.flatnonzero(truth[0] == MOVER))})
        assert state["objects"][1]["class"] == "truck" and state["dirty"]
        name = state["frame_name"]
        assert not (tmp_path / "s/export" / f"{name}.label").exists()  # not on the click path
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (state["exported"] and state["next_ready"]):
            time.sleep(0.2)
            state = json.loads(get(url + "api/state"))
        assert f"export/{name}.label" in state["exported"] and not state["dirty"]
        assert state["next_ready"]  # encoded and tracked ahead while idle
        status, state = post(url, "attribute", {"name": "moving", "value": True})
        assert status == 200 and state["objects"][1]["attributes"]["moving"] is True
        status, state = post(url, "export")
        words = np.fromfile(tmp_path / "s/export" / f"{name}.label", "<u4")
        labels = np.frombuffer(get(url + "api/labels")[:4 * len(words)], "<i4")
        assert np.all((words[labels == 1] & 0xFFFF) == 258)  # moving-truck
        assert np.all((words[labels == 1] >> 16) == 1)
        status, state = post(url, "status", {"status": "accepted"})
        assert state["status"] == "accepted"
        assert post(url, "status", {"status": 3})[0] == 400
        status, state = post(url, "step", {"delta": 1})
        assert state["ok"] and "tracked 1 objects" in state["notice"]
        assert state["objects"][1]["class"] == "truck"
    finally:
        server.shutdown()
        server.server_close()
        ws.stop_background()
    assert (tmp_path / "s/export" / f"{state['frame_name']}.label").exists()  # at shutdown
