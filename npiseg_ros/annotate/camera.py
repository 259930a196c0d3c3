"""Camera images recorded in a bag, paired with the sweeps, with the labelled points drawn on them.

For a rosbag2 source every ``sensor_msgs/msg/Image`` and ``sensor_msgs/msg/CompressedImage``
topic is a camera, paired with the ``sensor_msgs/msg/CameraInfo`` topic of its namespace
(``/cam/image_raw`` and ``/cam/image_raw/compressed`` -> ``/cam/camera_info``). A sweep gets the
image whose header stamp is nearest its own, within :data:`PAIRING_TOLERANCE_NS`; the LiDAR ->
camera transform comes from the bag's ``/tf`` + ``/tf_static`` tree (``bag._TfTree``, the one
that gives the sweeps' poses) at the sweep's stamp. The points are projected with the pinhole
model and plumb_bob distortion and drawn far to near in the page's colours
(:mod:`npiseg_ros.annotate.projection`, pure numpy). Whatever stops an overlay is a
:class:`CameraError` with a one-line reason.

:class:`BagCameras` reads through a reader of its own under a lock of its own, so that drawing
an overlay never waits for the workspace's reads and never holds up a click.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from npiseg_ros.annotate.projection import (COLOURINGS, CameraError, Intrinsics, draw_points,
                                            point_colours, project_points)
from npiseg_ros.annotate.sources import Frame

if TYPE_CHECKING:
    from npiseg_ros.annotate.bag import _TfTree

__all__ = ["CameraError", "decode_image", "CameraTopic", "discover_cameras", "LabelledSweep",
           "BagCameras", "CameraRecording", "encode_png", "COLOURINGS", "PAIRING_TOLERANCE_NS",
           "IMAGE", "COMPRESSED_IMAGE", "CAMERA_INFO"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
PAIRING_TOLERANCE_NS = 100_000_000
"""An image more than this (0.1 s) from a sweep's stamp is not that sweep's image."""
ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]),
             "bgra8": (4, [2, 1, 0]), "mono8": (1, [0, 0, 0])}
"""Image encodings read: bytes per pixel and the channels that give R, G, B."""
PAIRED_CACHE = 8
"""Images (decoded, with their intrinsics and transform) kept per bag for the latest sweeps."""


# --------------------------------------------------------------------------- images


def decode_image(message, msgtype: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image (:data:`ENCODINGS`) or CompressedImage (JPEG, PNG,
    through Pillow) message.

    Raises:
        CameraError: another encoding, data that does not fit, or an undecodable image.
    """
    if msgtype == COMPRESSED_IMAGE:
        return _decode_compressed(message)
    encoding = str(message.encoding)
    if encoding not in ENCODINGS:
        raise CameraError(f"image encoding {encoding!r} is not supported "
                          f"({', '.join(ENCODINGS)})")
    channels, rgb = ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.frombuffer(memoryview(message.data), np.uint8)
    if height == 0 or width == 0:
        raise CameraError(f"the image is empty ({width}x{height})")
    if step < width * channels or data.size < height * step:
        raise CameraError(f"{encoding} image {width}x{height} with row step {step} needs "
                          f"{height * max(step, width * channels)} bytes, the message has "
                          f"{data.size}")
    rows = data[:height * step].reshape(height, step)[:, :width * channels]
    return np.ascontiguousarray(rows.reshape(height, width, channels)[:, :, rgb])


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise CameraError(f"{COMPRESSED_IMAGE} needs Pillow: pip install "
                          "'npiseg_ros[annotate]'") from None
    return Image


def _decode_compressed(message) -> np.ndarray:
    image_format = str(message.format)
    if "compresseddepth" in image_format.lower():
        raise CameraError(f"compressed depth images ({image_format!r}) are not camera images")
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(bytes(message.data))) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # Pillow raises many kinds for a bad stream
        raise CameraError(f"cannot decode the {image_format or 'compressed'} image: "
                          f"{error}") from None


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image (fast compression: it is sent once)."""
    buffer = io.BytesIO()
    _pillow().fromarray(rgb, "RGB").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class CameraTopic:
    """One camera of a bag: its image topic and type, its CameraInfo topic (None: none
    found, then ``problem`` says so) and whether its images are rectified."""

    topic: str
    msgtype: str
    info_topic: str | None
    rectified: bool
    problem: str = ""


def _base_topic(topic: str, msgtype: str) -> str:
    """The image topic a CompressedImage topic transports (``.../compressed`` removed)."""
    if msgtype == COMPRESSED_IMAGE and topic.endswith("/compressed"):
        return topic[:-len("/compressed")]
    return topic


def discover_cameras(topics: dict[str, str]) -> list[CameraTopic]:
    """The cameras among a bag's topics (topic -> message type), each paired with the
    CameraInfo topic of its namespace (``camera_info`` when there are several)."""
    infos = [t for t, msgtype in topics.items() if msgtype == CAMERA_INFO]
    cameras = []
    for topic, msgtype in sorted(topics.items()):
        if msgtype not in (IMAGE, COMPRESSED_IMAGE):
            continue
        base = _base_topic(topic, msgtype)
        namespace = base.rsplit("/", 1)[0]
        near = [t for t in infos if t.rsplit("/", 1)[0] == namespace]
        if len(near) > 1:
            near = [t for t in near if t.rsplit("/", 1)[1] == "camera_info"]
        info = near[0] if len(near) == 1 else None
        problem = "" if info else (f"no {CAMERA_INFO} topic next to it (expected "
                                   f"{namespace}/camera_info)")
        rectified = base.rsplit("/", 1)[1].startswith("image_rect")
        cameras.append(CameraTopic(topic, msgtype, info, rectified, problem))
    return cameras


# --------------------------------------------------------------------------- a bag's cameras


@dataclass
class LabelledSweep:
    """What an overlay draws: the sweep on screen, its labels and uncertainty (None before
    the first decode)."""

    frame: Frame
    labels: np.ndarray | None
    uncertainty: np.ndarray | None


@dataclass
class _Paired:
    """A sweep's image from one camera, ready to draw on."""

    rgb: np.ndarray
    intrinsics: Intrinsics
    camera_from_lidar: np.ndarray
    offset_s: float  # image stamp - sweep stamp


def _stamp(header, received: int) -> int:
    """A header's stamp in ns; the receive time when the recorder left it unset."""
    stamp = int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)
    return stamp or received


class BagCameras:
    """The cameras of one bag: listing, pairing images with sweeps, drawing overlays.

    Args:
        open_reader: opens a new ``rosbags`` reader of the bag (this class's own, used under
            its own lock).
        topics: the bag's topics -> message types.
        tf: the bag's transform tree (None: the bag has no /tf or /tf_static).
    """

    def __init__(self, open_reader: Callable[[], object], topics: dict[str, str],
                 tf: _TfTree | None) -> None:
        self.cameras = {c.topic: c for c in discover_cameras(topics)}
        self.tf = tf
        self._open_reader = open_reader
        self._reader = None
        self._lock = threading.Lock()
        self._closed = False
        self._stamps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._infos: dict[str, tuple[np.ndarray, list]] = {}
        self._paired: OrderedDict[tuple, _Paired] = OrderedDict()
        self._listing: list[dict] | None = None

    # ------------------------------------------------------------------ reading
    def _messages(self, topic: str, start: int | None = None, stop: int | None = None):
        """(receive time, message) of ``topic``, deserialized (a message that cannot be is
        skipped); call under the lock."""
        if self._closed:
            raise CameraError("the input was closed (another one was opened)")
        if self._reader is None:
            try:
                self._reader = self._open_reader()
            except Exception as error:  # the bag went away or changed since it was opened
                raise CameraError(f"cannot open the bag for its images: {error}") from None
        reader = self._reader
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, received, raw in reader.messages(connections, start=start, stop=stop):
            try:
                yield received, reader.deserialize(raw, connection.msgtype)
            except Exception:  # rosbags raises its own errors for a damaged message
                continue

    def _image_stamps(self, topic: str) -> tuple[np.ndarray, np.ndarray]:
        """(header stamps sorted, their receive times) of every image of ``topic``, read once."""
        if topic not in self._stamps:
            pairs = sorted((_stamp(m.header, t), t) for t, m in self._messages(topic))
            self._stamps[topic] = (np.array([p[0] for p in pairs], np.int64),
                                   np.array([p[1] for p in pairs], np.int64))
        return self._stamps[topic]

    def _camera_info(self, camera: CameraTopic, stamp: int):
        """The CameraInfo of ``camera`` nearest in time to ``stamp``."""
        if camera.info_topic not in self._infos:
            pairs = sorted(((_stamp(m.header, t), m) for t, m in
                            self._messages(camera.info_topic)), key=lambda p: p[0])
            self._infos[camera.info_topic] = (np.array([p[0] for p in pairs], np.int64),
                                              [p[1] for p in pairs])
        stamps, messages = self._infos[camera.info_topic]
        if not messages:
            raise CameraError(f"{camera.info_topic} has no readable message")
        return messages[int(np.argmin(np.abs(stamps - stamp)))]

    def _image_near(self, camera: CameraTopic, stamp: int, name: str):
        """(image message, its stamp) of ``camera`` nearest ``stamp``.

        Raises:
            CameraError: none within :data:`PAIRING_TOLERANCE_NS`.
        """
        stamps, received = self._image_stamps(camera.topic)
        if stamps.size == 0:
            raise CameraError(f"{camera.topic} has no readable image")
        at = int(np.argmin(np.abs(stamps - stamp)))
        offset = (int(stamps[at]) - stamp) / 1e9
        if abs(offset) * 1e9 > PAIRING_TOLERANCE_NS:
            raise CameraError(f"no image on {camera.topic} within "
                              f"{PAIRING_TOLERANCE_NS / 1e9:g} s of sweep {name} (the nearest is "
                              f"{offset:+.3f} s from it)")
        for when, message in self._messages(camera.topic, int(received[at]),
                                            int(received[at]) + 1):
            if _stamp(message.header, when) == stamps[at]:
                return message, int(stamps[at])
        raise CameraError(f"the image of {camera.topic} at {stamps[at]} ns could not be read")

    def _transform(self, camera_frame: str, lidar_frame: str, stamp: int) -> np.ndarray:
        """camera <- LiDAR at ``stamp`` from the bag's transform tree."""
        if not lidar_frame or not camera_frame:
            raise CameraError(f"no frame_id on the {'sweep' if not lidar_frame else 'image'}: "
                              "the LiDAR -> camera transform is unknown")
        if camera_frame.lstrip("/") == lidar_frame.lstrip("/"):
            return np.eye(4)
        if self.tf is None:
            raise CameraError(f"the bag has no /tf or /tf_static: the transform from "
                              f"{lidar_frame} to {camera_frame} is unknown")
        transform = self.tf.between(camera_frame, lidar_frame, stamp)
        if transform is None:
            raise CameraError(f"no transform from {lidar_frame} to {camera_frame} in /tf + "
                              "/tf_static (the frames are not connected)")
        return transform

    def _camera(self, topic: str | None, listing: list[dict] | None) -> CameraTopic:
        """Camera ``topic``, or with None the first usable one of ``listing``."""
        if not self.cameras:
            raise CameraError(f"the bag has no camera ({IMAGE} or {COMPRESSED_IMAGE} topic)")
        if topic is None:
            usable = [entry["topic"] for entry in listing or [] if entry["usable"]]
            topic = (usable or list(self.cameras))[0]
        if topic not in self.cameras:
            raise CameraError(f"no camera topic {topic!r}; cameras: {', '.join(self.cameras)}")
        camera = self.cameras[topic]
        if camera.problem:
            raise CameraError(f"{topic}: {camera.problem}")
        return camera

    def _pair(self, camera: CameraTopic, frame: Frame) -> _Paired:
        """``frame``'s image from ``camera`` with what drawing on it needs (cached)."""
        key = (camera.topic, frame.name, frame.stamp_ns, frame.frame_id)
        if key in self._paired:
            self._paired.move_to_end(key)
            return self._paired[key]
        stamp = int(frame.stamp_ns or 0)
        message, image_stamp = self._image_near(camera, stamp, frame.name)
        rgb = decode_image(message, camera.msgtype)
        intrinsics = Intrinsics.from_camera_info(
            self._camera_info(camera, image_stamp), camera.rectified).sized(rgb.shape[1],
                                                                             rgb.shape[0])
        transform = self._transform(str(message.header.frame_id), frame.frame_id, stamp)
        paired = _Paired(rgb, intrinsics, transform, (image_stamp - stamp) / 1e9)
        self._paired[key] = paired
        while len(self._paired) > PAIRED_CACHE:
            self._paired.popitem(last=False)
        return paired

    # ------------------------------------------------------------------ what the server asks
    def describe(self) -> list[dict]:
        """Per camera: topic, type, CameraInfo topic, size and encoding of its first image,
        whether it can be drawn on and if not why (``GET api/cameras``); read once."""
        with self._lock:
            if self._listing is None:
                self._listing = [self._describe(camera) for camera in self.cameras.values()]
            return self._listing

    def _describe(self, camera: CameraTopic) -> dict:
        entry = {"topic": camera.topic, "type": camera.msgtype, "info_topic": camera.info_topic,
                 "rectified": camera.rectified, "width": None, "height": None,
                 "encoding": None, "frame_id": None, "usable": False,
                 "problem": camera.problem}
        if camera.problem:
            return entry
        try:
            with closing(self._messages(camera.topic)) as messages:
                received, message = next(messages)
            entry["frame_id"] = str(message.header.frame_id)
            entry["encoding"] = str(getattr(message, "encoding", "") or
                                    getattr(message, "format", ""))
            rgb = decode_image(message, camera.msgtype)
            entry["height"], entry["width"] = rgb.shape[:2]
            Intrinsics.from_camera_info(
                self._camera_info(camera, _stamp(message.header, received)),
                camera.rectified).sized(rgb.shape[1], rgb.shape[0])
        except StopIteration:
            entry["problem"] = f"{camera.topic} has no readable image"
        except CameraError as error:
            entry["problem"] = str(error)
        entry["usable"] = not entry["problem"]
        return entry

    def overlay(self, topic: str | None, sweep: LabelledSweep,
                colouring: str = "labels") -> tuple[np.ndarray, dict]:
        """``sweep``'s image from camera ``topic`` (None: the first usable) with its points
        drawn in ``colouring``, and what was drawn (topic, image - sweep time offset in s,
        points drawn).

        Raises:
            CameraError: why there is no overlay (no such camera, no image near the sweep, an
                unsupported image or calibration, no transform).
        """
        listing = self.describe() if topic is None else None
        with self._lock:
            camera = self._camera(topic, listing)
            paired = self._pair(camera, sweep.frame)
        xyz = sweep.frame.xyz
        colours, radii = point_colours(xyz[:, 2], sweep.labels, sweep.uncertainty, colouring)
        projection = project_points(xyz, paired.camera_from_lidar, paired.intrinsics)
        image = draw_points(paired.rgb, projection.uv, projection.depth,
                            colours[projection.index], radii[projection.index])
        return image, {"camera": camera.topic, "offset_s": round(paired.offset_s, 6),
                       "points": int(projection.index.size)}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._reader is not None:
                try:
                    self._reader.close()
                except Exception:
                    pass
                self._reader = None


# --------------------------------------------------------------------------- writing (tests)


@dataclass
class CameraRecording:
    """A camera for ``bag.write_cloud_bag``: one image per cloud, at the cloud's stamp plus
    ``offset_ns``, and (unless ``info_topic`` is None) a CameraInfo with each.

    Attributes:
        images: per cloud, the pixel array as ``encoding`` lays it out ((H, W, C) or (H, W)
            uint8), or with ``compressed`` an (H, W, 3) RGB array written as that format.
        matrix: (3, 3) K (and P's left block).
        compressed: ``png`` or ``jpeg``: a CompressedImage topic (Pillow) instead of Image.
        info_topic: "" = ``<namespace>/camera_info``; None = no CameraInfo.
    """

    images: list[np.ndarray]
    matrix: np.ndarray
    topic: str = "/camera/image_raw"
    frame_id: str = "camera_optical"
    encoding: str = "rgb8"
    compressed: str = ""
    distortion: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)
    distortion_model: str = "plumb_bob"
    info_topic: str | None = ""
    offset_ns: int = 0

    @property
    def msgtype(self) -> str:
        return COMPRESSED_IMAGE if self.compressed else IMAGE

    @property
    def camera_info_topic(self) -> str | None:
        if self.info_topic is None:
            return None
        base = _base_topic(self.topic, self.msgtype)
        return self.info_topic or f"{base.rsplit('/', 1)[0]}/camera_info"

    def messages(self, types, index: int, stamp_ns: int) -> list[tuple[str, str, object]]:
        """(topic, type, message) to write with cloud ``index`` stamped ``stamp_ns``."""
        stamp_ns += self.offset_ns
        header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                       nanosec=stamp_ns % 10**9),
            frame_id=self.frame_id)
        pixels = np.ascontiguousarray(self.images[index], np.uint8)
        height, width = pixels.shape[:2]
        if self.compressed:
            buffer = io.BytesIO()
            _pillow().fromarray(pixels).save(buffer, self.compressed.upper())
            image = types[COMPRESSED_IMAGE](header=header, format=self.compressed,
                                            data=np.frombuffer(buffer.getvalue(), np.uint8))
        else:
            image = types[IMAGE](header=header, height=height, width=width,
                                 encoding=self.encoding, is_bigendian=0,
                                 step=pixels.size // max(height, 1),
                                 data=pixels.reshape(-1))
        written = [(self.topic, self.msgtype, image)]
        if self.camera_info_topic is not None:
            written.append((self.camera_info_topic, CAMERA_INFO,
                            self._info(types, header, width, height)))
        return written

    def _info(self, types, header, width: int, height: int):
        matrix = np.asarray(self.matrix, np.float64)
        projection = np.concatenate([matrix, np.zeros((3, 1))], axis=1)
        return types[CAMERA_INFO](
            header=header, height=height, width=width, distortion_model=self.distortion_model,
            d=np.asarray(self.distortion, np.float64), k=matrix.reshape(-1),
            r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                          width=0, do_rectify=False))
