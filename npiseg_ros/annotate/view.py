"""What the page sees of the workspace: ``GET /api/state``, ``/api/boxes``, the binary
arrays ``/api/cloud``, ``/api/intensity``, ``/api/labels`` and the camera overlay
``/api/cameras``, ``/api/camera`` (``docs/annotate.md``, "HTTP API")."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from npiseg_ros.annotate.camera import (COMPRESSED_IMAGE, IMAGE, BagCameras, CameraError,
                                        LabelledSweep, encode_png)
from npiseg_ros.annotate.export import fit_boxes
from npiseg_ros.annotate.sources import Frame, FrameSource
from npiseg_ros.core.types import Prediction

if TYPE_CHECKING:
    from npiseg_ros.annotate.workspace import Workspace

__all__ = ["page_state", "boxes_json", "cloud_bytes", "intensity_bytes", "label_bytes",
           "cameras_json", "camera_inputs", "camera_png"]


def _rounded(values, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in values]


def page_state(ws: Workspace) -> dict:
    """The JSON of ``GET /api/state`` (and of every POST's answer)."""
    prediction, review, frames = ws.prediction, ws.review, ws.frames
    objects = []
    if prediction is not None:
        for stats in prediction.object_stats.values():
            record = review.record(stats.object_id)
            objects.append({"id": stats.object_id, "points": stats.num_points,
                            "mean_uncertainty": round(float(stats.mean_uncertainty), 5),
                            "clicks": stats.num_clicks, "class": record.get("class"),
                            "attributes": record.get("attributes") or {}})
    clicks = [{"position": _rounded(c.position), "object_id": c.object_id,
               "point_index": c.point_index} for c in ws.annotation.clicks]
    suggestion = None
    if prediction is not None and prediction.suggested_click is not None:
        suggestion = _rounded(prediction.suggested_click)
    report = ws.carry_report
    return {
        "source": None if frames.source is None else frames.source.describe(),
        "session_folder": str(ws.folder),
        "frames": 0 if frames.source is None else len(frames.source),
        "position": frames.position, "frame_index": frames.index,
        "frame_name": frames.name, "order": frames.order_kind,
        "max_range": frames.max_range,
        "ok": ws.frame is not None,
        "num_points": 0 if ws.frame is None else int(ws.frame.xyz.shape[0]),
        "active_object": ws.active_object,
        "active_class": review.record(ws.active_object).get("class"),
        "current_class": review.current_class, "objects": objects, "clicks": clicks,
        "suggested_click": suggestion, "carry": None if report is None else report.to_json(),
        "carry_mode": ws.carry_mode, "prior": ws.prior_origin,
        "status": review.status_of(frames.name), "status_counts": review.counts(frames.names),
        "ontology": review.ontology.name,
        "error": ws.error, "notice": ws.notice, "version": ws.version,
        "frame_token": ws.frame_token, "dirty": ws.saver.dirty,
        "exported": ws.saver.exported, "next_ready": ws.next_ready,
        "decode_ms": None if prediction is None else round(prediction.decode_ms, 1),
    }


def boxes_json(frame: Frame | None, prediction: Prediction | None, version: int) -> dict:
    """Object id -> its fitted box (``export.fit_box``: centre, size length / width / height,
    metres; yaw, radians; points) for ``GET /api/boxes``."""
    if frame is None or prediction is None:
        return {"version": version, "boxes": {}}
    boxes = fit_boxes(frame.xyz, prediction.labels)
    return {"version": version, "boxes": {
        str(k): {"center": _rounded(b.center, 4), "size": _rounded(b.size, 4),
                 "yaw": round(b.yaw, 5), "points": b.num_points} for k, b in boxes.items()}}


def cloud_bytes(frame: Frame | None) -> bytes:
    """x y z little-endian float32 per point (``api/cloud``; empty without a frame)."""
    if frame is None:
        return b""
    return np.ascontiguousarray(frame.xyz, dtype="<f4").tobytes()


def intensity_bytes(frame: Frame | None) -> bytes:
    """Intensity little-endian float32 per point (``api/intensity``; empty without)."""
    intensity = None if frame is None else frame.intensity
    if intensity is None or np.shape(intensity) != (frame.xyz.shape[0],):
        return b""
    return np.ascontiguousarray(intensity, dtype="<f4").tobytes()


def label_bytes(frame: Frame | None, prediction: Prediction | None) -> bytes:
    """Labels (little-endian int32 per point) then uncertainty (float32 per point)
    (``api/labels``; empty without a frame or decode)."""
    if frame is None or prediction is None:
        return b""
    return (np.ascontiguousarray(prediction.labels, dtype="<i4").tobytes()
            + np.ascontiguousarray(prediction.uncertainty, dtype="<f4").tobytes())


def _no_cameras(source: FrameSource | None) -> str:
    """Why ``source`` has no camera to draw on, or "" when it has one."""
    if source is None:
        return "no input open"
    cameras = source.cameras()
    if cameras is None:
        return (f"the input is not a rosbag2 bag ({source.kind}: {source.description}): camera "
                "images are read from bags only")
    if not cameras.cameras:
        return f"{source.description}: no {IMAGE} or {COMPRESSED_IMAGE} topic in the bag"
    return ""


def cameras_json(source: FrameSource | None) -> dict:
    """``GET api/cameras``: the source's cameras (``BagCameras.describe``), or none and why.
    Reads each camera's first image once: call it outside the workspace lock."""
    reason = _no_cameras(source)
    return {"cameras": [] if reason else source.cameras().describe(), "reason": reason}


def camera_inputs(ws: Workspace) -> tuple[BagCameras, LabelledSweep]:
    """The cameras and the frame on screen with copies of its labels, for ``GET api/camera``
    (taken under the workspace lock; the drawing is done outside it).

    Raises:
        CameraError: the source has no camera, or the frame on screen no usable point.
    """
    reason = _no_cameras(ws.frames.source)
    if reason:
        raise CameraError(reason)
    if ws.frame is None:
        raise CameraError(f"frame {ws.frame_name} has no usable points: nothing to draw")
    prediction = ws.prediction
    return ws.frames.source.cameras(), LabelledSweep(
        ws.frame, None if prediction is None else prediction.labels.copy(),
        None if prediction is None else prediction.uncertainty.copy())


def camera_png(cameras: BagCameras, sweep: LabelledSweep, topic: str | None,
               colouring: str) -> tuple[bytes, dict]:
    """PNG of ``sweep``'s image from camera ``topic`` (None: the first usable) with its points
    drawn (``BagCameras.overlay``), and what was drawn.

    Raises:
        CameraError: why there is no overlay.
    """
    image, info = cameras.overlay(topic, sweep, colouring)
    info["frame"] = sweep.frame.name
    return encode_png(image), info
