"""~/markers and ~/state message builders (pure functions, no node)."""
from __future__ import annotations

import math

import numpy as np
import pytest

try:
    from builtin_interfaces.msg import Time
    from visualization_msgs.msg import Marker

    from npiseg_ros.io.autosave import ClickRecord
    from npiseg_ros.ros.markers import build_markers
    from npiseg_ros.ros.state import ErrorInfo, build_state
    from npiseg_ros.ros.worker_types import Snapshot
except ImportError:  # pragma: no cover
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.core.types import CloudSummary, ObjectStats, Prediction  # noqa: E402

CLICKS = (ClickRecord((1.0, 0.0, 0.0), 1, 3), ClickRecord((2.0, 0.0, 0.0), 0, 5),
          ClickRecord((3.0, 1.0, 0.0), 2, 7), ClickRecord((1.5, 0.0, 0.0), 1, 4))


def test_markers_distinguish_positive_and_background_clicks():
    markers = build_markers("lidar", Time(sec=5), CLICKS, {1: 120, 2: 30}, (4.0, 4.0, 0.5))
    assert markers.markers[0].action == Marker.DELETEALL
    clicks = [m for m in markers.markers if m.ns == "clicks"]
    assert [m.type for m in clicks] == [Marker.SPHERE, Marker.CUBE, Marker.SPHERE, Marker.SPHERE]
    assert clicks[0].color == clicks[3].color != clicks[2].color
    assert all(m.header.frame_id == "lidar" and m.header.stamp.sec == 5 for m in clicks)
    texts = {m.id: m for m in markers.markers if m.ns == "objects"}
    assert sorted(texts) == [1, 2] and "120 pts" in texts[1].text
    assert texts[1].pose.position.x == 1.5  # above the object's latest click
    arrow = [m for m in markers.markers if m.ns == "suggested_click"]
    assert len(arrow) == 1 and arrow[0].points[-1].x == 4.0


def test_no_suggestion_no_arrow():
    markers = build_markers("lidar", Time(), (), {}, None)
    assert [m.action for m in markers.markers] == [Marker.DELETEALL]


class _Cloud:
    frame_id, stamp = "lidar", Time(sec=7)


def test_state_reports_objects_clicks_and_errors():
    stats = {0: ObjectStats(0, 90, 0.1, 1), 1: ObjectStats(1, 8, 0.2, 2),
             2: ObjectStats(2, 0, 0.0, 1)}
    prediction = Prediction(np.zeros(100, np.int32), np.zeros(100, np.float32), stats,
                            (1.0, 2.0, 3.0), 12.5, 4)
    snapshot = Snapshot(_Cloud(), "abc", CloudSummary(100, 2, 60, 300.0, model="rgb"), CLICKS,
                        prediction, 1)
    error = ErrorInfo("click rejected: far", Time(sec=9), 3)
    state = build_state(snapshot, 2, error, Time(sec=10), pending_clicks=1)
    assert list(state.object_ids) == [1, 2] and state.num_clicks == 4
    assert [o.object_id for o in state.objects] == [0, 1, 2]
    assert math.isnan(state.objects[2].mean_uncertainty)
    assert state.has_suggestion and state.suggested_click.z == 3.0
    assert (state.num_points, state.num_dropped, state.num_voxels) == (100, 2, 60)
    assert state.model == "rgb"
    assert state.cloud_stamp.sec == 7 and state.header.frame_id == "lidar"
    assert state.last_error == "click rejected: far" and state.error_count == 3
    assert state.pending_clicks == 1 and state.last_decode_ms == 12.5


def test_state_before_any_cloud():
    state = build_state(None, 1, ErrorInfo(), Time(sec=1), pending_clicks=0)
    assert state.num_points == 0 and state.active_object == 1 and state.last_error == ""
    assert state.model == ""
