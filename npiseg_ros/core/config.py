"""Typed model configuration (a frozen dataclass), serialisable to YAML/JSON.

Defaults follow the paper (NPISeg3D, ICML 2025) and the research code's settings; options that
differ between paper and code are named here and documented in ``docs/model.md``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from npiseg_ros.core.errors import ConfigError

if TYPE_CHECKING:
    from npiseg_ros.core.geodesic import GraphConfig

INPUT_MODES = ("rgb", "intensity", "none")
MASK_HEADS = ("cosine", "dot")
OBJECT_CONTEXTS = ("mean", "sum", "product")
UNCERTAINTY_MODES = ("auto", "variance", "entropy")
POSITION_ENCODINGS = ("scene", "metric")


@dataclass(frozen=True)
class ModelConfig:
    """Every architectural choice of an NPISeg3D model.

    Attributes:
        backbone: sparse U-Net preset (see ``npiseg_ros.core.backbone.BACKBONE_PRESETS``).
        input_mode: per-point input features: ``rgb`` (3 channels, RGB in [0, 1]),
            ``intensity`` (1 channel) or ``none`` (1 constant channel, geometry only).
        voxel_size: voxel edge in metres (paper: 0.05).
        hidden_dim: width d of features, queries and latents (paper: 128).
        num_heads: attention heads (paper: 8).
        ffn_dim: hidden width of the query feed-forward network (paper: 1024).
        num_decoder_layers: click-attention layers (paper: 4).
        num_background_queries: learnable background queries (paper code: 10).
        fourier_features: random Fourier frequencies per sin/cos half (64 -> 128-d encoding).
        fourier_scale: standard deviation of the random frequency matrix.
        mask_head: ``cosine`` (paper Eq. 11) or ``dot`` (research code).
        use_scene_latent: infer z_s (paper Eq. 6). Off with ``use_object_latent`` off gives the
            deterministic ablation (paper Table 4, row 1).
        use_object_latent: infer z_o per object (paper Eq. 7) and modulate prototypes (Eq. 8).
        object_context: how the object latent network aggregates an object's clicks:
            ``mean`` (default, see docs/model.md), ``sum`` (paper Eq. 7 literally) or
            ``product`` (research code: alpha * z_s * r_m + (1 - alpha) * r_m).
        scene_weight: alpha of Eq. 7, the share of the scene latent in the object latent.
        use_previous_mask: add an encoding of the previous prediction to point features
            (paper B.2), without any cap on the number of objects.
        dropout: dropout in the decoder (0 = none; > 0 enables the MC-dropout baseline).
        position_encoding: ``scene`` (coordinates normalised by the scene's bounding box, the
            research code) or ``metric`` (metres divided by ``position_period_m``: one scale
            for a 100 m sweep and a 5 m room alike).
        position_period_m: metres per unit of the metric encoding.
        geodesic_prior: decode on top of click-conditioned graph distances (``core.geodesic``):
            prior logits -k log(distance), distance features added to the point features, a
            distance bias on click->scene attention, and the learned click-attention logits as
            a gated correction (``docs/model.md``). The decoder then needs ``click_distances``.
        prior_radius: initial background radius R in graph metres (learned): a voxel farther
            than R from every click of an object starts as background.
        graph_neighbours, graph_normal_weight, graph_color_weight: the voxel graph
            (``core.geodesic.GraphConfig``).
        decode_stride: 1 = the click-attention decoder runs on every voxel; s > 1 = on cells
            of s x s x s voxels (mean backbone feature and position per cell; the geodesic
            prior's distances min-pooled per cell) and the labels are read out per voxel:
            the cell's learned similarities plus the voxel's own full-resolution prior logits
            (``docs/model.md``, "Coarse decoding"). Cuts the per-click cost with the cell count.
        distance_horizon_m: graph metres up to which a click's distances are computed (its
            Dijkstra stops there; farther voxels count as unreachable). 0 = the rule of
            ``core.geodesic.distance_limit`` (max(30 m, 4 R)). A model is trained and run with
            the same horizon; a shorter one makes each new click's graph search cheaper.
        calibration_temperature: T of the output probabilities, softmax(logits / T) per
            Monte-Carlo sample (temperature scaling, Guo et al. 2017): fitted after training
            on TRAINING scans (``scripts/fit_temperature.py``) so the probability of the
            predicted label matches how often it is right. Labels never change with T; the
            confidence and the entropy uncertainty do. 1 = the network's own.
    """

    backbone: str = "small"
    input_mode: str = "rgb"
    voxel_size: float = 0.05
    hidden_dim: int = 128
    num_heads: int = 8
    ffn_dim: int = 1024
    num_decoder_layers: int = 4
    num_background_queries: int = 10
    fourier_features: int = 64
    fourier_scale: float = 1.0
    mask_head: str = "cosine"
    use_scene_latent: bool = True
    use_object_latent: bool = True
    object_context: str = "mean"
    scene_weight: float = 0.1
    use_previous_mask: bool = True
    dropout: float = 0.0
    position_encoding: str = "scene"
    position_period_m: float = 5.0
    geodesic_prior: bool = False
    prior_radius: float = 1.5
    graph_neighbours: int = 10
    graph_normal_weight: float = 10.0
    graph_color_weight: float = 10.0
    decode_stride: int = 1
    distance_horizon_m: float = 0.0
    calibration_temperature: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("input_mode", self.input_mode, INPUT_MODES)
        _check_choice("mask_head", self.mask_head, MASK_HEADS)
        _check_choice("object_context", self.object_context, OBJECT_CONTEXTS)
        _check_choice("position_encoding", self.position_encoding, POSITION_ENCODINGS)
        for name in ("position_period_m", "prior_radius"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 metres, got {getattr(self, name)}")
        if self.graph_normal_weight < 0 or self.graph_color_weight < 0:
            raise ConfigError("graph_normal_weight and graph_color_weight must be >= 0")
        if not self.distance_horizon_m >= 0:
            raise ConfigError(f"distance_horizon_m must be >= 0 metres (0 = the default rule), "
                              f"got {self.distance_horizon_m}")
        if not 0.05 <= self.calibration_temperature <= 20.0:
            raise ConfigError(f"calibration_temperature must be in [0.05, 20], "
                              f"got {self.calibration_temperature}")
        if not self.voxel_size > 0:
            raise ConfigError(f"voxel_size must be > 0 metres, got {self.voxel_size}")
        for name in ("hidden_dim", "num_heads", "ffn_dim", "num_decoder_layers",
                     "num_background_queries", "fourier_features", "graph_neighbours",
                     "decode_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})")
        if 2 * self.fourier_features != self.hidden_dim:
            raise ConfigError(
                f"2 * fourier_features ({2 * self.fourier_features}) must equal hidden_dim "
                f"({self.hidden_dim}): the sin/cos encoding is added to features")
        if not 0.0 <= self.scene_weight <= 1.0:
            raise ConfigError(f"scene_weight must be in [0, 1], got {self.scene_weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def in_channels(self) -> int:
        return 3 if self.input_mode == "rgb" else 1

    def graph_config(self) -> "GraphConfig":
        """The voxel graph of the geodesic prior."""
        from npiseg_ros.core.geodesic import GraphConfig

        return GraphConfig(self.graph_neighbours, self.graph_normal_weight,
                           self.graph_color_weight)

    @property
    def probabilistic(self) -> bool:
        return self.use_scene_latent or self.use_object_latent

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**dict(values))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
