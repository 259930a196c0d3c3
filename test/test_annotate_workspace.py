"""npiseg-annotate workspace over a synthetic drive bag (npiseg_train.synth, written by the test):
carrying clicks frame to frame through /tf poses, misses reported, bad frames that leave the
tool running, autosave + resume, the HTTP API's validation, and the triage pass (progress bar,
CSV, plot, frame order)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bag tests need rosbags (pip install 'npiseg_ros[annotate]')")

from annotate_helpers import REPO  # noqa: E402
from npiseg_ros.annotate.sources import open_source  # noqa: E402
from npiseg_ros.annotate.synthdrive import write_synthetic_bag  # noqa: E402
from npiseg_ros.annotate.session import load_shipped_session  # noqa: E402
from npiseg_ros.annotate.workspace import Workspace  # noqa: E402
from npiseg_ros.resources import shipped_checkpoint  # noqa: E402

pytestmark = pytest.mark.skipif(not shipped_checkpoint(), reason="no shipped checkpoint")
FRAMES = 8  # frames 0-3 one street, 4-7 another 1 km away; 5 is empty, 6 all NaN
BAD = {5: "empty", 6: "nan"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drive")
    return write_synthetic_bag(folder / "bag", FRAMES, scene_every=4, azimuth_steps=256,
                               speed=0.4, bad_frames=BAD)


@pytest.fixture(scope="module")
def session():
    return load_shipped_session(num_samples=4)[0]


def _messages():
    lines: list[str] = []
    return lines, lines.append


def _tall_point(ws: Workspace) -> int:
    """A point well above the road, near the sensor (something to click on)."""
    xyz = ws.frame.xyz
    near = np.flatnonzero((np.hypot(xyz[:, 0], xyz[:, 1]) < 12) & (xyz[:, 2] > -0.5))
    return int(near[np.argmax(xyz[near, 2])])


def test_carry_forward_through_poses_misses_and_bad_frames(drive, session, tmp_path):
    lines, log = _messages()
    ws = Workspace(session, tmp_path / "s", open_source(drive), source_path=str(drive), log=log,
                   carry="clicks")
    assert ws.frame_name.startswith("000000_") and ws.error == ""
    first = _tall_point(ws)
    ws.click(point_index=first)
    ws.new_object()
    ws.click(point_index=int(np.argmin(np.linalg.norm(ws.frame.xyz[:, :2] - [6, 3], axis=1))))
    ws.click(point_index=int(np.argmin(np.linalg.norm(ws.frame.xyz[:, :2] - [-8, -3], axis=1))),
             background=True)
    assert ws.error == "" and [c.object_id for c in ws.session.clicks] == [1, 2, 0]
    world = [ws.frame.pose[:3, :3] @ ws.frame.xyz[c.point_index] + ws.frame.pose[:3, 3]
             for c in ws.session.clicks]

    ws.step(1)  # same street, sensor 0.4 m further: every click lands, through /tf
    report = ws.state()["carry"]
    assert report["carried"] == 3 and report["through_poses"] and report["missed"] == []
    assert [c.object_id for c in ws.session.clicks] == [1, 2, 0] and ws.active_object == 2
    for click, expected in zip(ws.session.clicks, world):
        landed = ws.frame.pose[:3, :3] @ ws.frame.xyz[click.point_index] + ws.frame.pose[:3, 3]
        assert np.linalg.norm(landed - expected) < 0.5
    assert {o["id"] for o in ws.state()["objects"]} == {0, 1, 2}
    assert ws.prediction is not None and (ws.prediction.labels == 1).any()
    # carried clicks are saved at once (clicks only): the frame reopens with them; its exports
    # follow when the frame is left (no background thread here)
    assert list((tmp_path / "s" / "autosave" / ws.frame_name).glob("*.npz"))
    carried_into = ws.frame_name
    assert not list((tmp_path / "s" / "export").glob(f"{carried_into}.*"))

    ws.step(1)
    saved = sorted((tmp_path / "s" / "export").glob(f"{carried_into}.*"))
    assert [p.suffix for p in saved] == [".label", ".npz", ".ply"]
    ws.step(1)
    assert ws.state()["carry"]["carried"] == 3
    ws.step(1)  # a new street 1 km away: every carried click lands on no point
    report = ws.state()["carry"]
    assert report["carried"] == 0 and len(report["missed"]) == 3
    assert "landed on no point" in ws.notice and any("landed on no point" in m for m in lines)

    ws.step(1)  # empty frame: a message, the tool goes on
    assert ws.frame is None and "is empty" in ws.error and ws.state()["ok"] is False
    ws.click(point_index=0)
    assert "no usable frame" in ws.error
    ws.step(1)  # all-NaN frame
    assert ws.frame is None and "NaN" in ws.error
    ws.step(1)
    assert ws.frame is not None and ws.error == ""
    ws.step(1)
    assert ws.notice == "last frame"

    # going back to an annotated frame resumes its own clicks instead of carrying
    ws.goto_index(0)
    assert [c.object_id for c in ws.session.clicks] == [1, 2, 0]
    assert ws.session.clicks[0].point_index == first and "resumed 3 clicks" in ws.notice


def test_autosave_resume_is_exact(drive, session, tmp_path):
    folder = tmp_path / "s"
    ws = Workspace(session, folder, open_source(drive), source_path=str(drive), log=lambda m: 0)
    ws.click(point_index=_tall_point(ws))
    ws.click(point_index=0, background=True)
    ws.undo()
    ws.new_object()
    labels = ws.prediction.labels.copy()
    state = json.loads((folder / "session.json").read_text())
    assert state["current"] == ws.frame_name and state["source"] == str(drive)
    # a second workspace (another person, a restart) on the same folder
    again = Workspace(session, folder, open_source(drive), source_path=str(drive),
                      log=lambda m: 0)
    assert len(again.session.clicks) == 1 and again.active_object == 2
    assert np.array_equal(again.prediction.labels, labels)
    assert "differ" not in again.notice
    # saved labels that the clicks no longer reproduce (another model): said, not hidden
    from dataclasses import replace

    from npiseg_ros.io.autosave import cloud_fingerprint, load_autosave, write_autosave

    folder_of_frame = folder / "autosave" / again.frame_name
    record = load_autosave(folder_of_frame, cloud_fingerprint(again.frame.xyz))
    assert record.labels is None  # the click path saves the clicks only
    again.export_now()  # exporting saves the labels too (also after an idle spell)
    record = load_autosave(folder_of_frame, cloud_fingerprint(again.frame.xyz))
    assert np.array_equal(record.labels, labels)
    tampered = record.labels.copy()
    tampered[:7] = 9
    write_autosave(folder_of_frame, replace(record, labels=tampered))
    lines = []
    third = Workspace(session, folder, open_source(drive), source_path=str(drive),
                      log=lines.append)
    assert np.array_equal(third.prediction.labels, labels)
    assert "differ from the saved ones at 7 points" in third.notice and lines
    ws.reset()
    assert ws.session.clicks == () and (ws.prediction.labels <= 0).all()


def test_server_validates_requests_and_survives_bad_inputs(drive, session, tmp_path):
    import threading

    from annotate_helpers import get, post
    from npiseg_ros.annotate.server import AnnotateServer

    ws = Workspace(session, tmp_path / "s", open_source(drive), source_path=str(drive),
                   log=lambda m: 0)
    server = AnnotateServer(ws, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = server.url
    try:
        for body in ({"point_index": "3"}, {"point_index": True}, {"position": [1, 2]},
                     {"point_index": 1, "background": "yes"}):
            status, answer = post(url, "click", body)
            assert status == 400, body
        assert post(url, "delete_everything")[0] == 400
        assert post(url, "goto", {"index": 10**12})[0] == 400
        # bad inputs from the page: a message in the state, the tool keeps the current input
        text = tmp_path / "notes.txt"
        text.write_text("x")
        status, state = post(url, "open", {"path": str(text)})
        assert status == 200 and "not a rosbag2 bag" in state["error"]
        status, state = post(url, "open", {"path": str(drive), "topic": "/status"})
        assert "not sensor_msgs/msg/PointCloud2" in state["error"]
        assert state["frames"] == FRAMES and state["ok"]
        status, state = post(url, "goto", {"index": 5})
        assert status == 200 and "is empty" in state["error"]
        assert get(url + "api/cloud") == b"" and get(url + "api/labels") == b""
        status, state = post(url, "step", {"delta": 2})
        assert state["ok"] and state["error"] == ""
        status, state = post(url, "click", {"point_index": 0})
        assert status == 200 and len(state["clicks"]) == 1
        # the loopback Host check (DNS rebinding) and cross-origin POSTs
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url + "api/state", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 403
        request = urllib.request.Request(url + "api/undo", data=b"{}", method="POST", headers={
            "Content-Type": "application/json", "Origin": "http://evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 403
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
    written = {p.relative_to(tmp_path / "s").parts[0] for p in (tmp_path / "s").rglob("*")}
    assert written <= {"session.json", "autosave", "export", "carried"}


def test_triage_cli_progress_csv_plot_and_order(drive, session, tmp_path):
    folder = tmp_path / "s"
    # label the first sweep so that triage ranks by the carried objects' uncertainty
    ws = Workspace(session, folder, open_source(drive), source_path=str(drive), log=lambda m: 0)
    ws.click(point_index=_tall_point(ws))
    result = subprocess.run(
        [sys.executable, "-m", "npiseg_ros.annotate", "triage", str(drive), "--session",
         str(folder), "--samples", "4"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "triage: 100%" in result.stderr and f"{FRAMES}/{FRAMES}" in result.stderr
    assert "2 frame(s) unusable" in result.stderr
    with open(folder / "triage.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == FRAMES and (folder / "triage.png").stat().st_size > 10_000
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, FRAMES + 1))
    by_index = {int(r["index"]): r for r in rows}
    assert by_index[0]["own_clicks"] == "1"
    assert by_index[1]["carried_clicks"] == "1" and by_index[1]["missed_clicks"] == "0"
    assert by_index[4]["missed_clicks"] == "1"  # the new street
    assert "is empty" in by_index[5]["error"] and "NaN" in by_index[6]["error"]
    assert {int(by_index[5]["rank"]), int(by_index[6]["rank"])} == {FRAMES - 1, FRAMES}
    # the browser tool opens frames in rank order
    reopened = Workspace(session, folder, open_source(drive), source_path=str(drive),
                         log=lambda m: 0)
    ranked = sorted(rows, key=lambda r: int(r["rank"]))
    assert reopened.frames.order_kind == "triage"
    assert reopened.frames.order == [int(r["index"]) for r in ranked]


def test_cli_bad_input_message_in_terminal_and_page(drive, tmp_path):
    from annotate_helpers import ToolProcess, get, post

    not_a_bag = tmp_path / "drive.db3"
    not_a_bag.write_text("not a database")
    tool = ToolProcess(str(not_a_bag), "--session", str(tmp_path / "s"))
    try:
        state = json.loads(get(tool.url + "api/state"))
        assert "not a readable rosbag2 bag" in state["error"] and state["frames"] == 0
        assert "npiseg-annotate: error:" in tool.output() and "not a readable" in tool.output()
        status, state = post(tool.url, "open", {"path": str(drive), "topic": "/status"})
        assert "is std_msgs/msg/String, not sensor_msgs/msg/PointCloud2" in state["error"]
        noise = tmp_path / "noise.bin"  # random bytes, a whole number of 16-byte points
        noise.write_bytes(np.random.default_rng(0).bytes(16 * 3000))
        status, state = post(tool.url, "open", {"path": str(noise)})
        assert "noise.bin" in state["error"] and "not a KITTI velodyne scan" in state["error"]
        tool.wait_for("not a KITTI velodyne scan", 60)  # said in the terminal too
        assert "Overflow" not in tool.output()
        status, state = post(tool.url, "open", {"path": str(drive)})  # still running: a good one
        assert state["frames"] == FRAMES and state["ok"] and state["error"] == ""
    finally:
        tool.stop()
