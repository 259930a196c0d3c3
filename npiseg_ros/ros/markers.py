"""``~/markers``: clicks, object labels and the suggested next click as an RViz MarkerArray.

Positive clicks are spheres in their object's colour, background (negative) clicks are dark
cubes, each object gets a text label above its clicks, and the suggested next click is a yellow
arrow pointing down at the suggested point. Pure function of its inputs; no node.
"""
from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from npiseg_ros.core.types import BACKGROUND_ID
from npiseg_ros.io.autosave import ClickRecord
from npiseg_ros.io.colors import object_color

__all__ = ["build_markers", "CLICK_NAMESPACE", "LABEL_NAMESPACE", "SUGGESTION_NAMESPACE"]

CLICK_NAMESPACE = "clicks"
LABEL_NAMESPACE = "objects"
SUGGESTION_NAMESPACE = "suggested_click"
CLICK_DIAMETER_M = 0.3
"""Click marker size, metres: visible in an outdoor LiDAR scan without hiding the object."""


def _color(rgb: tuple[int, int, int], alpha: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=rgb[0] / 255.0, g=rgb[1] / 255.0, b=rgb[2] / 255.0, a=alpha)


def _marker(header: Header, namespace: str, marker_id: int, kind: int) -> Marker:
    marker = Marker(header=header, ns=namespace, id=marker_id, type=kind, action=Marker.ADD)
    marker.pose.orientation.w = 1.0
    return marker


def build_markers(
    frame_id: str,
    stamp: Time,
    clicks: list[ClickRecord] | tuple[ClickRecord, ...],
    points_per_object: dict[int, int],
    suggested_click: tuple[float, float, float] | None,
) -> MarkerArray:
    """MarkerArray for the current annotation; starts with DELETEALL so stale markers vanish.

    Args:
        frame_id: the cloud's frame (click positions are in it), metres.
        stamp: stamp to put on every marker (the cloud's).
        clicks: clicks in order; ``object_id`` 0 marks a background click.
        points_per_object: object id -> points currently labelled with it (for the text).
        suggested_click: (x, y, z) of the suggested next click, or None.
    """
    header = Header(frame_id=frame_id, stamp=stamp)
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    label_anchor: dict[int, tuple[float, float, float]] = {}
    for index, click in enumerate(clicks):
        background = click.object_id == BACKGROUND_ID
        marker = _marker(header, CLICK_NAMESPACE, index,
                         Marker.CUBE if background else Marker.SPHERE)
        marker.pose.position = Point(x=click.position[0], y=click.position[1],
                                     z=click.position[2])
        size = CLICK_DIAMETER_M * (0.8 if background else 1.0)
        marker.scale.x = marker.scale.y = marker.scale.z = size
        colour = (30, 30, 30) if background else object_color(click.object_id)
        marker.color = _color(colour)
        markers.append(marker)
        if not background:
            label_anchor[click.object_id] = click.position  # the object's latest click
    for object_id, (x, y, z) in sorted(label_anchor.items()):
        text = _marker(header, LABEL_NAMESPACE, object_id, Marker.TEXT_VIEW_FACING)
        text.pose.position = Point(x=x, y=y, z=z + 2.0 * CLICK_DIAMETER_M)
        text.scale.z = 2.0 * CLICK_DIAMETER_M  # text height
        text.color = _color(object_color(object_id))
        text.text = f"object {object_id}: {points_per_object.get(object_id, 0)} pts"
        markers.append(text)
    if suggested_click is not None:
        arrow = _marker(header, SUGGESTION_NAMESPACE, 0, Marker.ARROW)
        x, y, z = suggested_click
        # Arrow given by two points: from 1.5 m above down to the suggested point.
        arrow.points = [Point(x=x, y=y, z=z + 1.5), Point(x=x, y=y, z=z)]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.1, 0.25, 0.3
        arrow.color = _color((255, 220, 0))
        markers.append(arrow)
    return MarkerArray(markers=markers)
