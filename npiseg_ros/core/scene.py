"""A scene encoded once and decoded after every click (``NPISeg3D.encode`` -> ``Scene``).

A ``Scene`` owns everything about one cloud that does not depend on the clicks: the input
points and their voxelisation (``VoxelisedCloud``), the backbone features and position codes,
the decoder's coarse cells, and, for models with the geodesic prior, the voxel graph with the
click-distance cache: each clicked voxel's graph distances (one Dijkstra) and their minima over
the decoder cells (one pooling), computed once per voxel however often it is clicked again.
Training builds scenes from pre-voxelised crops (``NPISeg3D.embed_batch``), without a cloud.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from npiseg_ros.core.cells import DecodeCells
from npiseg_ros.core.errors import InvalidCloudError
from npiseg_ros.core.geodesic import ClickDistanceCache, build_voxel_graph
from npiseg_ros.core.voxelize import Voxelization, voxelize

if TYPE_CHECKING:
    from npiseg_ros.core.geodesic import VoxelGraph
    from npiseg_ros.core.model import NPISeg3D

__all__ = ["PointCloud", "VoxelisedCloud", "VoxelClicks", "Scene", "encode_cloud",
           "input_features"]


@dataclass(frozen=True)
class PointCloud:
    """A validated input cloud (build it with :meth:`from_arrays`).

    Attributes:
        xyz: (N, 3) float32 coordinates, metres; rows with NaN/inf are kept (and dropped from
            the voxels by ``encode``).
        colors: (N, 3) float32 RGB in [0, 1], or None.
        intensity: (N,) float32 intensity / reflectance in [0, 1], or None.
    """

    xyz: np.ndarray
    colors: np.ndarray | None = None
    intensity: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, xyz: np.ndarray, colors: np.ndarray | None = None,
                    intensity: np.ndarray | None = None) -> "PointCloud":
        """Validate and convert: ``colors`` float in [0, 1] or uint8 0..255; ``intensity`` in
        [0, 1] or 8-bit 0..255 (non-finite values read as 0).

        Raises:
            InvalidCloudError: empty cloud, wrong shapes or dtypes, colours out of range.
        """
        xyz = as_points(xyz)
        colors = None if colors is None else _as_colors(colors, xyz.shape[0])
        intensity = None if intensity is None else _as_intensity(intensity, xyz.shape[0])
        return cls(xyz, colors, intensity)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


@dataclass(frozen=True)
class VoxelisedCloud:
    """The input points of a scene and their voxels.

    Attributes:
        xyz: (N, 3) float32 input coordinates (non-finite rows kept).
        valid: (N,) bool, rows with finite coordinates.
        valid_index: (P,) int64 input index of each valid point.
        valid_xyz: (P, 3) float32 the valid points.
        voxels: the voxelisation of the valid points.
        voxel_of_point: (N,) int64 voxel of every input point, -1 for a dropped one.
        points_per_voxel: (V,) int64 valid points in each voxel.
    """

    xyz: np.ndarray
    valid: np.ndarray
    valid_index: np.ndarray
    valid_xyz: np.ndarray
    voxels: Voxelization
    voxel_of_point: np.ndarray
    points_per_voxel: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def voxel_size(self) -> float:
        return float(self.voxels.voxel_size)


@dataclass(frozen=True)
class VoxelClicks:
    """Clicks as the decoder takes them.

    Attributes:
        voxels: (K,) int64 voxel index of each click.
        labels: (K,) int64 label of each click: 0 = background, objects 1..M; every object
            label in 1..M has at least one click (checked by the decoder).
    """

    voxels: Tensor
    labels: Tensor

    def check(self, num_voxels: int) -> int:
        """Validate the clicks for a scene of ``num_voxels`` voxels; return C = M + 1.

        Raises:
            ValueError: not 1-D of equal length, no click, a voxel out of range, a negative
                label, or an object label without a click.
        """
        voxels, labels = self.voxels, self.labels
        if voxels.ndim != 1 or voxels.shape != labels.shape:
            raise ValueError("click voxels and labels must be 1-D of equal length, got "
                             f"{tuple(voxels.shape)} and {tuple(labels.shape)}")
        if voxels.numel() == 0:
            raise ValueError("at least one click is needed to decode")
        if int(voxels.min()) < 0 or int(voxels.max()) >= num_voxels:
            raise ValueError(f"click voxel indices must lie in [0, {num_voxels})")
        if int(labels.min()) < 0:
            raise ValueError("click labels must be >= 0 (0 = background)")
        num_objects = int(labels.max())
        present = torch.bincount(labels, minlength=num_objects + 1)[1:] > 0
        if not bool(present.all()):
            missing = (torch.nonzero(~present).flatten() + 1).tolist()
            raise ValueError(f"object labels must be contiguous 1..M; labels {missing} have "
                             "no click")
        return num_objects + 1


@dataclass
class Scene:
    """One scene's click-independent state (see the module docstring).

    Attributes:
        features: (V, d) float backbone features of the voxels.
        positions: (V, d) float Fourier encodings of the voxel positions.
        cells: the decoder's coarse tokens (``decode_stride`` > 1), else None.
        graph_distances: the voxel graph and its per-voxel Dijkstra cache (geodesic-prior
            models), else None.
        cloud: the input points and their voxels (``NPISeg3D.encode``), else None (training
            crops).
        pooled: voxel -> (N,) float32 its graph distances min-pooled over the decoder cells,
            filled by :meth:`click_distances` once per clicked voxel.
    """

    features: Tensor
    positions: Tensor
    cells: DecodeCells | None = None
    graph_distances: ClickDistanceCache | None = None
    cloud: VoxelisedCloud | None = None
    pooled: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_voxels(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_tokens(self) -> int:
        """Tokens the click-attention decoder runs on: the voxels, or the cells."""
        return self.num_voxels if self.cells is None else self.cells.num_cells

    @property
    def graph(self) -> "VoxelGraph | None":
        return None if self.graph_distances is None else self.graph_distances.graph

    def click_distances(self, voxels: list[int]) -> tuple[Tensor, Tensor]:
        """(K, V) float32 graph distances from each of ``voxels`` (inf beyond the model's
        distance limit) and their (K, tokens) minima over the decoder cells (the same tensor
        without cells), on the features' device.

        One Dijkstra and one pooling per voxel never asked for before; the rows are a view of
        a buffer that keeps the order of the previous call (a click sequence grows or shrinks
        at its end), valid until the next call.

        Raises:
            ValueError: the scene has no voxel graph.
        """
        if self.graph_distances is None:
            raise ValueError("this scene has no voxel graph: a model with the geodesic prior "
                             "needs one (encode the cloud with that model, or give training "
                             "scenes their graph)")
        rows = torch.from_numpy(self.graph_distances.ordered_rows(voxels)).to(
            self.features.device)
        if self.cells is None:
            return rows, rows
        for index, voxel in enumerate(voxels):
            if voxel not in self.pooled:
                self.pooled[voxel] = self.cells.min_pool(rows[index:index + 1], 1)[0]
        return rows, torch.stack([self.pooled[voxel] for voxel in voxels])

    def detach(self) -> "Scene":
        """The same scene without autograd history (shares the distance caches)."""
        cells = None if self.cells is None else self.cells.detach()
        return Scene(self.features.detach(), self.positions.detach(), cells,
                     self.graph_distances, self.cloud, self.pooled)


def encode_cloud(model: "NPISeg3D", cloud: PointCloud, voxel_size: float) -> Scene:
    """``model.encode``: voxelise ``cloud`` at ``voxel_size`` metres (one voxel per occupied
    cell, represented by its first point), run the backbone once (no autograd) and build the
    voxel graph when the model has the geodesic prior.

    Raises:
        InvalidCloudError: no finite point, or a voxel grid that cannot be built.
    """
    xyz = cloud.xyz
    features = input_features(model.config.input_mode, cloud)
    valid = np.isfinite(xyz).all(axis=1)
    valid_index = np.flatnonzero(valid)
    if valid_index.size == 0:
        raise InvalidCloudError(f"all {xyz.shape[0]} points have NaN/inf coordinates")
    valid_xyz = xyz[valid_index]
    try:
        voxels = voxelize(valid_xyz, voxel_size)
    except ValueError as error:
        raise InvalidCloudError(str(error)) from error
    voxel_of_point = np.full(xyz.shape[0], -1, dtype=np.int64)
    voxel_of_point[valid_index] = voxels.point_to_voxel
    representative = valid_index[voxels.representative]
    device = next(model.parameters()).device
    voxel_xyz = torch.from_numpy(xyz[representative]).to(device)
    voxel_features = torch.from_numpy(features[representative]).to(device)
    coords = torch.from_numpy(voxels.coords).to(device)
    with torch.inference_mode():
        scene = model.embed(voxel_features, coords, voxel_xyz)
    if model.config.geodesic_prior:
        voxel_colors = None if cloud.colors is None else cloud.colors[representative]
        graph = build_voxel_graph(xyz[representative], voxel_colors, model.config.graph_config())
        scene.graph_distances = ClickDistanceCache(graph, model.distance_limit())
    scene.cloud = VoxelisedCloud(xyz, valid, valid_index, valid_xyz, voxels, voxel_of_point,
                                 np.bincount(voxels.point_to_voxel, minlength=voxels.num_voxels))
    return scene


def input_features(mode: str, cloud: PointCloud) -> np.ndarray:
    """(N, in_channels) float32 per-point input features for a model's ``input_mode``."""
    num_points = cloud.num_points
    if mode == "rgb":
        # LiDAR without colour feeds zeros, as the research code does.
        if cloud.colors is not None:
            return cloud.colors
        return np.zeros((num_points, 3), np.float32)
    if mode == "intensity":
        if cloud.intensity is None:
            return np.zeros((num_points, 1), np.float32)
        return cloud.intensity[:, None]
    return np.ones((num_points, 1), np.float32)


def as_points(xyz: np.ndarray) -> np.ndarray:
    """(N >= 1, 3) numeric -> contiguous float32 (no copy when it already is)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InvalidCloudError(f"xyz must have shape (N, 3), got {xyz.shape}")
    if xyz.shape[0] == 0:
        raise InvalidCloudError("the cloud is empty (0 points)")
    if not np.issubdtype(xyz.dtype, np.number):
        raise InvalidCloudError(f"xyz must be numeric, got dtype {xyz.dtype}")
    return np.ascontiguousarray(xyz, dtype=np.float32)


def _as_colors(colors: np.ndarray, num_points: int) -> np.ndarray:
    colors = np.asarray(colors)
    if colors.shape != (num_points, 3):
        raise InvalidCloudError(f"colors must have shape ({num_points}, 3) like xyz, "
                                f"got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors.astype(np.float32) / 255.0
    colors = colors.astype(np.float32)
    finite = np.isfinite(colors)
    if not finite.all() or colors.min() < 0.0 or colors.max() > 1.0:
        raise InvalidCloudError("float colors must be finite and in [0, 1] "
                                "(pass uint8 arrays for 0..255 colours)")
    return colors


def _as_intensity(intensity: np.ndarray, num_points: int) -> np.ndarray:
    intensity = np.asarray(intensity, dtype=np.float32).reshape(-1)
    if intensity.shape != (num_points,):
        raise InvalidCloudError(f"intensity must have {num_points} values like xyz, "
                                f"got {intensity.shape[0]}")
    intensity = np.where(np.isfinite(intensity), intensity, 0.0).astype(np.float32)
    # Sensors report reflectance in [0, 1] (KITTI) or 8-bit [0, 255] (many drivers).
    if intensity.size and float(intensity.max()) > 1.5:
        intensity = intensity / 255.0
    return np.clip(intensity, 0.0, 1.0)
