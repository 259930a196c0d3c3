"""IoU@k and NoC@q of the interactive-segmentation protocol, on full-resolution points.

Definitions (reference protocol): a sample has K target objects. After each prediction its score
is the mean IoU over the K objects. Clicks are counted per object: t clicks in all = t / K clicks
per object (fractional after round 0 of the multi-object protocol, which the research
evaluator keeps as a float too).

- IoU@k = mean over samples of the score at k clicks per object (k * K clicks in all).
- NoC@q = mean over samples of the first clicks-per-object at which the score >= q; a sample that
  never reaches q within the budget counts as the budget (20).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npiseg_ros.eval.cloud import DatasetFormatError

__all__ = ["IOU_CLICKS", "NOC_THRESHOLDS", "ClickCurve", "object_ious", "iou_at", "noc_at",
           "summarize", "mean_curve"]

IOU_CLICKS = (1, 2, 3, 5, 10, 15)
"""Clicks per object at which IoU@k is reported."""

NOC_THRESHOLDS = (0.80, 0.85, 0.90)
"""IoU targets of NoC@q."""


def object_ious(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> np.ndarray:
    """IoU of each target object.

    Args:
        gt: (N,) int ground truth, 0 = background, 1..K = targets.
        pred: (N,) int prediction; any value outside 1..K (background, -1 for dropped points,
            unknown ids) counts as "not any target".
        num_objects: K.

    Returns:
        (K,) float64 IoU of objects 1..K; an object absent from both gt and pred scores 1.0.
    """
    gt = np.asarray(gt).astype(np.int64, copy=False).reshape(-1)
    pred = np.asarray(pred).astype(np.int64, copy=False).reshape(-1)
    if gt.shape != pred.shape:
        raise DatasetFormatError(f"gt {gt.shape} and pred {pred.shape} differ in length")
    size = num_objects + 1
    gt = np.where((gt >= 1) & (gt <= num_objects), gt, 0)
    pred = np.where((pred >= 1) & (pred <= num_objects), pred, 0)
    confusion = np.bincount(gt * size + pred, minlength=size * size).reshape(size, size)
    intersection = np.diag(confusion)[1:].astype(np.float64)
    union = confusion.sum(axis=0)[1:] + confusion.sum(axis=1)[1:] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


@dataclass(frozen=True)
class ClickCurve:
    """Scores of one sample after each prediction.

    Attributes:
        num_objects: K target objects.
        num_clicks: (T,) int total clicks behind each prediction, increasing.
        scores: (T,) float mean IoU over the K objects after those clicks, in [0, 1].
    """

    num_objects: int
    num_clicks: tuple[int, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.num_objects < 1:
            raise DatasetFormatError("a sample needs at least one target object")
        if len(self.num_clicks) != len(self.scores) or not self.num_clicks:
            raise DatasetFormatError("num_clicks and scores must be non-empty and equally long")
        if any(b <= a for a, b in zip(self.num_clicks, self.num_clicks[1:])):
            raise DatasetFormatError(f"num_clicks must increase, got {self.num_clicks}")

    def score_at_total(self, total_clicks: int) -> float:
        """Score after ``total_clicks`` clicks: the last prediction made with at most that many
        (a run that stopped early because the prediction was perfect keeps its last score);
        0.0 before the first prediction."""
        index = np.searchsorted(np.asarray(self.num_clicks), total_clicks, side="right") - 1
        return float(self.scores[index]) if index >= 0 else 0.0


def iou_at(curve: ClickCurve, clicks_per_object: int) -> float:
    """Score of one sample at ``clicks_per_object`` clicks per object (k * K in all)."""
    return curve.score_at_total(clicks_per_object * curve.num_objects)


def noc_at(curve: ClickCurve, threshold: float, max_clicks_per_object: int = 20) -> float:
    """First clicks-per-object at which the score >= ``threshold``, else the budget.

    Args:
        curve: the sample's scores.
        threshold: IoU target in [0, 1] (0.85, not 85).
        max_clicks_per_object: budget; also the value of a sample that never gets there.
    """
    if not 0.0 <= threshold <= 1.0:
        raise DatasetFormatError(f"threshold is an IoU in [0, 1], got {threshold}")
    budget_total = max_clicks_per_object * curve.num_objects
    for total, score in zip(curve.num_clicks, curve.scores):
        if total > budget_total:
            break
        if score >= threshold:
            return total / curve.num_objects
    return float(max_clicks_per_object)


def summarize(curves: list[ClickCurve], *, iou_clicks: tuple[int, ...] = IOU_CLICKS,
              noc_thresholds: tuple[float, ...] = NOC_THRESHOLDS,
              max_clicks_per_object: int = 20) -> dict[str, float]:
    """Paper-style aggregates: ``{"IoU@1": ..., "NoC@80": ..., "num_samples": ...}``.

    IoU values are fractions in [0, 1] (the table printer shows percent); NoC values are clicks
    per object.
    """
    if not curves:
        raise DatasetFormatError("no samples to summarize")
    out: dict[str, float] = {"num_samples": float(len(curves))}
    for k in iou_clicks:
        out[f"IoU@{k}"] = float(np.mean([iou_at(c, k) for c in curves]))
    for q in noc_thresholds:
        out[f"NoC@{round(q * 100)}"] = float(
            np.mean([noc_at(c, q, max_clicks_per_object) for c in curves]))
    return out


def mean_curve(curves: list[ClickCurve], max_clicks_per_object: int = 20) -> np.ndarray:
    """(max_clicks_per_object,) float64 mean score at 1..budget clicks per object."""
    return np.array([np.mean([iou_at(c, k) for c in curves])
                     for k in range(1, max_clicks_per_object + 1)])
