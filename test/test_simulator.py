"""Click simulator: KD-tree version equals a brute-force reference; protocol round 0 / budget."""
import numpy as np
import pytest

from npiseg_ros.core.types import Prediction
from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud, Sample
from npiseg_ros.eval.interactive import run_interactive, voxel_grid
from npiseg_ros.eval.simulator import candidate_clicks, initial_clicks, next_click


def brute_force_clicks(xyz, gt, pred):
    """Reference: dense distance matrix per (gt, pred) group, as the research code does."""
    xyz = np.asarray(xyz, dtype=np.float64)
    error = gt != pred
    out = []
    for g, p in sorted(set(zip(gt[error].tolist(), pred[error].tolist()))):
        in_group = (gt == g) & (pred == p)
        members = np.flatnonzero(in_group)
        outside = xyz[~in_group]
        if len(outside) == 0:
            best, size = 0, np.inf
        else:
            diff = xyz[members][:, None, :] - outside[None, :, :]
            nearest = np.sqrt((diff ** 2).sum(axis=2)).min(axis=1)
            best, size = int(np.argmax(nearest)), float(nearest.max())
        out.append((int(members[best]), g, p, size))
    out.sort(key=lambda c: -c[3])  # stable: ties keep (gt, pred) order
    return out


def random_scene(rng, n, num_labels, grid):
    xyz = rng.integers(0, 6, (n, 3)).astype(float) if grid else rng.random((n, 3)) * 3
    gt = rng.integers(0, num_labels, n)
    pred = np.where(rng.random(n) < 0.5, gt, rng.integers(0, num_labels, n))
    return xyz, gt, pred


@pytest.mark.parametrize("grid", [False, True])
def test_kdtree_equals_brute_force_on_random_scenes(grid):
    rng = np.random.default_rng(7 if grid else 3)
    for _ in range(40):
        xyz, gt, pred = random_scene(rng, int(rng.integers(2, 120)), int(rng.integers(2, 5)),
                                     grid)
        fast = [(c.point_index, c.label, c.predicted_label, c.distance)
                for c in candidate_clicks(xyz, gt, pred)]
        slow = brute_force_clicks(xyz, gt, pred)
        assert [f[:3] for f in fast] == [s[:3] for s in slow]
        np.testing.assert_allclose([f[3] for f in fast], [s[3] for s in slow], rtol=1e-12)
        click = next_click(xyz, gt, pred)
        if slow:
            assert (click.point_index, click.label) == slow[0][:2]
            assert click.label == gt[click.point_index]
        else:
            assert click is None


def test_click_is_deepest_point_of_the_error_and_carries_gt_label():
    # a 1-D row of 11 points; points 2..8 are object 1 but predicted background
    xyz = np.column_stack([np.arange(11.0), np.zeros(11), np.zeros(11)])
    gt = np.zeros(11, int)
    gt[2:9] = 1
    click = next_click(xyz, gt, np.zeros(11, int))
    assert (click.point_index, click.label, click.predicted_label) == (5, 1, 0)
    assert click.distance == pytest.approx(4.0)


def test_groups_are_by_label_pair_not_connected_component():
    # two far-apart pieces of the same (gt=1, pred=0) error form one group -> one candidate
    xyz = np.array([[0, 0, 0], [1, 0, 0], [50, 0, 0], [51, 0, 0], [25, 0, 0]], float)
    gt = np.array([1, 1, 1, 1, 0])
    clicks = candidate_clicks(xyz, gt, np.zeros(5, int))
    assert len(clicks) == 1 and clicks[0].label == 1


def test_perfect_prediction_gives_no_click_and_whole_cloud_group_is_inf():
    xyz = np.random.default_rng(0).random((10, 3))
    assert next_click(xyz, np.ones(10, int), np.ones(10, int)) is None
    click = next_click(xyz, np.ones(10, int), np.zeros(10, int))
    assert click.point_index == 0 and click.distance == np.inf


def test_initial_clicks_one_per_object_in_label_order():
    rng = np.random.default_rng(1)
    xyz = rng.random((300, 3)) * 5
    gt = rng.integers(0, 4, 300)
    clicks = initial_clicks(xyz, gt)
    assert [c.label for c in clicks] == [1, 2, 3]
    assert all(gt[c.point_index] == c.label for c in clicks)


def test_bad_shapes_raise_typed_value_error():
    with pytest.raises(DatasetFormatError):
        next_click(np.zeros((3, 2)), np.zeros(3, int), np.zeros(3, int))
    with pytest.raises(ValueError, match="same length"):
        next_click(np.zeros((3, 3)), np.zeros(3, int), np.zeros(4, int))


class RecordingSegmenter:
    """Predicts background everywhere except the clicked points (worst useful segmenter)."""

    def __init__(self):
        self.clicks = []
        self.num_points = 0

    def set_cloud(self, xyz, colors=None, intensity=None):
        self.num_points = len(xyz)
        self.clicks = []

    def reset(self):
        self.clicks = []

    def add_click(self, position=None, *, object_id, point_index=None):
        self.clicks.append((point_index, object_id))

    def predict(self):
        labels = np.zeros(self.num_points, np.int32)
        for index, object_id in self.clicks:
            labels[index] = object_id
        return Prediction(labels=labels, uncertainty=np.zeros(self.num_points, np.float32))


def two_blob_sample(points_per_blob=40):
    rng = np.random.default_rng(0)
    blobs = [rng.normal(c, 0.3, (points_per_blob, 3)) for c in ((0, 0, 0), (5, 0, 0), (9, 9, 0))]
    labels = np.repeat([3, 8, 0], points_per_blob)
    cloud = LabelledCloud(xyz=np.concatenate(blobs), labels=labels)
    return Sample(name="s", scene="s", cloud=cloud, object_ids=(8, 3))


def test_round_zero_clicks_every_object_then_one_click_per_round_until_budget():
    segmenter = RecordingSegmenter()
    result = run_interactive(segmenter, two_blob_sample(), max_clicks_per_object=4,
                             click_level="point")
    # sample targets (8, 3) become labels 1, 2: round 0 = one click on each, in label order
    assert [c["object_id"] for c in result.clicks[:2]] == [1, 2]
    assert result.curve.num_clicks == (2, 3, 4, 5, 6, 7, 8)
    assert len(segmenter.clicks) == 8  # budget: 4 clicks x 2 objects
    assert all(c["object_id"] in (1, 2) for c in result.clicks)  # never a background error


def test_single_mode_needs_exactly_one_object():
    with pytest.raises(DatasetFormatError, match="exactly 1"):
        run_interactive(RecordingSegmenter(), two_blob_sample(), mode="single")


def test_voxel_grid_first_point_represents_each_voxel():
    xyz = np.array([[0.01, 0, 0], [0.02, 0, 0], [0.3, 0, 0], [0.04, 0.01, 0]])
    representative, point_to_voxel = voxel_grid(xyz, 0.05)
    np.testing.assert_array_equal(representative, [0, 2])
    np.testing.assert_array_equal(point_to_voxel, [0, 0, 1, 0])


class SuggestingSegmenter(RecordingSegmenter):
    """Suggests point 0 until it has 3 clicks, then stops suggesting."""

    def __init__(self, xyz):
        super().__init__()
        self.xyz = xyz

    def predict(self):
        prediction = super().predict()
        suggestion = tuple(self.xyz[0]) if len(self.clicks) < 3 else None
        return Prediction(labels=prediction.labels, uncertainty=prediction.uncertainty,
                          suggested_click=suggestion)


def test_uncertainty_user_clicks_suggestion_with_gt_label_and_falls_back_to_oracle():
    sample = two_blob_sample()
    segmenter = SuggestingSegmenter(sample.cloud.xyz)
    result = run_interactive(segmenter, sample, max_clicks_per_object=3, user="uncertainty",
                             click_level="point")
    sources = [c["source"] for c in result.clicks]
    assert sources[:3] == ["oracle", "oracle", "uncertainty"]
    # point 0 belongs to original object 3 = target 2 of the sample (targets (8, 3))
    assert result.clicks[2]["point_index"] == 0 and result.clicks[2]["object_id"] == 2
    assert set(sources[3:]) == {"oracle"} and result.fallback_clicks == len(sources) - 3


def test_grid_coordinates_give_the_clicks_of_the_quantised_cloud():
    rng = np.random.default_rng(4)
    xyz = rng.random((400, 3)) * 2.0
    gt = (xyz[:, 0] > 1.0).astype(int) + (xyz[:, 1] > 1.4).astype(int)
    sample = Sample(name="g", scene="g", cloud=LabelledCloud(xyz=xyz, labels=gt),
                    object_ids=(1, 2))
    result = run_interactive(RecordingSegmenter(), sample, max_clicks_per_object=2,
                             voxel_size=0.2, click_coordinates="grid")
    representative, _ = voxel_grid(sample.cloud.xyz, 0.2)
    grid = np.floor(sample.cloud.xyz[representative].astype(np.float64) / 0.2)
    expected = initial_clicks(grid, sample.target_labels()[representative])
    assert [c["point_index"] for c in result.clicks[:2]] == \
        [int(representative[c.point_index]) for c in expected]
    with pytest.raises(DatasetFormatError, match="click_coordinates"):
        run_interactive(RecordingSegmenter(), sample, click_coordinates="feet")
