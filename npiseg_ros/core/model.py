"""NPISeg3D: encode a scene once, decode labels + uncertainty for any set of clicks."""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from npiseg_ros.core.backbone import build_backbone
from npiseg_ros.core.config import UNCERTAINTY_MODES, ModelConfig
from npiseg_ros.core.decoder import (ClickAttentionDecoder, FourierPositionEncoding,
                                     PreviousMaskEncoder, mlp)
from npiseg_ros.core.geodesic import distance_limit
from npiseg_ros.core.neural_process import (Gaussian, ObjectLatent, PrototypeModulator,
                                            SceneLatent, label_means, label_sums)
from npiseg_ros.core.prior import GeodesicPrior
from npiseg_ros.core.sparse.coords import lexicographic_keys

TARGET_POINTS_PER_LABEL = 50
"""Points sampled per label to build the training-only posterior (research code: 50)."""
_ROW_CHUNK = 32768
"""Output rows per block of the per-row softmax over labels (bounds its memory)."""
_GEMM_CHUNK = 4096
"""Fewest tokens per block of the Monte-Carlo similarity products; a block has about
``_GEMM_BLOCK`` (S*Q, tokens) entries (4 MiB), so it stays in cache: with 20 clicks (S*Q = 240)
~2x faster on a 2-core CPU than one (S*Q, 32k) product written to memory, while few clicks
keep long blocks (short ones cost more per token there)."""
_GEMM_BLOCK = 2**20
LATENT_MODES = ("sample", "mean")


@dataclass
class DecodeCells:
    """The coarse tokens of a model with ``decode_stride`` > 1 (``ModelConfig``).

    Attributes:
        of_voxel: (V,) int64 cell of every voxel.
        features: (N, d) mean backbone feature of each cell's voxels.
        positions: (N, d) position encoding of each cell's mean voxel position.
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
        """Minimum over each cell's voxels along ``dim`` (a V-long dimension of ``values``)."""
        shape = list(values.shape)
        shape[dim] = self.num_cells
        index_shape = [1] * values.dim()
        index_shape[dim] = -1
        index = self.of_voxel.view(index_shape).expand_as(values)
        return values.new_empty(shape).scatter_reduce_(dim, index, values, "amin",
                                                       include_self=False)


@dataclass
class SceneEmbedding:
    """Backbone output for one scene, computed once and reused by every decode.

    Attributes:
        features: (V, d) float point features.
        positions: (V, d) float Fourier encodings of the voxel positions.
        cells: the decoder's coarse tokens (``decode_stride`` > 1), else None.
    """

    features: Tensor
    positions: Tensor
    cells: DecodeCells | None = None

    @property
    def num_voxels(self) -> int:
        return int(self.features.shape[0])

    def detach(self) -> "SceneEmbedding":
        cells = self.cells
        if cells is not None:
            cells = DecodeCells(cells.of_voxel, cells.features.detach(),
                                cells.positions.detach(), cells.first_voxel)
        return SceneEmbedding(self.features.detach(), self.positions.detach(), cells)


@dataclass
class DecodeOutput:
    """Decoder result for one scene with C = M + 1 labels (0 = background).

    Attributes:
        logits: (V, C) class logits (Eq. 11: max over a label's clicks of the sample-mean
            similarity, times the learned scale for cosine heads).
        probabilities: (V, C) softmax of ``logits``; with ``uncertainty="entropy"`` the mean
            over MC samples of the per-sample softmax instead.
        uncertainty: (V,) per-voxel uncertainty (Eq. 13-14 variance, or predictive entropy).
        auxiliary_logits: (V, C) deterministic logits after each decoder layer but the last.
        kl_scene: scalar KL(q(z_s | targets) || p(z_s | clicks)); zero without targets.
        kl_objects: scalar sum over labels of the z_o KL; zero without targets.
        prior_path_logits: training only (``targets`` given): (V, C) logits of the same decode
            with latents drawn from the PRIOR, i.e. exactly what inference computes; ``logits``
            are then the posterior-latent logits.
        prior_sample_logits: training only: (S, V, C) logits of each prior latent sample
            alone (a best-of-S loss on them makes the samples differ where clicks leave the
            mask open, ``npiseg_train.losses``).
        kl_object_terms: training only: (C,) KL of each label's z_o (``kl_objects`` is their
            sum), so a KL floor can apply per latent group.
    """

    logits: Tensor
    probabilities: Tensor
    uncertainty: Tensor
    auxiliary_logits: list[Tensor] = field(default_factory=list)
    kl_scene: Tensor | None = None
    kl_objects: Tensor | None = None
    prior_path_logits: Tensor | None = None
    prior_sample_logits: Tensor | None = None
    kl_object_terms: Tensor | None = None


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
    def encode(self, features: Tensor, coords: Tensor, xyz: Tensor) -> SceneEmbedding:
        """Run the backbone on one scene.

        Args:
            features: (V, in_channels) float per-voxel input features.
            coords: (V, 3) int64 voxel coordinates (unique rows).
            xyz: (V, 3) float voxel positions in metres (used for position encodings).
        """
        batch = coords.new_zeros(coords.shape[0], 1)
        return self.encode_batch(features, torch.cat([batch, coords], dim=1), xyz)[0]

    def encode_batch(self, features: Tensor, coords: Tensor, xyz: Tensor) -> list[SceneEmbedding]:
        """Backbone over several scenes; coords (V, 4) = [batch, x, y, z]. One embedding each."""
        point_features = self.backbone(features, coords)
        scenes = []
        indices = torch.unique(coords[:, 0]).tolist()
        for index in indices:
            # one scene (a session's encode): every row, without boolean-mask copies
            rows = slice(None) if len(indices) == 1 else coords[:, 0] == index
            cells = None
            if self.config.decode_stride > 1:
                cells = self._cells(coords[rows, 1:], point_features[rows], xyz[rows])
            scenes.append(SceneEmbedding(point_features[rows], self.position_codes(xyz[rows]),
                                         cells))
        return scenes

    def _cells(self, coords: Tensor, features: Tensor, xyz: Tensor) -> DecodeCells:
        """Group one scene's voxels into cells of ``decode_stride``^3 voxels."""
        cell = torch.div(coords, self.config.decode_stride, rounding_mode="floor")
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
        return DecodeCells(of_voxel, mean_features, self.position_codes(mean_xyz), first)

    # ------------------------------------------------------------------ decode
    def decode(self, scene: SceneEmbedding, click_voxels: Tensor, click_labels: Tensor,
               previous_labels: Tensor | None = None, num_samples: int = 10,
               generator: torch.Generator | None = None, scene_weight: float | None = None,
               targets: Tensor | None = None, uncertainty: str = "auto",
               click_distances: Tensor | None = None,
               cell_click_distances: Tensor | None = None,
               auxiliary: bool = True, latents: str = "sample") -> DecodeOutput:
        """Predict every voxel's label from the clicks.

        Args:
            scene: output of :meth:`encode`.
            click_voxels: (K,) int64 voxel index of each click.
            click_labels: (K,) int64 label of each click: 0 = background, objects 1..M; every
                object label in 1..M must have at least one click.
            previous_labels: (V,) int64 previous prediction in [0, M], or None.
            num_samples: Monte-Carlo samples S of the latents (ignored if deterministic).
            generator: seeds the latent samples (same generator state -> same output).
            scene_weight: alpha of Eq. 7; None uses the config value.
            targets: (V,) int64 ground-truth labels in [0, M] (-1 = ignore). Training only:
                latents are then drawn from the posterior and the KL terms are returned.
            uncertainty: ``variance`` (Eq. 13-14), ``entropy`` of the MC-mean softmax, or
                ``auto``: entropy for models with the geodesic prior (their spread includes the
                prior's distance margin), variance otherwise.
            click_distances: (K, V) float graph distance from each click's voxel to every
                voxel (``VoxelGraph.distances``); required with ``config.geodesic_prior``.
            cell_click_distances: (K, N) ``click_distances`` min-pooled over the decoder cells
                (``DecodeCells.min_pool``), or None to pool them here. A session caches each
                click's pooled row, so a new click pools only its own.
            auxiliary: False leaves ``DecodeOutput.auxiliary_logits`` empty (inference: only the
                training loss reads the per-voxel logits of the earlier layers; the decoder
                still computes them per token for its attention masks).
            latents: ``sample`` (S Monte-Carlo samples, the method) or ``mean`` (inference
                only: one decode with every latent at its prior mean, sigma 0; the ablation
                that shows what the sampled latents add).
        """
        if latents not in LATENT_MODES:
            raise ValueError(f"latents must be one of {LATENT_MODES}, got {latents!r}")
        if latents == "mean":
            if targets is not None:
                raise ValueError("latents='mean' is an inference mode; training samples")
            num_samples = 1
        num_classes = _check_clicks(click_voxels, click_labels, scene.num_voxels)
        if uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {uncertainty!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if uncertainty == "auto":
            uncertainty = "entropy" if self.prior is not None else "variance"
        click_features = scene.features[click_voxels]
        cells = scene.cells
        # decoder tokens: every voxel, or the cells of decode_stride^3 voxels
        points = scene.features if cells is None else cells.features
        token_positions = scene.positions if cells is None else cells.positions
        num_tokens = points.shape[0]
        prior_logits = token_prior_logits = attention_bias = token_distances = None
        if self.prior is not None:
            if click_distances is None or click_distances.shape != (click_voxels.shape[0],
                                                                    scene.num_voxels):
                raise ValueError("a model with the geodesic prior needs click_distances of shape "
                                 f"(K, V) = ({click_voxels.shape[0]}, {scene.num_voxels})")
            click_distances = click_distances.to(points.dtype)
            nearest = self.prior.nearest_click_distances(click_distances, click_labels,
                                                         num_classes)
            label_distances = self.prior.cap_background(nearest)
            prior_logits = token_prior_logits = self.prior.logits(label_distances)
            token_distances = click_distances
            if cells is not None:  # the prior at the cells: each cell's nearest voxel
                # (the minimum over a cell of the minimum over a label's clicks is the minimum
                # over the label's clicks of their cell minima: exact)
                token_distances = (cells.min_pool(click_distances, 1)
                                   if cell_click_distances is None
                                   else cell_click_distances.to(points.dtype))
                if token_distances.shape != (click_voxels.shape[0], num_tokens):
                    raise ValueError(f"cell_click_distances must be (K, N) = "
                                     f"({click_voxels.shape[0]}, {num_tokens}), "
                                     f"got {tuple(token_distances.shape)}")
                nearest = self.prior.nearest_click_distances(token_distances, click_labels,
                                                             num_classes)
                label_distances = self.prior.cap_background(nearest)
                token_prior_logits = self.prior.logits(label_distances)
            points = points + self.prior.point_features(nearest, label_distances)
        if self.previous_mask is not None:
            if previous_labels is not None and cells is not None:
                previous_labels = previous_labels[cells.first_voxel]
            points = points + self.previous_mask(previous_labels, click_features, click_labels,
                                                 num_classes, num_tokens)
        background = torch.zeros_like(click_labels[:1]).expand(self.background_queries.shape[0])
        # Queries sorted by label (stable: click order kept within a label) so that every
        # label owns a contiguous run; attention is permutation-equivariant, so this changes
        # nothing but speed.
        query_labels, order = torch.sort(torch.cat([click_labels, background]), stable=True)
        queries = torch.cat([click_features, self.background_queries])[order]
        query_pos = torch.cat([scene.positions[click_voxels], self.background_positions])[order]
        segments = _label_segments(query_labels, num_classes)
        if self.prior is not None:
            attention_bias = self.prior.attention_bias(token_distances,
                                                       self.background_queries.shape[0])[order]

        def predict(layer_points: Tensor, layer_queries: Tensor) -> Tensor:
            similarity = self._similarity(layer_points, self._embed(layer_queries))
            return self._combine(token_prior_logits, _max_per_label(similarity, segments))

        points, queries, layer_logits = self.decoder(points, token_positions, queries, query_pos,
                                                     query_labels, predict, attention_bias)
        # per voxel: the cell's correction on the voxel's own prior
        layer_logits = [self._to_voxels(logits, token_prior_logits, prior_logits, cells)
                        for logits in layer_logits] if auxiliary else []
        embeddings = self._embed(queries)
        if self.modulator is None:
            logits = self._to_voxels(predict(points, queries), token_prior_logits, prior_logits,
                                     cells)
            probabilities = logits.softmax(dim=1)
            if uncertainty == "entropy":
                spread = _entropy(probabilities)
            else:
                spread = torch.zeros_like(logits[:, 0])
            return DecodeOutput(logits, probabilities, spread, layer_logits)
        return self._decode_probabilistic(points, embeddings, query_labels, segments,
                                          num_samples, generator, scene_weight, targets,
                                          uncertainty, layer_logits, prior_logits,
                                          None if cells is None else cells.of_voxel,
                                          at_mean=latents == "mean")

    @staticmethod
    def _to_voxels(token_logits: Tensor, token_prior: Tensor | None, voxel_prior: Tensor | None,
                   cells: DecodeCells | None) -> Tensor:
        """(tokens, C) logits -> (V, C): a cell's learned part added to each voxel's own prior
        logits (the combination is additive, see ``_combine``)."""
        if cells is None:
            return token_logits
        if token_prior is None:
            return token_logits[cells.of_voxel]
        return voxel_prior + (token_logits - token_prior)[cells.of_voxel]

    def _combine(self, prior_logits: Tensor | None, similarity: Tensor) -> Tensor:
        """(V, C) logits from per-label similarities: alone (scaled), or as the gated
        correction of the geodesic prior's logits."""
        if prior_logits is None:
            return similarity * self._gain(None)
        return prior_logits + self._gain(prior_logits) * similarity

    def _gain(self, prior_logits: Tensor | None) -> Tensor:
        """The factor of the similarities in the logits (``_combine``): the learned scale, times
        the correction gate when they correct prior logits."""
        if prior_logits is None:
            return self._scale()
        return self.prior.correction_gate * self._scale()

    def _decode_probabilistic(self, points: Tensor, embeddings: Tensor, query_labels: Tensor,
                              segments: list[tuple[int, int]], num_samples: int,
                              generator: torch.Generator | None, scene_weight: float | None,
                              targets: Tensor | None, uncertainty: str,
                              auxiliary: list[Tensor],
                              prior_logits: Tensor | None = None,
                              cell_of_voxel: Tensor | None = None,
                              at_mean: bool = False) -> DecodeOutput:
        alpha = self.config.scene_weight if scene_weight is None else float(scene_weight)
        num_classes = len(segments)
        prior_prototypes = label_means(embeddings, query_labels, num_classes)
        target_rows = target_labels = None
        if targets is not None:
            target_rows, target_labels = _sample_targets(targets, num_classes, generator)
            token_rows = target_rows if cell_of_voxel is None else cell_of_voxel[target_rows]
            target_embeddings = self._embed(points[token_rows])
        kl_scene = kl_objects = points.new_zeros(())
        kl_object_terms = None

        scene_sample = None
        if self.scene_latent is not None:
            scene_prior = self.scene_latent(prior_prototypes)
            scene_source = _at_mean(scene_prior) if at_mean else scene_prior
            if targets is not None:
                present = torch.bincount(target_labels, minlength=num_classes) > 0
                posterior_prototypes = torch.where(
                    present.unsqueeze(1),
                    label_means(target_embeddings, target_labels, num_classes), prior_prototypes)
                scene_source = self.scene_latent(posterior_prototypes)
                kl_scene = scene_source.kl_to(scene_prior)
            scene_sample = scene_source.sample(num_samples, generator)

        if self.object_latent is not None:
            object_prior = self.object_latent(
                scene_sample, self._object_context(embeddings, query_labels, num_classes), alpha)
            object_source = _at_mean(object_prior) if at_mean else object_prior
            if targets is not None:
                object_source = self.object_latent(
                    scene_sample,
                    self._object_context(target_embeddings, target_labels, num_classes), alpha)
                kl_object_terms = object_source.kl_to(object_prior).mean(dim=0)
                kl_objects = kl_object_terms.sum()
            latent = _object_samples(object_source, scene_sample, num_samples, generator)
        else:
            latent = scene_sample.unsqueeze(1).expand(-1, num_classes, -1)

        prior_path_logits = prior_sample_logits = None
        if targets is not None:
            # The inference path: latents from the prior networks (the scene sample from the
            # scene prior, the object latents from the object prior), with gradient, so the
            # segmentation loss trains what the node runs (the posterior gets its own loss).
            # (a probabilistic model has at least one of the two latents)
            prior_latent = self._prior_latent(embeddings, query_labels, num_classes,
                                              prior_prototypes, alpha, num_samples, generator)
            prior_modulated = self._modulate(prior_latent, embeddings, query_labels)
            prior_mean, _, _ = self._sample_statistics(
                points, prior_modulated, segments,
                per_sample_softmax=False, prior_logits=prior_logits, cell_of_row=cell_of_voxel)
            prior_path_logits = self._combine(prior_logits, prior_mean)
            prior_sample_logits = self._per_sample_logits(points, prior_modulated, segments,
                                                          prior_logits, cell_of_voxel)

        mean, variance, probabilities = self._sample_statistics(
            points, self._modulate(latent, embeddings, query_labels), segments,
            per_sample_softmax=uncertainty == "entropy", prior_logits=prior_logits,
            cell_of_row=cell_of_voxel)
        logits = self._combine(prior_logits, mean)
        if uncertainty == "entropy":
            spread = _entropy(probabilities)
        else:
            # Eq. 13-14: max over a label's clicks, then over labels == max over all queries.
            spread = variance.max(dim=1).values
        return DecodeOutput(logits, probabilities, spread, auxiliary, kl_scene, kl_objects,
                            prior_path_logits, prior_sample_logits, kl_object_terms)

    def _per_sample_logits(self, points: Tensor, modulated: Tensor,
                           segments: list[tuple[int, int]], prior_logits: Tensor | None,
                           cell_of_row: Tensor | None) -> Tensor:
        """(S, V, C) logits of each latent sample (training: crops of <= ~50k voxels)."""
        if self.config.mask_head == "cosine":
            points = F.normalize(points, dim=-1)
            modulated = F.normalize(modulated, dim=-1)
        per_label = _max_per_label_rows(torch.matmul(modulated, points.T), segments)  # (S, C, n)
        if cell_of_row is not None:
            per_label = per_label[..., cell_of_row]
        return self._combine(prior_logits, per_label.transpose(1, 2))

    def _prior_latent(self, embeddings: Tensor, query_labels: Tensor, num_classes: int,
                      prior_prototypes: Tensor, alpha: float, num_samples: int,
                      generator: torch.Generator | None) -> Tensor:
        """(S, C, d) latent samples drawn from the prior networks only (inference path)."""
        scene_sample = None
        if self.scene_latent is not None:
            scene_sample = self.scene_latent(prior_prototypes).sample(num_samples, generator)
        if self.object_latent is None:
            return scene_sample.unsqueeze(1).expand(-1, num_classes, -1)
        object_prior = self.object_latent(
            scene_sample, self._object_context(embeddings, query_labels, num_classes), alpha)
        return _object_samples(object_prior, scene_sample, num_samples, generator)

    def _modulate(self, latent: Tensor, embeddings: Tensor, query_labels: Tensor) -> Tensor:
        """Eq. 8: every query (click or background query) is modulated by its label's latent."""
        gamma, beta = self.modulator(latent)
        return gamma[:, query_labels] * embeddings + beta[:, query_labels]

    def _sample_statistics(self, points: Tensor, modulated: Tensor, segments: list[tuple[int, int]],
                           per_sample_softmax: bool, prior_logits: Tensor | None = None,
                           cell_of_row: Tensor | None = None
                           ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Per-label maxima (V, C) of the sample-mean similarities (Eq. 11 before scaling),
        the per-query variance over the S samples (V, Q) and the (V, C) probabilities.

        The similarity is linear in the (normalised) prototype, so the sample mean is one product
        with the mean prototype. With ``per_sample_softmax`` (entropy uncertainty) the
        probabilities are the mean over samples of each sample's softmax: one (S*Q, d) x (d, n)
        GEMM gives every sample's similarities, and the variance is not computed (None: that
        uncertainty does not use it). Otherwise the variance is the mean square of products with
        the centred prototypes, and the probabilities the softmax of the mean. The products are
        formed in blocks of tokens (about ``_GEMM_BLOCK`` (S*Q, tokens) entries, at least
        ``_GEMM_CHUNK`` tokens), so each product stays in cache and memory is bounded at
        O(block * S * Q).

        With ``cell_of_row`` (V,) the ``points`` are decoder cells: similarities, their
        per-label maxima and variances are computed once per cell, and every output row takes
        its cell's, with its own prior logits in the softmax over labels.
        """
        if self.config.mask_head == "cosine":
            points = F.normalize(points, dim=-1)
            modulated = F.normalize(modulated, dim=-1)
        num_samples, num_queries, dim = modulated.shape
        num_classes = len(segments)
        centre = modulated.mean(dim=0)
        if per_sample_softmax:
            rows = modulated.reshape(num_samples * num_queries, dim)
        else:
            rows = (modulated - centre).reshape(num_samples * num_queries, dim)
        # Query-major layout (Q, n): per-label maxima and the softmax over labels then reduce
        # over short leading dimensions of contiguous rows (several times faster on CPU than
        # slicing the last dimension of (n, S, Q)). Results are returned as (V, .) views.
        block = max(_GEMM_CHUNK, _GEMM_BLOCK // (num_samples * num_queries))
        offsets = _row_blocks(None if cell_of_row is not None else prior_logits, block)
        means, spreads, probabilities = [], [], []
        for chunk in points.split(block):
            means.append(_max_per_label_rows(centre @ chunk.T, segments))           # (C, n)
            products = (rows @ chunk.T).view(num_samples, num_queries, -1)           # (S, Q, n)
            if not per_sample_softmax:
                spreads.append(products.square().mean(dim=0))                        # (Q, n)
            elif cell_of_row is None:  # each row is its own token: finish the block here
                probabilities.append(self._mean_softmax(
                    self._gain(prior_logits) * _max_per_label_rows(products, segments),
                    next(offsets)))
            else:
                spreads.append(_max_per_label_rows(products, segments))              # (S, C, n)
        mean = torch.cat(means, dim=1).T                                              # (n, C)
        if cell_of_row is not None:
            mean = mean[cell_of_row]
        if not per_sample_softmax:
            variance = torch.cat(spreads, dim=1).T
            return (mean, variance if cell_of_row is None else variance[cell_of_row],
                    self._combine(prior_logits, mean).softmax(dim=1))
        if cell_of_row is not None:  # every row takes its cell's per-label similarities
            # scaled once per cell, then gathered per row as (S*C, n) column blocks
            per_label = (self._gain(prior_logits) * torch.cat(spreads, dim=2)).view(
                num_samples * num_classes, -1)                                       # (S*C, N)
            offsets = _row_blocks(prior_logits, _ROW_CHUNK)
            probabilities = [
                self._mean_softmax(per_label.index_select(1, cells).view(
                    num_samples, num_classes, -1), offset)
                for cells, offset in zip(cell_of_row.split(_ROW_CHUNK), offsets)]
        return mean, None, torch.cat(probabilities)

    @staticmethod
    def _mean_softmax(scaled: Tensor, prior_logits: Tensor | None) -> Tensor:
        """(S, C, n) scaled per-sample label similarities (``_gain`` x similarity) + the rows'
        (C, n) prior logits (label-major, see ``_row_blocks``) -> (n, C) mean over the samples
        of the softmax over labels."""
        if prior_logits is not None:
            scaled = scaled + prior_logits.unsqueeze(0)
        return scaled.softmax(dim=1).mean(dim=0).T

    def _object_context(self, embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        if self.config.object_context == "sum":
            return label_sums(embeddings, labels, num_classes)
        return label_means(embeddings, labels, num_classes)

    def _embed(self, queries: Tensor) -> Tensor:
        return self.mask_embedding(self.query_norm(queries))

    def _similarity(self, points: Tensor, embeddings: Tensor) -> Tensor:
        """points (V, d), embeddings (..., Q, d) -> (..., V, Q) cosine or dot similarity."""
        if self.config.mask_head == "cosine":
            points = F.normalize(points, dim=-1)
            embeddings = F.normalize(embeddings, dim=-1)
        return torch.matmul(points, embeddings.transpose(-1, -2))

    def _scale(self) -> Tensor:
        if self.config.mask_head == "cosine":
            return self.logit_scale.exp()
        return torch.ones_like(self.logit_scale)


def _at_mean(distribution: Gaussian) -> Gaussian:
    """The distribution collapsed onto its mean (sigma 0: every sample is ``mu``)."""
    return Gaussian(distribution.mu, torch.zeros_like(distribution.sigma))


def _object_samples(source: Gaussian, scene_sample: Tensor | None, num_samples: int,
                    generator: torch.Generator | None) -> Tensor:
    """(S, C, d) object-latent samples from an object-latent distribution."""
    if scene_sample is None:  # one (1, C, d) distribution: draw S samples from it
        return source.sample(num_samples, generator)[:, 0]
    return source.sample(1, generator)[0]  # (S, C, d): one draw per scene-latent sample


def _row_blocks(prior_logits: Tensor | None, size: int) -> Iterator[Tensor | None]:
    """The (V, C) ``prior_logits`` as (C, n) blocks of ``size`` rows each, label-major (one
    transposed copy: added to (S, C, n) similarities, a contiguous last dimension is ~3x
    faster than a transposed view), or None forever without them."""
    if prior_logits is None:
        return itertools.repeat(None)
    return iter(prior_logits.T.contiguous().split(size, dim=1))


def _check_clicks(click_voxels: Tensor, click_labels: Tensor, num_voxels: int) -> int:
    """Validate decoder click inputs; return C = M + 1."""
    if click_voxels.ndim != 1 or click_voxels.shape != click_labels.shape:
        raise ValueError("click_voxels and click_labels must be 1-D of equal length, got "
                         f"{tuple(click_voxels.shape)} and {tuple(click_labels.shape)}")
    if click_voxels.numel() == 0:
        raise ValueError("at least one click is needed to decode")
    if int(click_voxels.min()) < 0 or int(click_voxels.max()) >= num_voxels:
        raise ValueError(f"click voxel indices must lie in [0, {num_voxels})")
    if int(click_labels.min()) < 0:
        raise ValueError("click labels must be >= 0 (0 = background)")
    num_objects = int(click_labels.max())
    present = torch.bincount(click_labels, minlength=num_objects + 1)[1:] > 0
    if not bool(present.all()):
        missing = (torch.nonzero(~present).flatten() + 1).tolist()
        raise ValueError(f"object labels must be contiguous 1..M; labels {missing} have no click")
    return num_objects + 1


def _max_per_label(similarity: Tensor, segments: list[tuple[int, int]]) -> Tensor:
    """(..., Q) -> (..., C): max over each label's queries (Eq. 11).

    Queries are sorted by label in :meth:`NPISeg3D.decode`, so each label owns a contiguous
    slice ``segments[c]``; slicing beats a scatter-reduce over every (point, query) pair.
    """
    return torch.stack([similarity[..., lo:hi].amax(dim=-1) for lo, hi in segments], dim=-1)


def _max_per_label_rows(similarity: Tensor, segments: list[tuple[int, int]]) -> Tensor:
    """(..., Q, n) -> (..., C, n): max over each label's queries, query-major layout."""
    return torch.stack([similarity[..., lo, :] if hi - lo == 1
                        else similarity[..., lo:hi, :].amax(dim=-2) for lo, hi in segments],
                       dim=-2)


def _label_segments(sorted_labels: Tensor, num_classes: int) -> list[tuple[int, int]]:
    """(start, end) of each label's run in a label-sorted query list."""
    ends = torch.cumsum(torch.bincount(sorted_labels, minlength=num_classes), dim=0).tolist()
    return list(zip([0, *ends[:-1]], ends))


def _entropy(probabilities: Tensor) -> Tensor:
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)


def _sample_targets(targets: Tensor, num_classes: int,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Pick up to TARGET_POINTS_PER_LABEL random voxels of each label (ignoring -1)."""
    valid = torch.nonzero((targets >= 0) & (targets < num_classes)).flatten()
    labels = targets[valid]
    scores = torch.rand(valid.shape[0], generator=generator, device=targets.device)
    order = torch.argsort(labels.to(scores.dtype) * 2.0 + scores)
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels, minlength=num_classes)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(order.shape[0], device=targets.device) - starts[sorted_labels]
    keep = order[rank < TARGET_POINTS_PER_LABEL]
    return valid[keep], labels[keep]
