"""Converters between kernel layouts of other sparse-conv libraries and the internal layout.

Internal layout: ``(k³, C_in, C_out)``, slot ``i = (ix·k + iy)·k + iz`` (z fastest), where
``ix, iy, iz`` index the kernel offsets (``-r..r`` for odd ``k``, ``0..1`` for ``k = 2``).
The equivalent dense ``torch.nn.functional.conv3d`` weight, for coordinates ordered
``[x, y, z]``, is ``W.view(k, k, k, C_in, C_out).permute(4, 3, 0, 1, 2)``.
"""
from __future__ import annotations

from torch import Tensor

__all__ = [
    "from_minkowski",
    "to_minkowski",
    "from_spconv",
    "to_spconv",
    "from_dense",
    "to_dense",
]


def _kernel_size(slots: int) -> int:
    k = round(slots ** (1.0 / 3.0))
    if k**3 != slots:
        raise ValueError(f"a cubic kernel needs k³ slots, got {slots}")
    return k


def from_minkowski(weight: Tensor) -> Tensor:
    """MinkowskiEngine kernel ``[k³, C_in, C_out]`` (x-fastest offsets) -> internal layout.

    A 1×1 MinkowskiEngine kernel stored as ``(C_in, C_out)`` is accepted too.
    """
    if weight.dim() == 2:
        return weight.unsqueeze(0).clone()
    if weight.dim() != 3:
        raise ValueError(
            f"MinkowskiEngine kernels are (k³, C_in, C_out), got {tuple(weight.shape)}"
        )
    k = _kernel_size(weight.shape[0])
    c_in, c_out = weight.shape[1], weight.shape[2]
    # x-fastest means the slot index reads (iz, iy, ix); swap to (ix, iy, iz).
    return weight.reshape(k, k, k, c_in, c_out).permute(2, 1, 0, 3, 4).reshape(k**3, c_in, c_out)


def to_minkowski(weight: Tensor) -> Tensor:
    """Internal layout -> MinkowskiEngine ``[k³, C_in, C_out]`` (x-fastest offsets)."""
    k = _kernel_size(weight.shape[0])
    c_in, c_out = weight.shape[1], weight.shape[2]
    return weight.reshape(k, k, k, c_in, c_out).permute(2, 1, 0, 3, 4).reshape(k**3, c_in, c_out)


def from_spconv(weight: Tensor) -> Tensor:
    """spconv 2.x kernel ``(C_out, kx, ky, kz, C_in)`` -> internal layout.

    Assumes the spconv indices were ordered ``[batch, x, y, z]`` like this project's coordinates.
    """
    if weight.dim() != 5 or not (weight.shape[1] == weight.shape[2] == weight.shape[3]):
        raise ValueError(f"spconv kernels are (C_out, k, k, k, C_in), got {tuple(weight.shape)}")
    c_out, k, c_in = weight.shape[0], weight.shape[1], weight.shape[4]
    return weight.permute(1, 2, 3, 4, 0).reshape(k**3, c_in, c_out)


def to_spconv(weight: Tensor) -> Tensor:
    """Internal layout -> spconv 2.x ``(C_out, kx, ky, kz, C_in)``."""
    k = _kernel_size(weight.shape[0])
    c_in, c_out = weight.shape[1], weight.shape[2]
    return weight.reshape(k, k, k, c_in, c_out).permute(4, 0, 1, 2, 3)


def from_dense(weight: Tensor) -> Tensor:
    """Dense ``conv3d`` weight ``(C_out, C_in, kx, ky, kz)`` -> internal layout.

    For ``conv_transpose3d`` weights ``(C_in, C_out, kx, ky, kz)`` use
    ``from_dense(weight.transpose(0, 1))``.
    """
    if weight.dim() != 5:
        raise ValueError(f"dense kernels are (C_out, C_in, k, k, k), got {tuple(weight.shape)}")
    c_out, c_in, k = weight.shape[0], weight.shape[1], weight.shape[2]
    return weight.permute(2, 3, 4, 1, 0).reshape(k**3, c_in, c_out)


def to_dense(weight: Tensor) -> Tensor:
    """Internal layout -> dense ``conv3d`` weight ``(C_out, C_in, kx, ky, kz)``."""
    k = _kernel_size(weight.shape[0])
    c_in, c_out = weight.shape[1], weight.shape[2]
    return weight.reshape(k, k, k, c_in, c_out).permute(4, 3, 0, 1, 2)
