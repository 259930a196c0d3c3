"""The geometric baseline implements the segmenter protocol and solves an easy scene."""
import numpy as np
import pytest

from npiseg_ros.core.errors import ClickRejectedError, NoCloudError
from npiseg_ros.eval.baselines import GraphDistanceSegmenter, build_baseline
from npiseg_ros.eval.cloud import Sample
from npiseg_ros.eval.interactive import run_interactive
from npiseg_ros.eval.metrics import noc_at
from npiseg_ros.eval.synthetic import boxes_on_ground


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_separated_objects_reach_iou_90_within_3_clicks_each(seed):
    cloud = boxes_on_ground(2, seed=seed)
    sample = Sample(name="boxes", scene="boxes", cloud=cloud, object_ids=(1, 2))
    result = run_interactive(GraphDistanceSegmenter(), sample, max_clicks_per_object=3)
    # the curve holds every prediction made with at most 3 clicks per object
    assert result.curve.num_clicks[-1] == 6
    assert max(result.curve.scores) > 0.9
    assert noc_at(result.curve, 0.90, max_clicks_per_object=3) <= 3


def test_first_click_labels_the_object_and_not_the_far_ground():
    cloud = boxes_on_ground(1, seed=0)
    segmenter = GraphDistanceSegmenter()
    segmenter.set_cloud(cloud.xyz, colors=cloud.colors)
    index = int(np.flatnonzero(cloud.labels == 1)[0])
    segmenter.add_click(object_id=1, point_index=index)
    prediction = segmenter.predict()
    assert prediction.labels.shape == (cloud.num_points,)
    assert prediction.labels[index] == 1
    far = np.linalg.norm(cloud.xyz - cloud.xyz[index], axis=1) > 4.0
    assert np.all(prediction.labels[far] == 0)
    assert prediction.suggested_click is not None
    assert np.all(np.isfinite(prediction.uncertainty))


def test_protocol_errors():
    segmenter = build_baseline("graph")
    with pytest.raises(NoCloudError):
        segmenter.predict()
    segmenter.set_cloud(np.random.default_rng(0).random((30, 3)))
    with pytest.raises(ClickRejectedError):
        segmenter.add_click(object_id=1, point_index=30)
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("nope")
