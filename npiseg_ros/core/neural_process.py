"""Hierarchical neural process: scene latent z_s, object latents z_o, FiLM modulator, KL.

Paper equations: scene latent Eq. 6, object latent Eq. 7, prototype modulation Eq. 8, KL terms
of the ELBO Eq. 9-10. The prior networks see the clicks (context set); in training the same
networks see ground-truth target points (posterior), and the KL pulls the prior towards it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from npiseg_ros.core.decoder import mlp

MIN_SIGMA = 1e-4


@dataclass
class Gaussian:
    """Diagonal Gaussian with mean ``mu`` and standard deviation ``sigma`` (same shape)."""

    mu: Tensor
    sigma: Tensor

    def sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """Reparameterised samples, shape (num_samples, *mu.shape); seeded by ``generator``."""
        noise = torch.randn((num_samples, *self.mu.shape), generator=generator,
                            device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.sigma * noise

    def kl_to(self, prior: "Gaussian") -> Tensor:
        """KL(self || prior), summed over the last (feature) dimension."""
        variance_ratio = (self.sigma / prior.sigma) ** 2
        mean_term = ((self.mu - prior.mu) / prior.sigma) ** 2
        return 0.5 * (variance_ratio + mean_term - 1.0 - variance_ratio.log()).sum(dim=-1)


class GaussianHead(nn.Module):
    """Two-layer MLP -> (mu, sigma) with sigma = softplus(.) + MIN_SIGMA."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = mlp([dim, dim, 2 * dim])

    def forward(self, x: Tensor) -> Gaussian:
        mu, raw_sigma = self.net(x).chunk(2, dim=-1)
        return Gaussian(mu, F.softplus(raw_sigma) + MIN_SIGMA)


class SceneLatent(nn.Module):
    """p(z_s | X_C): one transformer layer over [scene prototype; object prototypes] (Eq. 6)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.aggregator = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.head = GaussianHead(dim)

    def forward(self, prototypes: Tensor) -> Gaussian:
        """prototypes (C, d), one per label (background first) -> Gaussian over (d,)."""
        tokens = torch.cat([prototypes.mean(dim=0, keepdim=True), prototypes]).unsqueeze(0)
        return self.head(self.aggregator(tokens)[0, 0])


class ObjectLatent(nn.Module):
    """p(z_o^m | z_s, X_C^m) (Eq. 7); ``context`` selects how clicks are aggregated."""

    def __init__(self, dim: int, context: str) -> None:
        super().__init__()
        self.context = context
        self.head = GaussianHead(dim)

    def forward(self, scene_sample: Tensor | None, object_context: Tensor,
                alpha: float) -> Gaussian:
        """scene_sample (S, d) or None; object_context (C, d) -> Gaussian over (S, C, d)."""
        if scene_sample is None:
            return self.head(object_context.unsqueeze(0))
        scene = scene_sample.unsqueeze(1)
        if self.context == "product":
            mixed = alpha * scene * object_context + (1.0 - alpha) * object_context
        else:
            mixed = alpha * scene + (1.0 - alpha) * object_context
        return self.head(mixed)


class PrototypeModulator(nn.Module):
    """FiLM of click prototypes by an object latent sample (Eq. 8).

    gamma is parameterised as 1 + MLP output so that a freshly initialised modulator starts near
    the identity; this is a re-parameterisation, not a change of the model family.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = mlp([dim, dim, 2 * dim])

    def forward(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """latent (..., d) -> (gamma, beta), each (..., d)."""
        delta_gamma, beta = self.net(latent).chunk(2, dim=-1)
        return 1.0 + delta_gamma, beta


def label_means(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean of the rows of ``values`` (P, d) per label in [0, num_classes) -> (C, d).

    Labels with no row get a zero vector.
    """
    sums = values.new_zeros(num_classes, values.shape[1]).index_add_(0, labels, values)
    counts = torch.bincount(labels, minlength=num_classes).to(values.dtype)
    return sums / counts.clamp_min(1.0).unsqueeze(1)


def label_sums(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Sum of the rows of ``values`` (P, d) per label -> (C, d)."""
    return values.new_zeros(num_classes, values.shape[1]).index_add_(0, labels, values)


def at_mean_of(distribution: Gaussian) -> Gaussian:
    """The distribution collapsed onto its mean (sigma 0: every sample is ``mu``)."""
    return Gaussian(distribution.mu, torch.zeros_like(distribution.sigma))


def object_samples(source: Gaussian, scene_sample: Tensor | None, num_samples: int,
                   generator: torch.Generator | None) -> Tensor:
    """(S, C, d) object-latent samples from an object-latent distribution (C, d), or (S, C, d)
    when conditioned on S scene samples."""
    if scene_sample is None:  # one (1, C, d) distribution: draw S samples from it
        return source.sample(num_samples, generator)[:, 0]
    return source.sample(1, generator)[0]  # (S, C, d): one draw per scene-latent sample
