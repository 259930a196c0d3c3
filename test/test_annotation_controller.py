"""AnnotationController with a real (tiny, untrained) model on a small synthetic scene, no ROS:
undo and redo through the session's history, the new-object rule, reset, exports, and resuming
an autosave file laid out as the node and the browser tool have always written it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from npiseg_ros.annotation import AnnotationController
from npiseg_ros.core.build import build_model, tiny_config
from npiseg_ros.core.errors import ClickRejectedError, InvalidCloudError, NoCloudError
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.types import MAX_OBJECT_ID
from npiseg_ros.io.autosave import autosave_path, cloud_fingerprint
from scenes import floor_with_boxes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # use_previous_mask: every decode builds on the labels of the one before, so the decode
    # sequence matters and a resume must replay it
    return build_model(tiny_config(use_previous_mask=True)).eval()


@pytest.fixture(scope="module")
def scene():
    return floor_with_boxes(seed=2, num_boxes=3)


def _controller(model, scene, **kwargs) -> AnnotationController:
    xyz, rgb, _ = scene
    annotation = AnnotationController(SegmentationSession(model, num_samples=3, seed=1), **kwargs)
    annotation.set_cloud(xyz, colors=rgb, frame_id="lidar")
    return annotation


def _picks(scene) -> list[tuple[int, int]]:
    """(point index, object id): a point of boxes 1 and 2, the floor, then box 1 again."""
    labels = scene[2]
    first = [int(np.flatnonzero(labels == object_id)[0]) for object_id in (1, 2, 0)]
    again = int(np.flatnonzero(labels == 1)[-1])
    return [(first[0], 1), (first[1], 2), (first[2], 0), (again, 1)]


def _same(first, second) -> bool:
    return (np.array_equal(first.labels, second.labels)
            and np.array_equal(first.uncertainty, second.uncertainty, equal_nan=True))


def test_undo_gives_back_the_earlier_prediction_and_redo_reproduces_the_later(model, scene):
    annotation = _controller(model, scene)
    (a, object_a), (b, object_b), _, _ = _picks(scene)
    annotation.click(point_index=a, object_id=object_a)
    after_one = annotation.predict()
    redo = annotation.click(point_index=b, object_id=object_b)
    after_two = annotation.predict()
    assert annotation.decoded_at == (1, 2)
    assert not _same(after_one, after_two)

    assert annotation.undo() == redo
    assert _same(annotation.predict(), after_one)     # exactly the earlier result
    assert annotation.decoded_at == (1,)
    annotation.click(point_index=redo.point_index, object_id=redo.object_id)
    assert _same(annotation.predict(), after_two)     # redo: the same decode as before
    assert annotation.undo() is not None and annotation.undo() is not None
    assert annotation.undo() is None and annotation.clicks == ()


def test_new_object_is_above_every_clicked_issued_and_active_id(model, scene):
    annotation = _controller(model, scene)
    assert annotation.active_object == 1
    assert annotation.new_object() == 2 and annotation.active_object == 2
    annotation.click(point_index=_picks(scene)[0][0])             # the active object: 2
    assert annotation.clicks[-1].object_id == 2
    assert annotation.new_object() == 3
    annotation.select_object(1)
    assert annotation.new_object() == 4       # 3 was handed out (not clicked yet): not again
    annotation.click(point_index=_picks(scene)[1][0], object_id=9)
    assert annotation.active_object == 4      # an explicit id leaves the active object
    assert annotation.new_object() == 10
    annotation.reset()                        # ids issued before the reset may come back
    annotation.select_object(1)
    assert annotation.new_object() == 2
    annotation.select_object(0)               # background clicks by default
    annotation.click(point_index=_picks(scene)[2][0])
    assert annotation.clicks[-1].object_id == 0
    with pytest.raises(ClickRejectedError, match="outside"):
        annotation.select_object(MAX_OBJECT_ID + 1)
    annotation.select_object(MAX_OBJECT_ID)
    with pytest.raises(ClickRejectedError, match="no object id left"):
        annotation.new_object()


def test_reset_keeps_the_cloud_and_the_active_object(model, scene):
    annotation = _controller(model, scene, active_object=3)
    for index, object_id in _picks(scene):
        annotation.click(point_index=index, object_id=object_id)
    annotation.predict()
    fingerprint = annotation.fingerprint
    annotation.reset()
    assert annotation.clicks == () and annotation.decoded_at == ()
    prediction = annotation.predict()
    assert (prediction.labels <= 0).all() and prediction.num_clicks == 0
    assert annotation.fingerprint == fingerprint and annotation.active_object == 3
    assert annotation.decoded_at == ()        # an empty decode is no replay boundary


def _write_old_autosave(directory, xyz, clicks, decoded_at, active_object, labels=None):
    """An autosave laid out by hand as the node and the browser tool wrote it before the
    controller existed (format version 1), not through the current writer."""
    path = autosave_path(directory, cloud_fingerprint(xyz))
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.array([(*xyz[index].astype(np.float64), object_id, index)
                     for index, object_id in clicks], dtype=np.float64).reshape(-1, 5)
    arrays = dict(version=np.array(1), fingerprint=np.array(cloud_fingerprint(xyz)),
                  frame_id=np.array("lidar"), clicks=rows,
                  active_object=np.array(active_object),
                  decoded_at=np.array(decoded_at, dtype=np.int64), saved_at=np.array(0.0))
    if labels is not None:
        arrays.update(labels=labels.astype(np.int32),
                      uncertainty=np.zeros(len(labels), np.float32))
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def test_resume_replays_an_old_autosave_with_its_decode_sequence(model, scene, tmp_path):
    xyz, rgb, _ = scene
    clicks = _picks(scene)
    # Reference, by hand on a plain session: the old node decoded an empty cloud (the 0 in
    # decoded_at), then after click 1, then clicks 2-4 in one batch.
    session = SegmentationSession(model, num_samples=3, seed=1)
    session.set_cloud(xyz, colors=rgb)
    session.predict()
    session.add_click(point_index=clicks[0][0], object_id=clicks[0][1])
    session.predict()
    for index, object_id in clicks[1:]:
        session.add_click(point_index=index, object_id=object_id)
    reference = session.predict()
    session.reset()
    for index, object_id in clicks:
        session.add_click(point_index=index, object_id=object_id)
    assert not _same(session.predict(), reference)   # the sequence matters for this model
    _write_old_autosave(tmp_path, xyz, clicks, (0, 1, 4), 2, labels=reference.labels)

    annotation = _controller(model, scene)
    outcome = annotation.resume(tmp_path)
    assert outcome.found and (outcome.saved_clicks, outcome.replayed) == (4, 4)
    assert outcome.skipped == () and outcome.problems == () and outcome.relabelled == 0
    assert outcome.active_object == 2 and annotation.active_object == 2
    assert [(c.point_index, c.object_id) for c in annotation.clicks] == clicks
    assert _same(annotation.prediction, reference)
    assert annotation.decoded_at == (1, 4)

    # what it writes back resumes the same way in another controller (a restart)
    annotation.autosave(tmp_path)
    again = _controller(model, scene)
    assert again.resume(tmp_path).replayed == 4 and _same(again.prediction, reference)


def test_a_clicks_only_autosave_is_small_and_resumes_to_the_same_labels(model, scene,
                                                                       tmp_path):
    annotation = _controller(model, scene)
    for index, object_id in _picks(scene):
        annotation.click(point_index=index, object_id=object_id)
        annotation.predict()
    written = annotation.autosave(tmp_path / "clicks", with_labels=False)
    full = annotation.autosave(tmp_path / "full")
    with np.load(written) as saved:
        assert "labels" not in saved and "uncertainty" not in saved
        assert saved["clicks"].shape == (4, 5)
    assert written.stat().st_size < 4096 < full.stat().st_size
    again = _controller(model, scene)
    outcome = again.resume(tmp_path / "clicks")
    assert outcome.replayed == 4 and outcome.relabelled == 0
    assert _same(again.prediction, annotation.prediction)      # the replay gives the labels


def test_resume_skips_clicks_that_cannot_be_replayed_and_says_so(model, scene, tmp_path):
    xyz = scene[0]
    (a, object_a), (b, object_b), _, _ = _picks(scene)
    saved = np.zeros(len(xyz), np.int64)
    _write_old_autosave(tmp_path, xyz, [(a, object_a), (len(xyz) - 1, 70000), (b, object_b)],
                        (1, 3), 1, labels=saved)
    annotation = _controller(model, scene)
    outcome = annotation.resume(tmp_path)
    assert (outcome.saved_clicks, outcome.replayed) == (3, 2)
    assert len(outcome.skipped) == 1 and outcome.skipped[0].startswith("click 2:")
    assert outcome.relabelled == int(np.count_nonzero(annotation.prediction.labels != saved))
    assert outcome.relabelled > 0             # the clicked points are labelled now


def test_resume_without_an_autosave_changes_nothing(model, scene, tmp_path):
    annotation = _controller(model, scene)
    annotation.click(point_index=_picks(scene)[0][0])
    outcome = annotation.resume(tmp_path / "nothing here")
    assert not outcome.found and outcome.replayed == 0 and len(annotation.clicks) == 1


def test_exports_and_bad_input(model, scene, tmp_path):
    xyz, rgb, _ = scene
    annotation = AnnotationController(SegmentationSession(model, num_samples=2))
    with pytest.raises(NoCloudError):
        annotation.click(point_index=0)
    with pytest.raises(ValueError, match="nothing to save"):
        annotation.save(tmp_path / "a.npz")
    # points left out of the segmentation (--max-range) keep their index and the identity
    segment = xyz.copy()
    segment[:10] = np.nan
    annotation.set_cloud(xyz, colors=rgb, segment=segment)
    assert annotation.fingerprint == cloud_fingerprint(xyz)
    with pytest.raises(ClickRejectedError, match="non-finite"):
        annotation.click(point_index=3)
    annotation.click(point_index=_picks(scene)[0][0])
    labels = annotation.predict().labels
    assert (labels[:10] == -1).all()
    with pytest.raises(InvalidCloudError):
        annotation.set_cloud(np.full((5, 3), np.nan, np.float32))
    assert len(annotation.clicks) == 1        # a refused cloud keeps the annotation
    written = annotation.save(tmp_path / "out" / "a.npz")
    with np.load(written) as saved:
        np.testing.assert_array_equal(saved["labels"], labels)
        np.testing.assert_array_equal(saved["xyz"], xyz)   # all points, not the cropped ones
        assert saved["clicks"].shape == (1, 5)
    words = np.fromfile(annotation.save(tmp_path / "a.label"), dtype="<u4")
    assert words.shape == (len(xyz),) and words[_picks(scene)[0][0]] & 0xFFFF == 1
    with pytest.raises(ValueError, match="unknown annotation format"):
        annotation.save(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="not a session setting"):
        annotation.tune(seed=2)
    annotation.tune(num_samples=5)
    assert annotation.session.num_samples == 5
