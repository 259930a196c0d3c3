"""rosbag2 bags (sqlite3 and MCAP) through ``rosbags`` (pure Python, no ROS installation).

Reading: the PointCloud2 topic's messages become frames; /tf and /tf_static, when present, give
each frame's pose in the root frame of its transform tree (used to carry clicks between sweeps
of a moving sensor) and the LiDAR -> camera transform of the camera overlay (``camera.py``,
reached through :meth:`BagSource.cameras`). Writing (tests, the synthetic drive):
:func:`write_cloud_bag`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from npiseg_ros.annotate.camera import BagCameras, CameraRecording
from npiseg_ros.annotate.sources import Frame, FrameError, FrameSource, SourceError
from npiseg_ros.core.errors import InvalidCloudError
from npiseg_ros.io.pointcloud2 import CloudLayout, PackedPoints, decode_cloud
from npiseg_ros.io.transforms import quaternion, transform_matrix

__all__ = ["BagSource", "decode_pointcloud2", "write_cloud_bag", "POINTCLOUD2"]

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"
MAX_POINTS = 20_000_000


def _rosbags():
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as error:
        raise SourceError("reading bags needs the 'rosbags' package: "
                          "pip install 'npiseg_ros[annotate]' (or rosbags==0.11.9)") from error
    return AnyReader, Stores, get_typestore


def decode_pointcloud2(msg, name: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 3) float32 xyz and (N,) float32 intensity (or None) of a deserialized PointCloud2
    (:func:`npiseg_ros.io.pointcloud2.decode_cloud`; colour fields are not read).

    Raises:
        FrameError: the message cannot be decoded; the message names the frame and the reason.
    """
    layout = CloudLayout.of(msg)
    if layout.row_step == 0:  # some recorders leave it unset for dense clouds
        layout = replace(layout, row_step=layout.width * layout.point_step)
    try:
        cloud = decode_cloud(layout, msg.data, max_points=MAX_POINTS, colors=False)
    except InvalidCloudError as error:
        raise FrameError(f"frame {name}: {error}") from None
    return cloud.xyz, cloud.intensity


class _TfTree:
    """Transforms parent <- child over time; lookup of root <- frame at a time (latest <= t,
    else earliest)."""

    def __init__(self) -> None:
        self.edges: dict[str, tuple[str, list[int], list[np.ndarray]]] = {}

    def add(self, parent: str, child: str, stamp: int, matrix: np.ndarray) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        entry = self.edges.setdefault(child, (parent, [], []))
        if entry[0] != parent:
            return  # a frame has one parent; later conflicting edges are ignored
        entry[1].append(stamp)
        entry[2].append(matrix)

    def lookup(self, frame: str, stamp: int) -> tuple[str, np.ndarray] | None:
        frame = frame.lstrip("/")
        if frame not in self.edges:
            return None
        total = np.eye(4)
        seen = set()
        while frame in self.edges and frame not in seen:
            seen.add(frame)
            parent, stamps, matrices = self.edges[frame]
            order = np.argsort(stamps, kind="stable")
            sorted_stamps = np.asarray(stamps)[order]
            at = int(np.searchsorted(sorted_stamps, stamp, side="right")) - 1
            total = matrices[int(order[max(at, 0)])] @ total
            frame = parent
        return frame, total

    def to_root(self, frame: str, stamp: int) -> tuple[str, np.ndarray] | None:
        """(root, root <- frame) at ``stamp``, as :meth:`lookup`; a frame that is only ever a
        parent is a root itself (identity). None for a frame the tree does not know."""
        found = self.lookup(frame, stamp)
        if found is None and frame.lstrip("/") in {p for p, _, _ in self.edges.values()}:
            return frame.lstrip("/"), np.eye(4)
        return found

    def between(self, target: str, source: str, stamp: int) -> np.ndarray | None:
        """target <- source at ``stamp`` through their common root, or None when the frames
        are not connected."""
        to_target, to_source = self.to_root(target, stamp), self.to_root(source, stamp)
        if to_target is None or to_source is None or to_target[0] != to_source[0]:
            return None
        return np.linalg.inv(to_target[1]) @ to_source[1]


class BagSource(FrameSource):
    """Frames of one PointCloud2 topic of a rosbag2 bag (sqlite3 or MCAP)."""

    kind = "bag"

    def __init__(self, path: Path, topic: str | None = None) -> None:
        self.path = Path(path)
        self.description = str(path)
        self._cameras: BagCameras | None = None
        try:
            self.reader = self._open_reader()
        except SourceError:
            raise
        except Exception as error:  # rosbags raises its own errors for every kind of bad file
            raise SourceError(f"{path}: not a readable rosbag2 bag (sqlite3 .db3 or .mcap with "
                              f"metadata.yaml): {error}") from None
        clouds = sorted({c.topic for c in self.reader.connections if c.msgtype == POINTCLOUD2})
        topics = {c.topic: c.msgtype for c in self.reader.connections}
        self.topics = topics
        if topic is None:
            if len(clouds) != 1:
                self.close()
                listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
                raise SourceError(
                    f"{path}: {'no' if not clouds else 'several'} {POINTCLOUD2} topics; "
                    f"give --topic. Topics: {listing}")
            topic = clouds[0]
        elif topic not in topics:
            self.close()
            raise SourceError(f"{path}: no topic {topic!r}; PointCloud2 topics: "
                              f"{', '.join(clouds) or 'none'}")
        elif topics[topic] != POINTCLOUD2:
            self.close()
            raise SourceError(f"{path}: topic {topic} is {topics[topic]}, not {POINTCLOUD2}; "
                              f"PointCloud2 topics: {', '.join(clouds) or 'none'}")
        self.topic = topic
        self.connections = [c for c in self.reader.connections if c.topic == topic]
        self.stamps = [stamp for _, stamp, _ in self.reader.messages(self.connections)]
        if not self.stamps:
            self.close()
            raise SourceError(f"{path}: topic {topic} has no messages")
        self.names = [f"{i:06d}_{stamp}" for i, stamp in enumerate(self.stamps)]
        self.tf = self._read_tf()
        self.description = f"{path} {topic}"

    def _open_reader(self):
        """A new, open ``rosbags`` reader of the bag."""
        AnyReader, Stores, get_typestore = _rosbags()
        reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
        return reader

    def _read_tf(self) -> _TfTree | None:
        connections = [c for c in self.reader.connections
                       if c.msgtype == TF_TYPE and c.topic in ("/tf", "/tf_static")]
        if not connections:
            return None
        tree = _TfTree()
        for connection, stamp, raw in self.reader.messages(connections):
            try:
                message = self.reader.deserialize(raw, connection.msgtype)
            except Exception:
                continue
            for item in message.transforms:
                try:
                    matrix = transform_matrix(item.transform)
                except ValueError:  # a zero quaternion: no rotation to use
                    continue
                when = 0 if connection.topic == "/tf_static" else (
                    int(item.header.stamp.sec) * 10**9 + int(item.header.stamp.nanosec))
                tree.add(item.header.frame_id, item.child_frame_id, when, matrix)
        return tree

    def _read(self, index: int) -> Frame:
        name = self.names[index]
        stamp = self.stamps[index]
        # all messages at this receive time; the k-th of them when several share it
        same = [i for i in range(index + 1) if self.stamps[i] == stamp]
        for k, (connection, _, raw) in enumerate(
                self.reader.messages(self.connections, start=stamp, stop=stamp + 1)):
            if k == len(same) - 1:
                break
        else:
            raise FrameError(f"frame {name}: message not found in {self.path}")
        try:
            message = self.reader.deserialize(raw, connection.msgtype)
        except Exception as error:
            raise FrameError(f"frame {name}: cannot deserialize the PointCloud2 message: "
                             f"{error}") from None
        xyz, intensity = decode_pointcloud2(message, name)
        frame_id = str(message.header.frame_id)
        header_stamp = int(message.header.stamp.sec) * 10**9 + int(message.header.stamp.nanosec)
        pose = None
        if self.tf is not None and frame_id:
            found = self.tf.lookup(frame_id, header_stamp)
            pose = None if found is None else found[1]
        return Frame(name, xyz, intensity, None, frame_id, header_stamp, pose)

    def cameras(self) -> BagCameras:
        """The bag's cameras (``camera.BagCameras``, with a reader of its own, opened on the
        first read)."""
        if self._cameras is None:
            self._cameras = BagCameras(self._open_reader, self.topics, self.tf)
        return self._cameras

    def describe(self) -> dict:
        info = super().describe()
        info.update(topic=self.topic, tf=self.tf is not None,
                    cameras=list(self.cameras().cameras))
        return info

    def close(self) -> None:
        if self._cameras is not None:
            self._cameras.close()
        try:
            self.reader.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- writing


def write_cloud_bag(path: str | Path, clouds: list[np.ndarray], *, topic: str = "/points",
                    frame_id: str = "velodyne", storage: str = "sqlite3",
                    poses: list[np.ndarray] | None = None, fixed_frame: str = "odom",
                    intensities: list[np.ndarray | None] | None = None,
                    period_ns: int = 100_000_000, start_ns: int = 1_700_000_000_000_000_000,
                    extra_string_topic: str | None = None,
                    static_transforms: list[tuple[str, str, np.ndarray]] | None = None,
                    cameras: list[CameraRecording] | None = None) -> Path:
    """Write clouds (each (N, 3) float32, optionally with intensity) as PointCloud2 messages
    (x, y, z, intensity float32) into a new rosbag2 bag; poses (4x4, fixed <- sensor) go to /tf.
    ``extra_string_topic`` adds a std_msgs/String topic (to test a non-PointCloud2 topic);
    ``static_transforms`` (parent, child, 4x4 parent <- child) go to /tf_static; ``cameras``
    add an image (and CameraInfo) per cloud (``camera.CameraRecording``)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    Header = types["std_msgs/msg/Header"]
    Time = types["builtin_interfaces/msg/Time"]
    PointField = types["sensor_msgs/msg/PointField"]
    PointCloud2 = types[POINTCLOUD2]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    path = Path(path)
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        cloud_conn = writer.add_connection(topic, POINTCLOUD2, typestore=store)
        tf_conn = writer.add_connection("/tf", TF_TYPE, typestore=store) if poses else None
        text_conn = (writer.add_connection(extra_string_topic, "std_msgs/msg/String",
                                           typestore=store) if extra_string_topic else None)
        if static_transforms:
            time = Time(sec=start_ns // 10**9, nanosec=start_ns % 10**9)
            writer.write(writer.add_connection("/tf_static", TF_TYPE, typestore=store),
                         start_ns, store.serialize_cdr(types[TF_TYPE](transforms=[
                             _transform(types, time, parent, child, matrix)
                             for parent, child, matrix in static_transforms]), TF_TYPE))
        camera_conns = {}
        for camera in cameras or []:
            for name, msgtype in ((camera.topic, camera.msgtype),
                                  (camera.camera_info_topic, "sensor_msgs/msg/CameraInfo")):
                if name is not None:
                    camera_conns[name] = writer.add_connection(name, msgtype, typestore=store)
        columns = [(name, np.float32) for name in ("x", "y", "z", "intensity")]
        for index, xyz in enumerate(clouds):
            stamp = start_ns + index * period_ns
            time = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
            xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
            intensity = None if intensities is None else intensities[index]
            if intensity is None:
                intensity = np.zeros(len(xyz), np.float32)
            packed = PackedPoints(columns, len(xyz))
            for column, axis in enumerate("xyz"):
                packed.write(axis, xyz[:, column])
            packed.write("intensity", np.asarray(intensity, np.float32).reshape(-1))
            message = PointCloud2(
                header=Header(stamp=time, frame_id=frame_id), height=1, width=packed.width,
                fields=[PointField(name=field.name, offset=field.offset,
                                   datatype=field.datatype, count=field.count)
                        for field in packed.fields],
                is_bigendian=False, point_step=packed.point_step, row_step=packed.row_step,
                data=packed.points.view(np.uint8), is_dense=False)
            if tf_conn is not None:
                writer.write(tf_conn, stamp, store.serialize_cdr(types[TF_TYPE](transforms=[
                    _transform(types, time, fixed_frame, frame_id, poses[index])]), TF_TYPE))
            if text_conn is not None:
                writer.write(text_conn, stamp, store.serialize_cdr(
                    types["std_msgs/msg/String"](data=f"frame {index}"), "std_msgs/msg/String"))
            writer.write(cloud_conn, stamp, store.serialize_cdr(message, POINTCLOUD2))
            for camera in cameras or []:
                for name, msgtype, item in camera.messages(types, index, stamp):
                    writer.write(camera_conns[name], stamp + camera.offset_ns,
                                 store.serialize_cdr(item, msgtype))
    return path


def _transform(types, time, parent: str, child: str, pose: np.ndarray):
    """A geometry_msgs/TransformStamped parent <- child (4x4 ``pose``)."""
    pose = np.asarray(pose, np.float64)
    x, y, z, w = quaternion(pose[:3, :3])
    Header = types["std_msgs/msg/Header"]
    return types["geometry_msgs/msg/TransformStamped"](
        header=Header(stamp=time, frame_id=parent), child_frame_id=child,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](
                x=float(pose[0, 3]), y=float(pose[1, 3]), z=float(pose[2, 3])),
            rotation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))
