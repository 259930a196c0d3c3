"""Coarse decoder cells: a model with ``decode_stride`` > 1 decodes on cells of stride^3 voxels.

The backbone runs on every voxel; the click-attention decoder then runs on one token per
occupied cell (the mean of its voxels' features at the encoding of their mean position), and
every voxel reads its labels out of its cell on its own prior logits (``docs/model.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from npiseg_ros.core.sparse.coords import lexicographic_keys

__all__ = ["DecodeCells", "group_cells"]


@dataclass
class DecodeCells:
    """The coarse tokens of one scene.

    Attributes:
        of_voxel: (V,) int64 cell of every voxel.
        features: (N, d) float mean backbone feature of each cell's voxels.
        positions: (N, d) float position encoding of each cell's mean voxel position.
        first_voxel: (N,) int64 lowest voxel index in each cell (its previous label).
    """

    of_voxel: Tensor
    features: Tensor
    positions: Tensor
    first_voxel: Tensor

    @property
    def num_cells(self) -> int:
        return int(self.features.shape[0])

    def min_pool(self, values: Tensor, dim: int) -> Tensor:
        """Minimum over each cell's voxels along ``dim`` (a V-long dimension of ``values``);
        that dimension becomes N long."""
        shape = list(values.shape)
        shape[dim] = self.num_cells
        index_shape = [1] * values.dim()
        index_shape[dim] = -1
        index = self.of_voxel.view(index_shape).expand_as(values)
        return values.new_empty(shape).scatter_reduce_(dim, index, values, "amin",
                                                       include_self=False)

    def detach(self) -> "DecodeCells":
        return DecodeCells(self.of_voxel, self.features.detach(), self.positions.detach(),
                           self.first_voxel)


def group_cells(coords: Tensor, features: Tensor, xyz: Tensor, stride: int,
                position_codes: Callable[[Tensor], Tensor]) -> DecodeCells:
    """Group one scene's voxels into cells of ``stride``^3 voxels.

    Args:
        coords: (V, 3) int64 voxel coordinates; features: (V, d) float backbone features;
        xyz: (V, 3) float voxel positions, metres.
        position_codes: (N, 3) metres -> (N, d) position encodings (the model's).
    """
    cell = torch.div(coords, stride, rounding_mode="floor")
    # Cells numbered in (x, y, z) order, as torch.unique(cell, dim=0) would, by one 1-D
    # unique of their keys (~50x faster on CPU than the row-wise unique).
    _, of_voxel = torch.unique(lexicographic_keys(cell), return_inverse=True)
    num_cells = int(of_voxel.max()) + 1
    counts = torch.bincount(of_voxel, minlength=num_cells).to(features.dtype).unsqueeze(1)
    mean_features = features.new_zeros(num_cells, features.shape[1]).index_add_(
        0, of_voxel, features) / counts
    mean_xyz = xyz.new_zeros(num_cells, 3).index_add_(0, of_voxel, xyz) / counts.to(xyz.dtype)
    voxel_index = torch.arange(of_voxel.shape[0], device=of_voxel.device)
    first = voxel_index.new_full((num_cells,), of_voxel.shape[0]).scatter_reduce_(
        0, of_voxel, voxel_index, "amin")
    return DecodeCells(of_voxel, mean_features, position_codes(mean_xyz), first)
