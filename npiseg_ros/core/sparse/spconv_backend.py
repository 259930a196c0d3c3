"""Optional spconv 2.x backend (imported only by ``get_backend("spconv")``).

Scope, deliberately small: spconv runs the submanifold convolutions (the bulk of the work);
the hierarchy (stride-2 parents, child tables) and the cheap stride-2 / transposed convolutions
stay on the pure-PyTorch path, so both backends produce the same coordinate sets and row orders
and share one parameter layout. Indice pairs use spconv's ``ConvAlgo.Native`` (the algorithm
available on CPU; it also runs on CUDA, though the implicit-GEMM algorithms would be faster).

spconv 2.3.8 on a CPU-only PyTorch asks ``torch.cuda.current_stream()`` in its backward pass and
fails; where CUDA is unavailable we point its ``get_current_stream`` helpers at stream 0.

spconv 2.3.8's CPU gather–GEMM–scatter path, run with 2 intra-op threads, returned wrong rows in
about 1 of 50 calls here (errors of order 1 on single rows; never with 1 thread). On CPU this
adapter therefore runs spconv's kernels with one thread, trading speed for correct results.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

import spconv.pytorch.cppcore as _spconv_cppcore
import spconv.pytorch.hash as _spconv_hash
import spconv.pytorch.ops as _spconv_ops
from spconv.core import ConvAlgo

from . import functional
from .backends import SparseBackend
from .coords import CoordinateLevel
from .weights import to_spconv

__all__ = ["SPCONV_BACKEND", "SpconvLevel"]

if not torch.cuda.is_available():

    def _no_stream() -> int:
        return 0

    for _module in (_spconv_cppcore, _spconv_ops, _spconv_hash):
        _module.get_current_stream = _no_stream


@contextlib.contextmanager
def _single_thread_on_cpu(tensor: Tensor) -> Iterator[None]:
    if tensor.device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SpconvSubmanifold(torch.autograd.Function):
    """spconv's submanifold forward/backward kernels, each under the CPU thread guard."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, features: Tensor, weight: Tensor, pairs: Tensor, counts: Tensor
    ) -> Tensor:
        ctx.save_for_backward(features, weight, pairs, counts)
        with _single_thread_on_cpu(features):
            return _spconv_ops.indice_conv(
                features, weight, pairs, counts, features.shape[0], False, True,
                algo=ConvAlgo.Native,
            )

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        features, weight, pairs, counts = ctx.saved_tensors
        with _single_thread_on_cpu(features):
            grad_features, grad_weight = _spconv_ops.indice_conv_backward(
                features, weight, grad_out.contiguous(), pairs, counts, False, True,
                algo=ConvAlgo.Native,
            )
        return grad_features, grad_weight, None, None


class SpconvLevel(CoordinateLevel):
    """A :class:`CoordinateLevel` that also caches spconv indice pairs per kernel size."""

    def __init__(self, coords: Tensor, stride: int = 1, lookup: str = "auto") -> None:
        super().__init__(coords, stride, lookup)  # type: ignore[arg-type]
        self._spconv_pairs: dict[int, tuple[Tensor, Tensor]] = {}

    def _build_down(self):  # parents must be SpconvLevels too
        parent, table, parent_index, slot = super()._build_down()
        parent = SpconvLevel(parent.coords, parent.stride, self.lookup_mode)
        return parent, table, parent_index, slot

    def spconv_pairs(self, kernel_size: int) -> tuple[Tensor, Tensor]:
        """spconv ``(indice_pairs, indice_pair_num)`` of a submanifold ``kernel_size``³ conv."""
        if kernel_size not in self._spconv_pairs:
            scaled = torch.div(self.coords, self.stride, rounding_mode="floor")
            scaled[:, 0] = self.coords[:, 0]
            scaled = scaled - scaled.min(dim=0).values  # spconv needs indices >= 0
            shape = [int(v) + 1 for v in scaled.max(dim=0).values.tolist()]
            _, pairs, counts = _spconv_ops.get_indice_pairs(
                scaled.int().contiguous(),
                shape[0],
                shape[1:],
                ConvAlgo.Native,
                [kernel_size] * 3,
                [1, 1, 1],
                [kernel_size // 2] * 3,
                [1, 1, 1],
                [0, 0, 0],
                subm=True,
            )
            self._spconv_pairs[kernel_size] = (pairs, counts)
        return self._spconv_pairs[kernel_size]


def _make_level(coords: Tensor) -> SpconvLevel:
    return SpconvLevel(coords, stride=1)


def _submanifold_conv(features: Tensor, weight: Tensor, level: SpconvLevel) -> Tensor:
    slots = weight.shape[0]
    kernel_size = round(slots ** (1.0 / 3.0))
    if kernel_size == 1:
        return functional.submanifold_conv(features, weight, level)
    shape_ok = features.dim() == 2 and features.shape[0] == len(level)
    if not shape_ok or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"features {tuple(features.shape)} / weight {tuple(weight.shape)} do not match "
            f"a level of {len(level)} sites"
        )
    pairs, counts = level.spconv_pairs(kernel_size)
    return _SpconvSubmanifold.apply(
        features.contiguous(), to_spconv(weight).contiguous(), pairs, counts
    )


SPCONV_BACKEND = SparseBackend(
    name="spconv",
    make_level=_make_level,
    submanifold_conv=_submanifold_conv,
    down_conv=functional.down_conv,
    up_conv=functional.up_conv,
)
