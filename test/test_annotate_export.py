"""npiseg-annotate without a model: label encodings by hand, the ontology files and their
errors, box fitting against a brute-force reference, KITTI label_2 lines by hand, the export
files read back, the session file (never NaN, old versions), label import, and the command
line's refusal of bad numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from npiseg_ros.annotate.export import (Box3D, FrameExport, KittiCalib, fit_box, kitti_lines,
                                        read_kitti_calib, semantic_and_instance,
                                        write_frame_exports)
from npiseg_ros.annotate.folder import read_session_file, session_bytes
from npiseg_ros.annotate.ontology import OntologyError, default_ontology_path, load_ontology
from npiseg_ros.annotate.review import find_import, read_import
from npiseg_ros.io.label import (decode_label_words, decode_nuscenes_panoptic,
                                 encode_label_words, encode_lidarseg, encode_nuscenes_panoptic,
                                 encode_object_labels, read_label_file, read_lidarseg_file)


# ------------------------------------------------------------------------------ encodings
def test_label_words_class_low_instance_high_by_hand():
    words = encode_label_words(np.array([10, 40, 0, 252]), np.array([1, 0, 0, 65535]))
    assert words.dtype == np.dtype("<u4")
    assert words.tolist() == [0x0001000A, 0x00000028, 0, 0xFFFF00FC]
    semantic, instance = decode_label_words(words)
    assert semantic.tolist() == [10, 40, 0, 252] and instance.tolist() == [1, 0, 0, 65535]
    # the node's classless words are unchanged: the id in both halves
    assert encode_object_labels(np.array([-1, 3])).tolist() == [0, 0x00030003]
    with pytest.raises(ValueError, match=r"instance must be in \[0, 65535\]"):
        encode_label_words(np.array([10]), np.array([70000]))
    with pytest.raises(ValueError, match="differ"):
        encode_label_words(np.array([10, 10]), np.array([1]))


def test_nuscenes_encodings_by_hand(tmp_path):
    assert encode_lidarseg(np.array([0, 17, 31])).tolist() == [0, 17, 31]
    assert encode_lidarseg(np.array([17])).dtype == np.uint8
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        encode_lidarseg(np.array([256]))
    panoptic = encode_nuscenes_panoptic(np.array([17, 24, 2]), np.array([3, 0, 999]))
    assert panoptic.dtype == np.uint16 and panoptic.tolist() == [17003, 24000, 2999]
    classes, instances = decode_nuscenes_panoptic(panoptic)
    assert classes.tolist() == [17, 24, 2] and instances.tolist() == [3, 0, 999]
    with pytest.raises(ValueError, match="999"):
        encode_nuscenes_panoptic(np.array([17]), np.array([1000]))
    path = tmp_path / "a.bin"
    path.write_bytes(bytes([1, 2, 3]))
    assert read_lidarseg_file(path).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="3 lidarseg values for a cloud of 4 points"):
        read_lidarseg_file(path, 4)
    label = tmp_path / "a.label"
    label.write_bytes(b"\0" * 7)
    with pytest.raises(ValueError, match="7 bytes is not a whole number of 4-byte"):
        read_label_file(label)


# ------------------------------------------------------------------------------- ontology
def test_shipped_ontologies_load():
    kitti = load_ontology()
    assert kitti.format == "semantickitti" and kitti.require("car").id == 10
    assert kitti.export_id("car", {"moving": True}) == 252
    assert kitti.export_id("car", {"moving": False}) == 10
    assert kitti.export_id(None) == 0 and kitti.export_id("no such class") == 0
    assert kitti.default_attributes("car") == {"moving": False, "occluded": "none"}
    assert kitti.default_attributes("road") == {"occluded": "none"}
    nuscenes = load_ontology(default_ontology_path("nuscenes"))
    assert nuscenes.format == "nuscenes" and nuscenes.require("vehicle.car").id == 17
    assert [c.id for c in nuscenes.classes] == list(range(32))
    nuscenes.check_attribute("vehicle.car", "vehicle", "moving")
    with pytest.raises(OntologyError, match="takes one of"):
        nuscenes.check_attribute("vehicle.car", "vehicle", "flying")
    with pytest.raises(OntologyError, match="does not apply"):
        nuscenes.check_attribute("flat.sidewalk", "vehicle", "moving")


@pytest.mark.parametrize("text, message", [
    ("classes: []", "classes must be a non-empty list"),
    ("classes: [{id: 1, name: a}, {id: 1, name: b}]", r"repeated class id: \[1\]"),
    ("classes: [{id: 1, name: a, key: '1'}, {id: 2, name: b, key: '1'}]", "repeated class key"),
    ("classes: [{id: 1, name: a, key: n}]", "key must be one character other than"),
    ("format: nuscenes\nclasses: [{id: 300, name: a}]", r"id must be an integer in \[0, 255\]"),
    ("classes: [{id: 1, name: a, colour: red}]", "unknown keys"),
    ("classes: [{id: 1, name: a}]\ndefault_class: b", "default_class 'b' is not a class"),
    ("classes: [{id: 1, name: a}]\nattributes: [{name: m, values: [x], classes: [z]}]",
     "unknown: \\['z'\\]"),
    ("classes: [{id: 1, name: a}\n", "not valid YAML"),
])
def test_bad_ontology_files_name_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(OntologyError, match=message) as error:
        load_ontology(path)
    assert "bad.yaml" in str(error.value)


# ------------------------------------------------------------------------------------ boxes
def _naive_min_box_area(xy: np.ndarray) -> float:
    """Smallest bounding-rectangle area over rotations in 0.05 degree steps (the reference)."""
    best = math.inf
    for angle in np.radians(np.arange(0.0, 90.0, 0.05)):
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]
        best = min(best, (u.max() - u.min()) * (v.max() - v.min()))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_box_is_the_minimum_rectangle_and_holds_every_point(seed):
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-np.pi, np.pi)
    local = rng.uniform([-2.2, -0.9, 0.0], [2.2, 0.9, 1.6], (400, 3))
    rotation = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                         [0, 0, 1]])
    xyz = local @ rotation.T + [12.0, -4.0, -1.7]
    box = fit_box(xyz)
    assert box.contains(xyz, 1e-9).all() and box.num_points == 400
    area = box.size[0] * box.size[1]
    assert area <= _naive_min_box_area(xyz[:, :2]) + 1e-9
    assert box.size[0] >= box.size[1] and -np.pi / 2 < box.yaw <= np.pi / 2
    # the heading is the long side's direction (up to 180 degrees)
    assert abs(math.sin(box.yaw - yaw)) < 0.05
    assert np.isclose(box.size[2], xyz[:, 2].max() - xyz[:, 2].min())
    # degenerate inputs: one point, a line
    assert np.allclose(fit_box(xyz[:1]).size, 0)
    line = np.column_stack([np.linspace(0, 3, 10), np.linspace(0, 3, 10), np.zeros(10)])
    assert np.isclose(fit_box(line).size[0], 3 * math.sqrt(2)) and fit_box(line).contains(
        line, 1e-9).all()
    with pytest.raises(ValueError, match="no finite point"):
        fit_box(np.full((3, 3), np.nan))


def test_kitti_lines_by_hand_lidar_and_camera_frames(tmp_path):
    box = Box3D(np.array([10.0, 2.0, -0.5]), np.array([4.0, 2.0, 1.5]), 0.0, 100)
    (line,) = kitti_lines({1: box}, {1: "Car"})
    # LiDAR frame: bottom centre (10, 2, -1.25), ry = yaw, alpha = yaw - atan2(2, 10)
    assert line == ("Car 0.00 0 " + " ".join(f"{v:.2f}" for v in (
        -math.atan2(2, 10), 0, 0, 0, 0, 1.5, 2.0, 4.0, 10.0, 2.0, -1.25, 0.0)))
    # KITTI's axes (x right = -y lidar, y down = -z lidar, z forward = x lidar), no offset
    calib_file = tmp_path / "calib.txt"
    calib_file.write_text("P2: 700 0 600 0 0 700 180 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\n"
                          "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n")
    calib = read_kitti_calib(calib_file)
    (line,) = kitti_lines({1: box}, {1: "Car"}, calib)
    fields = line.split()
    location = [float(v) for v in fields[11:14]]
    assert location == [-2.0, 1.25, 10.0]
    # heading +x (lidar) = +z (camera): ry = -pi/2, as KITTI's ry = -yaw - pi/2
    assert float(fields[14]) == pytest.approx(-math.pi / 2, abs=0.006)
    x1, y1, x2, y2 = (float(v) for v in fields[4:8])
    assert x1 < 600 - 700 * 2.0 / 12 + 1 and x2 > 600 - 700 * 2.0 / 8 - 1 and y1 < y2
    behind = Box3D(np.array([-10.0, 0.0, 0.0]), np.array([4.0, 2.0, 1.5]), 0.0, 10)
    assert kitti_lines({1: behind}, {1: "Car"}, calib) == []
    calib_file.write_text("P2: 1 2 3\n")
    with pytest.raises(ValueError, match="P2 has 3 numbers"):
        read_kitti_calib(calib_file)
    assert isinstance(calib, KittiCalib)


# ---------------------------------------------------------------------------------- exports
def _frame(labels: np.ndarray, objects: dict) -> FrameExport:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-20, 20, (labels.size, 3)).astype(np.float32)
    return FrameExport("f7", xyz, labels.astype(np.int32), np.full(labels.size, 0.1, np.float32),
                       (), objects)


def test_semantic_and_instance_follow_classes_and_things():
    ontology = load_ontology()
    labels = np.array([-1, 0, 1, 1, 2, 3, 4])
    objects = {1: {"class": "car", "attributes": {"moving": True}}, 2: {"class": "road"},
               3: {"class": None}}
    semantic, instance = semantic_and_instance(labels, objects, ontology)
    assert semantic.tolist() == [0, 0, 252, 252, 40, 0, 0]
    assert instance.tolist() == [0, 0, 1, 1, 0, 0, 0]  # stuff and classless objects: 0


def test_exports_read_back_semantickitti_and_nuscenes(tmp_path):
    from npiseg_ros.eval.readers import read_cloud

    labels = np.repeat([0, 1, 2, -1], 50)
    kitti = load_ontology()
    frame = _frame(labels, {1: {"class": "car"}, 2: {"class": "person"}})
    written = write_frame_exports(tmp_path, frame, kitti)
    assert {p.name for p in written} == {"f7.label", "f7.ply", "f7.npz", "f7.txt", "f7.json"}
    semantic, instance = read_label_file(tmp_path / "export/f7.label", labels.size)
    assert semantic.tolist() == [0] * 50 + [10] * 50 + [30] * 50 + [0] * 50
    assert instance.tolist() == [0] * 50 + [1] * 50 + [2] * 50 + [0] * 50
    assert np.array_equal(read_cloud(tmp_path / "export/f7.npz").labels, np.maximum(labels, 0))
    boxes = json.loads((tmp_path / "export/boxes/f7.json").read_text())
    assert [b["class"] for b in boxes["boxes"]] == ["car", "person"]
    for record in boxes["boxes"]:
        box = Box3D(np.array(record["center"]), np.array(record["size_lwh"]), record["yaw"], 0)
        inside = box.contains(frame.xyz[labels == record["object_id"]], 1e-3)
        assert inside.all() and record["num_points"] == 50
    lines = (tmp_path / "export/label_2/f7.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["Car", "Pedestrian"]

    nuscenes = load_ontology(default_ontology_path("nuscenes"))
    frame = _frame(labels, {1: {"class": "vehicle.car"}, 2: {"class": "flat.sidewalk"}})
    base = np.where(np.arange(labels.size) < 25, 24, -1)  # imported drivable surface
    write_frame_exports(tmp_path, frame, nuscenes, base=base)
    lidarseg = read_lidarseg_file(tmp_path / "export/lidarseg/f7_lidarseg.bin", labels.size)
    assert lidarseg.tolist() == [24] * 25 + [0] * 25 + [17] * 50 + [26] * 50 + [0] * 50
    with np.load(tmp_path / "export/panoptic/f7_panoptic.npz") as archive:
        classes, instances = decode_nuscenes_panoptic(archive["data"])
    assert archive is not None and classes.tolist() == lidarseg.tolist()
    assert instances.tolist() == [0] * 50 + [1] * 50 + [0] * 100


# ---------------------------------------------------------------------------- session file
def test_session_file_never_holds_nan_and_old_files_read(tmp_path):
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        session_bytes({"max_range": float("nan"), "objects": {}})
    assert json.loads(session_bytes({"max_range": 15.0, "objects": {3: {"class": "car"}}}))[
        "objects"] == {"3": {"class": "car"}}
    # a file an earlier version wrote with NaN (Python's json allows it by default)
    (tmp_path / "session.json").write_text('{"version": 1, "max_range": NaN, "source": "x"}')
    payload, problems = read_session_file(tmp_path)
    assert payload["max_range"] is None and payload["objects"] == {} and payload["status"] == {}
    assert any("max_range" in p for p in problems)
    (tmp_path / "session.json").write_text(json.dumps(
        {"version": 2, "max_range": -5, "objects": {"2": {"class": "car", "attributes": {}},
                                                    "x": {}},
         "status": {"000001": "accepted", "000002": "great"}}))
    payload, problems = read_session_file(tmp_path)
    assert payload["max_range"] is None and payload["objects"] == {
        2: {"class": "car", "attributes": {}}}
    assert payload["status"] == {"000001": "accepted"} and len(problems) == 3


@pytest.mark.parametrize("value", ["nan", "-5", "0", "inf", "far"])
def test_cli_refuses_bad_max_range(value, capsys):
    from npiseg_ros.annotate.cli import _parser

    with pytest.raises(SystemExit) as stop:
        _parser("serve").parse_args(["x.bin", "--max-range", value])
    assert stop.value.code == 2
    assert "--max-range" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ import
def test_import_semantickitti_and_lidarseg(tmp_path):
    ontology = load_ontology()
    xyz = np.concatenate([np.random.default_rng(0).uniform(0, 1, (30, 3)),
                          np.random.default_rng(1).uniform(0, 1, (30, 3)) + [10, 0, 0],
                          np.random.default_rng(2).uniform(0, 1, (40, 3)) + [0, 10, 0]])
    semantic = np.array([10] * 30 + [252] * 30 + [40] * 40)
    instance = np.array([7] * 30 + [9] * 30 + [0] * 40)
    encode_label_words(semantic, instance).tofile(tmp_path / "000003.label")
    assert find_import(tmp_path, "000003") == tmp_path / "000003.label"
    imported = read_import(tmp_path / "000003.label", xyz, ontology)
    assert sorted(np.unique(imported.objects).tolist()) == [0, 1, 2]
    assert imported.classes == {1: ("car", {}), 2: ("car", {"moving": True})}
    assert imported.base.tolist() == [-1] * 60 + [40] * 40
    # lidarseg: no instances, the thing points split into connected pieces
    encode_lidarseg(np.array([17] * 60 + [24] * 40)).tofile(tmp_path / "000004_lidarseg.bin")
    nuscenes = load_ontology(default_ontology_path("nuscenes"))
    imported = read_import(find_import(tmp_path, "000004"), xyz, nuscenes)
    assert imported.classes == {1: ("vehicle.car", {}), 2: ("vehicle.car", {})}
    assert len(np.unique(imported.objects[:30])) == 1 and imported.objects[0] != \
        imported.objects[30]
    with pytest.raises(ValueError, match="for a cloud of 99 points"):
        read_import(tmp_path / "000004_lidarseg.bin", xyz[:99], nuscenes)
