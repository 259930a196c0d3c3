"""IoU@k / NoC@q on hand-computed sequences, per-object IoU, uncertainty metrics."""
import numpy as np
import pytest

from npiseg_ros.eval.cloud import DatasetFormatError
from npiseg_ros.eval.metrics import (
    ClickCurve, iou_at, mean_curve, noc_at, object_ious, summarize)
from npiseg_ros.eval.uncertainty import error_auroc, expected_calibration_error


def single(scores):
    return ClickCurve(num_objects=1, num_clicks=tuple(range(1, len(scores) + 1)),
                      scores=tuple(scores))


def test_noc_is_first_click_reaching_threshold_else_budget():
    curve = single([0.5, 0.7, 0.85, 0.8, 0.95] + [0.95] * 15)
    assert noc_at(curve, 0.85) == 3
    assert noc_at(curve, 0.80) == 3
    assert noc_at(curve, 0.90) == 5
    never = single([0.5] * 20)
    assert noc_at(never, 0.85) == 20
    assert noc_at(never, 0.85, max_clicks_per_object=10) == 10


def test_noc_ignores_clicks_past_the_budget():
    curve = single([0.1] * 20 + [0.99])
    assert noc_at(curve, 0.9) == 20


def test_iou_at_k_and_summary_average_over_samples():
    a = single([0.5, 0.7, 0.85, 0.8, 0.95] + [0.95] * 15)
    b = single([0.2] * 20)
    summary = summarize([a, b])
    assert summary["IoU@1"] == pytest.approx((0.5 + 0.2) / 2)
    assert summary["IoU@3"] == pytest.approx((0.85 + 0.2) / 2)
    assert summary["IoU@5"] == pytest.approx((0.95 + 0.2) / 2)
    assert summary["NoC@85"] == pytest.approx((3 + 20) / 2)
    assert summary["NoC@90"] == pytest.approx((5 + 20) / 2)
    assert summary["num_samples"] == 2


def test_multi_object_clicks_are_counted_per_object():
    # K = 2: round 0 gives 2 clicks (1 per object), then one click per prediction
    curve = ClickCurve(num_objects=2, num_clicks=(2, 3, 4, 5, 6),
                       scores=(0.4, 0.6, 0.82, 0.86, 0.91))
    assert iou_at(curve, 1) == pytest.approx(0.4)
    assert iou_at(curve, 2) == pytest.approx(0.82)
    assert iou_at(curve, 3) == pytest.approx(0.91)
    assert noc_at(curve, 0.85) == pytest.approx(2.5)  # 5 clicks / 2 objects
    assert noc_at(curve, 0.80) == pytest.approx(2.0)


def test_run_stopped_early_keeps_last_score():
    curve = ClickCurve(num_objects=1, num_clicks=(1, 2), scores=(0.9, 1.0))
    assert iou_at(curve, 15) == 1.0
    np.testing.assert_allclose(mean_curve([curve], 4), [0.9, 1.0, 1.0, 1.0])


def test_object_ious_by_hand():
    gt = np.array([1, 1, 1, 2, 2, 0, 0])
    pred = np.array([1, 1, 0, 2, 1, -1, 7])  # -1 (dropped) and 7 (unknown) count as "no object"
    ious = object_ious(gt, pred, 2)
    np.testing.assert_allclose(ious, [2 / 4, 1 / 2])


def test_bad_curves_and_thresholds_raise():
    with pytest.raises(DatasetFormatError):
        ClickCurve(num_objects=1, num_clicks=(2, 1), scores=(0.1, 0.2))
    with pytest.raises(ValueError):
        noc_at(single([0.5]), 85)


def test_auroc_by_hand():
    uncertainty = np.array([0.9, 0.8, 0.1, 0.2, np.nan])
    is_error = np.array([True, False, False, True, True])
    # pairs (error, correct): (0.9,0.8)+ (0.9,0.1)+ (0.2,0.8)- (0.2,0.1)+ -> 3/4
    assert error_auroc(uncertainty, is_error) == pytest.approx(0.75)
    assert error_auroc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)
    assert np.isnan(error_auroc(np.ones(3), np.zeros(3, bool)))


def test_ece_by_hand():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, True, True, False])
    # bin 0.9-1: acc 1 conf .95 -> .05 * 2/4 ; bin .5-.6: acc .5 conf .55 -> .05 * 2/4
    assert expected_calibration_error(confidence, correct, 10) == pytest.approx(0.05)
    assert expected_calibration_error(np.ones(4), np.ones(4, bool)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="probability"):
        expected_calibration_error(np.array([1.5]), np.array([True]))


def test_the_report_carries_the_ece_of_the_predicted_label_by_hand():
    """ECE reaches the report: a stub segmenter whose first prediction labels 4 points object
    1 with confidences 0.95, 0.95, 0.55, 0.55, point 3 being background: 15 bins give
    2/4 * |1 - 0.95| + 2/4 * |0.5 - 0.55| = 0.05."""
    from types import SimpleNamespace

    from npiseg_ros.eval.cloud import LabelledCloud, Sample
    from npiseg_ros.eval.evaluate import evaluate, report_to_json

    class Stub:
        def set_cloud(self, xyz, colors=None, intensity=None):
            self.count = len(xyz)

        def reset(self):
            pass

        def add_click(self, position=None, *, object_id, point_index=None):
            pass

        def predict(self):
            return SimpleNamespace(labels=np.ones(self.count, np.int64),
                                   uncertainty=np.array([0.1, 0.1, 0.4, 0.6]),
                                   confidence=np.array([0.95, 0.95, 0.55, 0.55]))

    cloud = LabelledCloud(xyz=np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5, 0, 0]]),
                          labels=np.array([1, 1, 1, 0]))
    sample = Sample(name="s", scene="s", cloud=cloud, object_ids=(1,))
    report = evaluate(Stub(), [sample], max_clicks_per_object=1, click_level="point")
    assert report.results["oracle"][0].ece.tolist() == pytest.approx([0.05])
    quality = report_to_json(report, {})["uncertainty_quality"]["oracle"]
    assert quality["ece_mean"] == pytest.approx(0.05)
    assert quality["per_clicks_per_object"]["1"]["ece"] == pytest.approx(0.05)
    assert quality["auroc_mean"] == pytest.approx(1.0)  # the wrong point is the most uncertain


def test_object_ece_leaves_out_the_easy_background():
    """Six points: two of object 1 predicted at 0.95 and 0.55 (both right), a far background
    point predicted background at 0.99 (right, not counted), and three background points
    predicted as object 1 at 0.6 (wrong, counted). All points: 15 bins; object region: the
    2 + 3 points, ECE = 1/5 |1 - .95| + 1/5 |1 - .55| + 3/5 |0 - .6| = 0.46."""
    from types import SimpleNamespace

    from npiseg_ros.eval.cloud import LabelledCloud, Sample
    from npiseg_ros.eval.evaluate import evaluate, report_to_json

    labels = np.array([1, 1, 0, 1, 1, 1])
    confidence = np.array([0.95, 0.55, 0.99, 0.6, 0.6, 0.6])

    class Stub:
        def set_cloud(self, xyz, colors=None, intensity=None):
            pass

        def reset(self):
            pass

        def add_click(self, position=None, *, object_id, point_index=None):
            pass

        def predict(self):
            return SimpleNamespace(labels=labels, uncertainty=1 - confidence,
                                   confidence=confidence)

    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [9, 0, 0], [3, 0, 0], [3.1, 0, 0], [3.2, 0, 0]])
    cloud = LabelledCloud(xyz=xyz, labels=np.array([1, 1, 0, 0, 0, 0]))
    sample = Sample(name="s", scene="s", cloud=cloud, object_ids=(1,))
    report = evaluate(Stub(), [sample], max_clicks_per_object=1, click_level="point")
    result = report.results["oracle"][0]
    assert result.ece_objects.tolist() == pytest.approx([0.46])
    assert result.ece.tolist() == pytest.approx([(0.05 + 0.45 + 0.01 + 3 * 0.6) / 6])
    quality = report_to_json(report, {})["uncertainty_quality"]["oracle"]
    assert quality["ece_objects_mean"] == pytest.approx(0.46)
    assert quality["per_clicks_per_object"]["1"]["ece_objects"] == pytest.approx(0.46)


def test_aggregate_seeds_by_hand():
    from npiseg_ros.eval.evaluate import SEED_METRICS, aggregate_seeds, format_seed_table

    def report(iou1, noc85, auroc, ece):
        metrics = {key: 0.5 for key in SEED_METRICS[:-2]}
        metrics.update({"IoU@1": iou1, "NoC@85": noc85, "num_samples": 4.0})
        return {"metrics": {"oracle": metrics},
                "uncertainty_quality": {"oracle": {"auroc_mean": auroc, "ece_mean": ece}}}

    aggregate = aggregate_seeds({0: report(0.6, 2.0, 0.9, 0.1), 1: report(0.8, 4.0, 0.8, None),
                                 2: report(0.7, 3.0, 0.7, 0.3)})
    spread = aggregate["spread"]["oracle"]
    assert aggregate["seeds"] == [0, 1, 2]
    assert spread["IoU@1"] == pytest.approx({"mean": 0.7, "std": 0.1, "min": 0.6, "max": 0.8,
                                             "n": 3})
    assert spread["NoC@85"] == pytest.approx({"mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0,
                                              "n": 3})
    assert spread["AUROC"]["mean"] == pytest.approx(0.8)
    # seed 1 has no ECE: the two others count
    assert spread["ECE"] == pytest.approx({"mean": 0.2, "std": 0.02 ** 0.5, "min": 0.1,
                                           "max": 0.3, "n": 2})
    assert aggregate["per_seed"]["1"]["oracle"]["ECE"] is None
    assert "IoU@1 70.0 [60.0-80.0]" in format_seed_table(aggregate)
    assert "NoC@85 3.00 [2.00-4.00]" in format_seed_table(aggregate)
    assert "ECE 0.200 [0.100-0.300]" in format_seed_table(aggregate)
    with pytest.raises(ValueError, match="at least one"):
        aggregate_seeds({})
