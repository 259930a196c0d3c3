"""Plain data types exchanged by the core, the evaluation package and the ROS node."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKGROUND_ID = 0
"""Object id of background clicks and background points."""

INVALID_LABEL = -1
"""Label given to input points that were dropped (non-finite coordinates)."""

MAX_OBJECT_ID = 65535
"""Largest object id: ids are stored in 16 bits (the instance half of a SemanticKITTI
``.label`` word, the node's ``active_object`` parameter range)."""


@dataclass(frozen=True)
class Click:
    """One user click after it has been snapped onto the cloud.

    Attributes:
        position: (x, y, z) of the click as given by the user, metres, cloud frame.
        object_id: 0 for background, >= 1 for an object.
        point_index: index (into the cloud given to ``set_cloud``) of the point the click
            snapped to.
        voxel_index: index of that point's voxel in the session's voxel grid.
        snap_distance: distance in metres between ``position`` and the snapped point.
    """

    position: tuple[float, float, float]
    object_id: int
    point_index: int
    voxel_index: int
    snap_distance: float

    @property
    def is_background(self) -> bool:
        return self.object_id == BACKGROUND_ID


@dataclass(frozen=True)
class CloudSummary:
    """What ``SegmentationSession.set_cloud`` did with a cloud.

    Attributes:
        num_points: points given (including dropped ones).
        num_dropped: points dropped because a coordinate was NaN or infinite.
        num_voxels: occupied voxels after voxelisation.
        encode_ms: wall time of voxelisation + backbone, milliseconds.
        model: which of the session's models took the cloud: ``default`` or ``rgb`` (the
            session's ``rgb_model``, for a cloud with colours).
    """

    num_points: int
    num_dropped: int
    num_voxels: int
    encode_ms: float
    model: str = "default"


@dataclass(frozen=True)
class ObjectStats:
    """Per-object summary of a prediction (object id 0 = background)."""

    object_id: int
    num_points: int
    mean_uncertainty: float
    num_clicks: int


@dataclass(frozen=True)
class Prediction:
    """Result of ``SegmentationSession.predict`` at full input resolution.

    Attributes:
        labels: (N,) int32 object id per input point (0 = background, -1 = dropped point).
        uncertainty: (N,) float32 per-point uncertainty (the session's ``uncertainty`` mode:
            ``auto`` = predictive entropy of the Monte-Carlo mean for the geodesic-prior models,
            the paper's Eq. 13-14 variance otherwise), NaN for dropped points. Higher means
            less certain.
        object_stats: statistics per object id present in the clicks (background included).
        suggested_click: (x, y, z) of the suggested next click, metres, cloud frame: the point
            deepest inside the largest region the model expects to have wrong
            (``core.suggest.suggest_error_region``), else the centre of the most uncertain
            region; None before the first click or when nothing is uncertain.
        decode_ms: wall time of the decoder for this prediction, milliseconds.
        num_clicks: clicks the prediction is based on.
        confidence: (N,) float32 model probability of each point's predicted label (mean
            softmax; NaN for dropped points), or None when no click has been decoded yet.
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    object_stats: dict[int, ObjectStats] = field(default_factory=dict)
    suggested_click: tuple[float, float, float] | None = None
    decode_ms: float = 0.0
    num_clicks: int = 0
    confidence: np.ndarray | None = None
