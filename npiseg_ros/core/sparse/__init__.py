"""Sparse 3-D convolution in pure PyTorch (optional spconv backend).

Coordinates are ``(N, 4)`` int64 ``[batch, x, y, z]`` in finest-voxel units; features are
``(N, C)`` float rows in the same order. See docs/backbone.md for the conventions.
"""
from .backends import available_backends, get_backend
from .coords import DENSE_GRID_MAX_CELLS, CoordinateLevel, KernelMap, kernel_offsets, spatial_order
from .functional import down_conv, submanifold_conv, up_conv
from .modules import DownConv3d, SparseBatchNorm, SubmanifoldConv3d, UpConv3d

__all__ = [
    "DENSE_GRID_MAX_CELLS",
    "CoordinateLevel",
    "KernelMap",
    "kernel_offsets",
    "spatial_order",
    "submanifold_conv",
    "down_conv",
    "up_conv",
    "SubmanifoldConv3d",
    "DownConv3d",
    "UpConv3d",
    "SparseBatchNorm",
    "available_backends",
    "get_backend",
]
