"""The session folder: where the browser tool writes what, and its session file.

Everything the tool writes goes here and nowhere else::

    session.json                 source (absolute and relative path, topic), frame names, where
                                 the user was, the frame order, --max-range, the ontology,
                                 object (track) classes and attributes, frame review status
    autosave/<frame>/<fp>.npz    the node's atomic autosave (clicks, decode boundaries, active
                                 object; labels once the frame was exported), keyed by the
                                 cloud fingerprint, written after every click / undo / reset
    carried/<frame>.npz          labels carried into (or imported for) the frame: the
                                 previous-mask input its clicks replay on (``tracking.py``)
    export/<frame>.label|.ply|.npz, export/label_2/, export/boxes/ (+ lidarseg/, panoptic/)
                                 written when leaving the frame, after an idle spell, on
                                 request, and at shutdown (``saving.py``, ``export.py``)
    triage.csv, triage.png       written by ``npiseg-annotate triage``

``session.json`` (version 2; a version-1 file of an earlier session reads as one with no
classes and every frame ``todo``) holds, besides the source and where the user was:

- ``objects``: object (track) id -> ``{"class": name or null, "attributes": {...}}``: one
  class per object for the whole drive, since an object id is kept from frame to frame;
- ``status``: frame name -> ``accepted`` or ``needs_fix`` (absent: ``todo``).

It is written atomically and never holds NaN or infinity (``allow_nan=False``; values are
checked on reading, a bad one is dropped with a message). Another person opens the folder with
``npiseg-annotate --session DIR``: the source is found by its absolute path, else by its path
relative to the folder. The files get the permissions the umask allows (not the 0600 of the
node's writers), since a session folder is meant to be shared.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from npiseg_ros.core.types import MAX_OBJECT_ID
from npiseg_ros.io.atomic import atomic_write_bytes

__all__ = ["SESSION_FILE", "SESSION_VERSION", "FRAME_STATUSES", "FILE_MODE", "shareable",
           "autosave_dir", "read_session_file", "session_bytes", "write_session_file"]

SESSION_FILE = "session.json"
SESSION_VERSION = 2
FRAME_STATUSES = ("todo", "accepted", "needs_fix")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
"""Permissions of the files the tool writes (what the umask allows)."""


def shareable(path: Path) -> None:
    """Give ``path`` :data:`FILE_MODE` (the node's writers create 0600 files with mkstemp)."""
    try:
        os.chmod(path, FILE_MODE)
    except OSError:
        pass


def autosave_dir(folder: Path, frame: str) -> Path:
    """The folder of ``frame``'s autosave generations."""
    return Path(folder) / "autosave" / frame


def _finite_range(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value) and value > 0)


def read_session_file(folder: str | os.PathLike) -> tuple[dict | None, list[str]]:
    """The session file of ``folder`` with every field checked, and what was dropped.

    Returns:
        (the payload, or None when there is none or it is not JSON; messages about the
        fields left out).
    """
    path = Path(folder) / SESSION_FILE
    if not path.is_file():
        return None, []
    try:
        payload = json.loads(path.read_text())  # NaN of an earlier version: checked below
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, [f"{path}: not readable JSON ({error}); starting a new session file"]
    if not isinstance(payload, dict):
        return None, [f"{path}: not a JSON object; starting a new session file"]
    problems = []
    if not _finite_range(payload.get("max_range")):
        problems.append(f"{path}: max_range {payload.get('max_range')!r} is not a positive "
                        "number of metres; ignored")
        payload["max_range"] = None
    objects = {}
    for key, record in (payload.get("objects") or {}).items():
        if not (isinstance(key, str) and key.isdigit() and 1 <= int(key) <= MAX_OBJECT_ID
                and isinstance(record, dict)):
            problems.append(f"{path}: object entry {key!r} ignored")
            continue
        name = record.get("class")
        attributes = record.get("attributes") or {}
        if (name is not None and not isinstance(name, str)) or not isinstance(attributes, dict):
            problems.append(f"{path}: object {key}: class/attributes ignored")
            name, attributes = None, {}
        objects[int(key)] = {"class": name, "attributes": attributes}
    payload["objects"] = objects
    status = {}
    for frame, value in (payload.get("status") or {}).items():
        if isinstance(frame, str) and value in FRAME_STATUSES:
            if value != "todo":
                status[frame] = value
        else:
            problems.append(f"{path}: status of {frame!r} ({value!r}) ignored")
    payload["status"] = status
    return payload, problems


def session_bytes(payload: dict) -> bytes:
    """``payload`` as strict JSON (ValueError on NaN / infinity: nothing invalid is written)."""
    objects = {str(k): v for k, v in sorted(payload.get("objects", {}).items())}
    return json.dumps({**payload, "objects": objects}, indent=1, allow_nan=False).encode()


def write_session_file(folder: Path, *, source_path: str | list | None, topic: str | None,
                       frames: list[str], current: str, order: str, max_range: float | None,
                       ontology: str | None, objects: dict[int, dict],
                       status: dict[str, str]) -> None:
    """Write ``session.json`` atomically.

    Args:
        folder: the session folder (absolute).
        source_path: the source's absolute path (a list: several files), or None.
        topic: the bag topic, or None.
        frames: every frame name of the source, in source order.
        current: the frame on screen.
        order: ``triage`` or ``source``.
        max_range: --max-range, metres, or None.
        ontology: the ontology file, or None for the shipped default.
        objects: object id -> {"class", "attributes"}.
        status: frame name -> ``accepted`` / ``needs_fix``.

    Raises:
        OSError: the file cannot be written.
        ValueError: a value is NaN or infinite.
    """
    relative = None
    if isinstance(source_path, str):
        try:
            relative = os.path.relpath(source_path, folder)
        except ValueError:  # another drive (Windows)
            relative = None
    payload = {"version": SESSION_VERSION, "source": source_path, "source_relative": relative,
               "topic": topic, "frames": frames, "current": current, "order": order,
               "max_range": max_range, "ontology": ontology, "objects": objects,
               "status": status, "saved_at": time.time()}
    atomic_write_bytes(Path(folder) / SESSION_FILE, session_bytes(payload), mode=FILE_MODE)
