"""``~/state``: the node's SegmentationState message, built from a worker snapshot (no node)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import Header

from npiseg_ros.core.types import BACKGROUND_ID
from npiseg_ros.msg import ObjectState, SegmentationState
from npiseg_ros.ros.worker_types import Snapshot

__all__ = ["ErrorInfo", "build_state"]


@dataclass(frozen=True)
class ErrorInfo:
    """The most recent rejected input: reason, when (ROS time) and how many so far."""

    message: str = ""
    stamp: Time = field(default_factory=Time)
    count: int = 0


def build_state(snapshot: Snapshot | None, active_object: int, error: ErrorInfo,
                now: Time, pending_clicks: int) -> SegmentationState:
    """State after ``snapshot`` (None before the first segmented cloud)."""
    state = SegmentationState(active_object=active_object, last_error=error.message,
                              last_error_stamp=error.stamp, error_count=error.count,
                              pending_clicks=pending_clicks)
    state.header = Header(stamp=now)
    if snapshot is None:
        return state
    cloud, prediction, summary = snapshot.cloud, snapshot.prediction, snapshot.summary
    state.header.frame_id = cloud.frame_id
    state.cloud_stamp = cloud.stamp
    state.cloud_fingerprint = snapshot.fingerprint
    state.num_points, state.num_dropped = summary.num_points, summary.num_dropped
    state.num_voxels = summary.num_voxels
    state.model = summary.model
    state.num_clicks = len(snapshot.clicks)
    state.object_ids = [oid for oid in sorted(prediction.object_stats) if oid != BACKGROUND_ID]
    state.objects = [
        ObjectState(object_id=stats.object_id, num_clicks=stats.num_clicks,
                    num_points=stats.num_points,
                    mean_uncertainty=stats.mean_uncertainty if stats.num_points else math.nan)
        for _, stats in sorted(prediction.object_stats.items())]
    if prediction.suggested_click is not None:
        x, y, z = prediction.suggested_click
        state.has_suggestion, state.suggested_click = True, Point(x=x, y=y, z=z)
    state.last_encode_ms = float(summary.encode_ms)
    state.last_decode_ms = float(prediction.decode_ms)
    return state
