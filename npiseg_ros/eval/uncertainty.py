"""How good a per-point uncertainty is: AUROC for finding wrong points, calibration error."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from npiseg_ros.eval.cloud import DatasetFormatError

__all__ = ["error_auroc", "expected_calibration_error"]


def error_auroc(uncertainty: np.ndarray, is_error: np.ndarray) -> float:
    """Area under the ROC curve of ``uncertainty`` as a detector of wrongly labelled points.

    Equals the probability that a random wrong point is more uncertain than a random correct one
    (ties count one half): 1.0 = perfect ranking, 0.5 = chance. Computed with the rank-sum
    (Mann-Whitney) formula, O(N log N).

    Args:
        uncertainty: (N,) float, higher = less certain; NaN entries are ignored.
        is_error: (N,) bool, True where the prediction is wrong.

    Returns:
        The AUROC, or NaN when there are no wrong or no correct points (undefined).
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    is_error = np.asarray(is_error, dtype=bool).reshape(-1)
    if uncertainty.shape != is_error.shape:
        raise DatasetFormatError(
            f"uncertainty {uncertainty.shape} and is_error {is_error.shape} differ in length")
    keep = np.isfinite(uncertainty)
    uncertainty, is_error = uncertainty[keep], is_error[keep]
    num_pos = int(is_error.sum())
    num_neg = int(is_error.size - num_pos)
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    ranks = rankdata(uncertainty)  # average ranks handle ties as one half
    rank_sum = float(ranks[is_error].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


def expected_calibration_error(confidence: np.ndarray, is_correct: np.ndarray,
                               num_bins: int = 15) -> float:
    """Expected calibration error of per-point confidences (equal-width bins on [0, 1]).

    ECE = sum over bins of (points in bin / N) * |accuracy in bin - mean confidence in bin|.

    Args:
        confidence: (N,) float in [0, 1]: the probability of the predicted label (e.g. the max of
            the mean softmax over the model's samples); NaN entries are ignored.
        is_correct: (N,) bool, True where the predicted label is right.
        num_bins: number of equal-width bins.

    Returns:
        ECE in [0, 1], or NaN for an empty input.
    """
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    is_correct = np.asarray(is_correct, dtype=bool).reshape(-1)
    if confidence.shape != is_correct.shape:
        raise DatasetFormatError(
            f"confidence {confidence.shape} and is_correct {is_correct.shape} differ in length")
    if num_bins < 1:
        raise DatasetFormatError(f"num_bins must be >= 1, got {num_bins}")
    keep = np.isfinite(confidence)
    confidence, is_correct = confidence[keep], is_correct[keep]
    if confidence.size == 0:
        return float("nan")
    if confidence.min() < 0.0 or confidence.max() > 1.0:
        raise DatasetFormatError("confidence must lie in [0, 1] (a probability, not a logit)")
    bins = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    count = np.bincount(bins, minlength=num_bins).astype(np.float64)
    conf_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
    acc_sum = np.bincount(bins, weights=is_correct.astype(np.float64), minlength=num_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / confidence.size)
