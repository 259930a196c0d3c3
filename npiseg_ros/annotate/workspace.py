"""The annotation workspace: an annotation controller over a sequence of frames, a session folder.

The :class:`~npiseg_ros.annotation.AnnotationController` does the clicks, decodes, undo,
objects, autosave, resume and exports of the frame on screen; the workspace adds the frames
(order, navigation), carrying the clicks from one frame to the next, and the session folder.

Session folder layout (everything the tool writes goes here and nowhere else)::

    session.json                 source (absolute and relative path, topic), frame names, where
                                 the user was, the frame order (source order or triage rank)
    autosave/<frame>/<fp>.npz    the node's atomic autosave (clicks, decode boundaries, active
                                 object, labels, uncertainty) keyed by the cloud fingerprint,
                                 written after every click / undo / reset / new object
    export/<frame>.label         SemanticKITTI labels (object id in both 16-bit halves)
    export/<frame>.ply           x y z label uncertainty (binary)
    export/<frame>.npz           xyz, labels, uncertainty, clicks (read by npiseg-eval's reader)
    triage.csv, triage.png       written by ``npiseg-annotate triage``

Another person opens the folder with ``npiseg-annotate --session DIR``: the source is found by
its absolute path, else by its path relative to the folder.
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npiseg_ros.annotate.sources import (Frame, FrameError, FrameSource, SourceError, open_source,
                                        within_range)
from npiseg_ros.annotation import AnnotationController
from npiseg_ros.core.errors import ClickRejectedError, NPISegError
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.types import BACKGROUND_ID, MAX_OBJECT_ID, Prediction
from npiseg_ros.io.atomic import atomic_write_bytes

__all__ = ["Workspace", "CarryReport", "carry_clicks", "load_shipped_session", "SESSION_FILE",
           "EXPORT_FORMATS"]

SESSION_FILE = "session.json"
SESSION_VERSION = 1
EXPORT_FORMATS = ("label", "ply", "npz")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _shareable(path: Path) -> None:
    """The node's writers create 0600 files (mkstemp); a session folder is meant to be opened
    by another person, so give its files the permissions the umask allows."""
    try:
        os.chmod(path, 0o666 & ~_UMASK)
    except OSError:
        pass


def load_shipped_session(checkpoint: str | None = None, device: str = "cpu",
                         num_samples: int = 10, seed: int = 0) -> tuple[SegmentationSession, str]:
    """A session on the shipped checkpoint (or ``checkpoint``). Never an untrained model.

    Without ``checkpoint`` the session also gets the shipped RGB (indoor) model for coloured
    clouds, as the node's ``checkpoint: auto`` does.

    Raises:
        SourceError: no checkpoint shipped and none given.
    """
    from npiseg_ros.core.errors import CheckpointError
    from npiseg_ros.core.router import AUTO_CHECKPOINT, ModelRouter, resolve_checkpoint

    if not checkpoint:
        try:
            resolve_checkpoint(AUTO_CHECKPOINT)
        except CheckpointError as error:
            raise SourceError("no shipped checkpoint found (checkpoints/*.safetensors) and none "
                              "given with --checkpoint; the tool does not run an untrained "
                              "model") from error
    # ``auto`` for the colour-cloud model: the shipped one only with the shipped default
    models = ModelRouter.load(checkpoint or AUTO_CHECKPOINT, AUTO_CHECKPOINT, device=device)
    session = SegmentationSession(models, device=device, num_samples=num_samples, seed=seed)
    rgb_path = models.paths.get("rgb")
    return session, (str(models.paths["default"])
                     + (f" (coloured clouds: {rgb_path})" if rgb_path else ""))


@dataclass
class CarryReport:
    """What carrying the previous frame's clicks into this one did."""

    from_frame: str
    carried: int = 0
    through_poses: bool = False
    missed: list[dict] = field(default_factory=list)  # clicks that landed on no point

    def to_json(self) -> dict:
        return {"from_frame": self.from_frame, "carried": self.carried,
                "through_poses": self.through_poses, "missed": self.missed}


def carry_clicks(annotation: AnnotationController, clicks: list[tuple[np.ndarray, int]],
                 transform: np.ndarray | None) -> list[dict]:
    """Click again, on the annotation's cloud, where earlier clicks were; returns the misses.

    Args:
        annotation: the controller holding the new frame (its clicks are added to).
        clicks: (position, object id) pairs: (3,) float64 positions, metres, in the frame
            ``transform`` maps from (the new frame's own when ``transform`` is None).
        transform: (4, 4) float64 new frame <- old frame (through /tf poses), or None.

    Returns:
        One dict per click that landed on no point: click number (from 1), object id, the
        position in the new frame (rounded to mm) and the reason.
    """
    missed = []
    for number, (position, object_id) in enumerate(clicks, start=1):
        target = position if transform is None else transform[:3, :3] @ position + transform[:3, 3]
        try:
            annotation.click(target, object_id=object_id)
        except ClickRejectedError as error:
            missed.append({"click": number, "object_id": object_id,
                           "position": [round(float(v), 3) for v in target],
                           "reason": str(error)})
    return missed


class Workspace:
    """Frames + annotation controller + session folder. Not thread safe: the server serialises
    calls."""

    def __init__(self, session: SegmentationSession, folder: str | os.PathLike,
                 source: FrameSource | None = None, *, source_path: str | list | None = None,
                 topic: str | None = None, carry: bool = True, order: str = "auto",
                 max_range: float | None = None, log=print) -> None:
        self.annotation = AnnotationController(session)
        self.folder = Path(folder).expanduser().resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.carry = carry
        self.max_range = max_range or None
        self.log = log
        self.source: FrameSource | None = None
        self.source_path = source_path
        self.topic = topic
        self.order: list[int] = []
        self.position = 0             # position in self.order
        self.frame: Frame | None = None
        self.carry_report: CarryReport | None = None
        self.error = ""               # what went wrong last (shown in the page)
        self.notice = ""              # what happened last (shown in the page)
        self.version = 0              # bumps whenever labels change
        self.frame_token = 0          # bumps whenever the cloud changes
        self.order_kind = order
        self.last_saved = 0.0
        if source is not None:
            self.attach(source, source_path, topic)

    @property
    def session(self) -> SegmentationSession:
        return self.annotation.session

    @property
    def active_object(self) -> int:
        return self.annotation.active_object

    @property
    def prediction(self) -> Prediction | None:
        return self.annotation.prediction

    # ------------------------------------------------------------ source + session file
    def attach(self, source: FrameSource, source_path=None, topic: str | None = None) -> None:
        if self.source is not None:
            self.source.close()
        self.source = source
        self.source_path = source_path
        self.topic = topic
        self.order = self._frame_order()
        stored = self._read_session_file()
        position = 0
        if stored and stored.get("current") in source.names:
            index = source.names.index(stored["current"])
            position = self.order.index(index) if index in self.order else 0
        self.goto_position(position, carry=False)

    def open_path(self, path: str, topic: str | None = None) -> None:
        """Open another source from the page; on failure keep the current one."""
        try:
            source = open_source(path, topic or None)
        except SourceError as error:
            self.fail(str(error))
            return
        self.attach(source, str(Path(path).expanduser().resolve()), topic or None)
        if not self.error:
            self.notice = f"opened {source.description} ({len(source)} frames)"

    def _frame_order(self) -> list[int]:
        indices = list(range(len(self.source)))
        triage = self.folder / "triage.csv"
        if self.order_kind in ("auto", "triage") and triage.is_file():
            try:
                ranked = read_triage_order(triage, self.source.names)
            except (OSError, ValueError, KeyError) as error:
                self.log(f"npiseg-annotate: ignoring {triage}: {error}")
                ranked = []
            if ranked:
                self.order_kind = "triage"
                return ranked + [i for i in indices if i not in set(ranked)]
        if self.order_kind == "triage":
            self.log("npiseg-annotate: no usable triage.csv in the session folder; source order")
        self.order_kind = "source"
        return indices

    def _read_session_file(self) -> dict | None:
        path = self.folder / SESSION_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _write_session_file(self) -> None:
        if self.source is None:
            return
        source_path = self.source_path
        relative = None
        if isinstance(source_path, str):
            try:
                relative = os.path.relpath(source_path, self.folder)
            except ValueError:
                relative = None
        payload = {"version": SESSION_VERSION, "source": source_path, "source_relative": relative,
                   "topic": self.topic, "frames": self.source.names,
                   "current": self.frame_name, "order": self.order_kind,
                   "max_range": self.max_range,
                   "saved_at": time.time()}
        data = json.dumps(payload, indent=1).encode()
        atomic_write_bytes(self.folder / SESSION_FILE, data, mode=0o666 & ~_UMASK)

    # ------------------------------------------------------------ navigation
    @property
    def frame_index(self) -> int:
        return self.order[self.position] if self.order else -1

    @property
    def frame_name(self) -> str:
        return self.source.names[self.frame_index] if self.source and self.order else ""

    def step(self, delta: int) -> None:
        if not self.order:
            return self.fail("no frames")
        target = min(max(self.position + int(delta), 0), len(self.order) - 1)
        if target == self.position and self.frame is not None:
            self.notice = "first frame" if delta < 0 else "last frame"
            return
        self.goto_position(target, carry=self.carry)

    def goto_index(self, index: int) -> None:
        if self.source is None or not 0 <= index < len(self.source):
            return self.fail(f"frame index {index} outside [0, {len(self.source or [])})")
        self.goto_position(self.order.index(index), carry=self.carry)

    def goto_position(self, position: int, carry: bool) -> None:
        """Open the frame at ``position``: its autosave when it has one, else (``carry``) the
        clicks of the frame shown until now, carried over."""
        previous = self._carry_payload() if carry else None
        self.position = position
        self.error = ""
        self.notice = ""
        self.carry_report = None
        self.frame_token += 1
        self.version += 1
        self.annotation.select_object(1)
        try:
            frame = self.source.frame(self.frame_index)
            self.annotation.set_cloud(
                frame.xyz, segment=within_range(frame.name, frame.xyz, self.max_range),
                intensity=frame.intensity, colors=frame.colors, frame_id=frame.frame_id)
        except (FrameError, NPISegError, ValueError) as error:
            self.frame = None
            self.annotation.clear()
            self.fail(str(error))
            self._write_session_file()
            return
        self.frame = frame
        if not self._resume() and previous is not None:
            self._carry_in(previous)
        self.annotation.predict()
        if self.carry_report is not None and self.carry_report.carried:
            self._save()  # carried clicks are saved at once: the frame reopens with them
        self._write_session_file()

    # ------------------------------------------------------------ resume + carry
    def _autosave_dir(self) -> Path:
        return self.folder / "autosave" / self.frame_name

    def _resume(self) -> bool:
        """Replay this frame's autosave; whether there was one."""
        outcome = self.annotation.resume(self._autosave_dir())
        for problem in outcome.problems:
            self.log(f"npiseg-annotate: {problem}")
        if outcome.skipped:
            self.fail(f"autosave of frame {self.frame_name}: {len(outcome.skipped)} of "
                      f"{outcome.saved_clicks} clicks could not be replayed and were left out "
                      f"({'; '.join(outcome.skipped[:3])})")
        if outcome.replayed:
            self.notice = f"resumed {outcome.replayed} clicks of frame {self.frame_name}"
        if outcome.relabelled:
            message = (f"the clicks replayed with this model give labels that differ from "
                       f"the saved ones at {outcome.relabelled} points (another checkpoint or "
                       f"--max-range than when they were saved?)")
            self.notice = f"{self.notice}; {message}" if self.notice else message
            self.log(f"npiseg-annotate: frame {self.frame_name}: {message}")
        return outcome.found

    def _carry_payload(self) -> dict | None:
        clicks = self.annotation.clicks
        if self.frame is None or not clicks:
            return None
        xyz = self.frame.xyz  # the snapped points, not the click positions
        return {"frame": self.frame_name, "pose": self.frame.pose,
                "clicks": [(xyz[c.point_index].astype(np.float64), c.object_id) for c in clicks],
                "active": self.annotation.active_object}

    def _carry_in(self, previous: dict) -> None:
        report = CarryReport(from_frame=previous["frame"])
        transform = None
        if previous["pose"] is not None and self.frame.pose is not None:
            transform = np.linalg.inv(self.frame.pose) @ previous["pose"]
            report.through_poses = True
        report.missed = carry_clicks(self.annotation, previous["clicks"], transform)
        report.carried = len(previous["clicks"]) - len(report.missed)
        self.annotation.select_object(previous["active"])
        self.carry_report = report
        message = (f"carried {report.carried} clicks from frame {report.from_frame}"
                   f"{' through /tf poses' if report.through_poses else ''}")
        if report.missed:
            message += (f"; {len(report.missed)} landed on no point (clicks "
                        f"{', '.join(str(m['click']) for m in report.missed)}): check them")
            self.log(f"npiseg-annotate: frame {self.frame_name}: {message}")
        self.notice = message

    # ------------------------------------------------------------ editing
    def click(self, *, point_index: int | None = None, position=None,
              background: bool = False) -> None:
        if self.frame is None:
            return self.fail("no usable frame here: go to another frame")
        try:
            click = self.annotation.click(position, point_index=point_index,
                                          object_id=BACKGROUND_ID if background else None)
        except ClickRejectedError as error:
            return self.fail(f"click rejected: {error}")
        self._after_edit(f"{'background' if background else f'object {click.object_id}'} click")

    def undo(self) -> None:
        if self.frame is None:
            return self.fail("no usable frame here")
        if self.annotation.undo() is None:
            self.notice = "nothing to undo"
            return
        self._after_edit("undone")

    def reset(self) -> None:
        if self.frame is None:
            return self.fail("no usable frame here")
        self.annotation.reset()
        self.annotation.select_object(1)
        self._after_edit("reset: all clicks of this frame removed")

    def new_object(self) -> None:
        try:
            object_id = self.annotation.new_object()
        except ClickRejectedError as error:
            return self.fail(str(error))
        self.notice = f"new object {object_id}: click on it"
        if self.frame is not None:
            self._save()

    def set_active(self, object_id: int) -> None:
        if not 1 <= object_id <= MAX_OBJECT_ID:
            return self.fail(f"object id {object_id} outside 1..{MAX_OBJECT_ID}")
        self.annotation.select_object(object_id)
        self.notice = f"active object {object_id}"
        if self.frame is not None:
            self._save()

    def _after_edit(self, what: str) -> None:
        self.error = ""
        self.annotation.predict()
        self.version += 1
        self.notice = what
        self._save()

    def fail(self, message: str) -> None:
        self.error = message
        self.log(f"npiseg-annotate: {message}")

    # ------------------------------------------------------------ saving
    def _save(self) -> None:
        """Autosave (atomic) and the three exports of the current frame."""
        try:
            _shareable(self.annotation.autosave(self._autosave_dir()))
            if self.annotation.prediction is not None:
                for fmt in EXPORT_FORMATS:
                    _shareable(self.annotation.save(self.export_path(fmt), fmt))
            self._write_session_file()
        except OSError as error:
            self.fail(f"could not save into {self.folder}: {error}")
            return
        self.last_saved = time.time()

    def export_path(self, fmt: str) -> Path:
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        path = (self.folder / "export" / f"{self.frame_name}.{fmt}").resolve()
        if self.folder not in path.parents:
            raise ValueError(f"refusing to write outside the session folder: {path}")
        return path

    # ------------------------------------------------------------ what the page sees
    def state(self) -> dict:
        prediction = self.prediction
        objects = []
        if prediction is not None:
            for stats in prediction.object_stats.values():
                objects.append({"id": stats.object_id, "points": stats.num_points,
                                "mean_uncertainty": round(float(stats.mean_uncertainty), 5),
                                "clicks": stats.num_clicks})
        clicks = [{"position": [round(float(v), 3) for v in c.position], "object_id": c.object_id,
                   "point_index": c.point_index} for c in self.annotation.clicks]
        suggestion = None
        if prediction is not None and prediction.suggested_click is not None:
            suggestion = [round(float(v), 3) for v in prediction.suggested_click]
        return {
            "source": None if self.source is None else self.source.describe(),
            "session_folder": str(self.folder),
            "frames": 0 if self.source is None else len(self.source),
            "position": self.position, "frame_index": self.frame_index,
            "frame_name": self.frame_name, "order": self.order_kind,
            "max_range": self.max_range,
            "ok": self.frame is not None, "num_points": 0 if self.frame is None
            else int(self.frame.xyz.shape[0]),
            "active_object": self.active_object, "objects": objects, "clicks": clicks,
            "suggested_click": suggestion, "carry": None if self.carry_report is None
            else self.carry_report.to_json(),
            "error": self.error, "notice": self.notice, "version": self.version,
            "frame_token": self.frame_token,
            "decode_ms": None if prediction is None else round(prediction.decode_ms, 1),
        }

    def cloud_bytes(self) -> bytes:
        if self.frame is None:
            return b""
        return np.ascontiguousarray(self.frame.xyz, dtype="<f4").tobytes()

    def label_bytes(self) -> bytes:
        if self.frame is None or self.prediction is None:
            return b""
        return (np.ascontiguousarray(self.prediction.labels, dtype="<i4").tobytes()
                + np.ascontiguousarray(self.prediction.uncertainty, dtype="<f4").tobytes())


def read_triage_order(path: Path, names: list[str]) -> list[int]:
    """Frame indices by triage rank (rank 1 first) from a triage CSV."""
    index_of = {name: i for i, name in enumerate(names)}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("frame") in index_of and row.get("rank"):
                rows.append((int(row["rank"]), index_of[row["frame"]]))
    return [index for _, index in sorted(rows)]
