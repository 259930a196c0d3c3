"""SegmentationSession: determinism, undo, many objects, bad input, checkpoints."""
import pickle

import numpy as np
import pytest
import torch

from npiseg_ros.core.build import build_model, tiny_config
from npiseg_ros.core.checkpoint import load_checkpoint_into, load_model, save_checkpoint
from npiseg_ros.core.errors import (CheckpointError, ClickRejectedError, ConfigError,
                                    InvalidCloudError, NoCloudError)
from npiseg_ros.core.session import SegmentationSession
from scenes import floor_with_boxes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


@pytest.fixture(scope="module")
def scene():
    return floor_with_boxes(seed=1, num_boxes=3)


def _session(model, scene, **kwargs):
    xyz, rgb, _ = scene
    session = SegmentationSession(model, **kwargs)
    session.set_cloud(xyz, colors=rgb)
    return session


def _click_objects(session, scene, clicks_per_object=1):
    xyz, _, labels = scene
    for object_id in range(1, labels.max() + 1):
        members = np.flatnonzero(labels == object_id)
        for index in members[:: max(len(members) // clicks_per_object, 1)][:clicks_per_object]:
            session.add_click(point_index=int(index), object_id=object_id)
    session.add_click(point_index=int(np.flatnonzero(labels == 0)[0]), object_id=0)


def test_same_inputs_and_seed_give_identical_outputs(model, scene):
    outputs = []
    for _ in range(2):
        session = _session(model, scene, seed=3, num_samples=5)
        _click_objects(session, scene, clicks_per_object=2)
        outputs.append(session.predict())
    np.testing.assert_array_equal(outputs[0].labels, outputs[1].labels)
    np.testing.assert_array_equal(outputs[0].uncertainty, outputs[1].uncertainty)
    assert outputs[0].uncertainty.max() > 0.0  # sampling really happened


def test_another_seed_changes_uncertainty(model, scene):
    values = []
    for seed in (0, 1):
        session = _session(model, scene, seed=seed, num_samples=5)
        _click_objects(session, scene)
        values.append(session.predict().uncertainty)
    assert not np.array_equal(values[0], values[1])


def test_prediction_shapes_and_clicked_points_keep_their_label(model, scene):
    xyz, _, labels = scene
    session = _session(model, scene)
    _click_objects(session, scene)
    prediction = session.predict()
    assert prediction.labels.shape == (len(xyz),) and prediction.labels.dtype == np.int32
    assert prediction.uncertainty.shape == (len(xyz),)
    for click in session.clicks:
        assert prediction.labels[click.point_index] == click.object_id
    assert sum(s.num_points for s in prediction.object_stats.values()) == len(xyz)
    assert prediction.suggested_click is not None
    assert prediction.confidence.shape == (len(xyz),)
    assert ((prediction.confidence > 0) & (prediction.confidence <= 1)).all()
    distances = np.linalg.norm(xyz - np.array(prediction.suggested_click), axis=1)
    assert distances.min() == 0.0  # the suggestion lies on the cloud


def test_undo_restores_previous_prediction_exactly(model, scene):
    session = _session(model, scene, num_samples=4)
    _click_objects(session, scene)
    before = session.predict()
    xyz, _, labels = scene
    session.add_click(point_index=int(np.flatnonzero(labels == 2)[-1]), object_id=2)
    after = session.predict()
    assert after.num_clicks == before.num_clicks + 1
    removed = session.undo()
    assert removed.object_id == 2
    restored = session.predict()
    np.testing.assert_array_equal(restored.labels, before.labels)
    np.testing.assert_array_equal(restored.uncertainty, before.uncertainty)


def test_twenty_five_objects(model):
    xyz, rgb, labels = floor_with_boxes(seed=2, num_boxes=9, extent=6.0)
    session = SegmentationSession(model, num_samples=2)
    session.set_cloud(xyz, colors=rgb)
    rng = np.random.default_rng(0)
    for object_id in range(1, 26):  # more objects than boxes: any id works, uncapped
        session.add_click(point_index=int(rng.integers(len(xyz))), object_id=object_id * 7)
    prediction = session.predict()
    assert len(session.object_ids) == 25
    assert set(np.unique(prediction.labels)) <= {0, *session.object_ids}
    for click in session.clicks:
        assert prediction.labels[click.point_index] == click.object_id


def test_new_object_reset_and_clear(model, scene):
    session = _session(model, scene)
    assert session.new_object() == 1
    assert session.new_object() == 2
    session.add_click(point_index=0, object_id=5)
    assert session.new_object() == 6
    session.reset()
    assert session.clicks == () and session.has_cloud
    assert session.predict().labels.max() == 0
    session.clear()
    assert not session.has_cloud
    with pytest.raises(NoCloudError):
        session.predict()


def test_adopting_an_encoded_cloud_decodes_bit_for_bit_like_set_cloud(model, scene):
    """``encode`` on a session that serves another cloud leaves that cloud, its clicks and
    decodes alone; ``adopt`` then makes the encoded cloud current as ``set_cloud`` would:
    the same clicks give the same labels, uncertainty, confidence and suggestion."""
    xyz, rgb, _ = scene
    reference = _session(model, scene, num_samples=4)
    _click_objects(reference, scene)
    expected = reference.predict()

    other = floor_with_boxes(seed=5, num_boxes=2)
    serving = _session(model, other, num_samples=4)
    _click_objects(serving, other)
    served, clicks, encoded_scene = serving.predict(), serving.clicks, serving.scene
    encoded = serving.encode(xyz, colors=rgb)
    assert serving.scene is encoded_scene and serving.clicks == clicks
    assert serving.predict() is served and encoded.xyz is xyz
    summary = serving.adopt(encoded)
    assert serving.clicks == () and summary.num_voxels == reference.num_voxels
    _click_objects(serving, scene)  # a decode history kept from the other cloud would show
    adopted = serving.predict()
    for name in ("labels", "uncertainty", "confidence", "suggested_click"):
        np.testing.assert_array_equal(getattr(adopted, name), getattr(expected, name))
    with pytest.raises(TypeError, match="EncodedCloud"):
        serving.adopt(xyz)
    torch.manual_seed(2)
    stranger = SegmentationSession(build_model(tiny_config()).eval())
    with pytest.raises(ValueError, match="other models"):
        stranger.adopt(encoded)


def test_click_far_from_every_point_is_rejected_with_reason(model, scene):
    session = _session(model, scene, max_click_distance=0.2)
    with pytest.raises(ClickRejectedError, match=r"m from the nearest point"):
        session.add_click((100.0, 0.0, 0.0), object_id=1)
    assert session.clicks == ()
    target = scene[0][10] + np.float32(0.01)
    click = session.add_click(tuple(target), object_id=1)
    distances = np.linalg.norm(scene[0] - target, axis=1)
    assert click.point_index == int(np.argmin(distances))
    assert click.snap_distance == pytest.approx(distances.min(), abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(position=(0, 0, 0), object_id=-1), "unknown"),
    (dict(position=(0, 0, 0), object_id=70000), "unknown"),
    (dict(position=(0, 0, 0), object_id=1.5), "integer"),
    (dict(position=(np.nan, 0, 0), object_id=1), "finite"),
    (dict(point_index=10**9, object_id=1), "outside"),
    (dict(object_id=1), "exactly one"),
])
def test_bad_clicks_are_rejected(model, scene, kwargs, message):
    session = _session(model, scene)
    with pytest.raises(ClickRejectedError, match=message):
        session.add_click(**kwargs)
    assert session.clicks == ()


def test_click_before_cloud(model):
    with pytest.raises(NoCloudError, match="set_cloud"):
        SegmentationSession(model).add_click((0, 0, 0), object_id=1)


@pytest.mark.parametrize("xyz, message", [
    (np.zeros((0, 3)), "empty"),
    (np.full((10, 3), np.nan), "NaN"),
    (np.zeros((10, 2)), "shape"),
])
def test_bad_clouds_raise_and_keep_previous_state(model, scene, xyz, message):
    session = _session(model, scene)
    session.add_click(point_index=0, object_id=1)
    with pytest.raises(InvalidCloudError, match=message):
        session.set_cloud(xyz)
    assert session.num_points == len(scene[0]) and len(session.clicks) == 1


def test_mismatched_colours_and_max_points(model, scene):
    xyz, rgb, _ = scene
    session = SegmentationSession(model, max_points=100)
    with pytest.raises(InvalidCloudError, match="max_points"):
        session.set_cloud(xyz, colors=rgb)
    session = SegmentationSession(model)
    with pytest.raises(InvalidCloudError, match="colors must have shape"):
        session.set_cloud(xyz, colors=rgb[:-1])
    with pytest.raises(InvalidCloudError, match=r"\[0, 1\]"):
        session.set_cloud(xyz, colors=rgb * 255)
    assert not session.has_cloud


def test_single_point_and_nan_points(model):
    session = SegmentationSession(model)
    summary = session.set_cloud(np.array([[1.0, 2.0, 3.0]]))
    assert summary.num_voxels == 1
    session.add_click(point_index=0, object_id=1)
    assert session.predict().labels.tolist() == [1]
    xyz = np.random.default_rng(0).uniform(0, 2, (500, 3))
    xyz[::10] = np.nan
    summary = session.set_cloud(xyz)
    assert summary.num_dropped == 50
    session.add_click(point_index=1, object_id=1)
    prediction = session.predict()
    assert (prediction.labels[::10] == -1).all() and np.isnan(prediction.uncertainty[::10]).all()
    with pytest.raises(ClickRejectedError, match="non-finite"):
        session.add_click(point_index=0, object_id=1)


def test_bad_session_parameters(model):
    for kwargs in (dict(num_samples=0), dict(scene_weight=2.0), dict(max_click_distance=0),
                   dict(uncertainty="magic"), dict(device="tpu")):
        with pytest.raises(ConfigError):
            SegmentationSession(model, **kwargs)


def test_checkpoint_round_trip_gives_identical_outputs(model, scene, tmp_path):
    path = save_checkpoint(tmp_path / "model.safetensors", model, metadata={"note": "test"})
    loaded = load_model(path)
    results = []
    for candidate in (model, loaded):
        session = _session(candidate, scene, num_samples=3)
        _click_objects(session, scene)
        results.append(session.predict())
    np.testing.assert_array_equal(results[0].labels, results[1].labels)
    np.testing.assert_array_equal(results[0].uncertainty, results[1].uncertainty)


def test_pickled_and_corrupt_checkpoints_are_refused(model, tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(pickled)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(raw_pickle)
    good = save_checkpoint(tmp_path / "good.safetensors", model)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_checkpoint_from_another_config_is_refused(model, tmp_path):
    path = save_checkpoint(tmp_path / "model.safetensors", model)
    other = build_model(tiny_config(input_mode="intensity"))
    with pytest.raises(CheckpointError, match="input_mode"):
        load_checkpoint_into(other, path)


def test_rgb_model_takes_coloured_clouds_and_the_default_model_the_rest(model, scene):
    """A session with an ``rgb_model`` decodes a cloud whose colours carry colour with it, and
    a colourless, all-zero or grey cloud (LiDAR in colour-requiring formats) with ``model``:
    each gives exactly what a one-model session of that model gives."""
    from npiseg_ros.core.session import has_chroma

    torch.manual_seed(1)
    rgb_model = build_model(tiny_config()).eval()
    xyz, rgb, _ = scene
    assert has_chroma(rgb)
    grey = np.repeat(rgb.mean(axis=1, keepdims=True), 3, axis=1)
    cases = [(rgb, rgb_model, "rgb"), (None, model, "default"),
             (np.zeros_like(rgb), model, "default"), (grey, model, "default")]
    for colors, expected_model, role in cases:
        both = SegmentationSession(model, num_samples=2, rgb_model=rgb_model)
        alone = SegmentationSession(expected_model, num_samples=2)
        predictions = []
        for session in (both, alone):
            summary = session.set_cloud(xyz, colors=colors)
            _click_objects(session, scene)
            predictions.append(session.predict())
        assert summary.model == "default"  # the one-model session
        assert both.active_model is expected_model and both.active_model_role == role
        assert both.set_cloud(xyz, colors=colors).model == role
        np.testing.assert_array_equal(predictions[0].labels, predictions[1].labels)
        np.testing.assert_array_equal(predictions[0].uncertainty, predictions[1].uncertainty)


def test_each_model_voxelises_at_its_own_size_unless_the_session_sets_one(model, scene):
    """The shipped pair differs in voxel size (10 cm sweeps, 5 cm coloured rooms): a cloud is
    voxelised at the size of the model that encodes it, exactly as a one-model session of that
    model does; an explicit ``voxel_size`` applies to both."""
    import dataclasses

    torch.manual_seed(1)
    coarse = build_model(dataclasses.replace(tiny_config(), voxel_size=0.1)).eval()
    xyz, rgb, _ = scene
    both = SegmentationSession(coarse, num_samples=2, rgb_model=model)
    assert both.voxel_size_for(None) == both.voxel_size == 0.1
    assert both.voxel_size_for(rgb) == model.config.voxel_size == 0.05
    for colors, size, alone in ((None, 0.1, coarse), (rgb, 0.05, model)):
        counts = []
        for session in (both, SegmentationSession(alone, num_samples=2)):
            counts.append(session.set_cloud(xyz, colors=colors).num_voxels)
            assert session.voxel_size == size
            _click_objects(session, scene)
            counts.append(session.predict().labels)
        assert counts[0] == counts[2]
        np.testing.assert_array_equal(counts[1], counts[3])
    assert both.set_cloud(xyz).num_voxels < both.set_cloud(xyz, colors=rgb).num_voxels
    fixed = SegmentationSession(coarse, num_samples=2, rgb_model=model, voxel_size=0.08)
    assert fixed.voxel_size_for(None) == fixed.voxel_size_for(rgb) == 0.08
    assert fixed.set_cloud(xyz, colors=rgb).num_voxels == fixed.set_cloud(xyz).num_voxels


def test_a_session_on_a_model_router_is_the_session_on_its_models(model, scene):
    """``SegmentationSession(ModelRouter(default, rgb, voxel_size=...))`` picks and voxelises
    exactly as ``SegmentationSession(default, rgb_model=rgb, voxel_size=...)``; the pair is
    given once (a router plus ``rgb_model`` is an error)."""
    from npiseg_ros.core.router import ModelRouter

    torch.manual_seed(1)
    rgb_model = build_model(tiny_config()).eval()
    xyz, rgb, _ = scene
    for voxel_size in (None, 0.08):
        routed = SegmentationSession(ModelRouter(model, rgb_model, voxel_size=voxel_size),
                                     num_samples=2)
        direct = SegmentationSession(model, num_samples=2, rgb_model=rgb_model,
                                     voxel_size=voxel_size)
        assert routed.model is model and routed.rgb_model is rgb_model
        for colors in (rgb, None):
            predictions = []
            for session in (routed, direct):
                summary = session.set_cloud(xyz, colors=colors)
                _click_objects(session, scene)
                predictions.append((summary.model, summary.num_voxels, session.predict()))
            assert predictions[0][:2] == predictions[1][:2]
            np.testing.assert_array_equal(predictions[0][2].labels, predictions[1][2].labels)
    with pytest.raises(ConfigError, match="ModelRouter"):
        SegmentationSession(ModelRouter(model), rgb_model=rgb_model)
    with pytest.raises(ConfigError, match="voxel_size"):
        ModelRouter(model, voxel_size=0.0)


def test_model_router_loads_the_shipped_pair_for_auto_and_a_named_model_alone(
        model, tmp_path, monkeypatch):
    """``auto`` = the shipped default plus the shipped colour-cloud model; a named checkpoint
    runs alone unless a colour-cloud model is named too; a missing file lists the paths
    tried."""
    from npiseg_ros.core import router

    default_path = save_checkpoint(tmp_path / "default.safetensors", model)
    torch.manual_seed(2)
    rgb_path = save_checkpoint(tmp_path / "rgb.safetensors", build_model(tiny_config()))
    monkeypatch.setattr(router, "shipped_checkpoint", lambda: str(default_path))
    monkeypatch.setattr(router, "shipped_rgb_checkpoint", lambda: str(rgb_path))
    shipped = router.ModelRouter.load()
    assert shipped.paths == {"default": default_path, "rgb": rgb_path}
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name])
               for name, value in shipped.default.state_dict().items())
    assert not torch.equal(shipped.rgb.background_queries, shipped.default.background_queries)
    alone = router.ModelRouter.load(str(default_path))
    assert alone.rgb is None and alone.paths == {"default": default_path}
    named = router.ModelRouter.load(str(default_path), str(rgb_path))
    assert named.paths["rgb"] == rgb_path
    with pytest.raises(CheckpointError, match="missing.safetensors' not found; tried"):
        router.ModelRouter.load("missing.safetensors", cwd=tmp_path)
    with pytest.raises(CheckpointError, match="rgb_checkpoint"):
        router.ModelRouter.load(str(default_path), "missing.safetensors", cwd=tmp_path)
    monkeypatch.setattr(router, "shipped_checkpoint", lambda: "")
    with pytest.raises(CheckpointError, match="no shipped checkpoint"):
        router.ModelRouter.load()
