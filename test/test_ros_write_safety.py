"""Where the node writes, over real DDS: only inside its ``output_directory``; damaged autosaves.

The node runs in its own process. Every path a graph client can send (``~/save_annotation``,
the ``autosave_directory`` parameter) that leads outside the output directory - ``..``, an
absolute path elsewhere, a symbolic link pointing out - is refused with a reason in the
response, on ``~/state`` and in the node's log, nothing is written outside, and the node keeps
working. The node is started with a torn newest autosave of the test cloud: it must come up,
say why, and resume the generation before it. Saves requested over and over cannot fill the
disk: the node's own files stay under ``max_output_mb`` (its oldest removed first), and a
user's file in the directory is never touched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

try:
    from npiseg_ros.io.autosave import (AnnotationRecord, ClickRecord, autosave_path,
                                           cloud_fingerprint, write_autosave)
    from npiseg_ros.ros.client import SegmentationClient
    from npiseg_ros.ros.processes import stop_process
    from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,
                                        save_tiny_checkpoint, start_test_node, street_scene)
    from npiseg_ros.srv import SaveAnnotation
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

DOMAIN_ID = domain_for(__name__)
CAP_BYTES = 200_000
"""The node's max_output_mb here: a few saves of the test cloud (~48 kB as PLY) exceed it."""


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("write_safety")
    out, outside = tmp / "out", tmp / "outside"
    (out / "autosave").mkdir(parents=True), outside.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "alias.npz").symlink_to(outside / "alias.npz")
    (out / "users_notes.ply").write_bytes(b"\1" * 100_000)   # not the node's: never removed
    checkpoint = save_tiny_checkpoint(tmp / "tiny.safetensors")
    xyz, intensity, picks = street_scene(seed=3)
    # A previous session: two autosave generations of this cloud, the newest one torn.
    fingerprint = cloud_fingerprint(xyz)
    for clicks in ([ClickRecord(tuple(map(float, xyz[picks["a"]])), 1, picks["a"])],
                   [ClickRecord(tuple(map(float, xyz[picks["a"]])), 1, picks["a"]),
                    ClickRecord(tuple(map(float, xyz[picks["b"]])), 2, picks["b"])]):
        write_autosave(out / "autosave", AnnotationRecord(
            fingerprint, FRAME, tuple(clicks), len(clicks), decoded_at=(len(clicks),)))
    newest = autosave_path(out / "autosave", fingerprint)
    newest.write_bytes(newest.read_bytes()[:300])           # torn: as if the disk lost the end
    with ros_test_context(DOMAIN_ID):
        process = start_test_node(tmp, checkpoint, DOMAIN_ID, output_directory=str(out),
                                  autosave_directory=str(out / "autosave"),
                                  max_output_mb=CAP_BYTES / 1e6)
        client = SegmentationClient("npiseg_write_safety_client")
        try:
            client.wait_for_node(timeout_s=120)
            resumed = client.publish_cloud_until(cloud_msg(xyz, intensity),
                                                 lambda s: s.num_points == xyz.shape[0])
            yield dict(process=process, client=client, xyz=xyz, picks=picks, out=out,
                       outside=outside, tmp=tmp, newest=newest, resumed=resumed)
        finally:
            client.close()
            stop_process(process)
            print((tmp / "node.log").read_text(errors="replace")[-4000:])


def log_text(node) -> str:
    return (node["tmp"] / "node.log").read_text(errors="replace")


def test_torn_autosave_at_start_is_reported_and_the_previous_generation_resumed(node):
    client = node["client"]
    state = client.wait_for_state(lambda s: s.num_clicks == 1, what="resumed previous autosave")
    assert list(state.object_ids) == [1]
    assert "cannot read autosave" in log_text(node) and "previous autosave" in log_text(node)
    assert node["newest"].with_name(node["newest"].name + ".corrupt").is_file()
    client.wait_for_labels(lambda labels: labels[node["picks"]["a"]] == 1, what="labels")
    assert node["process"].poll() is None


@pytest.mark.parametrize("bad", [
    "../outside/escape.npz", "saves/../../outside/escape.npz", "OUTSIDE/escape.npz",
    "link/escape.npz", "alias.npz", "~/npiseg_escape_test.npz", "/etc/npiseg_escape_test.npz"])
def test_save_annotation_outside_the_output_directory_is_refused(node, bad):
    client, outside, tmp = node["client"], node["outside"], node["tmp"]
    before = client.wait_for_state(lambda s: True)
    path = bad.replace("OUTSIDE", str(outside))
    response = client.call("save_annotation", SaveAnnotation.Request(path=path))
    assert not response.success and response.path == ""
    assert "outside the output directory" in response.message or "'..'" in response.message
    error = client.wait_for_error(before.error_count)
    assert error.startswith("save_annotation failed") and path in error
    assert files_under(outside) == []
    assert not (tmp / "escape.npz").exists() and not Path("/etc/npiseg_escape_test.npz").exists()
    assert not Path(os.path.expanduser("~/npiseg_escape_test.npz")).exists()
    assert response.message in log_text(node)              # the node logs the refusal
    assert node["process"].poll() is None


def test_save_annotation_inside_the_output_directory_still_works(node):
    client, out = node["client"], node["out"]
    for name in ("inside.npz", str(out / "sub" / "absolute.ply")):
        response = client.call("save_annotation", SaveAnnotation.Request(path=name))
        assert response.success, response.message
        assert Path(response.path).is_file() and out.resolve() in Path(response.path).parents
    assert files_under(node["outside"]) == []


def test_autosave_directory_parameter_cannot_point_outside(node):
    client, out, outside = node["client"], node["out"], node["outside"]
    for value in (str(outside), "../outside", "link"):
        result = client.set_parameter("autosave_directory", value)
        assert not result.successful
        assert "outside the output directory" in result.reason or "'..'" in result.reason
    assert "parameter change rejected" in log_text(node)
    # A relative name is taken under the output directory and used from the next decode on.
    assert client.set_parameter("autosave_directory", "moved").successful
    state = client.wait_for_state(lambda s: True)
    client.click(tuple(node["xyz"][node["picks"]["b"]]), object_id=2, frame_id=FRAME)
    state = client.wait_for_state(lambda s: s.num_clicks == state.num_clicks + 1, what="click")
    client.spin_until(lambda: autosave_path(out / "moved", state.cloud_fingerprint).is_file(),
                      what="the autosave in the new directory")
    assert files_under(outside) == []
    assert client.set_parameter("autosave_directory", str(out / "autosave")).successful


def test_unwritable_autosave_directory_is_reported_and_annotation_goes_on(node):
    client, out = node["client"], node["out"]
    (out / "blocker").write_text("a file where a directory should be")
    assert client.set_parameter("autosave_directory", "blocker").successful
    before = client.wait_for_state(lambda s: True)
    client.click(tuple(node["xyz"][7]), background=True, frame_id=FRAME)
    assert "autosave failed" in client.wait_for_error(before.error_count)
    state = client.wait_for_state(lambda s: s.num_clicks == before.num_clicks + 1, what="click")
    client.wait_for_labels(lambda labels: labels[7] == 0, what="labels after the click")
    assert state.num_clicks == before.num_clicks + 1 and node["process"].poll() is None
    assert client.set_parameter("autosave_directory", str(out / "autosave")).successful


def test_repeated_saves_stay_under_the_cap_and_leave_other_files_alone(node):
    client, out = node["client"], node["out"]
    saved = []
    for number in range(8):                    # ~390 kB asked for, twice the cap
        response = client.call("save_annotation",
                               SaveAnnotation.Request(path=f"flood/save{number}.ply"))
        assert response.success, response.message
        saved.append(Path(response.path))
    assert saved[-1].is_file() and not saved[0].exists()     # the oldest went first
    kept = [path for path in saved if path.exists()]
    assert kept == saved[-len(kept):]                         # ...in the order written
    # everything the node wrote that is still there fits the cap (its ledger lists it)
    listed: set[str] = set()
    for line in (out / ".npiseg_files").read_text().splitlines():
        item = json.loads(line)
        (listed.discard if item.get("removed") else listed.add)(item["path"])
    assert f"flood/save{len(saved) - 1}.ply" in listed
    assert sum((out / name).stat().st_size for name in listed) <= CAP_BYTES
    assert (out / "users_notes.ply").read_bytes() == b"\1" * 100_000
    assert files_under(node["outside"]) == []
    assert "max_output_mb: removed" in log_text(node)
    assert node["process"].poll() is None
