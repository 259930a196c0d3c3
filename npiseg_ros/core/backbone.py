"""The sparse residual U-Net backbone of NPISeg3D ("Res16UNet34C" and smaller presets).

Structure (as in the research code's MinkowskiEngine Res16UNet): a stem convolution (kernel 5 in
the paper) at full resolution, four encoder stages each = stride-2 kernel-2 convolution + BN + ReLU
+ residual BasicBlocks, four decoder stages each = transposed stride-2 convolution + BN + ReLU,
concatenation with the encoder features of that resolution (skip), residual blocks; finally a 1×1
convolution (with bias) to ``out_channels``.

Usage::

    net = build_backbone("res16unet34c", in_channels=3, out_channels=128)
    out = net(features, coords)  # (V, 3) float, (V, 4) int64 [batch, x, y, z] -> (V, 128)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .sparse.backends import BACKEND_NAMES, get_backend
from .sparse.coords import check_coords, spatial_order
from .sparse.modules import DownConv3d, SparseBatchNorm, SubmanifoldConv3d, UpConv3d

__all__ = ["BACKBONE_PRESETS", "BackbonePreset", "SparseResUNet", "BasicBlock", "build_backbone"]


@dataclass(frozen=True)
class BackbonePreset:
    """Hyper-parameters of a :class:`SparseResUNet` (see ``BACKBONE_PRESETS``)."""

    planes: tuple[int, int, int, int, int, int, int, int]
    layers: tuple[int, int, int, int, int, int, int, int]
    init_dim: int
    stem_kernel: int
    bn_momentum: float = 0.02


#: Named presets. ``res16unet34c`` is the paper's backbone (37.9 M parameters for 3 → 96 features
#: plus the final 1×1 layer); ``small`` halves the widths and keeps one block per stage (≈2.9 M);
#: ``tiny`` is for tests and CI.
BACKBONE_PRESETS: dict[str, BackbonePreset] = {
    "res16unet34c": BackbonePreset(
        planes=(32, 64, 128, 256, 256, 128, 96, 96),
        layers=(2, 3, 4, 6, 2, 2, 2, 2),
        init_dim=32,
        stem_kernel=5,
    ),
    "small": BackbonePreset(
        planes=(16, 32, 64, 128, 128, 64, 48, 48),
        layers=(1, 1, 1, 1, 1, 1, 1, 1),
        init_dim=16,
        stem_kernel=5,
    ),
    "tiny": BackbonePreset(
        planes=(16, 16, 32, 32, 32, 32, 16, 16),
        layers=(1, 1, 1, 1, 1, 1, 1, 1),
        init_dim=16,
        stem_kernel=3,
    ),
}


class BasicBlock(nn.Module):
    """Two 3×3×3 submanifold convs with BN; a 1×1 conv + BN projects a shortcut of other width."""

    def __init__(self, in_channels: int, channels: int, bn_momentum: float, backend: str) -> None:
        super().__init__()
        self.conv1 = SubmanifoldConv3d(in_channels, channels, 3, backend=backend)
        self.norm1 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.conv2 = SubmanifoldConv3d(channels, channels, 3, backend=backend)
        self.norm2 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.ModuleList | None = None
        if in_channels != channels:
            self.shortcut = nn.ModuleList(
                [
                    SubmanifoldConv3d(in_channels, channels, 1, backend=backend),
                    SparseBatchNorm(channels, momentum=bn_momentum),
                ]
            )

    def forward(self, features: Tensor, level) -> Tensor:
        out = self.relu(self.norm1(self.conv1(features, level)))
        out = self.norm2(self.conv2(out, level))
        if self.shortcut is None:
            residual = features
        else:
            residual = self.shortcut[1](self.shortcut[0](features, level))
        # In place: BatchNorm's backward does not need its output, so autograd allows this.
        out += residual
        return self.relu(out)


class _Stage(nn.Module):
    """A sequence of BasicBlocks at one resolution."""

    def __init__(
        self, in_channels: int, channels: int, blocks: int, bn_momentum: float, backend: str
    ) -> None:
        super().__init__()
        widths = [in_channels] + [channels] * blocks
        self.blocks = nn.ModuleList(
            BasicBlock(widths[i], channels, bn_momentum, backend) for i in range(blocks)
        )

    def forward(self, features: Tensor, level) -> Tensor:
        for block in self.blocks:
            features = block(features, level)
        return features


class SparseResUNet(nn.Module):
    """Res16UNet-style sparse U-Net; rows in = rows out.

    Args:
        in_channels: input feature width ``C_in`` (e.g. 3 for RGB).
        out_channels: output feature width (the model uses 128).
        planes: widths of the 4 encoder then 4 decoder stages.
        layers: BasicBlocks per stage.
        init_dim: width of the full-resolution stem.
        stem_kernel: kernel size of the stem convolution (odd).
        bn_momentum: momentum of every BatchNorm (PyTorch convention).
        backend: sparse-conv backend name (``"torch"`` or ``"spconv"``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        planes: tuple[int, ...],
        layers: tuple[int, ...],
        init_dim: int,
        stem_kernel: int,
        bn_momentum: float = 0.02,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        if len(planes) != 8 or len(layers) != 8:
            raise ConfigError(f"planes and layers need 8 entries, got {planes}, {layers}")
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(f"channels must be positive, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.backend = backend
        self._ops = get_backend(backend)

        def norm(channels: int) -> SparseBatchNorm:
            return SparseBatchNorm(channels, momentum=bn_momentum)

        self.stem = SubmanifoldConv3d(in_channels, init_dim, stem_kernel, backend=backend)
        self.stem_norm = norm(init_dim)
        self.down = nn.ModuleList()
        self.down_norms = nn.ModuleList()
        self.encoder = nn.ModuleList()
        width = init_dim
        skip_widths = [init_dim]
        for stage in range(4):
            self.down.append(DownConv3d(width, width, backend=backend))
            self.down_norms.append(norm(width))
            self.encoder.append(_Stage(width, planes[stage], layers[stage], bn_momentum, backend))
            width = planes[stage]
            skip_widths.append(width)
        self.up = nn.ModuleList()
        self.up_norms = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for stage in range(4, 8):
            self.up.append(UpConv3d(width, planes[stage], backend=backend))
            self.up_norms.append(norm(planes[stage]))
            skip = skip_widths[7 - stage]  # 3, 2, 1, 0: the encoder output at that resolution
            self.decoder.append(
                _Stage(planes[stage] + skip, planes[stage], layers[stage], bn_momentum, backend)
            )
            width = planes[stage]
        self.head = SubmanifoldConv3d(width, out_channels, 1, bias=True, backend=backend)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, features: Tensor, coords: Tensor) -> Tensor:
        """Per-voxel features.

        Args:
            features: ``(V, C_in)`` float voxel features (e.g. RGB in [0, 1]).
            coords: ``(V, 4)`` int64 ``[batch, x, y, z]`` voxel indices (any sign), unique rows.

        Returns:
            ``(V, out_channels)`` features; row ``i`` belongs to input row ``i``.
        """
        _check_inputs(features, coords, self.in_channels)
        # Work in (batch, x, y, z) order: local memory access, row-order-independent results.
        order = spatial_order(coords)
        features = features.index_select(0, order)
        level = self._ops.make_level(coords.index_select(0, order))
        out = self.relu(self.stem_norm(self.stem(features, level)))
        skips = [(out, level)]
        for down, down_norm, stage in zip(self.down, self.down_norms, self.encoder):
            out, level = down(out, level)
            out = stage(self.relu(down_norm(out)), level)
            skips.append((out, level))
        for index, (up, up_norm, stage) in enumerate(zip(self.up, self.up_norms, self.decoder)):
            skip, level = skips[3 - index]
            out = self.relu(up_norm(up(out, level)))
            out = stage(torch.cat([out, skip], dim=1), level)
        out = self.head(out, level)
        # Undo the spatial sort with a gather (index_copy_ scatters element-wise, ~30x slower).
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return out.index_select(0, inverse)


def _check_inputs(features: Tensor, coords: Tensor, in_channels: int) -> None:
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise ValueError("features must be a floating-point torch.Tensor of shape (V, C_in)")
    if features.dim() != 2 or features.shape[1] != in_channels:
        raise ValueError(
            f"features must have shape (V, {in_channels}), got {tuple(features.shape)}"
        )
    check_coords(coords, features.shape[0])
    if features.shape[0] == 0:
        raise ValueError("the backbone needs at least one voxel, got V = 0")
    if features.device != coords.device:
        raise ValueError(f"features on {features.device} but coords on {coords.device}")


def build_backbone(
    preset: str, in_channels: int, out_channels: int, backend: str = "torch"
) -> SparseResUNet:
    """Build a backbone by preset name (``"res16unet34c"``, ``"small"``, ``"tiny"``).

    Raises:
        ConfigError (a ``ValueError``): unknown preset or backend (the message lists valid ones).
    """
    if preset not in BACKBONE_PRESETS:
        raise ConfigError(f"unknown backbone preset {preset!r}; valid: {sorted(BACKBONE_PRESETS)}")
    if backend not in BACKEND_NAMES:
        raise ConfigError(f"unknown sparse backend {backend!r}; valid: {list(BACKEND_NAMES)}")
    config = BACKBONE_PRESETS[preset]
    return SparseResUNet(
        in_channels,
        out_channels,
        planes=config.planes,
        layers=config.layers,
        init_dim=config.init_dim,
        stem_kernel=config.stem_kernel,
        bn_momentum=config.bn_momentum,
        backend=backend,
    )
