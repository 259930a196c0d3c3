"""Writers: the field's benchmark format, and labelled PLY / NPZ results (+ uncertainty)."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud
from npiseg_ros.io.ply import write_ply

__all__ = ["write_benchmark_scene", "write_val_list", "write_single_object_list",
           "write_labelled_ply", "write_labelled_npz"]

_SCENE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _rgb_uint8(cloud: LabelledCloud) -> np.ndarray:
    if cloud.colors is None:  # LiDAR: the model's colour channels are zeros (reference doc)
        return np.zeros((cloud.num_points, 3), np.uint8)
    return np.round(np.clip(cloud.colors, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_benchmark_scene(root: str | os.PathLike, scene_name: str, cloud: LabelledCloud, *,
                          write_names: bool = True) -> Path:
    """Store one scene as ``<root>/scans/<scene_name>.ply`` (binary little-endian).

    Vertex fields: ``x y z`` float32 metres, ``R G B`` uchar (colours x 255, zeros when the
    cloud has none), ``label`` int32 instance id (0 = unlabelled), plus ``intensity`` float32
    when the cloud has one (readers that look fields up by name ignore it). With
    ``write_names``, object names and thing ids go to ``scans/<scene_name>_names.json``.

    Returns:
        The path of the PLY written.
    """
    if not _SCENE_NAME.match(scene_name) or "_obj_" in scene_name:
        raise DatasetFormatError(
            f"scene name {scene_name!r}: use letters, digits, '_', '-', '.' and no '_obj_'")
    if cloud.labels.max(initial=0) > np.iinfo(np.int32).max:
        raise DatasetFormatError("instance ids must fit in int32 for the benchmark format")
    rgb = _rgb_uint8(cloud)
    fields = {"x": cloud.xyz[:, 0], "y": cloud.xyz[:, 1], "z": cloud.xyz[:, 2],
              "R": rgb[:, 0], "G": rgb[:, 1], "B": rgb[:, 2],
              "label": cloud.labels.astype(np.int32)}
    if cloud.intensity is not None:
        fields["intensity"] = cloud.intensity.astype(np.float32)
    path = Path(root) / "scans" / f"{scene_name}.ply"
    write_ply(path, fields, binary=True)
    if write_names and (cloud.names or cloud.things):
        meta = {"names": {str(k): v for k, v in sorted(cloud.names.items())},
                "things": list(cloud.things)}
        path.with_name(f"{scene_name}_names.json").write_text(json.dumps(meta, indent=1))
    return path


def write_val_list(root: str | os.PathLike,
                   samples: Iterable[tuple[str, Sequence[int]]]) -> Path:
    """Write ``<root>/val_list.json`` for multi-object samples.

    Args:
        root: benchmark folder.
        samples: (scene name, original object ids) per sample; the key is
            ``"<scene>_obj_<K>"`` with K = number of objects, value
            ``{"obj": {"1": id_1, ..., "K": id_K}, "clicks": {}}``.

    Raises:
        DatasetFormatError: two samples would get the same key (same scene and K).
    """
    entries: dict[str, dict] = {}
    for scene, object_ids in samples:
        ids = [int(i) for i in object_ids]
        if not ids or min(ids) < 1:
            raise DatasetFormatError(f"scene {scene!r}: object ids must be >= 1, got {ids}")
        key = f"{scene}_obj_{len(ids)}"
        if key in entries:
            raise DatasetFormatError(
                f"two samples of scene {scene!r} have {len(ids)} objects; the format keys "
                f"samples by '<scene>_obj_<K>' so store them as separate scenes")
        entries[key] = {"obj": {str(k + 1): i for k, i in enumerate(ids)}, "clicks": {}}
    path = Path(root) / "val_list.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1))
    return path


def write_single_object_list(folder: str | os.PathLike,
                             rows: Iterable[tuple[str, int]]) -> Path:
    """Write ``<folder>/object_ids.npy``: (M, 2) unicode array of (scene, object id)."""
    table = np.array([[str(scene), str(int(object_id))] for scene, object_id in rows], dtype=str)
    path = Path(folder) / "object_ids.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table.reshape(-1, 2), allow_pickle=False)
    return path


def _check_result(cloud: LabelledCloud, predicted: np.ndarray | None,
                  uncertainty: np.ndarray | None) -> None:
    for name, values in (("predicted", predicted), ("uncertainty", uncertainty)):
        if values is not None and np.asarray(values).shape != (cloud.num_points,):
            raise DatasetFormatError(
                f"{name} must have shape ({cloud.num_points},), got {np.asarray(values).shape}")


def write_labelled_ply(path: str | os.PathLike, cloud: LabelledCloud,
                       predicted: np.ndarray | None = None,
                       uncertainty: np.ndarray | None = None, *, binary: bool = True) -> None:
    """PLY with ``x y z`` [``red green blue`` uchar] [``intensity``] ``label`` int32 and,
    when given, ``predicted`` int32 (N,) and ``uncertainty`` float32 (N,)."""
    _check_result(cloud, predicted, uncertainty)
    fields: dict[str, np.ndarray] = {"x": cloud.xyz[:, 0], "y": cloud.xyz[:, 1],
                                     "z": cloud.xyz[:, 2]}
    if cloud.colors is not None:
        rgb = _rgb_uint8(cloud)
        fields.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    if cloud.intensity is not None:
        fields["intensity"] = cloud.intensity
    fields["label"] = cloud.labels.astype(np.int32)
    if predicted is not None:
        fields["predicted"] = np.asarray(predicted).astype(np.int32)
    if uncertainty is not None:
        fields["uncertainty"] = np.asarray(uncertainty, dtype=np.float32)
    write_ply(path, fields, binary=binary)


def write_labelled_npz(path: str | os.PathLike, cloud: LabelledCloud,
                       predicted: np.ndarray | None = None,
                       uncertainty: np.ndarray | None = None) -> None:
    """Compressed NPZ readable by ``read_cloud``: ``xyz``, ``labels``, optional ``colors``,
    ``intensity``, ``predicted``, ``uncertainty``, and names as ``name_ids``/``name_values``."""
    _check_result(cloud, predicted, uncertainty)
    arrays: dict[str, np.ndarray] = {"xyz": cloud.xyz, "labels": cloud.labels}
    optional = {"colors": cloud.colors, "intensity": cloud.intensity, "predicted": predicted,
                "uncertainty": uncertainty}
    arrays.update({k: np.asarray(v) for k, v in optional.items() if v is not None})
    if cloud.names:
        arrays["name_ids"] = np.array(sorted(cloud.names), dtype=np.int64)
        arrays["name_values"] = np.array([cloud.names[k] for k in sorted(cloud.names)], dtype=str)
    if cloud.things:
        arrays["things"] = np.array(cloud.things, dtype=np.int64)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
