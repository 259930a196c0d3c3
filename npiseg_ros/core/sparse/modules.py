"""``nn.Module`` wrappers of the sparse primitives.

Every module takes ``(features (N, C) float, level: CoordinateLevel)``. Weights are stored in the
internal ``(k³, C_in, C_out)`` layout (z-fastest offsets, see docs/backbone.md), so the dense
equivalent of a weight ``W`` is ``W.view(k, k, k, C_in, C_out).permute(4, 3, 0, 1, 2)``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backends import get_backend
from .coords import CoordinateLevel

__all__ = ["SubmanifoldConv3d", "DownConv3d", "UpConv3d", "SparseBatchNorm"]


class _SparseConvBase(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, slots: int, bias: bool, backend: str
    ) -> None:
        super().__init__()
        self.backend = backend
        self._ops = get_backend(backend)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(slots, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-normal over fan_out (= k³·C_out), the usual choice for ReLU sparse U-Nets.
        fan_out = self.weight.shape[0] * self.out_channels
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _add_bias(self, out: Tensor) -> Tensor:
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, slots={self.weight.shape[0]}, "
            f"bias={self.bias is not None}, backend={self.backend!r}"
        )


class SubmanifoldConv3d(_SparseConvBase):
    """k×k×k submanifold convolution (outputs at the input sites); ``k = 1`` is a linear layer.

    Shapes: ``(N, C_in) -> (N, C_out)`` on the same level.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = False,
        backend: str = "torch",
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        super().__init__(in_channels, out_channels, kernel_size**3, bias, backend)

    def forward(self, features: Tensor, level: CoordinateLevel) -> Tensor:
        return self._add_bias(self._ops.submanifold_conv(features, self.weight, level))


class DownConv3d(_SparseConvBase):
    """Stride-2 kernel-2 convolution: ``(N, C_in)`` on ``level`` -> ``(N_parent, C_out)``."""

    def __init__(
        self, in_channels: int, out_channels: int, bias: bool = False, backend: str = "torch"
    ) -> None:
        super().__init__(in_channels, out_channels, 8, bias, backend)

    def forward(self, features: Tensor, level: CoordinateLevel) -> tuple[Tensor, CoordinateLevel]:
        out, parent = self._ops.down_conv(features, self.weight, level)
        return self._add_bias(out), parent


class UpConv3d(_SparseConvBase):
    """Transposed stride-2 kernel-2 convolution back onto the finer ``level`` it came from.

    ``(N_parent, C_in)`` on ``level.downsample()[0]`` -> ``(N, C_out)`` on ``level``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, bias: bool = False, backend: str = "torch"
    ) -> None:
        super().__init__(in_channels, out_channels, 8, bias, backend)

    def forward(self, features: Tensor, level: CoordinateLevel) -> Tensor:
        return self._add_bias(self._ops.up_conv(features, self.weight, level))


class SparseBatchNorm(nn.BatchNorm1d):
    """Batch normalisation over the rows (active sites) of an ``(N, C)`` feature tensor."""
