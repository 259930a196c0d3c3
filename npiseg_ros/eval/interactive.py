"""The interactive evaluation loop: a simulated user clicks, a segmenter predicts, we score.

Any object with the ``Segmenter`` methods plugs in: ``npiseg_ros.core.session.SegmentationSession``
(through ``npiseg_ros.eval.session_adapter``) and the baselines of ``npiseg_ros.eval.baselines``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.spatial import cKDTree

from npiseg_ros.core.voxelize import voxelize
from npiseg_ros.eval.cloud import DatasetFormatError, Sample
from npiseg_ros.eval.metrics import ClickCurve, object_ious
from npiseg_ros.eval.simulator import SimulatedClick, initial_clicks, next_click
from npiseg_ros.eval.uncertainty import error_auroc, expected_calibration_error

__all__ = ["Segmenter", "InteractiveResult", "run_interactive", "voxel_grid",
           "voxel_representatives", "MODES", "USERS", "CLICK_LEVELS", "CLICK_COORDINATES"]

MODES = ("multi", "single")
USERS = ("oracle", "uncertainty")
CLICK_LEVELS = ("voxel", "point")
CLICK_COORDINATES = ("grid", "metres")


class Segmenter(Protocol):
    """What the loop needs from a segmenter. ``predict`` returns an object with ``labels``
    ((N,) int, 0 = background, k = object k) and ``uncertainty`` ((N,) float, higher = less
    certain) and optionally ``suggested_click`` ((x, y, z) metres or None) and ``confidence``
    ((N,) float in [0, 1], probability of the predicted label), e.g.
    ``core.types.Prediction``."""

    def set_cloud(self, xyz: np.ndarray, colors: np.ndarray | None = None,
                  intensity: np.ndarray | None = None) -> Any: ...

    def reset(self) -> None: ...

    def add_click(self, position: Any = None, *, object_id: int,
                  point_index: int | None = None) -> Any: ...

    def predict(self) -> Any: ...


@dataclass
class InteractiveResult:
    """Everything measured on one sample.

    Attributes:
        name, scene: the sample's names.
        curve: total clicks and mean IoU after each prediction.
        object_ious: (T, K) IoU of each object after each prediction.
        clicks: the clicks in order: ``{"point_index", "object_id", "distance", "source"}``.
        auroc: (T,) AUROC of the uncertainty for wrong points after each prediction (NaN when
            undefined: no errors, or no uncertainty).
        ece: (T,) expected calibration error after each prediction over all points (NaN
            without confidence). On whole sweeps the easy far background dominates it.
        ece_objects: (T,) the same over the points that are a target or predicted as one (where
            the decisions are made), NaN without confidence.
        set_cloud_ms: wall time of ``set_cloud`` (0 when the cloud was reused), milliseconds.
        predict_ms: (T,) wall time of each ``predict``, milliseconds.
        fallback_clicks: clicks of the uncertainty-guided user that fell back to the oracle
            (no suggestion available).
        model: which of the segmenter's models ran the sample (a session's
            ``active_model_role``: ``"default"`` or ``"rgb"``), None for segmenters without one.
        final_labels, final_uncertainty: the last prediction (kept only on request).
    """

    name: str
    scene: str
    mode: str
    user: str
    curve: ClickCurve
    object_ious: np.ndarray
    clicks: list[dict[str, Any]]
    auroc: np.ndarray
    ece: np.ndarray
    set_cloud_ms: float
    predict_ms: np.ndarray
    fallback_clicks: int = 0
    model: str | None = None
    ece_objects: np.ndarray | None = None
    final_labels: np.ndarray | None = field(default=None, repr=False)
    final_uncertainty: np.ndarray | None = field(default=None, repr=False)


def voxel_grid(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxelise like the research code: the first point of each voxel represents it.

    Args:
        xyz: (N, 3) float coordinates, metres.
        voxel_size: grid size, metres.

    Returns:
        representative: (V,) int64 index of each voxel's first point, increasing.
        point_to_voxel: (N,) int64 voxel of every point (index into ``representative``).
    """
    if voxel_size <= 0:
        raise DatasetFormatError(f"voxel_size must be > 0 metres, got {voxel_size}")
    # the session's own voxeliser (same grid, same first-point representatives as the model)
    voxels = voxelize(np.asarray(xyz, dtype=np.float64), voxel_size)
    order = np.argsort(voxels.representative)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return voxels.representative[order], rank[voxels.point_to_voxel]


def voxel_representatives(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """(V,) int64 index of the first point of every occupied voxel, increasing."""
    return voxel_grid(xyz, voxel_size)[0]


def _prediction_arrays(prediction: Any, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(prediction.labels).astype(np.int64, copy=False).reshape(-1)
    uncertainty = np.asarray(prediction.uncertainty, dtype=np.float64).reshape(-1)
    if labels.shape != (num_points,) or uncertainty.shape != (num_points,):
        raise DatasetFormatError(
            f"segmenter returned labels {labels.shape} / uncertainty {uncertainty.shape} for a "
            f"cloud of {num_points} points")
    return labels, uncertainty


def run_interactive(segmenter: Segmenter, sample: Sample, *, max_clicks_per_object: int = 20,
                    mode: str = "multi", user: str = "oracle", click_level: str = "voxel",
                    voxel_size: float = 0.05, click_coordinates: str = "grid",
                    reuse_cloud: bool = False, keep_prediction: bool = False
                    ) -> InteractiveResult:
    """Run the click protocol on one sample.

    Round 0 clicks every target object once (deepest point; the prediction is all background),
    then one click per round goes to the largest (gt, pred) error group until the budget of
    ``max_clicks_per_object * K`` clicks is spent or the prediction is perfect on the points
    the simulator sees. Scores are on all points.

    Args:
        segmenter: see ``Segmenter``.
        sample: the scene and its K targets (single mode: K must be 1).
        max_clicks_per_object: click budget per object (the protocol's 20).
        mode: ``"multi"`` or ``"single"`` (binary object-vs-rest; same rules with K = 1).
        user: ``"oracle"`` (the error simulator) or ``"uncertainty"``: after round 0, clicks the
            point nearest the prediction's ``suggested_click`` with the ground-truth label there
            (falls back to the oracle when there is no suggestion).
        click_level: ``"voxel"``: the simulator sees one representative point per voxel of
            ``voxel_size`` (as the research code); ``"point"``: all points.
        voxel_size: metres, for ``click_level="voxel"``.
        click_coordinates: with voxels, measure the simulator's distances on the integer voxel
            grid (``"grid"``, the research code's discrete coordinates) or on the
            representatives' coordinates in metres (``"metres"``); points always use metres.
        reuse_cloud: call ``segmenter.reset()`` instead of ``set_cloud`` (same scene as before).
        keep_prediction: keep the last labels / uncertainty in the result (for plots).
    """
    if (mode not in MODES or user not in USERS or click_level not in CLICK_LEVELS
            or click_coordinates not in CLICK_COORDINATES):
        raise DatasetFormatError(
            f"mode/user/click_level/click_coordinates must be in {MODES}/{USERS}/"
            f"{CLICK_LEVELS}/{CLICK_COORDINATES}, got {mode!r}/{user!r}/{click_level!r}/"
            f"{click_coordinates!r}")
    num_objects = len(sample.object_ids)
    if num_objects < 1 or (mode == "single" and num_objects != 1):
        raise DatasetFormatError(
            f"sample {sample.name!r} has {num_objects} targets; {mode} mode needs "
            f"{'exactly 1' if mode == 'single' else 'at least 1'}")
    if max_clicks_per_object < 1:
        raise DatasetFormatError("max_clicks_per_object must be >= 1")
    cloud = sample.cloud
    gt = sample.target_labels()
    sim_index = (voxel_representatives(cloud.xyz, voxel_size) if click_level == "voxel"
                 else np.arange(cloud.num_points))
    sim_xyz, sim_gt = cloud.xyz[sim_index], gt[sim_index]
    if click_level == "voxel" and click_coordinates == "grid":
        sim_xyz = np.floor(sim_xyz.astype(np.float64) / voxel_size)
    if len(np.unique(sim_gt[sim_gt > 0])) != num_objects:
        raise DatasetFormatError(f"sample {sample.name!r}: a target object has no points")

    start = time.perf_counter()
    if reuse_cloud:
        segmenter.reset()
        set_cloud_ms = 0.0
    else:
        segmenter.set_cloud(cloud.xyz, colors=cloud.colors, intensity=cloud.intensity)
        set_cloud_ms = (time.perf_counter() - start) * 1e3

    clicks: list[dict[str, Any]] = []

    def click(simulated: SimulatedClick, source: str) -> None:
        point_index = int(sim_index[simulated.point_index])
        segmenter.add_click(object_id=int(simulated.label), point_index=point_index)
        clicks.append({"point_index": point_index, "object_id": int(simulated.label),
                       "distance": float(simulated.distance), "source": source})

    for simulated in initial_clicks(sim_xyz, sim_gt):
        click(simulated, "oracle")

    totals, scores, per_object, auroc, ece, latency = [], [], [], [], [], []
    ece_objects = []
    tree = cKDTree(cloud.xyz) if user == "uncertainty" else None
    fallbacks = 0
    budget = max_clicks_per_object * num_objects
    while True:
        start = time.perf_counter()
        prediction = segmenter.predict()
        latency.append((time.perf_counter() - start) * 1e3)
        labels, uncertainty = _prediction_arrays(prediction, cloud.num_points)
        ious = object_ious(gt, labels, num_objects)
        wrong = np.where((labels >= 1) & (labels <= num_objects), labels, 0) != gt
        totals.append(len(clicks))
        scores.append(float(ious.mean()))
        per_object.append(ious)
        auroc.append(error_auroc(uncertainty, wrong))
        confidence = getattr(prediction, "confidence", None)
        ece.append(float("nan") if confidence is None
                   else expected_calibration_error(confidence, ~wrong))
        decided = (gt > 0) | ((labels >= 1) & (labels <= num_objects))
        ece_objects.append(float("nan") if confidence is None or not decided.any()
                           else expected_calibration_error(confidence[decided], ~wrong[decided]))
        if len(clicks) >= budget:
            break
        sim_pred = labels[sim_index]
        suggestion = getattr(prediction, "suggested_click", None) if tree is not None else None
        if suggestion is not None:
            _, nearest = tree.query(np.asarray(suggestion, dtype=np.float64).reshape(3))
            nearest = int(nearest)
            segmenter.add_click(object_id=int(gt[nearest]), point_index=nearest)
            clicks.append({"point_index": nearest, "object_id": int(gt[nearest]),
                           "distance": float("nan"), "source": "uncertainty"})
            continue
        simulated = next_click(sim_xyz, sim_gt, sim_pred)
        if simulated is None:
            break
        if tree is not None:
            fallbacks += 1
        click(simulated, "oracle")

    return InteractiveResult(
        name=sample.name, scene=sample.scene, mode=mode, user=user,
        curve=ClickCurve(num_objects=num_objects, num_clicks=tuple(totals), scores=tuple(scores)),
        object_ious=np.stack(per_object), clicks=clicks, auroc=np.asarray(auroc),
        ece=np.asarray(ece), set_cloud_ms=set_cloud_ms, predict_ms=np.asarray(latency),
        fallback_clicks=fallbacks, model=getattr(segmenter, "active_model_role", None),
        ece_objects=np.asarray(ece_objects),
        final_labels=labels if keep_prediction else None,
        final_uncertainty=uncertainty if keep_prediction else None)
