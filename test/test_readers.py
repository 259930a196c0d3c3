"""Readers and writers: round trips, SemanticKITTI on the shared real scan, malformed files."""
import json
from pathlib import Path

import numpy as np
import pytest

from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud
from npiseg_ros.io.pcd import read_pcd, write_pcd
from npiseg_ros.io.ply import read_ply, write_ply
from npiseg_ros.eval.readers import (
    read_benchmark_scene, read_cloud, read_semantickitti, read_single_object_list,
    read_val_list, semantickitti_frames)
from npiseg_ros.eval.samples import benchmark_samples, semantickitti_samples
from npiseg_ros.eval.synthetic import boxes_on_ground
from npiseg_ros.eval.writers import (
    write_benchmark_scene, write_labelled_npz, write_labelled_ply, write_single_object_list,
    write_val_list)

KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantickitti"
if not KITTI.is_dir():
    KITTI = Path("/work/shared/data/semantickitti")
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(),
                                 reason=f"SemanticKITTI sample scan not found at {KITTI}")


def small_cloud(with_colors=True, n=50):
    rng = np.random.default_rng(0)
    return LabelledCloud(xyz=rng.normal(size=(n, 3)) * 10, labels=rng.integers(0, 4, n),
                         colors=rng.random((n, 3)) if with_colors else None,
                         intensity=rng.random(n), names={1: "a", 2: "b"}, things=(1,))


@needs_kitti
def test_semantickitti_frame_reads_things_and_stuff():
    assert semantickitti_frames(KITTI) == [("00", "000000")]
    cloud = read_semantickitti(KITTI, "00", "000000")
    assert cloud.num_points == 124_668 and cloud.colors is None
    raw = np.fromfile(KITTI / "sequences/00/labels/000000.label", np.uint32)
    names = [cloud.names[t] for t in cloud.things]
    assert sum(n.startswith("car/") for n in names) == 13  # 13 labelled cars
    # each thing is exactly one (class, instance) pair of the raw labels
    for thing in cloud.things:
        assert len(np.unique(raw[cloud.labels == thing])) == 1
    road = next(k for k, v in cloud.names.items() if v == "road")
    assert np.all((raw[cloud.labels == road] & 0xFFFF) == 40)
    assert np.sum(cloud.labels == road) == np.sum((raw & 0xFFFF) == 40)
    assert np.all(cloud.labels[(raw & 0xFFFF) == 0] == 0)  # unlabelled stays 0


@needs_kitti
def test_semantickitti_to_benchmark_round_trip(tmp_path):
    cloud = read_semantickitti(KITTI, "00", "000000")
    write_benchmark_scene(tmp_path, "kitti_00_000000", cloud)
    back = read_benchmark_scene(tmp_path, "kitti_00_000000")
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.labels, cloud.labels)
    np.testing.assert_array_equal(back.intensity, cloud.intensity)
    np.testing.assert_array_equal(back.colors, 0.0)  # LiDAR: zero colour channels
    assert back.names == cloud.names and back.things == cloud.things
    samples = semantickitti_samples(cloud, "00_000000", "multi", seed=0)
    assert samples and all(1 <= len(s.object_ids) <= 10 for s in samples)
    write_val_list(tmp_path, [("kitti_00_000000", samples[0].object_ids)])
    [sample] = list(benchmark_samples(tmp_path, "multi"))
    assert sample.object_ids == samples[0].object_ids
    assert sample.name == f"kitti_00_000000_obj_{len(samples[0].object_ids)}"


def test_benchmark_round_trip_with_colors_and_single_object_list(tmp_path):
    cloud = small_cloud()
    write_benchmark_scene(tmp_path, "scene_a", cloud)
    back = read_benchmark_scene(tmp_path, "scene_a")
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_allclose(back.colors, cloud.colors, atol=0.5 / 255 + 1e-7)
    write_val_list(tmp_path, [("scene_a", [3, 1])])
    assert read_val_list(tmp_path) == [("scene_a_obj_2", "scene_a", (3, 1))]
    write_single_object_list(tmp_path / "single", [("scene_a", 3), ("scene_a", 1)])
    rows, folder = read_single_object_list(tmp_path)
    assert rows == [("scene_a", 3), ("scene_a", 1)] and folder == tmp_path / "single"
    singles = list(benchmark_samples(tmp_path, "single"))
    assert [s.object_ids for s in singles] == [(3,), (1,)]


def test_single_object_crops(tmp_path):
    crop = small_cloud(n=20)
    labels = (crop.labels == 2).astype(np.int32)
    write_ply(tmp_path / "single/crops/sc/sc_crop_2.ply",
              {"x": crop.xyz[:, 0], "y": crop.xyz[:, 1], "z": crop.xyz[:, 2],
               "R": np.zeros(20, np.uint8), "G": np.zeros(20, np.uint8),
               "B": np.zeros(20, np.uint8), "label": labels})
    write_single_object_list(tmp_path / "single", [("sc", 2)])
    [sample] = list(benchmark_samples(tmp_path, "single"))
    assert sample.object_ids == (1,)
    np.testing.assert_array_equal(sample.target_labels(), labels)


@pytest.mark.parametrize("binary,big_endian", [(False, False), (True, False), (True, True)])
def test_ply_round_trip_all_encodings(tmp_path, binary, big_endian):
    cloud = small_cloud()
    write_labelled_ply(tmp_path / "c.ply", cloud, predicted=cloud.labels[::-1],
                       uncertainty=np.linspace(0, 1, 50), binary=binary)
    if big_endian:
        write_ply(tmp_path / "c.ply", read_ply(tmp_path / "c.ply"), big_endian=True)
    back = read_cloud(tmp_path / "c.ply")
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.labels, cloud.labels)
    np.testing.assert_array_equal(back.intensity, cloud.intensity)
    fields = read_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(fields["predicted"], cloud.labels[::-1])
    np.testing.assert_allclose(fields["uncertainty"], np.linspace(0, 1, 50), rtol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_pcd_round_trip_with_packed_rgb(tmp_path, binary):
    cloud = small_cloud()
    rgb = np.round(cloud.colors * 255).astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    write_pcd(tmp_path / "c.pcd", {"x": cloud.xyz[:, 0], "y": cloud.xyz[:, 1],
                                   "z": cloud.xyz[:, 2], "rgb": packed,
                                   "label": cloud.labels.astype(np.uint32)}, binary=binary)
    back = read_cloud(tmp_path / "c.pcd")
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.labels, cloud.labels)
    np.testing.assert_allclose(back.colors, rgb / 255.0, atol=1e-6)


def test_npz_round_trip(tmp_path):
    cloud = small_cloud()
    write_labelled_npz(tmp_path / "c.npz", cloud, uncertainty=np.zeros(50))
    back = read_cloud(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.labels, cloud.labels)
    np.testing.assert_array_equal(back.colors, cloud.colors)
    assert back.names == cloud.names and back.things == cloud.things


def test_truncated_binary_ply_raises(tmp_path):
    write_benchmark_scene(tmp_path, "s", small_cloud())
    path = tmp_path / "scans/s.ply"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_benchmark_scene(tmp_path, "s")


def test_ply_missing_fields_raise(tmp_path):
    write_ply(tmp_path / "scans/s.ply", {"x": np.zeros(3, np.float32),
                                          "y": np.zeros(3, np.float32),
                                          "label": np.zeros(3, np.int32)})
    with pytest.raises(DatasetFormatError, match=r"missing \['z', 'R', 'G', 'B'\]"):
        read_benchmark_scene(tmp_path, "s")
    with pytest.raises(ValueError, match="missing coordinate"):
        read_cloud(tmp_path / "scans/s.ply")


def test_malformed_headers_and_bodies_raise(tmp_path):
    (tmp_path / "a.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\n"
                                    "property float x\nproperty float y\nproperty float z\n"
                                    "end_header\n0 0 0\n1 1 1\n")
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_cloud(tmp_path / "a.ply")
    (tmp_path / "b.ply").write_text("not a ply")
    with pytest.raises(DatasetFormatError, match="not a PLY"):
        read_cloud(tmp_path / "b.ply")
    (tmp_path / "c.pcd").write_text("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\n"
                                    "DATA binary_compressed\n")
    with pytest.raises(DatasetFormatError, match="binary_compressed"):
        read_pcd(tmp_path / "c.pcd")
    with pytest.raises(DatasetFormatError, match="unknown cloud format"):
        read_cloud(tmp_path / "x.xyz")


def test_label_count_mismatch_raises(tmp_path):
    np.savez(tmp_path / "c.npz", xyz=np.zeros((5, 3)), labels=np.zeros(4))
    with pytest.raises(DatasetFormatError, match="4 labels for 5 points"):
        read_cloud(tmp_path / "c.npz")
    seq = tmp_path / "sequences/00"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    np.zeros((5, 4), np.float32).tofile(seq / "velodyne/000000.bin")
    np.zeros(4, np.uint32).tofile(seq / "labels/000000.label")
    with pytest.raises(DatasetFormatError, match="4 labels for 5 points"):
        read_semantickitti(tmp_path, "00", "000000")
    with pytest.raises(DatasetFormatError, match="labels must have shape"):
        LabelledCloud(xyz=np.zeros((5, 3)), labels=np.zeros(4))


def test_val_list_errors_are_actionable(tmp_path):
    (tmp_path / "val_list.json").write_text(json.dumps({"scene": {"obj": {"1": 2}}}))
    with pytest.raises(DatasetFormatError, match="_obj_"):
        read_val_list(tmp_path)
    with pytest.raises(DatasetFormatError, match="same key|separate scenes"):
        write_val_list(tmp_path, [("s", [1]), ("s", [2])])
    write_val_list(tmp_path, [("s", [1, 9])])
    write_benchmark_scene(tmp_path, "s", boxes_on_ground(1))
    with pytest.raises(DatasetFormatError, match=r"objects \[9\] have no points"):
        list(benchmark_samples(tmp_path, "multi"))
