"""Where frames come from: cloud files, KITTI ``velodyne/`` folders, rosbag2 bags (sqlite3, MCAP).

Every source is a sequence of frames with stable names; a frame is read only when asked for.
Problems with the source as a whole raise :class:`SourceError`; problems with one frame (empty,
only NaN coordinates, undecodable message) raise :class:`FrameError` so that a caller can show
the message and go on with the other frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Frame", "FrameSource", "SourceError", "FrameError", "open_source", "CLOUD_SUFFIXES",
           "validate_points", "within_range", "MAX_COORDINATE_M", "KITTI_POINT_BYTES"]

CLOUD_SUFFIXES = (".npz", ".ply", ".pcd", ".bin")
MAX_COORDINATE_M = 10_000.0
"""Points with a coordinate beyond this (metres) are not a sensor's returns (a LiDAR reaches a
few hundred metres): they are left out of segmentation like NaN points (a voxel grid over
them would not fit in memory)."""
KITTI_POINT_BYTES = 16  # float32 x, y, z, intensity
MAX_IMPLAUSIBLE_SHARE = 0.01
"""A KITTI ``.bin`` with more than this share of points beyond :data:`MAX_COORDINATE_M` or
NaN is not a scan (random bytes, another layout): refused."""


class SourceError(ValueError):
    """The input as a whole cannot be used (not found, not a bag, no PointCloud2 topic, ...)."""


class FrameError(ValueError):
    """One frame cannot be used (empty, no finite point, undecodable)."""


@dataclass
class Frame:
    """One sweep.

    Attributes:
        name: unique, file-name safe name (``000000``, ``scan_a``, ``000012_1700000000123456789``).
        xyz: (N, 3) float32, metres, in ``frame_id``.
        intensity: (N,) float32 or None.
        colors: (N, 3) float32 in [0, 1] or None.
        frame_id: coordinate frame of ``xyz`` ("" when unknown).
        stamp_ns: time stamp (bags), or None.
        pose: (4, 4) float64 transform fixed frame <- ``frame_id`` at the stamp (bags with /tf),
            or None.
    """

    name: str
    xyz: np.ndarray
    intensity: np.ndarray | None = None
    colors: np.ndarray | None = None
    frame_id: str = ""
    stamp_ns: int | None = None
    pose: np.ndarray | None = None


def _plausible(xyz: np.ndarray) -> np.ndarray:
    """(N,) bool: finite and within :data:`MAX_COORDINATE_M` on every axis."""
    with np.errstate(invalid="ignore"):
        return (np.abs(xyz) <= MAX_COORDINATE_M).all(axis=1)


def validate_points(name: str, xyz: np.ndarray) -> None:
    """Raise :class:`FrameError` for an empty frame or one without any usable point (finite,
    within :data:`MAX_COORDINATE_M`)."""
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise FrameError(f"frame {name}: coordinates have shape {xyz.shape}, expected (N, 3)")
    if xyz.shape[0] == 0:
        raise FrameError(f"frame {name} is empty (0 points): nothing to label; go to another frame")
    if not np.isfinite(xyz).all(axis=1).any():
        raise FrameError(f"frame {name}: all {xyz.shape[0]} points have NaN/inf coordinates; "
                         "nothing to label; go to another frame")
    if not _plausible(xyz).any():
        raise FrameError(f"frame {name}: every point lies beyond {MAX_COORDINATE_M:.0f} m of "
                         "the sensor; not a sensor's scan (wrong format or units?)")


def within_range(name: str, xyz: np.ndarray, max_range: float | None) -> np.ndarray:
    """``xyz`` with the points farther than ``max_range`` metres (horizontally, from the sensor
    origin) set to NaN: the session leaves them out (label -1, exported as 0) while point
    indices stay those of the file. None or 0 keeps every point within
    :data:`MAX_COORDINATE_M` (points beyond it are always left out)."""
    keep = _plausible(xyz)
    if max_range:
        keep &= np.hypot(xyz[:, 0], xyz[:, 1]) <= max_range
        if not keep.any():
            raise FrameError(f"frame {name}: no point within --max-range {max_range} m of the "
                             "sensor")
    if keep.all():
        return xyz
    cropped = xyz.copy()
    cropped[~keep] = np.nan
    return cropped


class FrameSource:
    """A sequence of frames. Subclasses set ``names`` and implement ``_read``."""

    kind = "files"
    description = ""
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def frame(self, index: int) -> Frame:
        if not 0 <= index < len(self.names):
            raise FrameError(f"frame index {index} outside [0, {len(self.names)})")
        frame = self._read(index)
        validate_points(frame.name, frame.xyz)
        return frame

    def _read(self, index: int) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "description": self.description, "frames": len(self.names)}

    def cameras(self):
        """The cameras recorded with the frames (``camera.BagCameras``), or None: only bags
        carry images with the calibration and transforms an overlay needs."""
        return None

    def close(self) -> None:
        pass


def _safe_name(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    return keep.strip(".") or "frame"


class FileSource(FrameSource):
    """Cloud files (.npz, .ply, .pcd through npiseg-eval's reader; KITTI .bin float32 x y z i)."""

    kind = "files"

    def __init__(self, paths: list[Path], description: str) -> None:
        if not paths:
            raise SourceError(f"{description}: no cloud files ({', '.join(CLOUD_SUFFIXES)})")
        self.paths = paths
        self.description = description
        names = [_safe_name(p.stem) for p in paths]
        if len(set(names)) != len(names):  # same stem in different folders / suffixes
            names = [f"{i:06d}_{n}" for i, n in enumerate(names)]
        self.names = names

    def _read(self, index: int) -> Frame:
        path = self.paths[index]
        name = self.names[index]
        try:
            return read_cloud_file(path, name)
        except FrameError:
            raise
        except (OSError, ValueError) as error:
            raise FrameError(f"frame {name}: cannot read {path}: {error}") from None


def check_kitti_size(path: Path) -> None:
    """Raise FrameError unless the file holds whole KITTI points (16 bytes each)."""
    size = path.stat().st_size
    if size % KITTI_POINT_BYTES:
        raise FrameError(f"{path}: {size} bytes is not a whole number of KITTI velodyne points "
                         f"(a multiple of 4 float32: x y z intensity, {KITTI_POINT_BYTES} bytes "
                         f"each; {size % KITTI_POINT_BYTES} bytes left over): truncated or not "
                         "a KITTI scan")


def read_cloud_file(path: Path, name: str) -> Frame:
    if path.suffix.lower() == ".bin":
        check_kitti_size(path)
        raw = np.fromfile(path, dtype="<f4").reshape(-1, 4)
        xyz = np.ascontiguousarray(raw[:, :3])
        implausible = 1.0 - float(_plausible(xyz).mean()) if xyz.shape[0] else 0.0
        if implausible > MAX_IMPLAUSIBLE_SHARE:
            raise FrameError(f"{path}: {implausible:.0%} of its {xyz.shape[0]} points have NaN "
                             f"or coordinates beyond {MAX_COORDINATE_M:.0f} m: not a KITTI "
                             "velodyne scan (float32 x y z intensity in metres); random bytes "
                             "or another format?")
        return Frame(name, xyz, np.ascontiguousarray(raw[:, 3]))
    from npiseg_ros.eval.readers import read_cloud  # the reader npiseg-eval uses

    cloud = read_cloud(path)
    colors = None if cloud.colors is None else np.asarray(cloud.colors, np.float32)
    intensity = None if cloud.intensity is None else np.asarray(cloud.intensity, np.float32)
    return Frame(name, np.asarray(cloud.xyz, np.float32), intensity, colors)


def open_source(path: str | os.PathLike | list, topic: str | None = None) -> FrameSource:
    """Open a bag (folder with metadata.yaml, .db3, .mcap), a KITTI sequence or velodyne/
    folder, a folder of clouds, one cloud file, or a list of cloud files.

    Raises:
        SourceError: with what was found and what is expected.
    """
    if isinstance(path, (list, tuple)):
        if len(path) == 1:
            return open_source(path[0], topic)
        paths = [Path(p).expanduser() for p in path]
        for p in paths:
            if not p.is_file() or p.suffix.lower() not in CLOUD_SUFFIXES:
                raise SourceError(f"{p}: not a cloud file ({', '.join(CLOUD_SUFFIXES)}); several "
                                  "inputs must all be cloud files")
        return FileSource(paths, f"{len(paths)} files")
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"{path}: does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".db3", ".mcap") or path.name == "metadata.yaml":
            from npiseg_ros.annotate.bag import BagSource

            return BagSource(path.parent if path.name == "metadata.yaml" else path, topic)
        if suffix in CLOUD_SUFFIXES:
            return FileSource([path], str(path))
        raise SourceError(f"{path}: not a rosbag2 bag (.db3, .mcap, a folder with metadata.yaml) "
                          f"nor a cloud file ({', '.join(CLOUD_SUFFIXES)})")
    # a folder
    if (path / "metadata.yaml").is_file() or any(path.glob("*.db3")) or any(path.glob("*.mcap")):
        from npiseg_ros.annotate.bag import BagSource

        return BagSource(path, topic)
    velodyne = path / "velodyne" if (path / "velodyne").is_dir() else path
    clouds = sorted(p for p in velodyne.iterdir()
                    if p.is_file() and p.suffix.lower() in CLOUD_SUFFIXES)
    if not clouds:
        raise SourceError(f"{path}: no bag (metadata.yaml, *.db3, *.mcap), no velodyne/ folder and "
                          f"no cloud files ({', '.join(CLOUD_SUFFIXES)}) in it")
    source = FileSource(clouds, str(path))
    source.kind = "kitti" if velodyne.name == "velodyne" else "files"
    return source
