"""The next-click suggestion: the deepest point of the region the model most expects wrong."""
from __future__ import annotations

import numpy as np

from npiseg_ros.core.suggest import suggest_error_region, suggest_next_click


def _block(origin, size, step=0.1):
    axes = [np.arange(o, o + s, step) for o, s in zip(origin, size)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid.astype(np.float32)


def _small_and_large_block():
    """A small block the model is more unsure of (0.4) and a large one (0.6): (xyz, confidence,
    labels, number of points of the small one)."""
    small = _block((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))
    large = _block((5.0, 0.0, 0.0), (1.5, 1.5, 1.5))
    xyz = np.concatenate([small, large])
    confidence = np.concatenate([np.full(len(small), 0.4), np.full(len(large), 0.6)])
    return xyz, confidence, np.ones(len(xyz), np.int64), len(small)


def test_largest_expected_error_region_wins_and_its_deepest_point_is_suggested():
    xyz, confidence, labels, _ = _small_and_large_block()
    x, y, z = suggest_error_region(xyz, confidence, labels, cell_size=0.2)
    # more expected errors in the large block (0.4 x many points > 0.6 x few)
    assert 5.0 <= x <= 6.5
    # deepest: far from the block's faces, not on its border
    centre = np.array([5.7, 0.7, 0.7])
    assert np.linalg.norm(np.array([x, y, z]) - centre) < 0.45


def test_confident_points_are_never_suggested_and_none_without_doubt():
    xyz = _block((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    confidence = np.full(len(xyz), 0.95)
    labels = np.zeros(len(xyz), np.int64)
    assert suggest_error_region(xyz, confidence, labels, cell_size=0.2) is None
    confidence[:10] = 0.3
    suggestion = suggest_error_region(xyz, confidence, labels, cell_size=0.2)
    assert any(np.allclose(suggestion, point) for point in xyz[:10])


def test_cells_next_to_a_click_are_never_suggested_again():
    xyz, confidence, labels, small = _small_and_large_block()
    first = np.array(suggest_error_region(xyz, confidence, labels, cell_size=0.2))
    # the user clicked there and the model is still unsure: the next suggestion moves on
    second = np.array(suggest_error_region(xyz, confidence, labels, cell_size=0.2,
                                           clicked=first[None]))
    cell = lambda p: np.floor(p / 0.2)  # noqa: E731
    assert np.abs(cell(second) - cell(first)).max() >= 2
    # a region covered by clicks is left for the next one; no region left: None
    only_small = suggest_error_region(xyz[:small], confidence[:small], labels[:small],
                                      cell_size=0.2,
                                      clicked=np.array([[0.2, 0.2, 0.2]]))
    assert only_small is None
    assert suggest_error_region(xyz, confidence, labels, cell_size=0.2,
                                clicked=np.zeros((0, 3))) == tuple(first)


def test_regions_never_merge_two_predicted_labels():
    touching_a = _block((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))      # label 1, mass 0.45 x 1000
    touching_b = _block((1.0, 0.0, 0.0), (1.0, 1.0, 1.0))      # label 2, mass 0.50 x 1000
    apart = _block((10.0, 0.0, 0.0), (1.3, 1.0, 1.0))          # label 1, mass 0.40 x 1300
    xyz = np.concatenate([touching_a, touching_b, apart])
    labels = np.concatenate([np.ones(len(touching_a)), np.full(len(touching_b), 2),
                             np.ones(len(apart))]).astype(np.int64)
    confidence = np.concatenate([np.full(len(touching_a), 0.55), np.full(len(touching_b), 0.5),
                                 np.full(len(apart), 0.6)])
    # merged across labels the two touching blocks would outweigh the apart one
    x, _, _ = suggest_error_region(xyz, confidence, labels, cell_size=0.2)
    assert x >= 10.0


def test_nan_confidence_counts_as_certain():
    xyz = _block((0.0, 0.0, 0.0), (0.4, 0.4, 0.4))
    confidence = np.full(len(xyz), np.nan)
    assert suggest_error_region(xyz, confidence, np.zeros(len(xyz), np.int64), 0.2) is None


def test_summed_uncertainty_rule_still_picks_the_most_uncertain_cube():
    xyz = np.concatenate([_block((0, 0, 0), (0.5, 0.5, 0.5)), _block((3, 0, 0), (0.5, 0.5, 0.5))])
    uncertainty = np.concatenate([np.full(125, 0.1), np.full(125, 0.9)])
    x, _, _ = suggest_next_click(xyz, uncertainty, region_size=1.0)
    assert x >= 3.0


def test_the_session_suggests_the_deepest_point_of_its_expected_error_region():
    from npiseg_ros.core.build import build_model, tiny_config
    from npiseg_ros.core.session import ERROR_REGION_VOXELS, SegmentationSession
    from scenes import floor_with_boxes

    xyz, colors, labels = floor_with_boxes(seed=3)
    session = SegmentationSession(build_model(tiny_config()).eval(), device="cpu", seed=0)
    session.set_cloud(xyz, colors=colors)
    session.add_click(tuple(xyz[labels == 1].mean(axis=0)), object_id=1)
    prediction = session.predict()
    expected = suggest_error_region(xyz, prediction.confidence, prediction.labels,
                                    ERROR_REGION_VOXELS * session.voxel_size,
                                    clicked=xyz[[session.clicks[0].point_index]])
    assert expected is not None  # an untrained model is unsure somewhere
    assert prediction.suggested_click == expected
    assert any(np.allclose(prediction.suggested_click, point) for point in xyz)
