"""NPISeg3D: encode a scene once (``encode`` -> ``Scene``), decode labels and uncertainty for
any set of clicks (``decode``); ``train_forward`` is the training decode (posterior latents).

This module holds the ``nn.Module`` and the forward pieces inference and training share: the
backbone embedding, the click-attention decoder pass on the geodesic prior, and the latent
samples. The coarse cells live in ``core.cells``, the blocked Monte-Carlo read-out in
``core.readout``, the training-only posterior path in ``core.posterior``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from npiseg_ros.core import readout
from npiseg_ros.core.backbone import build_backbone
from npiseg_ros.core.cells import DecodeCells, group_cells
from npiseg_ros.core.config import UNCERTAINTY_MODES, ModelConfig
from npiseg_ros.core.decoder import (ClickAttentionDecoder, FourierPositionEncoding,
                                     PreviousMaskEncoder, mlp)
from npiseg_ros.core.geodesic import ClickDistanceCache, VoxelGraph, distance_limit
from npiseg_ros.core.neural_process import (ObjectLatent, PrototypeModulator, SceneLatent,
                                            at_mean_of, label_means, label_sums,
                                            object_samples)
from npiseg_ros.core.posterior import TrainingOutput, train_forward
from npiseg_ros.core.prior import GeodesicPrior
from npiseg_ros.core.scene import PointCloud, Scene, VoxelClicks, encode_cloud

__all__ = ["NPISeg3D", "DecodeOutput", "DecoderPass", "LATENT_MODES"]

LATENT_MODES = ("sample", "mean")


@dataclass
class DecodeOutput:
    """Decoder result for one scene with C = M + 1 labels (0 = background).

    Attributes:
        logits: (V, C) float class logits (Eq. 11: max over a label's clicks of the
            sample-mean similarity, times the learned scale, on the prior's logits).
        probabilities: (V, C) softmax of ``logits``; with ``uncertainty="entropy"`` the mean
            over MC samples of the per-sample softmax instead.
        uncertainty: (V,) per-voxel uncertainty (Eq. 13-14 variance, or predictive entropy,
            nats).
    """

    logits: Tensor
    probabilities: Tensor
    uncertainty: Tensor


@dataclass
class DecoderPass:
    """The click-attention decoder run on one scene and click set, before the latents.

    Attributes:
        points: (T, d) final token features (T = voxels, or cells).
        queries: (Q, d) final queries (clicks and background queries), sorted by label.
        query_labels: (Q,) int64 label of each query.
        segments: (start, end) of each label's run of queries.
        prior_logits: (V, C) the geodesic prior's logits per voxel, or None.
        token_prior_logits: (T, C) those of the tokens (the cells' own with cells).
        cells: the scene's decoder cells, or None.
        auxiliary_logits: (V, C) logits after each decoder layer but the last (only when
            asked for: the training loss reads them).
    """

    points: Tensor
    queries: Tensor
    query_labels: Tensor
    segments: list[tuple[int, int]]
    prior_logits: Tensor | None
    token_prior_logits: Tensor | None
    cells: DecodeCells | None
    auxiliary_logits: list[Tensor]

    @property
    def num_classes(self) -> int:
        return len(self.segments)

    @property
    def cell_of_voxel(self) -> Tensor | None:
        return None if self.cells is None else self.cells.of_voxel


class NPISeg3D(nn.Module):
    """The full model; see ``docs/model.md`` for the architecture and its sources."""

    def __init__(self, config: ModelConfig, backend: str = "torch") -> None:
        """``backend`` picks the sparse-conv implementation (a runtime choice, not saved)."""
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        self.backbone = build_backbone(config.backbone, config.in_channels, dim, backend=backend)
        self.position_encoding = FourierPositionEncoding(config.fourier_features,
                                                         config.fourier_scale)
        self.background_queries = nn.Parameter(torch.randn(config.num_background_queries, dim) * 0.1)
        self.background_positions = nn.Parameter(
            torch.randn(config.num_background_queries, dim) * 0.1)
        self.previous_mask = PreviousMaskEncoder(dim) if config.use_previous_mask else None
        self.decoder = ClickAttentionDecoder(dim, config.num_heads, config.ffn_dim,
                                             config.num_decoder_layers, config.dropout)
        self.query_norm = nn.LayerNorm(dim)
        self.mask_embedding = mlp([dim, dim, dim, dim])
        # Cosine similarities live in [-1, 1]; a learned temperature lets softmax/CE sharpen them.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.scene_latent = SceneLatent(dim, config.num_heads) if config.use_scene_latent else None
        self.object_latent = (ObjectLatent(dim, config.object_context)
                              if config.use_object_latent else None)
        self.modulator = PrototypeModulator(dim) if config.probabilistic else None
        self.prior = (GeodesicPrior(dim, config.prior_radius, config.voxel_size)
                      if config.geodesic_prior else None)

    def distance_limit(self) -> float:
        """Graph metres up to which click distances are computed for this model (its trained
        ``distance_horizon_m``, else ``core.geodesic.distance_limit`` of its learned radius)."""
        if self.prior is None:
            raise ValueError("a model without the geodesic prior uses no click distances")
        return distance_limit(float(self.prior.log_radius.detach().exp()),
                              self.config.distance_horizon_m)

    def position_codes(self, xyz: Tensor) -> Tensor:
        """(V, 3) metres -> (V, d) position encodings of one scene (config.position_encoding)."""
        if self.config.position_encoding == "metric":
            return self.position_encoding.encode_normalised(xyz / self.config.position_period_m)
        return self.position_encoding(xyz, xyz.min(dim=0).values, xyz.max(dim=0).values)

    # ------------------------------------------------------------------ encode
    def encode(self, cloud: PointCloud, *, voxel_size: float | None = None) -> Scene:
        """Voxelise a cloud and run the backbone once (no autograd): the ``Scene`` every
        decode of its clicks reads. ``voxel_size`` metres; None = the model's own (the size
        it was trained at). See ``core.scene.encode_cloud``."""
        size = float(self.config.voxel_size if voxel_size is None else voxel_size)
        return encode_cloud(self, cloud, size)

    def embed(self, features: Tensor, coords: Tensor, xyz: Tensor,
              graph: VoxelGraph | None = None) -> Scene:
        """Backbone over one voxelised scene.

        Args:
            features: (V, in_channels) float per-voxel input features.
            coords: (V, 3) int64 voxel coordinates (unique rows).
            xyz: (V, 3) float voxel positions in metres (used for position encodings).
            graph: the scene's voxel graph (what a geodesic-prior model decodes on), or None.
        """
        batch = coords.new_zeros(coords.shape[0], 1)
        return self.embed_batch(features, torch.cat([batch, coords], dim=1), xyz, [graph])[0]

    def embed_batch(self, features: Tensor, coords: Tensor, xyz: Tensor,
                    graphs: list[VoxelGraph | None] | None = None) -> list[Scene]:
        """Backbone over several scenes; coords (V, 4) int64 = [batch, x, y, z]. One scene
        each, in batch order; ``graphs`` (one per scene) give a geodesic-prior model's scenes
        their voxel graph (training crops)."""
        point_features = self.backbone(features, coords)
        scenes = []
        indices = torch.unique(coords[:, 0]).tolist()
        for position, index in enumerate(indices):
            # one scene (a session's encode): every row, without boolean-mask copies
            rows = slice(None) if len(indices) == 1 else coords[:, 0] == index
            cells = None
            if self.config.decode_stride > 1:
                cells = group_cells(coords[rows, 1:], point_features[rows], xyz[rows],
                                    self.config.decode_stride, self.position_codes)
            scene = Scene(point_features[rows], self.position_codes(xyz[rows]), cells)
            graph = None if graphs is None else graphs[position]
            if graph is not None and self.prior is not None:
                scene.graph_distances = ClickDistanceCache(graph, self.distance_limit())
            scenes.append(scene)
        return scenes

    # ------------------------------------------------------------------ decode
    def decode(self, scene: Scene, clicks: VoxelClicks, previous: Tensor | None = None, *,
               num_samples: int = 10, generator: torch.Generator | None = None,
               uncertainty: str = "auto", latents: str = "sample",
               scene_weight: float | None = None,
               temperature: float | None = None) -> DecodeOutput:
        """Predict every voxel's label from the clicks (inference).

        Args:
            scene: output of :meth:`encode` (or :meth:`embed`, with its graph for prior
                models); its click-distance cache serves the clicks' graph distances.
            clicks: the clicks' voxels and labels (objects 1..M all clicked).
            previous: (V,) int64 previous prediction in [0, M], or None.
            num_samples: Monte-Carlo samples S of the latents (ignored if deterministic).
            generator: seeds the latent samples (same generator state -> same output).
            uncertainty: ``variance`` (Eq. 13-14), ``entropy`` of the MC-mean softmax, or
                ``auto``: entropy for models with the geodesic prior (their spread includes the
                prior's distance margin), variance otherwise.
            latents: ``sample`` (S Monte-Carlo samples, the method) or ``mean`` (one decode
                with every latent at its prior mean, sigma 0; the ablation that shows what the
                sampled latents add).
            scene_weight: alpha of Eq. 7; None uses the config value.
            temperature: T of the probabilities (``ModelConfig.calibration_temperature``);
                None uses the config value. The logits, hence the labels, do not depend on it.
        """
        temperature = (self.config.calibration_temperature if temperature is None
                       else float(temperature))
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if latents not in LATENT_MODES:
            raise ValueError(f"latents must be one of {LATENT_MODES}, got {latents!r}")
        if latents == "mean":
            num_samples = 1
        clicks.check(scene.num_voxels)
        if uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {uncertainty!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if uncertainty == "auto":
            uncertainty = "entropy" if self.prior is not None else "variance"
        state = self.attend(scene, clicks, previous, auxiliary=False)
        if self.modulator is None:
            logits = self.to_voxels(self.token_logits(state, state.points, state.queries), state)
            probabilities = (logits / temperature).softmax(dim=1)
            if uncertainty == "entropy":
                spread = readout.entropy(probabilities)
            else:
                spread = torch.zeros_like(logits[:, 0])
            return DecodeOutput(logits, probabilities, spread)
        embeddings = self.query_embeddings(state.queries)
        alpha = self.config.scene_weight if scene_weight is None else float(scene_weight)
        prototypes = label_means(embeddings, state.query_labels, state.num_classes)
        latent = self.latent_samples(embeddings, state.query_labels, prototypes, alpha,
                                     num_samples, generator, at_mean=latents == "mean")
        gain, prior_logits = self.gain(state.prior_logits), state.prior_logits
        if temperature != 1.0:  # softmax((prior + gain * similarity) / T) per sample
            gain = gain / temperature
            prior_logits = None if prior_logits is None else prior_logits / temperature
        mean, variance, probabilities = readout.sample_statistics(
            state.points, self.modulate(latent, embeddings, state.query_labels), state.segments,
            cosine=self.config.mask_head == "cosine", gain=gain,
            per_sample_softmax=uncertainty == "entropy", prior_logits=prior_logits,
            cell_of_row=state.cell_of_voxel)
        logits = self.combine(state.prior_logits, mean)
        if uncertainty == "entropy":
            spread = readout.entropy(probabilities)
        else:
            # Eq. 13-14: max over a label's clicks, then over labels == max over all queries.
            spread = variance.max(dim=1).values
        return DecodeOutput(logits, probabilities, spread)

    def train_forward(self, scene: Scene, clicks: VoxelClicks, targets: Tensor,
                      previous: Tensor | None = None, *, num_samples: int,
                      generator: torch.Generator | None = None,
                      scene_weight: float | None = None) -> TrainingOutput:
        """The training decode (latents from the posterior, KL terms, the inference path's
        logits); see ``core.posterior.train_forward``."""
        return train_forward(self, scene, clicks, targets, previous, num_samples=num_samples,
                             generator=generator, scene_weight=scene_weight)

    # ------------------------------------------------------------------ forward pieces
    def attend(self, scene: Scene, clicks: VoxelClicks, previous: Tensor | None,
               auxiliary: bool) -> DecoderPass:
        """Tokens on the geodesic prior and the previous mask, then the click-attention
        decoder (``clicks.check`` must have passed). ``auxiliary``: also return the earlier
        layers' per-voxel logits (the decoder computes them per token for its masks anyway)."""
        click_voxels, click_labels = clicks.voxels, clicks.labels
        num_classes = int(click_labels.max()) + 1
        click_features = scene.features[click_voxels]
        cells = scene.cells
        # decoder tokens: every voxel, or the cells of decode_stride^3 voxels
        points = scene.features if cells is None else cells.features
        token_positions = scene.positions if cells is None else cells.positions
        num_tokens = points.shape[0]
        prior_logits = token_prior_logits = attention_bias = token_distances = None
        if self.prior is not None:
            voxel_rows, token_rows = scene.click_distances(click_voxels.tolist())
            click_distances = voxel_rows.to(points.dtype)
            nearest = self.prior.nearest_click_distances(click_distances, click_labels,
                                                         num_classes)
            label_distances = self.prior.cap_background(nearest)
            prior_logits = token_prior_logits = self.prior.logits(label_distances)
            token_distances = click_distances
            if cells is not None:  # the prior at the cells: each cell's nearest voxel
                # (the minimum over a cell of the minimum over a label's clicks is the minimum
                # over the label's clicks of their cell minima: exact)
                token_distances = token_rows.to(points.dtype)
                nearest = self.prior.nearest_click_distances(token_distances, click_labels,
                                                             num_classes)
                label_distances = self.prior.cap_background(nearest)
                token_prior_logits = self.prior.logits(label_distances)
            points = points + self.prior.point_features(nearest, label_distances)
        if self.previous_mask is not None:
            if previous is not None and cells is not None:
                previous = previous[cells.first_voxel]
            points = points + self.previous_mask(previous, click_features, click_labels,
                                                 num_classes, num_tokens)
        background = torch.zeros_like(click_labels[:1]).expand(self.background_queries.shape[0])
        # Queries sorted by label (stable: click order kept within a label) so that every
        # label owns a contiguous run; attention is permutation-equivariant, so this changes
        # nothing but speed.
        query_labels, order = torch.sort(torch.cat([click_labels, background]), stable=True)
        queries = torch.cat([click_features, self.background_queries])[order]
        query_pos = torch.cat([scene.positions[click_voxels], self.background_positions])[order]
        segments = readout.label_segments(query_labels, num_classes)
        if self.prior is not None:
            attention_bias = self.prior.attention_bias(token_distances,
                                                       self.background_queries.shape[0])[order]
        state = DecoderPass(points, queries, query_labels, segments, prior_logits,
                            token_prior_logits, cells, [])

        def predict(layer_points: Tensor, layer_queries: Tensor) -> Tensor:
            return self.token_logits(state, layer_points, layer_queries)

        state.points, state.queries, layer_logits = self.decoder(
            points, token_positions, queries, query_pos, query_labels, predict, attention_bias)
        if auxiliary:  # per voxel: the cell's correction on the voxel's own prior
            state.auxiliary_logits = [self.to_voxels(logits, state) for logits in layer_logits]
        return state

    def token_logits(self, state: DecoderPass, points: Tensor, queries: Tensor) -> Tensor:
        """(T, C) deterministic logits of tokens ``points`` for ``queries`` (one layer's)."""
        similarity = self.similarity(points, self.query_embeddings(queries))
        return self.combine(state.token_prior_logits,
                            readout.max_per_label(similarity, state.segments))

    @staticmethod
    def to_voxels(token_logits: Tensor, state: DecoderPass) -> Tensor:
        """(T, C) logits -> (V, C): a cell's learned part added to each voxel's own prior
        logits (the combination is additive, see ``combine``)."""
        cells = state.cells
        if cells is None:
            return token_logits
        if state.token_prior_logits is None:
            return token_logits[cells.of_voxel]
        return state.prior_logits + (token_logits - state.token_prior_logits)[cells.of_voxel]

    def latent_samples(self, embeddings: Tensor, query_labels: Tensor, prototypes: Tensor,
                       alpha: float, num_samples: int, generator: torch.Generator | None,
                       at_mean: bool = False) -> Tensor:
        """(S, C, d) latent samples from the prior networks (Eq. 6-7): the scene latent from
        the label ``prototypes`` (C, d), the object latents from it and each label's queries;
        ``at_mean``: every latent at its mean (sigma 0)."""
        num_classes = prototypes.shape[0]
        scene_sample = None
        if self.scene_latent is not None:
            scene_prior = self.scene_latent(prototypes)
            scene_source = at_mean_of(scene_prior) if at_mean else scene_prior
            scene_sample = scene_source.sample(num_samples, generator)
        if self.object_latent is None:
            return scene_sample.unsqueeze(1).expand(-1, num_classes, -1)
        object_prior = self.object_latent(
            scene_sample, self.object_context(embeddings, query_labels, num_classes), alpha)
        object_source = at_mean_of(object_prior) if at_mean else object_prior
        return object_samples(object_source, scene_sample, num_samples, generator)

    def modulate(self, latent: Tensor, embeddings: Tensor, query_labels: Tensor) -> Tensor:
        """Eq. 8: every query (click or background query) is modulated by its label's latent;
        (S, C, d) latents, (Q, d) embeddings -> (S, Q, d)."""
        gamma, beta = self.modulator(latent)
        return gamma[:, query_labels] * embeddings + beta[:, query_labels]

    def object_context(self, embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        """(C, d) what the object latent of each label sees: the sum or mean of its rows."""
        if self.config.object_context == "sum":
            return label_sums(embeddings, labels, num_classes)
        return label_means(embeddings, labels, num_classes)

    def query_embeddings(self, queries: Tensor) -> Tensor:
        """(..., d) queries (or tokens) -> the mask head's embeddings."""
        return self.mask_embedding(self.query_norm(queries))

    def similarity(self, points: Tensor, embeddings: Tensor) -> Tensor:
        """points (V, d), embeddings (..., Q, d) -> (..., V, Q) cosine or dot similarity."""
        if self.config.mask_head == "cosine":
            points = F.normalize(points, dim=-1)
            embeddings = F.normalize(embeddings, dim=-1)
        return torch.matmul(points, embeddings.transpose(-1, -2))

    def combine(self, prior_logits: Tensor | None, similarity: Tensor) -> Tensor:
        """(rows, C) logits from per-label similarities: alone (scaled), or as the gated
        correction of the geodesic prior's logits."""
        return readout.combine(prior_logits, similarity, self.gain(prior_logits))

    def gain(self, prior_logits: Tensor | None) -> Tensor:
        """The factor of the similarities in the logits (``combine``): the learned scale, times
        the correction gate when they correct prior logits."""
        if prior_logits is None:
            return self.scale()
        return self.prior.correction_gate * self.scale()

    def scale(self) -> Tensor:
        if self.config.mask_head == "cosine":
            return self.logit_scale.exp()
        return torch.ones_like(self.logit_scale)
