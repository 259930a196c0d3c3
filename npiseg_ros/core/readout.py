"""Monte-Carlo read-out kernels: per-label similarities of S latent samples, in cache-sized
blocks (paper Eq. 11 and 13-14).

Queries (clicks and background queries) are sorted by label, so each label owns a contiguous
run of queries (``label_segments``) and "max over a label's queries" is a slice maximum. The
similarity of a point to a modulated prototype is linear in the (normalised) prototype, so the
sample mean is one product with the mean prototype; the per-sample products are formed in
blocks of tokens that stay in cache. Pure functions of tensors: the model supplies its mask
head (cosine or dot) and the gain of the similarities in its logits.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_segments", "max_per_label", "max_per_label_rows", "combine", "entropy",
           "mean_similarity", "sample_statistics", "ROW_CHUNK", "GEMM_CHUNK", "GEMM_BLOCK"]

ROW_CHUNK = 4096
"""Output rows per block of the per-row softmax over labels: a block's (S, C, rows) samples
(S = 10, C = 9: 1.4 MiB) stay in cache through gather, prior, softmax and mean; 32k-row blocks
(the earlier value) made the 20-click decode of the bundled sweep ~1.5x slower, bit for bit
the same output (scripts/output_fingerprint.py)."""
GEMM_CHUNK = 4096
"""Fewest tokens per block of the Monte-Carlo similarity products; a block has about
``GEMM_BLOCK`` (S*Q, tokens) entries (4 MiB), so it stays in cache: with 20 clicks (S*Q = 240)
~2x faster on a 2-core CPU than one (S*Q, 32k) product written to memory, while few clicks
keep long blocks (short ones cost more per token there)."""
GEMM_BLOCK = 2**20


def label_segments(sorted_labels: Tensor, num_classes: int) -> list[tuple[int, int]]:
    """(start, end) of each label's run in a label-sorted (Q,) int64 query label list."""
    ends = torch.cumsum(torch.bincount(sorted_labels, minlength=num_classes), dim=0).tolist()
    return list(zip([0, *ends[:-1]], ends))


def max_per_label(similarity: Tensor, segments: list[tuple[int, int]]) -> Tensor:
    """(..., Q) -> (..., C): max over each label's queries (Eq. 11); slicing each label's run
    beats a scatter-reduce over every (point, query) pair."""
    return torch.stack([similarity[..., lo:hi].amax(dim=-1) for lo, hi in segments], dim=-1)


def max_per_label_rows(similarity: Tensor, segments: list[tuple[int, int]]) -> Tensor:
    """(..., Q, n) -> (..., C, n): max over each label's queries, query-major layout."""
    return torch.stack([similarity[..., lo, :] if hi - lo == 1
                        else similarity[..., lo:hi, :].amax(dim=-2) for lo, hi in segments],
                       dim=-2)


def combine(prior_logits: Tensor | None, similarity: Tensor, gain: Tensor) -> Tensor:
    """(rows, C) logits from per-label similarities times ``gain`` (the model's learned scale,
    times the correction gate with a prior): alone, or added to the prior's logits."""
    if prior_logits is None:
        return similarity * gain
    return prior_logits + gain * similarity


def entropy(probabilities: Tensor) -> Tensor:
    """(V, C) probabilities -> (V,) predictive entropy, nats."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)


def gemm_block(rows: int) -> int:
    """Tokens per block of a (rows, d) x (d, tokens) similarity product (see ``GEMM_BLOCK``)."""
    return max(GEMM_CHUNK, GEMM_BLOCK // rows)


def normalised(points: Tensor, modulated: Tensor, cosine: bool) -> tuple[Tensor, Tensor]:
    """Unit-length features and prototypes for a cosine mask head; unchanged for a dot head."""
    if cosine:
        return F.normalize(points, dim=-1), F.normalize(modulated, dim=-1)
    return points, modulated


def mean_similarity(points: Tensor, modulated: Tensor, segments: list[tuple[int, int]], *,
                    cosine: bool, cell_of_row: Tensor | None = None) -> Tensor:
    """The mean of ``sample_statistics`` alone (what the training loss reads): (V, C)
    per-label maxima of the sample-mean similarities, in the same blocks, so equal to it."""
    points, modulated = normalised(points, modulated, cosine)
    num_samples, num_queries, _ = modulated.shape
    centre = modulated.mean(dim=0)
    block = gemm_block(num_samples * num_queries)
    mean = torch.cat([max_per_label_rows(centre @ chunk.T, segments)
                      for chunk in points.split(block)], dim=1).T
    return mean if cell_of_row is None else mean[cell_of_row]


def sample_statistics(points: Tensor, modulated: Tensor, segments: list[tuple[int, int]], *,
                      cosine: bool, gain: Tensor, per_sample_softmax: bool,
                      prior_logits: Tensor | None = None, cell_of_row: Tensor | None = None
                      ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Per-label maxima (V, C) of the sample-mean similarities (Eq. 11 before scaling), the
    per-query variance over the S samples (V, Q) and the (V, C) probabilities.

    Args:
        points: (n, d) token features; modulated: (S, Q, d) modulated prototypes.
        cosine: the mask head normalises features and prototypes.
        gain: scalar factor of the similarities in the logits (``combine``).
        per_sample_softmax: the probabilities are the mean over samples of each sample's
            softmax (entropy uncertainty): one (S*Q, d) x (d, n) GEMM gives every sample's
            similarities, and the variance is not computed (None). Otherwise the variance is
            the mean square of products with the centred prototypes, and the probabilities the
            softmax of the mean.
        prior_logits: (V, C) prior logits of the output rows, or None.
        cell_of_row: (V,) int64: the ``points`` are decoder cells; similarities, their
            per-label maxima and variances are computed once per cell, and every output row
            takes its cell's, with its own prior logits in the softmax over labels.

    The products are formed in blocks of tokens (``gemm_block``), so each stays in cache and
    memory is bounded at O(block * S * Q).
    """
    points, modulated = normalised(points, modulated, cosine)
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
    block = gemm_block(num_samples * num_queries)
    offsets = _row_blocks(None if cell_of_row is not None else prior_logits, block)
    means, spreads, probabilities = [], [], []
    for chunk in points.split(block):
        means.append(max_per_label_rows(centre @ chunk.T, segments))             # (C, n)
        products = (rows @ chunk.T).view(num_samples, num_queries, -1)           # (S, Q, n)
        if not per_sample_softmax:
            spreads.append(products.square().mean(dim=0))                        # (Q, n)
        elif cell_of_row is None:  # each row is its own token: finish the block here
            probabilities.append(_mean_softmax(
                gain * max_per_label_rows(products, segments), next(offsets)))
        else:
            spreads.append(max_per_label_rows(products, segments))               # (S, C, n)
    mean = torch.cat(means, dim=1).T                                              # (n, C)
    if cell_of_row is not None:
        mean = mean[cell_of_row]
    if not per_sample_softmax:
        variance = torch.cat(spreads, dim=1).T
        return (mean, variance if cell_of_row is None else variance[cell_of_row],
                combine(prior_logits, mean, gain).softmax(dim=1))
    if cell_of_row is not None:  # every row takes its cell's per-label similarities
        # scaled once per cell, then gathered per row as (S*C, n) column blocks
        per_label = (gain * torch.cat(spreads, dim=2)).view(num_samples * num_classes, -1)
        offsets = _row_blocks(prior_logits, ROW_CHUNK)
        probabilities = [
            _mean_softmax(per_label.index_select(1, cells).view(num_samples, num_classes, -1),
                          offset)
            for cells, offset in zip(cell_of_row.split(ROW_CHUNK), offsets)]
    return mean, None, torch.cat(probabilities)


def _mean_softmax(scaled: Tensor, prior_logits: Tensor | None) -> Tensor:
    """(S, C, n) scaled per-sample label similarities (gain x similarity) + the rows' (C, n)
    prior logits (label-major, see ``_row_blocks``) -> (n, C) mean over the samples of the
    softmax over labels."""
    if prior_logits is not None:
        scaled = scaled + prior_logits.unsqueeze(0)
    return scaled.softmax(dim=1).mean(dim=0).T


def _row_blocks(prior_logits: Tensor | None, size: int) -> Iterator[Tensor | None]:
    """The (V, C) ``prior_logits`` as (C, n) blocks of ``size`` rows each, label-major (one
    transposed copy: added to (S, C, n) similarities, a contiguous last dimension is ~3x
    faster than a transposed view), or None forever without them."""
    if prior_logits is None:
        return itertools.repeat(None)
    return iter(prior_logits.T.contiguous().split(size, dim=1))
