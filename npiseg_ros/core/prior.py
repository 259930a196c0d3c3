"""The click-conditioned geodesic prior of the decoder (see ``core.geodesic`` and docs/model.md).

Given each click's graph distance to every voxel, the prior gives

* per-label distances ``D`` (V, C): for an object the distance to its nearest click; for the
  background the distance to its nearest click, capped at a learned radius R (a voxel far from
  every object click starts as background, as in region growing);
* prior logits ``-k log(D + eps)`` with a learned sharpness k. Their argmax is exactly the
  graph baseline's labelling and their softmax margin is a ratio of distances;
* per-voxel distance features, embedded and added to the point features, so the decoder knows
  where the prior is sure and where two labels meet;
* an additive click->scene attention bias ``-beta * distance`` for click queries.

The decoder's click-attention logits are added to the prior logits through a learned gate that
starts at zero: an untrained model is the baseline, and training learns corrections.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from npiseg_ros.core.decoder import mlp

MAX_DISTANCE = 1.0e3
"""Graph metres; unreachable voxels (inf) are clamped here before any arithmetic."""

FEATURE_SCALES = (0.5, 2.0, 8.0)
"""Metres of the exp(-d / s) distance features."""

NUM_FEATURES = 2 * len(FEATURE_SCALES) + 2


class GeodesicPrior(nn.Module):
    """Learned parameters and feature maps of the geodesic prior (see the module docstring)."""

    def __init__(self, dim: int, radius: float, voxel_size: float) -> None:
        super().__init__()
        self.epsilon = 0.5 * float(voxel_size)
        self.log_radius = nn.Parameter(torch.tensor(math.log(radius)))
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(4.0)))
        self.attention_decay = nn.Parameter(torch.tensor(1.0))  # beta, per graph metre
        self.correction_gate = nn.Parameter(torch.tensor(0.0))
        self.features = mlp([NUM_FEATURES, dim, dim])

    def label_distances(self, click_distances: Tensor, click_labels: Tensor,
                        num_classes: int) -> Tensor:
        """(K, V) per-click distances -> (V, C) per-label distances (background capped at R)."""
        return self.cap_background(self.nearest_click_distances(click_distances, click_labels,
                                                                num_classes))

    def nearest_click_distances(self, click_distances: Tensor, click_labels: Tensor,
                                num_classes: int) -> Tensor:
        """(V, C) distance to each label's nearest click (MAX_DISTANCE for a label without)."""
        counts = torch.bincount(click_labels, minlength=num_classes).tolist()
        order = torch.argsort(click_labels, stable=True)
        rows, start = [], 0
        for count in counts:  # each label's clicks: a run of ``order``
            if count == 0:
                rows.append(click_distances.new_full(click_distances.shape[1:], MAX_DISTANCE))
            elif count == 1:
                rows.append(click_distances[order[start]])
            else:
                rows.append(click_distances.index_select(0, order[start:start + count])
                            .amin(dim=0))
            start += count
        # clamping after the minimum (both monotone) touches (V, C) values instead of (K, V)
        return torch.stack(rows, dim=1).clamp(max=MAX_DISTANCE)

    def cap_background(self, per_label: Tensor) -> Tensor:
        """Background's distance capped at the learned radius R (region growing's rule)."""
        radius = self.log_radius.exp()
        background = torch.minimum(per_label[:, 0], radius.expand_as(per_label[:, 0]))
        return torch.cat([background.unsqueeze(1), per_label[:, 1:]], dim=1)

    def logits(self, label_distances: Tensor) -> Tensor:
        """(V, C) prior logits -k log(D + eps)."""
        return -self.log_sharpness.exp() * torch.log(label_distances + self.epsilon)

    def point_features(self, nearest: Tensor, label_distances: Tensor) -> Tensor:
        """(V, d) embedding of where a voxel sits relative to the clicks, from the (V, C)
        nearest-click distances and the per-label distances with the background capped."""
        nearest_background = nearest[:, 0]
        nearest_object = (nearest[:, 1:].amin(dim=1) if nearest.shape[1] > 1
                          else torch.full_like(nearest_background, MAX_DISTANCE))
        logs = torch.log(label_distances + self.epsilon)
        two = torch.topk(logs, k=min(2, logs.shape[1]), dim=1, largest=False).values
        margin = (two[:, -1] - two[:, 0]) if two.shape[1] > 1 else torch.zeros_like(two[:, 0])
        columns = [torch.exp(-nearest_object / s) for s in FEATURE_SCALES]
        columns += [torch.exp(-nearest_background / s) for s in FEATURE_SCALES]
        columns += [torch.tanh(margin), (label_distances.argmin(dim=1) == 0).to(logs.dtype)]
        return self.features(torch.stack(columns, dim=1))

    def attention_bias(self, click_distances: Tensor, num_other_queries: int) -> Tensor:
        """(K + B, V) additive attention bias: -beta * d for click queries, 0 for the B others."""
        bias = -self.attention_decay * click_distances.clamp(max=MAX_DISTANCE / 10)
        return torch.cat([bias, bias.new_zeros(num_other_queries, bias.shape[1])])
