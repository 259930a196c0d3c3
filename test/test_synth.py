"""Tests of the synthetic scene generators (npiseg_train.synth)."""
from __future__ import annotations

import numpy as np
import pytest

from npiseg_train.synth import (INDOOR_CLASSES, LIDAR_CLASSES, generate_indoor_scene,
                                generate_lidar_scene)
from npiseg_train.synth.scene import BOX, CYLINDER, ELLIPSOID, Primitive, rotation_zyx
from npiseg_train.synth.sensors import HDL64_ELEVATIONS_DEG, PinholeCamera, SpinningLidar
from npiseg_train.synth.shapes import cast_grid, intersect


@pytest.fixture(scope="module")
def lidar_scenes():
    return [generate_lidar_scene(seed) for seed in (0, 1, 0)]


@pytest.fixture(scope="module")
def indoor_scenes():
    return [generate_indoor_scene(seed) for seed in (0, 1, 0)]


def _assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.class_names == b.class_names
    for name in ("colors", "intensity"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", ["lidar", "indoor"])
def test_deterministic_per_seed(kind, lidar_scenes, indoor_scenes):
    first, other, again = lidar_scenes if kind == "lidar" else indoor_scenes
    _assert_same(first, again)
    assert first.num_points != other.num_points or not np.array_equal(first.xyz, other.xyz)


@pytest.mark.parametrize("kind", ["lidar", "indoor"])
def test_arrays_are_well_formed_and_fully_labelled(kind, lidar_scenes, indoor_scenes):
    for scene in (lidar_scenes if kind == "lidar" else indoor_scenes)[:2]:
        n = scene.num_points
        assert scene.xyz.dtype == np.float32 and scene.xyz.shape == (n, 3)
        assert np.isfinite(scene.xyz).all()
        assert scene.labels.dtype == np.int64 and scene.labels.shape == (n,)
        assert scene.labels.min() >= 1
        ids = set(np.unique(scene.labels).tolist())
        assert ids == set(scene.class_names)  # every id named, no named id without points
        table = LIDAR_CLASSES if kind == "lidar" else INDOOR_CLASSES
        assert set(scene.class_names.values()) <= set(table)
        if kind == "lidar":
            assert scene.colors is None
            assert scene.intensity.dtype == np.float32 and scene.intensity.shape == (n,)
            assert np.isfinite(scene.intensity).all()
            assert 0.0 <= scene.intensity.min() and scene.intensity.max() <= 1.0
        else:
            assert scene.intensity is None
            assert scene.colors.dtype == np.float32 and scene.colors.shape == (n, 3)
            assert 0.0 <= scene.colors.min() and scene.colors.max() <= 1.0
            assert scene.colors.std() > 0.03  # colour varies across the room


def _extent(scene, instance: int) -> np.ndarray:
    pts = scene.xyz[scene.labels == instance]
    return pts.max(axis=0) - pts.min(axis=0)


def test_lidar_counts_and_object_sizes(lidar_scenes):
    for scene in lidar_scenes[:2]:
        assert 90_000 <= scene.num_points <= 135_000
        names = list(scene.class_names.values())
        assert 20 <= len(names) <= 300
        assert names.count("road") == 1
        assert any(n in names for n in ("car", "van", "truck"))
        for instance, name in scene.class_names.items():
            size = _extent(scene, instance)
            if name == "car":
                assert size[2] < 2.2 and np.hypot(size[0], size[1]) < 6.5
            if name == "pedestrian":
                assert size[2] < 2.2 and max(size[0], size[1]) < 1.5
        ranges = np.linalg.norm(scene.xyz, axis=1)
        assert ranges.max() <= 81.0 and ranges.min() > 2.0
        assert 5.0 < np.median(ranges) < 20.0  # real HDL-64 frame: ~10 m


def test_lidar_returns_follow_the_beam_pattern(lidar_scenes):
    scene = lidar_scenes[0]
    xyz = scene.xyz.astype(np.float64)
    elevation = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    gap = np.abs(elevation[:, None] - HDL64_ELEVATIONS_DEG[None, :]).min(axis=1)
    # Noise is along each beam, so solid returns keep their beam's elevation exactly;
    # only terrain roughness (a few % of points) moves points off it.
    assert np.mean(gap < 0.02) > 0.9
    beam = np.abs(elevation[:, None] - HDL64_ELEVATIONS_DEG[None, :]).argmin(axis=1)
    per_beam = np.bincount(beam, minlength=64)
    # Every beam returns all around; the lowest lose some to the ego car and weak lasers.
    assert (per_beam > 300).all() and np.median(per_beam) > 1500
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    counts, _ = np.histogram(azimuth, bins=72, range=(-np.pi, np.pi))
    assert counts.min() > 0.3 * counts.mean()


def test_indoor_points_inside_room_and_object_sizes(indoor_scenes):
    for scene in indoor_scenes[:2]:
        assert 50_000 <= scene.num_points <= 200_000
        low, high = scene.bounds
        margin = 0.12  # depth noise at the far walls
        assert (scene.xyz >= low - margin).all() and (scene.xyz <= high + margin).all()
        names = list(scene.class_names.values())
        assert names.count("floor") == 1 and names.count("wall") >= 2
        assert 8 <= len(names) <= 200
        assert sum(n not in ("floor", "wall", "ceiling") for n in names) >= 5
        for instance, name in scene.class_names.items():
            size = _extent(scene, instance)
            if name in ("chair", "table", "desk", "cabinet", "sofa", "bed", "monitor"):
                assert size[2] < 2.3 and max(size[0], size[1]) < 4.5, (name, size)
            if name in ("cup", "bottle", "book", "keyboard"):
                assert size.max() < 0.7, (name, size)


def test_intersections_match_closed_form():
    origin = np.array([-3.0, 0.2, 0.1])
    ray = np.array([[1.0], [0.0], [0.0]])
    box = Primitive(BOX, np.zeros(3), np.eye(3), np.array([1.0, 0.5, 0.5]), 1)
    t_near, t_far = intersect(box, origin, ray)
    assert t_near[0] == pytest.approx(2.0) and t_far[0] == pytest.approx(4.0)
    turned = Primitive(BOX, np.zeros(3), rotation_zyx(np.pi / 4), np.array([1.0, 1.0, 1.0]), 1)
    t_near, _ = intersect(turned, np.array([-3.0, 0.0, 0.0]), ray)
    assert t_near[0] == pytest.approx(3.0 - np.sqrt(2.0))
    cylinder = Primitive(CYLINDER, np.zeros(3), np.eye(3), np.array([0.5, 0.5, 1.0]), 1)
    t_near, _ = intersect(cylinder, origin, ray)
    assert t_near[0] == pytest.approx(3.0 - np.sqrt(0.25 - 0.04))
    down = np.array([[0.0], [0.0], [-1.0]])
    t_near, _ = intersect(cylinder, np.array([0.1, 0.1, 3.0]), down)
    assert t_near[0] == pytest.approx(2.0)  # top cap
    sphere = Primitive(ELLIPSOID, np.zeros(3), np.eye(3), np.array([2.0, 1.0, 1.0]), 1)
    t_near, _ = intersect(sphere, np.array([-5.0, 0.0, 0.0]), ray)
    assert t_near[0] == pytest.approx(3.0)
    t_near, t_far = intersect(sphere, np.array([-5.0, 3.0, 0.0]), ray)
    assert not (t_near[0] <= t_far[0])


def _random_primitives(rng: np.random.Generator, count: int, spread: float) -> list[Primitive]:
    prims = []
    for i in range(count):
        center = rng.uniform(-spread, spread, 3)
        center[2] = rng.uniform(-1.5, 3.0)
        prims.append(Primitive(int(rng.integers(3)), center,
                               rotation_zyx(*rng.uniform(-np.pi, np.pi, 3)),
                               rng.uniform(0.1, 3.0, 3), i + 1))
    return prims


@pytest.mark.parametrize("sensor_kind", ["lidar", "camera"])
def test_windowed_casting_equals_brute_force(sensor_kind):
    """The per-primitive ray windows must never skip a ray that hits (culling is exact)."""
    rng = np.random.default_rng(3)
    prims = _random_primitives(rng, 40, 20.0)
    if sensor_kind == "lidar":
        sensor = SpinningLidar(np.array([0.3, -0.2, 1.7]), rotation_zyx(0.3, 0.02, -0.03),
                               HDL64_ELEVATIONS_DEG, 360)
    else:
        sensor = PinholeCamera(np.array([-25.0, 0.5, 1.5]),
                               PinholeCamera.look_at([-25.0, 0.5, 1.5], [0.0, 0.0, 0.0]),
                               160, 120, 70.0)
    rows, cols = sensor.directions_cm.shape[1:]
    culled = cast_grid(sensor.position, sensor.directions_cm, prims, sensor.window,
                       np.random.default_rng(0), 100.0)
    full = cast_grid(sensor.position, sensor.directions_cm, prims,
                     lambda low, high: [(0, rows, 0, cols)], np.random.default_rng(0), 100.0)
    assert np.isfinite(full.depth).sum() > 100
    np.testing.assert_array_equal(culled.primitive, full.primitive)
    np.testing.assert_allclose(culled.depth, full.depth)


def test_cli_writes_readable_benchmark(tmp_path):
    from npiseg_ros.eval.readers import read_benchmark_scene, read_val_list
    from npiseg_train.synth.cli import make_scene, write_dataset

    write_dataset("lidar", 1, 5, tmp_path, samples_per_scene=3)
    scene = make_scene("lidar", 5, 0)
    cloud = read_benchmark_scene(tmp_path, scene.name)
    np.testing.assert_array_equal(cloud.labels, scene.labels)
    np.testing.assert_allclose(cloud.xyz, scene.xyz)
    samples = read_val_list(tmp_path)
    assert 1 <= len(samples) <= 3
    for entry in samples:
        ids = entry[-1]
        assert 1 <= len(ids) <= 10 and set(ids) <= set(scene.class_names)


@pytest.mark.parametrize("room_type, expected", [
    ("bedroom", {"bed"}), ("office", {"desk"}), ("kitchen", {"counter"}),
    ("bathroom", {"toilet"}), ("meeting", {"table", "chair"}),
])
def test_room_types_get_their_furniture(room_type, expected):
    from npiseg_train.synth.rgbd import furnished_room

    hits = 0
    for seed in range(5):
        room, _ = furnished_room(np.random.default_rng(seed), room_type)
        hits += expected <= set(room.table.class_names.values())
    assert hits >= 4, f"{room_type}: {expected} missing in {5 - hits} of 5 rooms"


def test_invalid_room_type_is_rejected():
    with pytest.raises(ValueError):
        generate_indoor_scene(0, room_type="garage")


def test_other_lidar_models_follow_their_beams():
    from npiseg_train.synth.sensors import LIDAR_MODELS

    model = LIDAR_MODELS["vlp16"]
    scene = generate_lidar_scene(2, **model)
    xyz = scene.xyz.astype(np.float64)
    elevation = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    beams = np.asarray(model["elevations_deg"])
    gap = np.abs(elevation[:, None] - beams[None, :]).min(axis=1)
    assert np.mean(gap < 0.02) > 0.9
    assert 15_000 < scene.num_points < 16 * model["azimuth_steps"]


def test_nearby_samples_are_compact_and_distinct(lidar_scenes):
    from npiseg_train.synth.cli import scene_samples

    scene = lidar_scenes[0]
    samples = scene_samples(scene, 4, seed=0)
    assert len(samples) == 4
    assert len({len(s) for s in samples}) == 4  # the val-list format needs distinct sizes
    ids, counts = np.unique(scene.labels, return_counts=True)
    centroids = {int(i): scene.xyz[scene.labels == i].mean(axis=0)
                 for i in ids[counts >= 50]}
    all_spread = np.median([np.linalg.norm(c) for c in centroids.values()])
    for sample in samples:
        assert 1 <= len(sample) <= 10 and len(set(sample)) == len(sample)
        assert set(sample) <= set(centroids)  # tiny objects are never chosen
        if len(sample) > 1:
            points = np.stack([centroids[i] for i in sample])
            spread = np.linalg.norm(points - points.mean(axis=0), axis=1).mean()
            assert spread < all_spread  # nearer together than a random pick would be


def test_mixed_lidar_models_cycle_through_layouts():
    from npiseg_train.synth.cli import make_scene

    sizes = {make_scene("lidar", 1, i, "mixed").num_points // 10_000 for i in range(4)}
    assert len(sizes) >= 2  # different beam layouts give different point counts
    with pytest.raises(ValueError):
        make_scene("lidar", 1, 0, "hdl65")


def test_graded_ground_hits_lie_on_the_road_profile():
    from npiseg_train.synth.lidar import _ground_depth
    from npiseg_train.synth.street_layout import Grade

    grade = Grade(slope=0.05, amplitude=0.6, wavelength=150.0, phase=1.0)
    sensor = SpinningLidar(np.array([0.0, 0.0, 1.8]), grade.tilt(0.0), HDL64_ELEVATIONS_DEG, 360)
    depth = _ground_depth(grade, sensor.position, sensor.directions, 80.0)
    hit = np.isfinite(depth)
    points = sensor.position + sensor.directions[hit] * depth[hit][:, None]
    assert hit.sum() > 0.7 * hit.size
    np.testing.assert_allclose(points[:, 2], grade.height(points[:, 0]), atol=1e-3)
    # Nothing is missed: every downward ray that ends below the ground within range hits.
    end = sensor.position + sensor.directions * 80.0
    assert np.all(hit[end[..., 2] < grade.height(end[..., 0]) - 1e-6])


def test_batched_lidar_windows_match_per_box_windows():
    from npiseg_train.synth.shapes import primitive_bounds

    prims = _random_primitives(np.random.default_rng(5), 60, 30.0)
    sensor = SpinningLidar(np.array([0.2, 0.1, 1.7]), rotation_zyx(2.0, 0.03, 0.01),
                           HDL64_ELEVATIONS_DEG, 500)
    batched = sensor.windows(*primitive_bounds(prims))
    assert batched == [sensor.window(*p.aabb()) for p in prims]
