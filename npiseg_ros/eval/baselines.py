"""Non-learned baseline segmenter: geodesic distance from the clicks over a voxel graph.

This is the bar a learned model must clear. The cloud is voxelised; each voxel is joined to its
k nearest voxels with a cost that grows with distance, with the angle between surface normals and
with colour change. After each click, multi-source Dijkstra gives every voxel its graph distance
to the nearest click of each label; a voxel takes the label of the nearest click, and becomes
background when no background click is nearer and every object click is farther than
``object_radius`` (so the first click on an object does not flood the whole scene).
It implements the evaluation ``Segmenter`` protocol and returns ``core.types.Prediction``.

``prior_alone`` is the learned counterpart (``npiseg-eval --baseline prior``): a copy of a model
with the geodesic prior whose correction gate is 0, so its logits are the prior's alone -- the
same region growing with the model's learned radius and sharpness. Beside the full model it
shows what the network adds to those few scalars.
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import numpy as np

from npiseg_ros.core.errors import (
    ClickRejectedError, ConfigError, InvalidCloudError, NoCloudError)
from npiseg_ros.core.geodesic import GraphConfig, VoxelGraph, build_voxel_graph
from npiseg_ros.core.types import BACKGROUND_ID, Prediction
from npiseg_ros.eval.interactive import voxel_grid

if TYPE_CHECKING:  # torch is imported only by the model baselines
    from npiseg_ros.core.model import NPISeg3D

__all__ = ["GraphDistanceSegmenter", "BASELINES", "MODEL_BASELINES", "build_baseline",
           "prior_alone"]


class GraphDistanceSegmenter:
    """Geodesic nearest-click labelling on a k-nearest-neighbour voxel graph.

    Args:
        voxel_size: grid size in metres; one representative (first) point per voxel.
        num_neighbours: k of the k-NN graph.
        object_radius: graph distance (cost units ~ metres) beyond which a point is not given
            to an object unless it is the nearest click; see the module docstring.
        normal_weight: extra cost factor for a 90-degree normal change across an edge.
        color_weight: extra cost factor per unit of RGB distance (colours in [0, 1]).
    """

    def __init__(self, voxel_size: float = 0.05, num_neighbours: int = 10,
                 object_radius: float = 1.5, normal_weight: float = 10.0,
                 color_weight: float = 10.0) -> None:
        if voxel_size <= 0 or num_neighbours < 1 or object_radius <= 0:
            raise InvalidCloudError(
                "voxel_size and object_radius must be > 0 and num_neighbours >= 1")
        self.voxel_size = float(voxel_size)
        self.num_neighbours = int(num_neighbours)
        self.object_radius = float(object_radius)
        self.normal_weight = float(normal_weight)
        self.color_weight = float(color_weight)
        self._graph_config = GraphConfig(self.num_neighbours, self.normal_weight,
                                         self.color_weight)
        self._graph: VoxelGraph | None = None
        self._clicks: list[tuple[int, int]] = []  # (voxel index, object id)

    def set_cloud(self, xyz: np.ndarray, colors: np.ndarray | None = None,
                  intensity: np.ndarray | None = None) -> None:
        """Build the voxel graph. ``xyz`` (N, 3) float metres, ``colors`` (N, 3) in [0, 1] or
        uint8, ``intensity`` is ignored."""
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) < 2 or not np.all(np.isfinite(xyz)):
            raise InvalidCloudError("xyz must be a finite (N, 3) array with N >= 2")
        representative, self._point_to_voxel = voxel_grid(xyz, self.voxel_size)
        points = xyz[representative]
        rep_colors = None if colors is None else np.asarray(colors)[representative]
        self._graph = build_voxel_graph(points, rep_colors, self._graph_config)
        self._points = points
        self._clicks = []

    def reset(self) -> None:
        """Forget the clicks, keep the cloud."""
        self._clicks = []

    def add_click(self, position: object = None, *, object_id: int,
                  point_index: int | None = None) -> None:
        """Add a click on input point ``point_index`` (``position`` is not supported here)."""
        if self._graph is None:
            raise NoCloudError("call set_cloud before add_click")
        if point_index is None or not 0 <= int(point_index) < len(self._point_to_voxel):
            raise ClickRejectedError(f"point_index must index the cloud, got {point_index}")
        if int(object_id) < 0:
            raise ClickRejectedError(f"object_id must be >= 0, got {object_id}")
        self._clicks.append((int(self._point_to_voxel[int(point_index)]), int(object_id)))

    def predict(self) -> Prediction:
        """Labels and uncertainty for every input point (see the module docstring)."""
        if self._graph is None:
            raise NoCloudError("call set_cloud before predict")
        start = time.perf_counter()
        num_voxels = len(self._points)
        object_ids = sorted({label for _, label in self._clicks} | {BACKGROUND_ID})
        distance = np.full((len(object_ids), num_voxels), np.inf)
        for row, object_id in enumerate(object_ids):
            sources = [voxel for voxel, label in self._clicks if label == object_id]
            if sources:
                distance[row] = self._graph.nearest_distance(sources)
        # background competes with its clicks and, everywhere, with the radius threshold
        distance[0] = np.minimum(distance[0], self.object_radius)
        labels = np.asarray(object_ids)[np.argmin(distance, axis=0)]
        if len(object_ids) > 1:
            nearest_two = np.partition(distance, 1, axis=0)
            first, second = nearest_two[0], nearest_two[1]
            second = np.where(np.isfinite(second), second, first + self.object_radius)
            # 1 where two labels are equally near (a boundary), -> 0 deep inside one label
            uncertainty = 1.0 - (second - first) / np.maximum(second + first, 1e-9)
        else:
            uncertainty = np.zeros(num_voxels)
        for voxel, label in self._clicks:  # clicked voxels keep their (latest) click's label
            labels[voxel] = label
            uncertainty[voxel] = 0.0
        suggestion = None
        if self._clicks:
            suggestion = tuple(float(v) for v in self._points[int(np.argmax(uncertainty))])
        return Prediction(labels=labels[self._point_to_voxel].astype(np.int32),
                          uncertainty=uncertainty[self._point_to_voxel].astype(np.float32),
                          suggested_click=suggestion,
                          decode_ms=(time.perf_counter() - start) * 1e3,
                          num_clicks=len(self._clicks))


BASELINES = {"graph": GraphDistanceSegmenter}
"""Named baselines for ``npiseg-eval --baseline NAME``."""


def build_baseline(name: str, **kwargs: float) -> GraphDistanceSegmenter:
    """Build a named baseline; raises ValueError listing the known names."""
    if name not in BASELINES:
        raise InvalidCloudError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name](**kwargs)


def prior_alone(model: NPISeg3D) -> NPISeg3D:
    """A deep copy of ``model`` with its correction gate at 0: the logits are the geodesic
    prior's alone (``-k log(D + eps)`` with the model's learned radius and sharpness; see
    ``core.prior``), the decoder's correction is multiplied by 0.

    ``model`` itself is not changed (other runs of the same process may use it). Raises
    ``ConfigError`` for a model without the geodesic prior (nothing to keep alone).
    """
    if getattr(model, "prior", None) is None:
        raise ConfigError("--baseline prior needs a model with the geodesic prior "
                          "(config.geodesic_prior); this checkpoint has none")
    import torch

    alone = copy.deepcopy(model)
    with torch.no_grad():
        alone.prior.correction_gate.zero_()
    return alone


MODEL_BASELINES = {"prior": prior_alone}
"""Named baselines made from a model (``npiseg-eval --baseline NAME``, with ``--checkpoint``
or the shipped default): name -> function of the loaded model."""
