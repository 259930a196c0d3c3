"""Annotation files: atomic autosave / resume keyed by a cloud fingerprint, and export formats.

No ROS and no PyTorch: the node, the browser tool and the tests call these with numpy arrays.

- Autosave: ``<directory>/<fingerprint>.npz`` written to a temporary file in the same directory,
  fsync'ed, then ``os.replace``d over the previous one (and the directory fsync'ed), so a crash
  at any moment leaves either the old or the new complete file, never a partial one. The
  generation before it is kept as ``<fingerprint>.prev.npz``: :func:`recover_autosave` falls
  back to it when the newest file is missing or unreadable (moved aside as ``*.corrupt``), so a
  damaged file never loses more than the last decoded batch.
- Export formats: ``ply`` (binary little-endian: x, y, z float32, label int32, uncertainty
  float32), ``label`` (SemanticKITTI: uint32 per point, object id in the lower 16 bits and in the
  upper 16 "instance" bits), ``npz`` (xyz, labels, uncertainty, clicks).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npiseg_ros.io.atomic import atomic_write, check_writable, previous_path
from npiseg_ros.io.label import encode_object_labels
from npiseg_ros.io.ply import write_ply_stream

__all__ = [
    "ClickRecord", "AnnotationRecord", "cloud_fingerprint", "autosave_path", "write_autosave",
    "load_autosave", "recover_autosave", "check_writable", "save_annotation", "FORMATS",
    "format_from_path", "previous_path",
]

FORMATS = ("ply", "label", "npz")
AUTOSAVE_VERSION = 1
PLY_COMMENT = "npiseg_ros annotation; label -1 = dropped point"


@dataclass(frozen=True)
class ClickRecord:
    """A click as stored: position (metres, cloud frame), object id (0 = background), snapped
    point index into the cloud."""

    position: tuple[float, float, float]
    object_id: int
    point_index: int


@dataclass(frozen=True)
class AnnotationRecord:
    """Everything needed to resume an annotation of one cloud.

    Attributes:
        fingerprint: :func:`cloud_fingerprint` of the cloud.
        frame_id: frame of the cloud and of the click positions.
        clicks: in the order they were made.
        active_object: object id that unlabelled clicks were given.
        labels: (N,) int32 last prediction (-1 for dropped points), or None.
        uncertainty: (N,) float32 last per-point uncertainty, or None.
        decoded_at: click counts after which a prediction was made and is still the base of
            the next one (each decode feeds on the previous labels); replaying clicks with
            these boundaries reproduces the labels exactly.
    """

    fingerprint: str
    frame_id: str
    clicks: tuple[ClickRecord, ...]
    active_object: int
    labels: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    decoded_at: tuple[int, ...] = ()


def cloud_fingerprint(xyz: np.ndarray) -> str:
    """Content hash of a cloud's coordinates (shape + float32 bytes), 32 hex characters.

    The same scan published again (new stamp, same points) gets the same fingerprint, which is
    what resuming needs; any change of any coordinate gives another.
    """
    data = np.ascontiguousarray(xyz, dtype=np.float32)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(data.shape).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def autosave_path(directory: str | os.PathLike, fingerprint: str) -> Path:
    """Where the autosave of the cloud with ``fingerprint`` lives."""
    return Path(directory).expanduser() / f"{fingerprint}.npz"


def _clicks_array(clicks: tuple[ClickRecord, ...] | list[ClickRecord]) -> np.ndarray:
    """(K, 5) float64 rows [x, y, z, object_id, point_index]."""
    rows = [(*click.position, click.object_id, click.point_index) for click in clicks]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def write_autosave(directory: str | os.PathLike, record: AnnotationRecord) -> Path:
    """Atomically write ``record`` to :func:`autosave_path`; returns the path."""
    path = autosave_path(directory, record.fingerprint)
    arrays = {
        "version": np.array(AUTOSAVE_VERSION),
        "fingerprint": np.array(record.fingerprint),
        "frame_id": np.array(record.frame_id),
        "clicks": _clicks_array(record.clicks),
        "active_object": np.array(record.active_object),
        "decoded_at": np.array(record.decoded_at, dtype=np.int64),
        "saved_at": np.array(time.time()),
    }
    if record.labels is not None:
        arrays["labels"] = np.asarray(record.labels, dtype=np.int32)
    if record.uncertainty is not None:
        arrays["uncertainty"] = np.asarray(record.uncertainty, dtype=np.float32)
    atomic_write(path, lambda file: np.savez(file, **arrays), keep_previous=True)
    return path


def load_autosave(directory: str | os.PathLike, fingerprint: str) -> AnnotationRecord | None:
    """The autosaved annotation of the cloud with ``fingerprint``, or None if there is none.

    Raises:
        ValueError: the file exists but is unreadable or from another format version.
    """
    return _read_autosave(autosave_path(directory, fingerprint), fingerprint)


def _read_autosave(path: Path, fingerprint: str) -> AnnotationRecord | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != AUTOSAVE_VERSION or str(data["fingerprint"]) != fingerprint:
                raise ValueError(f"{path} is from another format version or cloud")
            rows = np.asarray(data["clicks"], dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] != 5 or not np.isfinite(rows).all():
                raise ValueError(f"clicks have shape {rows.shape} or non-finite values")
            clicks = tuple(
                ClickRecord((float(x), float(y), float(z)), int(object_id), int(index))
                for x, y, z, object_id, index in rows)
            return AnnotationRecord(
                fingerprint=fingerprint,
                frame_id=str(data["frame_id"]),
                clicks=clicks,
                active_object=int(data["active_object"]),
                labels=data["labels"] if "labels" in data else None,
                uncertainty=data["uncertainty"] if "uncertainty" in data else None,
                decoded_at=tuple(int(count) for count in data["decoded_at"]),
            )
    except Exception as error:  # zipfile.BadZipFile, EOFError, zlib.error, ...: all "unreadable"
        raise ValueError(f"cannot read autosave {path}: {error!r}") from error


def recover_autosave(directory: str | os.PathLike,
                     fingerprint: str) -> tuple[AnnotationRecord | None, list[str]]:
    """The newest readable autosave of the cloud ``fingerprint`` and what went wrong on the way.

    Tries the newest file, then the generation before it (:func:`previous_path`). An unreadable
    file (torn, truncated, garbage, another version) is renamed to ``<name>.corrupt`` so that it
    is kept for inspection and not overwritten, and a message says so; temporary files left by a
    writer that was killed are removed. Never raises for a bad file.

    Returns:
        (record or None, human-readable problems found).
    """
    path = autosave_path(directory, fingerprint)
    problems: list[str] = []
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    for candidate in (path, previous_path(path)):
        try:
            record = _read_autosave(candidate, fingerprint)
        except ValueError as error:
            moved = candidate.with_name(candidate.name + ".corrupt")
            try:
                os.replace(candidate, moved)
                where = f"moved to {moved}"
            except OSError as move_error:
                where = f"could not be moved aside: {move_error}"
            problems.append(f"{error} ({where})")
            continue
        if record is not None:
            if problems:
                problems.append(f"resumed the previous autosave {candidate}")
            return record, problems
    return None, problems


def format_from_path(path: str, fmt: str = "") -> str:
    """The export format: ``fmt`` when given, else the path's extension. Raises ValueError."""
    chosen = (fmt or Path(path).suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        raise ValueError(
            f"unknown annotation format {chosen!r} (from {'format' if fmt else 'path'}); "
            f"use one of {', '.join(FORMATS)}")
    return chosen


def save_annotation(
    path: str | os.PathLike,
    fmt: str,
    xyz: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray,
    clicks: tuple[ClickRecord, ...] | list[ClickRecord] = (),
) -> Path:
    """Atomically write an annotation in one of :data:`FORMATS`.

    Args:
        path: destination file (parent directories are created; ``~`` is expanded).
        fmt: ``ply``, ``label`` or ``npz``.
        xyz: (N, 3) float coordinates, metres, cloud frame (NaN for dropped points).
        labels: (N,) int object ids, -1 for dropped points.
        uncertainty: (N,) float per-point uncertainty.
        clicks: the clicks the labels come from (stored by ``npz`` only).

    Returns:
        The absolute path written.
    """
    path = Path(path).expanduser().absolute()
    labels = np.asarray(labels, dtype=np.int32)
    if fmt == "npz":
        arrays = {"xyz": np.asarray(xyz, dtype=np.float32), "labels": labels,
                  "uncertainty": np.asarray(uncertainty, dtype=np.float32),
                  "clicks": _clicks_array(clicks)}
        atomic_write(path, lambda file: np.savez_compressed(file, **arrays))
    elif fmt == "label":
        words = encode_object_labels(labels)
        atomic_write(path, lambda file: file.write(words.tobytes()))
    elif fmt == "ply":
        xyz = np.asarray(xyz)
        fields = {axis: xyz[:, column].astype(np.float32) for column, axis in enumerate("xyz")}
        fields["label"] = labels
        fields["uncertainty"] = np.asarray(uncertainty).astype(np.float32)
        atomic_write(path, lambda file: write_ply_stream(file, fields, comments=[PLY_COMMENT]))
    else:
        raise ValueError(f"unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}")
    return path
