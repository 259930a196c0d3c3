"""Click-attention decoder (the "attention network" of AGILE3D / NPISeg3D).

Clicks are queries initialised from the backbone feature of the clicked voxel. Each layer runs
click->scene cross-attention, a query FFN, click<->click self-attention (one module shared by
all layers) and scene->click cross-attention that updates the point features. From the second
layer on, a query only attends to the points currently predicted as its label (Mask2Former-style
masked attention).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn


class FourierPositionEncoding(nn.Module):
    """Random Fourier features of scene-normalised coordinates.

    The frequency matrix is a buffer drawn once from a fixed seed, stored in checkpoints and
    never re-drawn, so a saved model always sees the same encoding.
    """

    def __init__(self, num_features: int, scale: float) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer(
            "frequencies", torch.randn(3, num_features, generator=generator) * scale)

    def forward(self, xyz: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """Encode (P, 3) metres given the scene's (3,) min and max -> (P, 2 * num_features)."""
        return self.encode_normalised((xyz - lower) / (upper - lower).clamp_min(1e-6))

    def encode_normalised(self, normalised: Tensor) -> Tensor:
        """Encode (P, 3) already normalised coordinates -> (P, 2 * num_features)."""
        projected = (2.0 * math.pi) * normalised @ self.frequencies
        return torch.cat([projected.sin(), projected.cos()], dim=-1)


class AttentionBlock(nn.Module):
    """Post-norm residual multi-head attention: ``norm(query + attn(query, key, value))``."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_proj = nn.Linear(dim, dim)
        self.key_proj = nn.Linear(dim, dim)
        self.value_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, query_pos: Tensor, key_pos: Tensor,
                allowed: Tensor | None = None) -> Tensor:
        """query (Lq, d), key/value source (Lk, d), allowed (Lq, Lk) additive mask or None."""
        heads = self.num_heads
        length_q, dim = query.shape
        length_k = key.shape[0]
        q = self.query_proj(query + query_pos)
        k = self.key_proj(key + key_pos)
        v = self.value_proj(key)
        # Plain softmax attention: SDPA's CPU fallback re-checks the mask for fully masked
        # rows on every call (a pass over heads x Q x V), which _attention_mask already rules out.
        scale = (dim // heads) ** -0.5
        if allowed is None and length_k * 8 <= length_q:
            # Many queries, few keys (scene->click: V points over ~10 clicks). Per-head batched
            # products of shape (V, 8) x (8, keys) are slow on CPU; with the keys and values laid
            # out block-diagonally, (heads * keys, d) with head h's rows non-zero only in head
            # h's columns, every head's logits come from ONE (heads * keys, d) x (d, V) GEMM and
            # the attended values from one (V, heads * keys) x (heads * keys, d) GEMM, already
            # in the concatenated-heads layout. The logits stay key-major (heads, keys, V): the
            # softmax then reduces over a short leading dimension of contiguous rows, several
            # times faster on CPU than over a short last one. Same maths (the zeros add nothing).
            blocks = _head_blocks(heads, dim, q.dtype, q.device)            # (heads, 1, d)
            keys = (k.unsqueeze(0) * blocks).view(heads * length_k, dim)
            values = (v.unsqueeze(0) * blocks).view(heads * length_k, dim)
            logits = torch.matmul(keys * scale, q.T)                        # (heads * Lk, Lq)
            weights = logits.view(heads, length_k, length_q).softmax(dim=1)
            attended = torch.matmul(weights.view(heads * length_k, length_q).T, values)
            attended = self.out_proj(attended)
            return self.norm(query + self.dropout(attended))
        q = q.view(length_q, heads, -1).transpose(0, 1)
        k = k.view(length_k, heads, -1).transpose(0, 1)
        v = v.view(length_k, heads, -1).transpose(0, 1)
        if allowed is None:
            logits = torch.matmul(q * scale, k.transpose(1, 2))
        else:
            logits = torch.baddbmm(allowed.unsqueeze(0), q, k.transpose(1, 2), alpha=scale)
        attended = torch.matmul(logits.softmax(dim=-1), v)
        attended = self.out_proj(attended.transpose(0, 1).reshape(length_q, dim))
        return self.norm(query + self.dropout(attended))


def _head_blocks(heads: int, dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(heads, 1, dim) 0/1 mask: row h is one on head h's dim / heads columns."""
    eye = torch.eye(heads, dtype=dtype, device=device)
    return eye.repeat_interleave(dim // heads, dim=1).unsqueeze(1)


class FeedForward(nn.Module):
    """Post-norm residual two-layer MLP."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.net(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.click_to_scene = AttentionBlock(dim, num_heads, dropout)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.scene_to_click = AttentionBlock(dim, num_heads, dropout)


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PreviousMaskEncoder(nn.Module):
    """Encodes the previous prediction into point features (paper B.2), for any object count.

    The research code one-hot encodes the previous mask into a fixed 15 channels, capping a scene
    at 14 objects. Here a point's code is built from what its previous label *is*: a state
    one-hot (no previous prediction / background / object) and the mean backbone feature of that
    label's clicks. A 4-layer MLP maps it to the feature width. The code depends only on the
    label, so the MLP runs on M + 2 rows and a gather spreads it to the points.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = mlp([dim + 3, dim, dim, dim, dim])

    def forward(self, previous_labels: Tensor | None, click_features: Tensor,
                click_labels: Tensor, num_classes: int, num_points: int) -> Tensor:
        """previous_labels (V,) in [0, num_classes) or None -> (V, d) additive encoding."""
        dim = click_features.shape[1]
        prototypes = click_features.new_zeros(num_classes, dim)
        counts = click_features.new_zeros(num_classes)
        prototypes.index_add_(0, click_labels, click_features)
        counts.index_add_(0, click_labels, torch.ones_like(click_labels, dtype=counts.dtype))
        prototypes = prototypes / counts.clamp_min(1.0).unsqueeze(1)
        state = click_features.new_zeros(num_classes + 1, 3)
        state[0, 0] = 1.0  # row 0: no previous prediction
        state[1, 1] = 1.0  # row 1: background
        state[2:, 2] = 1.0  # rows 2..: objects 1..M
        table = self.net(torch.cat(
            [state, torch.cat([prototypes.new_zeros(1, dim), prototypes])], dim=1))
        if previous_labels is None:
            return table[0].expand(num_points, dim)
        return table[previous_labels + 1]


class ClickAttentionDecoder(nn.Module):
    """Refines click queries and point features; predicts per-layer class logits."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        # One click<->click self-attention shared by all layers, as in the research code.
        self.click_to_click = AttentionBlock(dim, num_heads, dropout)

    def forward(self, points: Tensor, point_pos: Tensor, queries: Tensor, query_pos: Tensor,
                query_labels: Tensor, predict: Callable[[Tensor, Tensor], Tensor],
                attention_bias: Tensor | None = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Run all layers.

        Args:
            points: (V, d) point features; point_pos: (V, d) their position encodings.
            queries: (Q, d) initial queries; query_pos: (Q, d); query_labels: (Q,) int64 label
                (0 = background) of each query.
            predict: callable ``(points, queries) -> (V, C) class logits`` for the layer outputs.
            attention_bias: (Q, V) additive bias of every layer's click->scene attention (the
                geodesic prior's distance decay), or None.

        Returns:
            Final point features (V, d), final queries (Q, d), and the class logits after every
            layer except the last (deterministic auxiliary predictions).
        """
        auxiliary: list[Tensor] = []
        allowed = attention_bias
        for index, layer in enumerate(self.layers):
            queries = layer.click_to_scene(queries, points, query_pos, point_pos, allowed)
            queries = layer.feed_forward(queries)
            queries = self.click_to_click(queries, queries, query_pos, query_pos)
            points = layer.scene_to_click(points, queries, point_pos, query_pos)
            if index + 1 < len(self.layers):
                logits = predict(points, queries)
                auxiliary.append(logits)
                allowed = _attention_mask(logits.detach().argmax(dim=1), query_labels,
                                          points.dtype)
                if attention_bias is not None:
                    allowed = allowed + attention_bias
        return points, queries, auxiliary


def _attention_mask(point_labels: Tensor, query_labels: Tensor, dtype: torch.dtype) -> Tensor:
    """(Q, V) additive mask: 0 where query q may see point v (v predicted as q's label), -inf
    elsewhere.

    A query whose label owns no point would see nothing (softmax of all -inf is NaN), so such
    rows are fully unmasked. An additive float mask avoids the boolean-mask conversions SDPA
    would otherwise redo per call.
    """
    allowed = query_labels.unsqueeze(1) == point_labels.unsqueeze(0)
    allowed |= ~allowed.any(dim=1, keepdim=True)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, float("-inf"))
