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


def _tiny_session_segmenter(mc_dropout_samples=0, **config):
    torch = pytest.importorskip("torch")
    build = pytest.importorskip("npiseg_ros.core.build")
    session_module = pytest.importorskip("npiseg_ros.core.session")
    from npiseg_ros.eval.session_adapter import MCDropoutSession, SessionSegmenter

    torch.manual_seed(0)
    model = build.build_model(build.tiny_config(**config))
    if mc_dropout_samples:
        session = MCDropoutSession(model, passes=mc_dropout_samples, device="cpu",
                                   num_samples=2)
    else:
        session = session_module.SegmentationSession(model, device="cpu", num_samples=2)
    return SessionSegmenter(session)


def _small_sample():
    cloud = boxes_on_ground(2, seed=0, spacing=0.15, ground_size=6.0)
    return Sample(name="boxes", scene="boxes", cloud=cloud, object_ids=(1, 2))


def test_mc_dropout_baseline_is_seeded_and_uncertain():
    segmenter = _tiny_session_segmenter(3, use_scene_latent=False, use_object_latent=False,
                                        dropout=0.3)
    first = run_interactive(segmenter, _small_sample(), max_clicks_per_object=2,
                            keep_prediction=True)
    again = run_interactive(segmenter, _small_sample(), max_clicks_per_object=2,
                            reuse_cloud=True, keep_prediction=True)
    np.testing.assert_array_equal(first.final_labels, again.final_labels)
    assert first.curve.scores == again.curve.scores
    assert np.nanmax(first.final_uncertainty) > 0.0  # dropout passes disagree somewhere
    assert np.all(np.isfinite(first.ece)) and np.all((first.ece >= 0) & (first.ece <= 1))


def test_mc_dropout_needs_a_dropout_model():
    with pytest.raises(ValueError, match="dropout"):
        _tiny_session_segmenter(3, dropout=0.0)


def test_deterministic_ablation_runs_through_the_protocol():
    segmenter = _tiny_session_segmenter(use_scene_latent=False, use_object_latent=False)
    result = run_interactive(segmenter, _small_sample(), max_clicks_per_object=2)
    assert result.curve.num_clicks == (2, 3, 4)
    assert np.all(np.isfinite(result.ece))


def _prior_model(gate):
    torch = pytest.importorskip("torch")
    build = pytest.importorskip("npiseg_ros.core.build")
    torch.manual_seed(0)
    model = build.build_model(build.prior_config())
    with torch.no_grad():
        model.prior.correction_gate.fill_(gate)
    return model


def _first_prediction(model, cloud):
    from npiseg_ros.core.session import SegmentationSession

    session = SegmentationSession(model, device="cpu", num_samples=2)
    session.set_cloud(cloud.xyz)
    for object_id in (1, 2):
        session.add_click(object_id=object_id,
                          point_index=int(np.flatnonzero(cloud.labels == object_id)[0]))
    return session.predict()


def _perturb_all_but_the_prior_scalars(model):
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name not in ("prior.log_radius", "prior.log_sharpness", "prior.correction_gate"):
                # relative noise: the features stay finite (0 * inf would not vanish)
                parameter.mul_(1.0 + 0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def test_prior_alone_predicts_from_the_learned_prior_only_and_copies_the_model():
    from npiseg_ros.eval.baselines import prior_alone

    model = _prior_model(0.8)
    alone = prior_alone(model)
    assert model.prior.correction_gate.item() == pytest.approx(0.8)  # the loaded model stays
    assert alone.prior.correction_gate.item() == 0.0 and alone is not model
    cloud = boxes_on_ground(2, seed=0, spacing=0.15, ground_size=6.0)
    reference = _first_prediction(alone, cloud)
    # every weight but the prior's radius / sharpness changed: the prior alone predicts the same
    changed = _first_prediction(prior_alone(_perturb_all_but_the_prior_scalars(
        _prior_model(0.8))), cloud)
    np.testing.assert_array_equal(reference.labels, changed.labels)
    np.testing.assert_allclose(reference.uncertainty, changed.uncertainty, rtol=1e-5, atol=1e-6)
    # ... while the full model (gate 0.8) does depend on those weights
    full = _first_prediction(_prior_model(0.8), cloud)
    full_changed = _first_prediction(_perturb_all_but_the_prior_scalars(_prior_model(0.8)), cloud)
    assert not np.allclose(full.uncertainty, full_changed.uncertainty, atol=1e-4)


def test_prior_alone_needs_a_model_with_the_prior():
    build = pytest.importorskip("npiseg_ros.core.build")
    from npiseg_ros.eval.baselines import prior_alone

    with pytest.raises(ValueError, match="geodesic prior"):
        prior_alone(build.build_model(build.tiny_config()))
