"""Review: the drive's review record (classes, attributes, frame status) and existing labels.

:class:`ReviewState` is what ``session.json`` (``folder.py``) keeps of the review: one class
and attributes per object (track) for the whole drive, since an object id is kept from frame to
frame; each frame's status (``todo`` / ``accepted`` / ``needs_fix``); the class new objects get.

Imported labels (``--import-labels``): a SemanticKITTI ``.label`` (class + instance) or a
nuScenes-lidarseg ``.bin`` (class only: each thing class is split into connected pieces)
per frame. Their thing objects become objects of the frame, prompted like carried objects
(previous-mask input + one click at each object's deepest point) so that a reviewer corrects
them with clicks; their stuff classes are kept as the frame's base layer and written for the
points the tool leaves as background.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from npiseg_ros.annotate.folder import FRAME_STATUSES, read_session_file
from npiseg_ros.annotate.ontology import Ontology, OntologyError, load_ontology
from npiseg_ros.core.types import MAX_OBJECT_ID
from npiseg_ros.io.label import read_label_file, read_lidarseg_file

__all__ = ["ReviewState", "frame_statuses", "tool_clicks", "ImportedLabels", "find_import",
           "read_import"]


class ReviewState:
    """The drive's review record (kept in ``session.json``).

    Args:
        ontology: the classes and attributes.
        objects: object (track) id -> ``{"class": name or None, "attributes": {...}}``, as
            stored (None: none yet).
        status: frame name -> ``accepted`` or ``needs_fix`` (absent: ``todo``), as stored.
    """

    def __init__(self, ontology: Ontology, objects: dict[int, dict] | None = None,
                 status: dict[str, str] | None = None) -> None:
        self.ontology = ontology
        self.objects: dict[int, dict] = dict(objects or {})
        self.status: dict[str, str] = dict(status or {})
        self.current_class = ontology.default_class  # the class new objects get

    @classmethod
    def stored(cls, payload: dict | None, ontology: Ontology | None = None,
               log: Callable[[str], None] = print) -> ReviewState:
        """The record a session file's checked ``payload`` holds (None: a new one), in
        ``ontology`` when given, else the one the file names (the shipped default when it
        names none or cannot be read)."""
        payload = payload or {}
        if ontology is None and payload.get("ontology"):
            try:
                ontology = load_ontology(payload["ontology"])
            except OntologyError as error:
                log(f"npiseg-annotate: the session's ontology: {error}; using the default")
        return cls(ontology or load_ontology(), payload.get("objects"), payload.get("status"))

    def record(self, object_id: int) -> dict:
        """``{"class", "attributes"}`` of ``object_id`` (empty when it has none)."""
        return self.objects.get(object_id) or {}

    def assign(self, object_id: int, class_name: str | None = None) -> None:
        """Give ``object_id`` the class ``class_name`` (None: :attr:`current_class`) and that
        class's default attributes."""
        class_name = self.current_class if class_name is None else class_name
        self.objects[object_id] = {"class": class_name,
                                   "attributes": self.ontology.default_attributes(class_name)}

    def set_class(self, class_name: str, object_id: int) -> None:
        """``class_name`` for new objects from now on and, for ``object_id`` >= 1, for that
        object (its attributes that the class also has keep their values).

        Raises:
            OntologyError: no such class.
        """
        self.ontology.require(class_name)
        self.current_class = class_name
        if object_id >= 1:
            kept = self.record(object_id).get("attributes", {})
            self.assign(object_id, class_name)
            attributes = self.objects[object_id]["attributes"]
            for name, value in kept.items():
                if name in attributes:
                    attributes[name] = value

    def set_attribute(self, object_id: int, name: str, value) -> None:
        """Set an attribute of ``object_id``'s class on it.

        Raises:
            ValueError: the object has no class yet.
            OntologyError: the class has no such attribute, or not this value.
        """
        record = self.objects.get(object_id)
        if record is None or record.get("class") is None:
            raise ValueError(f"object {object_id} has no class yet: pick one first")
        self.ontology.check_attribute(record["class"], name, value)
        record["attributes"][name] = value

    def set_status(self, frame: str, status: str) -> None:
        """Give ``frame`` (its name; "" = none open) one of :data:`FRAME_STATUSES`.

        Raises:
            ValueError: an unknown status, or no frame.
        """
        if status not in FRAME_STATUSES:
            raise ValueError(f"status must be one of {FRAME_STATUSES}, got {status!r}")
        if not frame:
            raise ValueError("no frame open")
        if status == "todo":
            self.status.pop(frame, None)
        else:
            self.status[frame] = status

    def status_of(self, frame: str) -> str:
        return self.status.get(frame, "todo")

    def counts(self, frames: list[str]) -> dict[str, int]:
        """Status -> how many of ``frames`` have it."""
        counts = {status: 0 for status in FRAME_STATUSES}
        for name in frames:
            counts[self.status_of(name)] += 1
        return counts

    def take_classes(self, imported: ImportedLabels) -> None:
        """The classes and attributes of imported objects (their ids become these objects')."""
        for object_id, (name, attributes) in imported.classes.items():
            self.objects[object_id] = {"class": name, "attributes": {
                **self.ontology.default_attributes(name), **attributes}}

    def snapshot(self) -> dict[int, dict]:
        """A copy of :attr:`objects` that later edits leave alone (for a background export)."""
        return {k: {"class": v.get("class"), "attributes": dict(v.get("attributes") or {})}
                for k, v in self.objects.items()}


def frame_statuses(folder: str | os.PathLike) -> dict[str, str]:
    """Frame name -> status of every frame not ``todo`` in the session folder."""
    payload, _ = read_session_file(folder)
    return {} if payload is None else dict(payload["status"])


def tool_clicks(folder: str | os.PathLike, frame: str) -> int:
    """How many of the frame's first saved clicks the tool made (carried or imported prompts)
    rather than a person; 0 when none were."""
    from npiseg_ros.annotate.tracking import read_prior

    record = read_prior(Path(folder), frame)
    return 0 if record is None else record.clicks


@dataclass(frozen=True)
class ImportedLabels:
    """Existing labels of one frame.

    Attributes:
        path: the file read.
        objects: (N,) int64 object id per point (0 = no thing object).
        classes: object id -> (class name, attributes).
        base: (N,) int64 class id of the stuff points (export ids), -1 elsewhere.
        semantic: (N,) int64 class id of every point as imported.
    """

    path: Path
    objects: np.ndarray
    classes: dict[int, tuple[str, dict]]
    base: np.ndarray
    semantic: np.ndarray


def find_import(folder: str | os.PathLike, frame: str) -> Path | None:
    """The label file of ``frame`` in ``folder``: ``<frame>.label``, ``<frame>_lidarseg.bin``
    or ``<frame>.bin`` (None when there is none)."""
    for name in (f"{frame}.label", f"{frame}_lidarseg.bin", f"{frame}.bin"):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def _class_of_id(ontology: Ontology) -> dict[int, tuple[str, dict]]:
    table = {}
    for entry in ontology.classes:
        table[entry.id] = (entry.name, {})
        if entry.moving_id is not None:
            table[entry.moving_id] = (entry.name, {"moving": True})
    return table


def read_import(path: str | os.PathLike, xyz: np.ndarray, ontology: Ontology) -> ImportedLabels:
    """Read one frame's existing labels for review.

    Args:
        path: ``.label`` (SemanticKITTI words) or lidarseg ``.bin`` (uint8 per point).
        xyz: (N, 3) float the frame's points, metres (pieces of lidarseg things are split by
            distance).
        ontology: maps the file's class ids to classes (ids it does not know are kept in
            the base layer as they are).

    Raises:
        ValueError: the file does not hold one value per point (named in the message).
    """
    from npiseg_ros.eval.targets import connected_pieces

    path = Path(path)
    num_points = xyz.shape[0]
    if path.suffix == ".label":
        semantic, instance = read_label_file(path, num_points)
    else:
        semantic = read_lidarseg_file(path, num_points)
        instance = None
    table = _class_of_id(ontology)
    thing_ids = [i for i, (name, _) in table.items() if ontology.require(name).thing]
    is_thing = np.isin(semantic, thing_ids)
    objects = np.zeros(num_points, np.int64)
    classes: dict[int, tuple[str, dict]] = {}
    next_id = 1
    finite = np.isfinite(xyz).all(axis=1)
    for class_id in np.unique(semantic[is_thing]):
        members = np.flatnonzero((semantic == class_id) & finite)
        if instance is not None:
            groups = instance[members]
        else:
            groups = connected_pieces(np.asarray(xyz, np.float64)[members]) + 1
        for group in np.unique(groups):
            if group == 0 or next_id > MAX_OBJECT_ID:
                continue
            objects[members[groups == group]] = next_id
            name, attributes = table[int(class_id)]
            classes[next_id] = (name, dict(attributes))
            next_id += 1
    base = np.where(is_thing, -1, semantic).astype(np.int64)
    return ImportedLabels(path, objects, classes, base, semantic.astype(np.int64))
