"""Backend registry: which implementation runs the sparse convolutions.

- ``"torch"``: the pure-PyTorch primitives of :mod:`.functional` (always available, CPU and CUDA).
- ``"spconv"``: spconv 2.x, only if it is importable; an optional accelerator that uses the same
  parameters (internal layout), so a model can switch backends without converting weights.

A backend is a :class:`SparseBackend`: it makes the per-forward coordinate level and runs the three
convolution kinds on it. Nothing in the project depends on spconv being installed.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from ..errors import ConfigError
from . import functional
from .coords import CoordinateLevel

__all__ = ["SparseBackend", "available_backends", "get_backend", "BACKEND_NAMES"]


@dataclass(frozen=True)
class SparseBackend:
    """The operations a sparse U-Net needs; ``level`` objects are backend-specific.

    - ``make_level(coords (N, 4) int64) -> level`` (stride 1),
    - ``submanifold_conv(features (N, Cin), weight (k³, Cin, Cout), level) -> (N, Cout)``,
    - ``down_conv(features, weight (8, Cin, Cout), level) -> (features (N_parent, Cout), parent)``,
    - ``up_conv(features (N_parent, Cin), weight (8, Cin, Cout), fine_level) -> (N_fine, Cout)``.
    """

    name: str
    make_level: Callable[[Tensor], Any]
    submanifold_conv: Callable[[Tensor, Tensor, Any], Tensor]
    down_conv: Callable[[Tensor, Tensor, Any], tuple[Tensor, Any]]
    up_conv: Callable[[Tensor, Tensor, Any], Tensor]


def _torch_level(coords: Tensor) -> CoordinateLevel:
    return CoordinateLevel(coords, stride=1)


TORCH_BACKEND = SparseBackend(
    name="torch",
    make_level=_torch_level,
    submanifold_conv=functional.submanifold_conv,
    down_conv=functional.down_conv,
    up_conv=functional.up_conv,
)

#: Every backend name this project knows (not all may be installed).
BACKEND_NAMES = ("torch", "spconv")


def _spconv_installed() -> bool:
    return importlib.util.find_spec("spconv") is not None


def available_backends() -> tuple[str, ...]:
    """Names of the backends usable in this environment (``"torch"`` always first)."""
    return ("torch", "spconv") if _spconv_installed() else ("torch",)


def get_backend(name: str) -> SparseBackend:
    """The backend called ``name``; ``ConfigError`` (a ``ValueError``) if unknown or missing."""
    if name == "torch":
        return TORCH_BACKEND
    if name == "spconv":
        if not _spconv_installed():
            raise ConfigError(
                "backend 'spconv' needs the optional package spconv (pip install spconv, or "
                f"spconv-cu12x for CUDA); available here: {list(available_backends())}"
            )
        try:  # imported lazily: optional dependency, and a broken install must not break "torch"
            from .spconv_backend import SPCONV_BACKEND
        except (ImportError, OSError, RuntimeError) as error:
            message = f"backend 'spconv' is installed but fails to import: {error}"
            raise ConfigError(message) from error
        return SPCONV_BACKEND
    raise ConfigError(f"unknown sparse backend {name!r}; valid: {list(BACKEND_NAMES)}")
