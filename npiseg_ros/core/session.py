"""Interactive segmentation session: encode a cloud once, decode after every click.

The session is the predictor users call (the ROS node, the evaluation CLI, notebooks). It owns
the click list, the object ids and the history needed for exact undo; the model internals
(voxelisation, embedding, voxel graph, click distances) live in the ``Scene`` its model
encodes (``core.scene``), and the choice of model per cloud in its ``ModelRouter``
(``core.router``). Every method either succeeds or raises a typed error leaving the session as
it was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from npiseg_ros.core.config import UNCERTAINTY_MODES
from npiseg_ros.core.errors import ClickRejectedError, ConfigError, InvalidCloudError, NoCloudError
from npiseg_ros.core.model import LATENT_MODES, DecodeOutput, NPISeg3D
from npiseg_ros.core.router import CHROMA_THRESHOLD, ModelRouter, has_chroma, resolve_device
from npiseg_ros.core.scene import PointCloud, Scene, VoxelClicks, VoxelisedCloud, as_points
from npiseg_ros.core.suggest import region_cells, suggest_error_region, suggest_next_click
from npiseg_ros.core.types import (BACKGROUND_ID, INVALID_LABEL, MAX_OBJECT_ID, Click,
                                   CloudSummary, ObjectStats, Prediction)

__all__ = ["SegmentationSession", "EncodedCloud", "resolve_device", "has_chroma",
           "CHROMA_THRESHOLD", "MAX_OBJECT_ID", "DEFAULT_MAX_CLICK_DISTANCE_M"]

DEFAULT_MAX_CLICK_DISTANCE_M = 0.5

SUGGESTION_REGION_VOXELS = 10
"""Edge of the suggestion's regions (``suggest_next_click``), in voxel edges."""

ERROR_REGION_VOXELS = 2
"""Edge of the grid cells from which ``suggest_error_region`` builds its connected regions,
in voxel edges (two: neighbouring LiDAR rings at 10-20 m stay connected)."""


@dataclass
class _Cloud:
    scene: Scene                 # the encoded cloud (its ``cloud`` holds the points and voxels)
    model: NPISeg3D              # the model that encoded this cloud (and decodes its clicks)
    # suggestion cube of every valid point (10 voxel edges), computed once in set_cloud (while
    # the user looks at the cloud) instead of in the first click's predict
    region_of_point: np.ndarray

    @property
    def points(self) -> VoxelisedCloud:
        return self.scene.cloud


@dataclass(frozen=True, eq=False)
class EncodedCloud:
    """A cloud encoded by :meth:`SegmentationSession.encode`, for
    :meth:`SegmentationSession.adopt`.

    Attributes:
        xyz: the (N, 3) coordinates given to ``encode`` (that very array, not a copy).
        colors: the (N, 3) colours given, or None.
        intensity: the (N,) intensity given, or None.
        summary: what ``set_cloud`` reports for the cloud (``encode_ms``: ``encode``'s time).
    """

    xyz: np.ndarray
    colors: np.ndarray | None
    intensity: np.ndarray | None
    summary: CloudSummary
    _cloud: _Cloud = field(repr=False)


@dataclass
class _Step:
    """What predict produced after a given number of clicks (for exact undo)."""

    num_clicks: int
    voxel_labels: np.ndarray     # (V,) int64 object ids
    prediction: Prediction


class SegmentationSession:
    """Encode-once, decode-per-click interactive segmentation.

    Args:
        model: an :class:`NPISeg3D` (put in eval mode by the session), or a
            :class:`ModelRouter` holding the default and colour-cloud models and the voxel size
            (then ``rgb_model`` and ``voxel_size`` stay None).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (CUDA when available) or None
            (the model's current device).
        num_samples: Monte-Carlo samples S per decode (paper default 10).
        scene_weight: alpha of Eq. 7; None keeps the model's configured value.
        max_click_distance: clicks farther than this (metres) from every point are rejected.
        seed: seeds the latent sampling; the same cloud, clicks and seed give the same output.
        uncertainty: ``variance`` (paper Eq. 13-14), ``entropy`` of the mean softmax, or
            ``auto`` (the model's choice: entropy with the geodesic prior, else variance).
        max_points: clouds with more points are rejected (None = no limit).
        voxel_size: voxel edge in metres for every cloud; None uses the voxel size of the
            model that encodes the cloud (what that model was trained at).
        rgb_model: an optional second model for clouds that come WITH colours (RGB-D rooms:
            the shipped RGB-cloud model); ``set_cloud`` picks it when the colours carry colour
            (:func:`has_chroma`: not all grey, so the zero / grey colours a LiDAR sweep gets
            in colour-requiring formats do not count) and ``model`` otherwise (LiDAR sweeps);
            that cloud's clicks decode with the same model. It may have its own voxel size
            (the shipped pair: 10 cm for sweeps, 5 cm for coloured rooms). The two models
            and the voxel size form the session's :attr:`router`.
        latents: ``sample`` (the method: S Monte-Carlo latent samples) or ``mean`` (every
            latent at its mean, one decode: the ablation of what sampling adds).
    """

    def __init__(self, model: NPISeg3D | ModelRouter, *, device: str | torch.device | None = None,
                 num_samples: int = 10, scene_weight: float | None = None,
                 max_click_distance: float = DEFAULT_MAX_CLICK_DISTANCE_M, seed: int = 0,
                 uncertainty: str = "auto", max_points: int | None = None,
                 voxel_size: float | None = None, rgb_model: NPISeg3D | None = None,
                 latents: str = "sample") -> None:
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        if scene_weight is not None and not 0.0 <= scene_weight <= 1.0:
            raise ConfigError(f"scene_weight must be in [0, 1], got {scene_weight}")
        if not max_click_distance > 0:
            raise ConfigError(f"max_click_distance must be > 0 metres, got {max_click_distance}")
        if uncertainty not in UNCERTAINTY_MODES:
            raise ConfigError(f"uncertainty must be one of {list(UNCERTAINTY_MODES)}, "
                              f"got {uncertainty!r}")
        if latents not in LATENT_MODES:
            raise ConfigError(f"latents must be one of {list(LATENT_MODES)}, got {latents!r}")
        if max_points is not None and max_points < 1:
            raise ConfigError(f"max_points must be >= 1 or None, got {max_points}")
        if isinstance(model, ModelRouter):
            if rgb_model is not None or voxel_size is not None:
                raise ConfigError("give rgb_model and voxel_size to the ModelRouter, not to a "
                                  "session built on it")
            router = model
        else:
            router = ModelRouter(model, rgb_model, voxel_size=voxel_size)
        self.router = router
        self.device = router.place(device)
        self.num_samples = int(num_samples)
        self.latents = latents
        self.scene_weight = scene_weight
        self.max_click_distance = float(max_click_distance)
        self.seed = int(seed)
        self.uncertainty = uncertainty
        self.max_points = max_points
        self._cloud: _Cloud | None = None
        self._clicks: list[Click] = []
        self._history: list[_Step] = []
        self._issued_object_id = 0

    # ------------------------------------------------------------------ state
    @property
    def model(self) -> NPISeg3D:
        """The default model (clouds without colour; every cloud without ``rgb_model``)."""
        return self.router.default

    @property
    def rgb_model(self) -> NPISeg3D | None:
        """The model for clouds with colours, or None."""
        return self.router.rgb

    @property
    def has_cloud(self) -> bool:
        return self._cloud is not None

    @property
    def scene(self) -> Scene | None:
        """The encoded current cloud (``core.scene.Scene``), or None."""
        return None if self._cloud is None else self._cloud.scene

    @property
    def active_model(self) -> NPISeg3D:
        """The model of the current cloud (``rgb_model`` for a coloured one), else ``model``."""
        return self.model if self._cloud is None else self._cloud.model

    @property
    def active_model_role(self) -> str | None:
        """Which model encoded the current cloud and decodes its clicks: ``"rgb"`` (the
        ``rgb_model``), ``"default"`` (``model``), or None without a cloud."""
        if self._cloud is None:
            return None
        return self.router.role_of(self._cloud.model)

    def model_for(self, colors: np.ndarray | None) -> NPISeg3D:
        """The model ``set_cloud`` uses for a cloud with these colours (or none)."""
        return self.router.model_for(colors)

    def voxel_size_for(self, colors: np.ndarray | None) -> float:
        """Voxel edge (metres) ``set_cloud`` uses for a cloud with these colours (or none): the
        session's ``voxel_size`` when given, else that of the model it picks."""
        return self.router.voxel_size_for(colors)

    @property
    def voxel_size(self) -> float:
        """Voxel edge (metres) of the current cloud; without one, what a colourless cloud
        would get."""
        if self._cloud is not None:
            return self._cloud.points.voxel_size
        return self.voxel_size_for(None)

    @property
    def num_points(self) -> int:
        return 0 if self._cloud is None else self._cloud.points.num_points

    @property
    def num_voxels(self) -> int:
        return 0 if self._cloud is None else self._cloud.scene.num_voxels

    @property
    def num_decode_tokens(self) -> int:
        """Tokens the click-attention decoder runs on for this cloud: its voxels, or its cells
        of ``decode_stride``^3 voxels (coarse decoding); 0 without a cloud."""
        return 0 if self._cloud is None else self._cloud.scene.num_tokens

    @property
    def point_to_voxel(self) -> np.ndarray | None:
        """(N,) int64 voxel index of every input point (-1 for dropped points), or None."""
        return None if self._cloud is None else self._cloud.points.voxel_of_point

    @property
    def clicks(self) -> tuple[Click, ...]:
        return tuple(self._clicks)

    @property
    def object_ids(self) -> tuple[int, ...]:
        """Sorted ids of the objects (>= 1) that have at least one click."""
        return tuple(sorted({c.object_id for c in self._clicks} - {BACKGROUND_ID}))

    # ------------------------------------------------------------------ cloud
    def set_cloud(self, xyz: np.ndarray, colors: np.ndarray | None = None,
                  intensity: np.ndarray | None = None) -> CloudSummary:
        """Voxelise a cloud and run the backbone once; forgets all clicks
        (``adopt(encode(xyz, colors, intensity))``).

        Args:
            xyz: (N, 3) float coordinates, metres. Rows with NaN/inf are dropped (reported in
                the summary; they get label -1 and NaN uncertainty in predictions).
            colors: (N, 3) RGB, float in [0, 1] or uint8 in [0, 255], or None.
            intensity: (N,) float intensity/reflectance, or None.

        Raises:
            InvalidCloudError: empty cloud, wrong shapes, no finite point, over ``max_points``,
                colours out of range. The previous cloud and clicks are then kept.
        """
        return self.adopt(self.encode(xyz, colors, intensity))

    def encode(self, xyz: np.ndarray, colors: np.ndarray | None = None,
               intensity: np.ndarray | None = None) -> EncodedCloud:
        """Voxelise a cloud, run the backbone and build its voxel graph without changing the
        session: its cloud, clicks and history stay, so a thread may encode the next cloud
        while the session serves the current one (one thread at a time may run the models:
        the caller serialises). Arguments and errors as :meth:`set_cloud`.
        """
        start = time.perf_counter()
        points_xyz = as_points(xyz)
        if self.max_points is not None and points_xyz.shape[0] > self.max_points:
            raise InvalidCloudError(f"cloud has {points_xyz.shape[0]} points, more than "
                                    f"max_points={self.max_points}; crop or downsample it, or "
                                    f"raise the limit")
        model, scene = self.router.encode(PointCloud.from_arrays(points_xyz, colors, intensity))
        points = scene.cloud
        cloud = _Cloud(scene, model, region_cells(points.valid_xyz, _suggestion_region_m(points)))
        summary = CloudSummary(num_points=points.num_points,
                               num_dropped=int(points.num_points - points.valid_index.size),
                               num_voxels=scene.num_voxels,
                               encode_ms=(time.perf_counter() - start) * 1e3,
                               model=self.router.role_of(model))
        return EncodedCloud(xyz, colors, intensity, summary, cloud)

    def adopt(self, encoded: EncodedCloud) -> CloudSummary:
        """Make a cloud :meth:`encode` made (here or in a session on the same models) the
        current cloud, exactly as :meth:`set_cloud` leaves it: every click forgotten. Returns
        its summary.

        Raises:
            TypeError: not an :class:`EncodedCloud`.
            ValueError: encoded by other models than this session's.
        """
        if not isinstance(encoded, EncodedCloud):
            raise TypeError(f"adopt takes an EncodedCloud from encode, got "
                            f"{type(encoded).__name__}")
        if encoded._cloud.model is not self.router.default and \
                encoded._cloud.model is not self.router.rgb:
            raise ValueError("the cloud was encoded by other models than this session's: "
                             "encode it with this session")
        self._cloud = encoded._cloud
        self._forget_clicks()
        return encoded.summary

    def clear(self) -> None:
        """Forget the cloud and every click."""
        self._cloud = None
        self._forget_clicks()

    def reset(self) -> None:
        """Forget every click; keep the cloud (no re-encoding)."""
        self._forget_clicks()

    def _forget_clicks(self) -> None:
        self._clicks = []
        self._history = []
        self._issued_object_id = 0

    # ------------------------------------------------------------------ clicks
    def new_object(self) -> int:
        """Return a fresh object id, larger than every id used or issued so far."""
        fresh = max([self._issued_object_id, *self.object_ids]) + 1
        if fresh > MAX_OBJECT_ID:
            raise ClickRejectedError(f"no object id left (maximum {MAX_OBJECT_ID})")
        self._issued_object_id = fresh
        return fresh

    def add_click(self, position: tuple[float, float, float] | np.ndarray | None = None, *,
                  object_id: int, point_index: int | None = None) -> Click:
        """Add a click by position (snapped to the nearest point) or by point index.

        Args:
            position: (x, y, z) metres in the cloud frame, or None when ``point_index`` is given.
            object_id: 0 = background, 1..65535 = an object.
            point_index: index into the cloud given to :meth:`set_cloud`.

        Raises:
            NoCloudError: no cloud set.
            ClickRejectedError: bad object id, non-finite position, index out of range or of a
                dropped point, or no point within ``max_click_distance``.
        """
        cloud = self._require_cloud().points
        if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
            raise ClickRejectedError(f"object_id must be an integer, got {object_id!r}")
        if not 0 <= int(object_id) <= MAX_OBJECT_ID:
            raise ClickRejectedError(f"object_id {object_id} is unknown: use 0 for background "
                                     f"or 1..{MAX_OBJECT_ID} for objects")
        if (position is None) == (point_index is None):
            raise ClickRejectedError("give exactly one of position and point_index")
        if point_index is not None:
            index = int(point_index)
            if not 0 <= index < cloud.xyz.shape[0]:
                raise ClickRejectedError(f"point_index {index} outside [0, {cloud.xyz.shape[0]})")
            if not cloud.valid[index]:
                raise ClickRejectedError(f"point {index} has non-finite coordinates (dropped)")
            target = cloud.xyz[index].astype(np.float64)
            distance = 0.0
        else:
            target = np.asarray(position, dtype=np.float64).reshape(-1)
            if target.shape != (3,) or not np.isfinite(target).all():
                raise ClickRejectedError(f"click position must be 3 finite numbers, got {position!r}")
            squared = np.square(cloud.valid_xyz - target).sum(axis=1)
            nearest = int(np.argmin(squared))
            index = int(cloud.valid_index[nearest])
            distance = float(np.sqrt(squared[nearest]))
            if distance > self.max_click_distance:
                raise ClickRejectedError(
                    f"click at {np.round(target, 3).tolist()} is {distance:.2f} m from the nearest "
                    f"point (limit {self.max_click_distance} m): click on the cloud")
        click = Click(position=tuple(float(v) for v in target), object_id=int(object_id),
                      point_index=index, voxel_index=int(cloud.voxel_of_point[index]),
                      snap_distance=distance)
        self._clicks.append(click)
        return click

    def undo(self) -> Click | None:
        """Remove the last click; the next :meth:`predict` returns exactly the earlier result."""
        if not self._clicks:
            return None
        removed = self._clicks.pop()
        while self._history and self._history[-1].num_clicks > len(self._clicks):
            self._history.pop()
        return removed

    # ------------------------------------------------------------------ predict
    def predict(self) -> Prediction:
        """Labels and uncertainty for every input point given the current clicks."""
        cloud = self._require_cloud()
        if self._history and self._history[-1].num_clicks == len(self._clicks):
            return self._history[-1].prediction
        start = time.perf_counter()
        num_voxels = cloud.scene.num_voxels
        voxel_confidence = None
        if not self._clicks:
            voxel_labels = np.zeros(num_voxels, np.int64)
            voxel_uncertainty = np.zeros(num_voxels, np.float32)
        else:
            voxel_labels, voxel_uncertainty, voxel_confidence = self._decode(cloud)
        prediction = self._full_resolution(cloud, voxel_labels, voxel_uncertainty,
                                           voxel_confidence, (time.perf_counter() - start) * 1e3)
        self._history.append(_Step(len(self._clicks), voxel_labels, prediction))
        return prediction

    def _decode(self, cloud: _Cloud) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        object_ids = np.array(self.object_ids, dtype=np.int64)
        # Contiguous labels 1..M for the model, in increasing object-id order.
        to_label = {int(o): i + 1 for i, o in enumerate(object_ids)}
        to_label[BACKGROUND_ID] = 0
        click_voxels = torch.tensor([c.voxel_index for c in self._clicks], device=self.device)
        click_labels = torch.tensor([to_label[c.object_id] for c in self._clicks],
                                    device=self.device)
        previous = None
        if self._history and self._history[-1].num_clicks > 0:
            earlier = self._history[-1].voxel_labels
            # Objects absent from the current clicks (undone) fall back to background.
            lookup = np.zeros(int(max(earlier.max(), object_ids.max(initial=0))) + 1, np.int64)
            lookup[object_ids] = np.arange(1, object_ids.size + 1)
            previous = torch.from_numpy(lookup[earlier]).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        with torch.inference_mode():
            output = self._run_model(cloud.model, cloud.scene,
                                     VoxelClicks(click_voxels, click_labels), previous, generator)
            labels = output.logits.argmax(dim=1)
            labels[click_voxels] = click_labels  # clicked voxels take their click's label
            confidence = output.probabilities.gather(1, labels.unsqueeze(1)).squeeze(1)
        label_to_id = np.concatenate([[BACKGROUND_ID], object_ids])
        return (label_to_id[labels.cpu().numpy()], output.uncertainty.float().cpu().numpy(),
                confidence.float().cpu().numpy())

    def _run_model(self, model: NPISeg3D, scene: Scene, clicks: VoxelClicks,
                   previous: torch.Tensor | None, generator: torch.Generator) -> DecodeOutput:
        """The model's decode of the clicks with the session's settings (under inference
        mode). The one place a subclass changes how the labels' probabilities are made (the
        evaluation's MC-dropout baseline, ``npiseg_ros.eval.session_adapter``)."""
        return model.decode(scene, clicks, previous, num_samples=self.num_samples,
                            generator=generator, uncertainty=self.uncertainty,
                            latents=self.latents, scene_weight=self.scene_weight)

    def _full_resolution(self, state: _Cloud, voxel_labels: np.ndarray,
                         voxel_uncertainty: np.ndarray, voxel_confidence: np.ndarray | None,
                         decode_ms: float) -> Prediction:
        cloud = state.points
        inverse = cloud.voxels.point_to_voxel
        valid_uncertainty = voxel_uncertainty[inverse]
        confidence = None
        if cloud.valid_index.size == cloud.xyz.shape[0]:  # every point valid: plain gathers
            labels = voxel_labels[inverse].astype(np.int32)
            uncertainty = valid_uncertainty
            if voxel_confidence is not None:
                confidence = voxel_confidence[inverse]
        else:
            labels = np.full(cloud.xyz.shape[0], INVALID_LABEL, np.int32)
            labels[cloud.valid_index] = voxel_labels[inverse]
            uncertainty = np.full(cloud.xyz.shape[0], np.nan, np.float32)
            uncertainty[cloud.valid_index] = valid_uncertainty
            if voxel_confidence is not None:
                confidence = np.full(cloud.xyz.shape[0], np.nan, np.float32)
                confidence[cloud.valid_index] = voxel_confidence[inverse]
        clicks_per_object: dict[int, int] = {}
        for click in self._clicks:
            clicks_per_object[click.object_id] = clicks_per_object.get(click.object_id, 0) + 1
        # per-object point counts and uncertainty sums in one pass over the voxels (every
        # point of a voxel shares its label and uncertainty) instead of one pass per object
        points_per_voxel = cloud.points_per_voxel
        size = int(voxel_labels.max(initial=0)) + 1
        counts = np.bincount(voxel_labels, weights=points_per_voxel, minlength=size)
        sums = np.bincount(voxel_labels, weights=points_per_voxel * voxel_uncertainty.astype(
            np.float64), minlength=size)
        stats = {}
        for object_id in sorted({BACKGROUND_ID, *clicks_per_object}):
            count = int(counts[object_id]) if object_id < size else 0
            stats[object_id] = ObjectStats(
                object_id=object_id, num_points=count,
                mean_uncertainty=float(sums[object_id] / count) if count else 0.0,
                num_clicks=clicks_per_object.get(object_id, 0))
        suggestion = None
        if self._clicks and voxel_confidence is not None:
            # where the model expects the largest connected error (the simulated user's rule)
            suggestion = suggest_error_region(
                cloud.valid_xyz, voxel_confidence[inverse], voxel_labels[inverse],
                cell_size=ERROR_REGION_VOXELS * cloud.voxels.voxel_size,
                clicked=cloud.xyz[[c.point_index for c in self._clicks]])
        if self._clicks and suggestion is None:
            suggestion = suggest_next_click(cloud.valid_xyz, valid_uncertainty,
                                            region_size=_suggestion_region_m(cloud),
                                            cell_of_point=state.region_of_point)
        return Prediction(labels=labels, uncertainty=uncertainty, object_stats=stats,
                          suggested_click=suggestion, decode_ms=decode_ms,
                          num_clicks=len(self._clicks), confidence=confidence)

    def _require_cloud(self) -> _Cloud:
        if self._cloud is None:
            raise NoCloudError("no cloud yet: call set_cloud (or publish a cloud) before clicking")
        return self._cloud


def _suggestion_region_m(cloud: VoxelisedCloud) -> float:
    """Edge in metres of the suggestion's regions for a cloud voxelised as ``cloud``."""
    return SUGGESTION_REGION_VOXELS * cloud.voxels.voxel_size
