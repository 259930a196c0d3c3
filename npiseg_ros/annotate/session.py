"""The browser tool's segmentation session: the core session plus two things a labelling tool
over recorded drives needs, and the loader of the shipped models.

- **A prior** (:meth:`AnnotateSession.set_prior`): labels carried from the previous frame (or
  imported from existing label files) become the model's previous-mask input for the first
  decode of the frame's clicks, as the session's own earlier prediction is for later decodes.
  This goes through ``_run_model``, the core session's documented extension point.
- **Clouds encoded ahead** (:meth:`AnnotateSession.offer`): the workspace's background thread
  encodes the next frame with the core session's ``encode`` (which leaves the cloud on screen
  alone) and offers the result; when the workspace then opens that frame (through
  ``AnnotationController.set_cloud``), the session ``adopt``s it instead of encoding again.
"""
from __future__ import annotations

import numpy as np
import torch

from npiseg_ros.core.session import EncodedCloud, SegmentationSession
from npiseg_ros.core.types import CloudSummary

__all__ = ["AnnotateSession", "load_shipped_session", "voxel_majority"]


def voxel_majority(point_labels: np.ndarray, voxel_of_point: np.ndarray,
                   num_voxels: int) -> np.ndarray:
    """(V,) int64 most frequent label (>= 0) of each voxel's points; 0 where none.

    Args:
        point_labels: (N,) int label per point (negative: unknown, not counted).
        voxel_of_point: (N,) int voxel of each point (-1: dropped point).
        num_voxels: V.
    """
    labels = np.asarray(point_labels, np.int64)
    voxels = np.asarray(voxel_of_point, np.int64)
    keep = (labels >= 0) & (voxels >= 0)
    labels, voxels = labels[keep], voxels[keep]
    result = np.zeros(num_voxels, np.int64)
    if labels.size == 0:
        return result
    width = int(labels.max()) + 1
    pairs, counts = np.unique(voxels * width + labels, return_counts=True)
    voxel, label = pairs // width, pairs % width
    order = np.lexsort((-counts, voxel))  # per voxel, the most frequent label first
    first = np.ones(order.size, bool)
    first[1:] = voxel[order][1:] != voxel[order][:-1]
    result[voxel[order][first]] = label[order][first]
    return result


class AnnotateSession(SegmentationSession):
    """A :class:`SegmentationSession` with a prior (previous-mask input) and adoption of clouds
    encoded ahead. Same constructor arguments."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._prior_voxels: np.ndarray | None = None
        self._offered: EncodedCloud | None = None

    # ------------------------------------------------------------------ prior
    @property
    def has_prior(self) -> bool:
        return self._prior_voxels is not None

    def set_prior(self, point_labels: np.ndarray | None) -> None:
        """(N,) int object id per point of the current cloud (-1 unknown) as the previous-mask
        input of the first decode after the clicks start (None: no prior). Kept by
        :meth:`reset` (a resume replays on it), dropped by a new cloud (:meth:`adopt`)."""
        if point_labels is None:
            self._prior_voxels = None
            return
        voxel_of_point = self.point_to_voxel
        if voxel_of_point is None:
            raise ValueError("set a cloud before its prior")
        if np.shape(point_labels) != voxel_of_point.shape:
            raise ValueError(f"prior has {np.shape(point_labels)} labels for "
                             f"{voxel_of_point.shape[0]} points")
        self._prior_voxels = voxel_majority(point_labels, voxel_of_point, self.num_voxels)

    def _run_model(self, model, scene, clicks, previous, generator):
        prior = self._prior_voxels
        if previous is None and prior is not None and prior.shape[0] == scene.num_voxels:
            object_ids = np.array(self.object_ids, np.int64)
            # the model's labels are 1..M in increasing object-id order; objects of the prior
            # without a click here are background to it
            lookup = np.zeros(int(max(prior.max(), object_ids.max(initial=0))) + 1, np.int64)
            lookup[object_ids] = np.arange(1, object_ids.size + 1)
            previous = torch.from_numpy(lookup[prior]).to(self.device)
        return super()._run_model(model, scene, clicks, previous, generator)

    # ------------------------------------------------------------------ clouds encoded ahead
    def offer(self, encoded: EncodedCloud | None) -> None:
        """The next :meth:`set_cloud` of exactly ``encoded``'s arrays (the same objects, as
        given to ``encode``) adopts it instead of encoding them again."""
        self._offered = encoded

    def set_cloud(self, xyz, colors=None, intensity=None) -> CloudSummary:
        offered, self._offered = self._offered, None
        if offered is not None and offered.xyz is xyz and offered.colors is colors \
                and offered.intensity is intensity:
            return self.adopt(offered)  # its encode_ms: the time spent encoding ahead
        return super().set_cloud(xyz, colors, intensity)

    def adopt(self, encoded: EncodedCloud) -> CloudSummary:
        summary = super().adopt(encoded)
        self._prior_voxels = None  # the prior belonged to the cloud before
        return summary

    def clear(self) -> None:
        self._prior_voxels = None
        super().clear()


def load_shipped_session(checkpoint: str | None = None, device: str = "cpu",
                         num_samples: int = 10, seed: int = 0) -> tuple[AnnotateSession, str]:
    """A session on the shipped checkpoint (or ``checkpoint``). Never an untrained model.

    Without ``checkpoint`` the session also gets the shipped RGB (indoor) model for coloured
    clouds, as the node's ``checkpoint: auto`` does.

    Raises:
        SourceError: no checkpoint shipped and none given.
    """
    from npiseg_ros.annotate.sources import SourceError
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
    session = AnnotateSession(models, device=device, num_samples=num_samples, seed=seed)
    rgb_path = models.paths.get("rgb")
    return session, (str(models.paths["default"])
                     + (f" (coloured clouds: {rgb_path})" if rgb_path else ""))
