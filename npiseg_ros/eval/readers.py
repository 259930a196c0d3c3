"""Dataset readers: the field's benchmark format, SemanticKITTI, generic PLY / PCD / NPZ clouds.

Every reader returns ``LabelledCloud`` (labels = instance ids, 0 = unlabelled / background) and
raises ``DatasetFormatError`` (a ``ValueError``) with the file and the fix on bad input.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud
from npiseg_ros.io.colors import unpack_rgb
from npiseg_ros.io.pcd import read_pcd
from npiseg_ros.io.ply import read_ply

__all__ = ["read_cloud", "read_benchmark_scene", "read_val_list", "read_single_object_list",
           "read_semantickitti", "semantickitti_frames", "read_semantickitti_config"]

_LABEL_FIELDS = ("label", "instance", "instance_id", "labels", "object_id")
_INTENSITY_FIELDS = ("intensity", "scalar_intensity", "remission", "reflectance")


def _colors(fields: dict[str, np.ndarray]) -> np.ndarray | None:
    for names in (("red", "green", "blue"), ("R", "G", "B"), ("r", "g", "b")):
        if all(n in fields for n in names):
            rgb = np.stack([fields[n] for n in names], axis=1)
            if rgb.dtype.kind in "iu" or rgb.max(initial=0) > 1.0:
                return (rgb.astype(np.float32) / 255.0).clip(0.0, 1.0)
            return rgb.astype(np.float32)
    for name in ("rgb", "rgba"):
        if name in fields:
            return unpack_rgb(fields[name])
    return None


def _cloud_from_fields(fields: dict[str, np.ndarray], path: Path,
                       require_labels: bool = False) -> LabelledCloud:
    missing = [n for n in ("x", "y", "z") if n not in fields]
    if missing:
        raise DatasetFormatError(
            f"{path}: missing coordinate field(s) {missing}; found {sorted(fields)}")
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=1).astype(np.float32)
    label_field = next((n for n in _LABEL_FIELDS if n in fields), None)
    if label_field is None and require_labels:
        raise DatasetFormatError(
            f"{path}: no label field (one of {_LABEL_FIELDS}); found {sorted(fields)}")
    labels = (np.zeros(len(xyz), np.int64) if label_field is None
              else np.asarray(fields[label_field]).astype(np.int64))
    intensity_field = next((n for n in _INTENSITY_FIELDS if n in fields), None)
    return LabelledCloud(
        xyz=xyz, labels=np.maximum(labels, 0), colors=_colors(fields),
        intensity=None if intensity_field is None else fields[intensity_field])


def _read_npz(path: Path) -> LabelledCloud:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetFormatError(f"{path}: not a readable .npz ({error})") from None
    with archive:
        keys = set(archive.files)
        xyz_key = next((k for k in ("xyz", "points", "coords", "coordinates") if k in keys), None)
        if xyz_key is None:
            raise DatasetFormatError(
                f"{path}: no coordinates; expected an 'xyz' (N, 3) array, found {sorted(keys)}")
        xyz = archive[xyz_key]
        if xyz.ndim != 2 or xyz.shape[1] < 3:
            raise DatasetFormatError(f"{path}: '{xyz_key}' must be (N, >=3), got {xyz.shape}")
        label_key = next((k for k in _LABEL_FIELDS if k in keys), None)
        labels = archive[label_key] if label_key else np.zeros(len(xyz), np.int64)
        colors = next((archive[k] for k in ("colors", "rgb", "colours") if k in keys), None)
        if colors is not None and (colors.dtype.kind in "iu" or colors.max(initial=0) > 1.0):
            colors = colors.astype(np.float32) / 255.0
        intensity = next((archive[k] for k in _INTENSITY_FIELDS if k in keys), None)
        names = {}
        if "name_ids" in keys and "name_values" in keys:
            names = dict(zip(archive["name_ids"].tolist(), archive["name_values"].tolist()))
        things = tuple(archive["things"].tolist()) if "things" in keys else ()
    if labels.shape != (len(xyz),):
        raise DatasetFormatError(
            f"{path}: {len(labels)} labels for {len(xyz)} points; they must match")
    return LabelledCloud(xyz=xyz[:, :3], labels=np.maximum(labels.astype(np.int64), 0),
                         colors=colors, intensity=intensity, names=names, things=things)


def read_cloud(path: str | os.PathLike) -> LabelledCloud:
    """Read a generic labelled cloud: ``.ply`` (x y z [+ colour, intensity, label]), ``.pcd``
    (ascii / binary) or ``.npz`` (``xyz`` + optional ``colors``, ``intensity``, ``labels``).
    Missing labels read as 0; negative labels (unlabelled, e.g. -1) become 0."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return _cloud_from_fields(read_ply(path), path)
    if suffix == ".pcd":
        return _cloud_from_fields(read_pcd(path), path)
    if suffix == ".npz":
        return _read_npz(path)
    raise DatasetFormatError(f"{path}: unknown cloud format {suffix!r}; use .ply, .pcd or .npz")


# ----------------------------------------------------------------------- benchmark format


def read_benchmark_scene(root: str | os.PathLike, scene: str) -> LabelledCloud:
    """Read ``<root>/scans/<scene>.ply`` (vertex ``x y z R G B label``; label = instance id
    from 1, -1 / 0 unlabelled). Names come from ``scans/<scene>_names.json`` if present."""
    path = Path(root) / "scans" / f"{scene}.ply"
    fields = read_ply(path)
    missing = [n for n in ("x", "y", "z", "R", "G", "B", "label") if n not in fields]
    if missing:
        raise DatasetFormatError(
            f"{path}: benchmark scans need vertex fields x y z R G B label; missing {missing}")
    cloud = _cloud_from_fields(fields, path, require_labels=True)
    names_path = path.with_name(f"{scene}_names.json")
    if names_path.is_file():
        meta = json.loads(names_path.read_text())
        cloud.names = {int(k): str(v) for k, v in meta.get("names", {}).items()}
        cloud.things = tuple(int(k) for k in meta.get("things", ()))
    return cloud


def read_val_list(root: str | os.PathLike) -> list[tuple[str, str, tuple[int, ...]]]:
    """Parse ``<root>/val_list.json``: ``{"<scene>_obj_<K>": {"obj": {"1": id, ..., "K": id}}}``.

    Returns:
        (sample name, scene, original object ids ordered by their key 1..K) per entry, in file
        order.
    """
    path = Path(root) / "val_list.json"
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; a benchmark folder needs val_list.json")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetFormatError(f"{path}: invalid JSON ({error})") from None
    out = []
    for name, entry in entries.items():
        if "_obj_" not in name or not isinstance(entry, dict) or "obj" not in entry:
            raise DatasetFormatError(
                f"{path}: entry {name!r} must be named '<scene>_obj_<K>' and hold an 'obj' map")
        objects = entry["obj"]
        try:
            ids = tuple(int(objects[k]) for k in sorted(objects, key=int))
        except (TypeError, ValueError):
            raise DatasetFormatError(
                f"{path}: entry {name!r}: 'obj' must map '1'..'K' to integer ids") from None
        if not ids:
            raise DatasetFormatError(f"{path}: entry {name!r} has no objects")
        out.append((name, name.rsplit("_obj_", 1)[0], ids))
    return out


def read_single_object_list(root: str | os.PathLike) -> tuple[list[tuple[str, int]], Path]:
    """Find and parse the single-object list ``object_ids.npy`` in ``root`` or ``root/single``.

    The file is an (M, 2) string array of (scene, object id) rows (the research code's layout).

    Returns:
        The rows as (scene, int id), and the folder that held the file (its ``crops/`` subfolder,
        if any, has ``<scene>/<scene>_crop_<id>.ply`` crops whose label is 1 on the object).
    """
    for folder in (Path(root), Path(root) / "single"):
        path = folder / "object_ids.npy"
        if path.is_file():
            break
    else:
        raise DatasetFormatError(f"{root}: no object_ids.npy in it or in its 'single' folder")
    try:
        rows = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise DatasetFormatError(
            f"{path}: must be a plain (M, 2) string array ({error})") from None
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise DatasetFormatError(f"{path}: expected shape (M, 2) (scene, object id), got "
                                 f"{rows.shape}")
    return [(str(scene), int(object_id)) for scene, object_id in rows.tolist()], folder


# ---------------------------------------------------------------------------- SemanticKITTI


def read_semantickitti_config(path: str | os.PathLike) -> dict:
    """Parse ``semantic-kitti.yaml`` (needs PyYAML): keys ``labels`` and ``learning_map``."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DatasetFormatError(f"{path}: cannot read the SemanticKITTI yaml ({error})") from None
    if not isinstance(config, dict) or "labels" not in config:
        raise DatasetFormatError(f"{path}: no 'labels' map; is it semantic-kitti.yaml?")
    return config


def semantickitti_frames(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(sequence, frame) of every ``sequences/<seq>/velodyne/<frame>.bin`` that has labels."""
    out = []
    for scan in sorted(Path(root).glob("sequences/*/velodyne/*.bin")):
        label = scan.parent.parent / "labels" / f"{scan.stem}.label"
        if label.is_file():
            out.append((scan.parent.parent.name, scan.stem))
    if not out:
        raise DatasetFormatError(
            f"{root}: no labelled frames (sequences/<seq>/velodyne/*.bin + labels/*.label)")
    return out


def _kind(raw: int, learning_map: dict[int, int] | None) -> str:
    """'thing', 'stuff' or 'ignore' for a raw SemanticKITTI class id."""
    if learning_map is not None:
        learned = learning_map.get(raw, 0)
        return "ignore" if learned == 0 else ("thing" if learned <= 8 else "stuff")
    if raw in (0, 1):
        return "ignore"
    return "thing" if 10 <= raw < 40 or 252 <= raw <= 259 else "stuff"


def read_semantickitti(root: str | os.PathLike, sequence: str, frame: str, *,
                       config: dict | None = None) -> LabelledCloud:
    """Read one SemanticKITTI frame as instance objects.

    ``velodyne/<frame>.bin`` is float32 (N, 4) x y z intensity (metres, sensor frame);
    ``labels/<frame>.label`` uint32 (N,): semantic = label & 0xFFFF, instance = label >> 16.
    Classes are split by the yaml's ``learning_map`` (train ids 1-8 = things, 9-19 = stuff,
    0 = ignored). Each (thing class, instance > 0) pair becomes an object, ids 1..T in
    (class, instance) order; each stuff class becomes one object after them; ignored classes
    and thing points without an instance are 0. ``names``: ``"car/212"``, ``"road"``.

    Args:
        root: dataset folder holding ``sequences/`` (and ``semantic-kitti.yaml``).
        sequence, frame: e.g. ``"00"``, ``"000000"``.
        config: parsed yaml; default ``<root>/semantic-kitti.yaml`` if it exists, else a
            built-in rule (10-39 and 252-259 things, 0/1 ignored, others stuff).
    """
    folder = Path(root) / "sequences" / sequence
    scan_path = folder / "velodyne" / f"{frame}.bin"
    label_path = folder / "labels" / f"{frame}.label"
    for path in (scan_path, label_path):
        if not path.is_file():
            raise DatasetFormatError(f"{path}: not found")
    scan = np.fromfile(scan_path, dtype=np.float32)
    if scan.size % 4:
        raise DatasetFormatError(f"{scan_path}: size is not a multiple of 4 float32 (x y z i)")
    scan = scan.reshape(-1, 4)
    raw = np.fromfile(label_path, dtype=np.uint32)
    if raw.shape[0] != scan.shape[0]:
        raise DatasetFormatError(
            f"{label_path}: {raw.shape[0]} labels for {scan.shape[0]} points in {scan_path}; "
            "each point needs exactly one uint32 label")
    if config is None and (Path(root) / "semantic-kitti.yaml").is_file():
        config = read_semantickitti_config(Path(root) / "semantic-kitti.yaml")
    class_names = {int(k): str(v) for k, v in (config or {}).get("labels", {}).items()}
    learning_map = ({int(k): int(v) for k, v in config["learning_map"].items()}
                    if config and "learning_map" in config else None)
    semantic = (raw & 0xFFFF).astype(np.int64)
    instance = (raw >> 16).astype(np.int64)
    kinds = {int(c): _kind(int(c), learning_map) for c in np.unique(semantic)}
    is_thing = np.array([kinds[c] == "thing" for c in semantic.tolist()], bool) & (instance > 0)
    is_stuff = np.array([kinds[c] == "stuff" for c in semantic.tolist()], bool)
    labels = np.zeros(len(raw), np.int64)
    names: dict[int, str] = {}
    pairs, thing_inverse = np.unique(np.stack([semantic[is_thing], instance[is_thing]], 1),
                                     axis=0, return_inverse=True)
    labels[is_thing] = thing_inverse.reshape(-1) + 1
    for k, (cls, inst) in enumerate(pairs.tolist()):
        names[k + 1] = f"{class_names.get(cls, str(cls))}/{inst}"
    stuff_classes, stuff_inverse = np.unique(semantic[is_stuff], return_inverse=True)
    labels[is_stuff] = stuff_inverse.reshape(-1) + len(pairs) + 1
    for k, cls in enumerate(stuff_classes.tolist()):
        names[len(pairs) + k + 1] = class_names.get(cls, str(cls))
    return LabelledCloud(xyz=scan[:, :3], labels=labels, intensity=scan[:, 3], names=names,
                         things=tuple(range(1, len(pairs) + 1)))
