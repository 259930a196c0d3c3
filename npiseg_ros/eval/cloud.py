"""In-memory types shared by the readers, writers, simulator and CLI of the evaluation package."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npiseg_ros.io.errors import DatasetFormatError


@dataclass
class LabelledCloud:
    """A point cloud with per-point instance labels.

    Attributes:
        xyz: (N, 3) float32 coordinates, metres.
        colors: (N, 3) float32 RGB in [0, 1], or None (e.g. LiDAR).
        intensity: (N,) float32 sensor intensity, or None.
        labels: (N,) int64 instance id per point; 0 = unlabelled / background, ids >= 1 are
            objects (SemanticKITTI stuff classes become objects too, see ``readers``).
        names: object id -> human-readable name (e.g. ``"car/212"``, ``"road"``); may be empty.
        things: ids of countable objects (SemanticKITTI "thing" instances); the other ids are
            "stuff" regions or unknown. Used to choose sample anchors; may be empty.
    """

    xyz: np.ndarray
    labels: np.ndarray
    colors: np.ndarray | None = None
    intensity: np.ndarray | None = None
    names: dict[int, str] = field(default_factory=dict)
    things: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.xyz = np.ascontiguousarray(self.xyz, dtype=np.float32)
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise DatasetFormatError(f"xyz must have shape (N, 3), got {self.xyz.shape}")
        n = self.xyz.shape[0]
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)
        if self.labels.shape != (n,):
            raise DatasetFormatError(
                f"labels must have shape ({n},) to match the {n} points, got {self.labels.shape}")
        if self.colors is not None:
            self.colors = np.asarray(self.colors, dtype=np.float32)
            if self.colors.shape != (n, 3):
                raise DatasetFormatError(
                    f"colors must have shape ({n}, 3), got {self.colors.shape}")
        if self.intensity is not None:
            self.intensity = np.asarray(self.intensity, dtype=np.float32).reshape(-1)
            if self.intensity.shape != (n,):
                raise DatasetFormatError(
                    f"intensity must have shape ({n},), got {self.intensity.shape}")
        self.names = {int(k): str(v) for k, v in self.names.items()}
        self.things = tuple(sorted(int(k) for k in self.things))

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def object_ids(self) -> np.ndarray:
        """(M,) int64 sorted ids >= 1 present in ``labels``."""
        ids = np.unique(self.labels)
        return ids[ids > 0]

    def subset(self, mask_or_index: np.ndarray) -> LabelledCloud:
        """Return the cloud restricted to a boolean mask (N,) or an index array."""
        pick = np.asarray(mask_or_index)
        labels = self.labels[pick]
        present = set(np.unique(labels).tolist())
        return LabelledCloud(
            xyz=self.xyz[pick],
            labels=labels,
            colors=None if self.colors is None else self.colors[pick],
            intensity=None if self.intensity is None else self.intensity[pick],
            names={k: v for k, v in self.names.items() if k in present},
            things=tuple(k for k in self.things if k in present),
        )


@dataclass(frozen=True)
class Sample:
    """One evaluation sample: a scene and the K target objects to segment.

    Attributes:
        name: unique sample name (e.g. ``"scene0011_00_obj_3"``).
        scene: scene name; samples of one scene share the cloud (the session encodes it once).
        cloud: the scene (or crop) with its original instance ids.
        object_ids: (K,) original ids of the target objects, in order; target k (0-based) is
            segmented as object id k + 1, every other point is background (0).
    """

    name: str
    scene: str
    cloud: LabelledCloud
    object_ids: tuple[int, ...]

    def target_labels(self) -> np.ndarray:
        """(N,) int64 ground truth of this sample: k + 1 on target k, 0 elsewhere."""
        out = np.zeros(self.cloud.num_points, dtype=np.int64)
        for k, object_id in enumerate(self.object_ids):
            out[self.cloud.labels == object_id] = k + 1
        return out
