"""Named model presets: one small builder per variant, literal keyword arguments."""
from __future__ import annotations

from typing import Any, Callable

from npiseg_ros.core.config import ModelConfig
from npiseg_ros.core.errors import ConfigError
from npiseg_ros.core.model import NPISeg3D


def paper_config(**overrides: Any) -> ModelConfig:
    """The paper's model: Res16UNet34C backbone, 128-d, 8 heads, FFN 1024, 4 layers."""
    values: dict[str, Any] = dict(backbone="res16unet34c", hidden_dim=128, num_heads=8,
                                  ffn_dim=1024, num_decoder_layers=4, fourier_features=64)
    return ModelConfig(**{**values, **overrides})


def small_config(**overrides: Any) -> ModelConfig:
    """CPU preset: halved backbone, 64-d decoder with 3 layers (see docs/model.md)."""
    values: dict[str, Any] = dict(backbone="small", hidden_dim=64, num_heads=4, ffn_dim=256,
                                  num_decoder_layers=3, fourier_features=32)
    return ModelConfig(**{**values, **overrides})


def tiny_config(**overrides: Any) -> ModelConfig:
    """Test/CI preset: seconds to train on a few thousand voxels."""
    values: dict[str, Any] = dict(backbone="tiny", hidden_dim=32, num_heads=4, ffn_dim=64,
                                  num_decoder_layers=2, fourier_features=16,
                                  num_background_queries=4)
    return ModelConfig(**{**values, **overrides})


def prior_config(**overrides: Any) -> ModelConfig:
    """The shipped CPU model: the tiny network decoding on the geodesic prior, metric
    positions and geometry-only input (one constant channel), so one model serves LiDAR with
    or without intensity and RGB-D clouds (their colour enters through the graph)."""
    values: dict[str, Any] = dict(backbone="tiny", hidden_dim=32, num_heads=4, ffn_dim=64,
                                  num_decoder_layers=2, fourier_features=16,
                                  num_background_queries=4, input_mode="none",
                                  position_encoding="metric", geodesic_prior=True)
    return ModelConfig(**{**values, **overrides})


MODEL_PRESETS: dict[str, Callable[..., ModelConfig]] = {
    "paper": paper_config,
    "small": small_config,
    "tiny": tiny_config,
    "prior": prior_config,
}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """Config of a named preset with field overrides (e.g. ``input_mode="intensity"``)."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose from {sorted(MODEL_PRESETS)}")
    return MODEL_PRESETS[name](**overrides)


def build_model(config: ModelConfig, backend: str = "torch") -> NPISeg3D:
    """A freshly initialised model for ``config`` using sparse-conv ``backend``."""
    return NPISeg3D(config, backend=backend)
