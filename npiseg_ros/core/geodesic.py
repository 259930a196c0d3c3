"""Geodesic (graph) distances over a voxel k-NN graph: the geometric prior of the model.

Region growing is a strong segmenter on real LiDAR: points of one object are connected by short
hops over smooth surfaces, and a click's label spreads along them. The graph here joins each
voxel to its k nearest voxels with an edge cost that grows with distance, with the change of
surface normal across the edge and with colour change. Multi-source Dijkstra from a click gives
every voxel its graph distance to it.

Both the non-learned ``--baseline graph`` segmenter and the learned model's prior use this one
graph, so the model starts where the baseline is (``docs/model.md``, "Geodesic prior").
Graph distances are invariant under rotations, flips and translations of the cloud, so training
can cache the graph of a scene and augment only the network's input positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

__all__ = ["GraphConfig", "VoxelGraph", "build_voxel_graph", "distance_limit",
           "ClickDistanceCache", "smallest_eigenvectors"]

EDGE_EPSILON = 1e-9
"""Added to every edge cost: scipy drops explicit zeros, which would disconnect duplicates."""


def distance_limit(radius: float, horizon: float = 0.0) -> float:
    """Graph metres beyond which the prior's distances are not computed (Dijkstra stops).

    ``horizon`` > 0 (``ModelConfig.distance_horizon_m``, what the model was trained with)
    is used as it is. Otherwise: a voxel farther than the background radius R from every
    object click is background whatever its exact distances, so Dijkstra may stop well beyond
    R; the margin of max(30 m, 4 R) keeps the distance features (exp(-d / 8 m)) and the
    attention decay meaningful.
    """
    if horizon > 0:
        return float(horizon)
    return max(30.0, 4.0 * radius)


@dataclass(frozen=True)
class GraphConfig:
    """How the voxel graph is built.

    Attributes:
        num_neighbours: k of the k-NN graph.
        normal_weight: extra cost factor for a 90-degree normal change across an edge.
        color_weight: extra cost factor per unit of RGB distance (colours in [0, 1]).
    """

    num_neighbours: int = 10
    normal_weight: float = 10.0
    color_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.num_neighbours < 1:
            raise ValueError(f"num_neighbours must be >= 1, got {self.num_neighbours}")
        if self.normal_weight < 0 or self.color_weight < 0:
            raise ValueError("normal_weight and color_weight must be >= 0")


def _normals(points: np.ndarray, neighbourhoods: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals: smallest-eigenvalue eigenvector of each point's neighbourhood."""
    # Coordinate-major (3, V, k): the six distinct covariance entries are row-wise dot products
    # of contiguous (V, k) arrays, ~3x faster than a batched (3, k) x (k, 3) matmul per voxel.
    local = points.T[:, neighbourhoods]
    local -= local.mean(axis=2, keepdims=True)
    covariance = np.empty((len(points), 3, 3))
    for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)):
        covariance[:, i, j] = np.einsum("vk,vk->v", local[i], local[j])
        covariance[:, j, i] = covariance[:, i, j]
    return smallest_eigenvectors(covariance)


def smallest_eigenvectors(matrices: np.ndarray, separation: float = 1e-3) -> np.ndarray:
    """(V, 3) unit eigenvector of the smallest eigenvalue of each symmetric (V, 3, 3) matrix.

    Closed form, ~3x faster than ``np.linalg.eigh`` on a sweep's 90k neighbourhoods: the
    eigenvalues from the trigonometric solution of the characteristic cubic, the eigenvector as
    the longest cross product of two rows of ``A - lambda_min I``. Where that vector is not
    well defined (the two smallest eigenvalues closer than ``separation`` x the eigenvalue
    spread: points on a line, an isotropic blob), those matrices go through ``eigh``, so the
    result is ``eigh``'s up to sign and rounding everywhere.
    """
    a00, a11, a22 = matrices[:, 0, 0], matrices[:, 1, 1], matrices[:, 2, 2]
    a01, a02, a12 = matrices[:, 0, 1], matrices[:, 0, 2], matrices[:, 1, 2]
    mean = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - mean, a11 - mean, a22 - mean
    off = a01 * a01 + a02 * a02 + a12 * a12
    scale = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off) / 6.0)
    safe = np.where(scale > 0, scale, 1.0)
    determinant = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02)
                   + a02 * (a01 * a12 - b11 * a02)) / safe ** 3
    angle = np.arccos(np.clip(determinant / 2.0, -1.0, 1.0)) / 3.0
    largest = mean + 2.0 * scale * np.cos(angle)
    smallest = mean + 2.0 * scale * np.cos(angle + 2.0 * np.pi / 3.0)
    middle = 3.0 * mean - largest - smallest
    shifted = matrices - smallest[:, None, None] * np.eye(3)
    rows = shifted[:, 0], shifted[:, 1], shifted[:, 2]
    crosses = np.stack([np.cross(rows[0], rows[1]), np.cross(rows[0], rows[2]),
                        np.cross(rows[1], rows[2])], axis=1)
    lengths = np.einsum("vki,vki->vk", crosses, crosses)
    best = lengths.argmax(axis=1)
    index = np.arange(len(matrices))
    with np.errstate(divide="ignore", invalid="ignore"):
        vectors = crosses[index, best] / np.sqrt(lengths[index, best])[:, None]
    unclear = ~(middle - smallest > separation * (largest - smallest))
    unclear |= ~np.isfinite(vectors).all(axis=1)
    if unclear.any():
        vectors[unclear] = np.linalg.eigh(matrices[unclear])[1][:, :, 0]
    return vectors


class VoxelGraph:
    """A symmetric sparse cost graph over V voxels with single- and multi-source distances.

    Build it with :func:`build_voxel_graph`; ``subgraph`` restricts it to a subset of voxels
    (training crops reuse the graph of the whole scene).
    """

    def __init__(self, matrix: csr_matrix, symmetric: bool = False) -> None:
        """``matrix``: edge costs (an edge given in one direction joins both ways; the k-NN
        costs are symmetric). It is stored symmetrised once, so each Dijkstra runs on it as a
        directed graph instead of scipy re-symmetrising it per call (~5 ms on a sweep);
        ``symmetric=True`` says it already is (a subgraph)."""
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"graph matrix must be square, got {matrix.shape}")
        matrix = matrix.tocsr()
        self.matrix = matrix if symmetric else matrix.maximum(matrix.T).tocsr()

    @property
    def num_voxels(self) -> int:
        return int(self.matrix.shape[0])

    def distances(self, sources: np.ndarray | list[int], limit: float = np.inf) -> np.ndarray:
        """(len(sources), V) float32 graph distance from each source voxel (inf if unreachable
        or farther than ``limit``)."""
        sources = np.asarray(sources, dtype=np.int64).reshape(-1)
        if sources.size == 0:
            return np.zeros((0, self.num_voxels), np.float32)
        if sources.min() < 0 or sources.max() >= self.num_voxels:
            raise IndexError(f"source voxels must lie in [0, {self.num_voxels})")
        result = dijkstra(self.matrix, directed=True, indices=sources, limit=limit)
        return np.atleast_2d(result).astype(np.float32)

    def nearest_distance(self, sources: np.ndarray | list[int],
                         limit: float = np.inf) -> np.ndarray:
        """(V,) float64 distance to the nearest of ``sources`` (one multi-source pass)."""
        sources = np.asarray(sources, dtype=np.int64).reshape(-1)
        if sources.size == 0:
            return np.full(self.num_voxels, np.inf)
        return dijkstra(self.matrix, directed=True, indices=sources, min_only=True,
                        limit=limit)

    def subgraph(self, voxels: np.ndarray) -> "VoxelGraph":
        """The graph induced on ``voxels`` (indices into this graph), renumbered 0..n-1."""
        voxels = np.asarray(voxels, dtype=np.int64)
        return VoxelGraph(self.matrix[voxels][:, voxels], symmetric=True)


class ClickDistanceCache:
    """Graph distances from clicked voxels, one single-source Dijkstra per NEW voxel (a click
    sequence adds one voxel at a time; the session and the training loop both ask for all)."""

    def __init__(self, graph: VoxelGraph, limit: float) -> None:
        self.graph = graph
        self.limit = float(limit)
        self._rows: dict[int, np.ndarray] = {}
        self._order: list[int] = []            # what ``_stack[:len(_order)]`` holds, in order
        self._stack = np.empty((0, graph.num_voxels), np.float32)

    def rows(self, voxels: np.ndarray | list[int]) -> np.ndarray:
        """(K, V) float32 distances from each of ``voxels`` (in their order)."""
        voxels = [int(v) for v in np.asarray(voxels).reshape(-1)]
        missing = sorted(set(voxels) - set(self._rows))
        if missing:
            for voxel, row in zip(missing, self.graph.distances(missing, limit=self.limit)):
                self._rows[voxel] = row
        return np.stack([self._rows[v] for v in voxels])

    def ordered_rows(self, voxels: np.ndarray | list[int]) -> np.ndarray:
        """(K, V) float32 like :meth:`rows`, as a view of one buffer that keeps the order of
        the previous call: a click sequence grows or shrinks at its end, so each call copies
        only the rows past the common prefix (one new click: one row) instead of stacking all
        K rows again. The view is valid until the next call and must not be written to."""
        voxels = [int(v) for v in np.asarray(voxels).reshape(-1)]
        count = len(voxels)
        if count > self._stack.shape[0]:
            grown = np.empty((max(count, 2 * self._stack.shape[0], 8), self.graph.num_voxels),
                             np.float32)
            grown[:len(self._order)] = self._stack[:len(self._order)]
            self._stack = grown
        same = 0
        for old, new in zip(self._order, voxels):
            if old != new:
                break
            same += 1
        if same < count:
            self._stack[same:count] = self.rows(voxels[same:])
        self._order = voxels
        return self._stack[:count]


def build_voxel_graph(points: np.ndarray, colors: np.ndarray | None = None,
                      config: GraphConfig = GraphConfig()) -> VoxelGraph:
    """The k-NN cost graph of voxel positions ``points`` (V, 3) metres.

    Edge cost = length * (1 + normal_weight * (1 - |cos normal angle|)) * (1 + color_weight *
    |RGB change|); ``colors`` (V, 3) in [0, 1] or uint8, or None. Normals need k >= 3.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 1:
        raise ValueError(f"points must be (V >= 1, 3), got {points.shape}")
    if len(points) == 1:
        return VoxelGraph(csr_matrix((1, 1)))
    k = min(config.num_neighbours + 1, len(points))
    length, neighbours = cKDTree(points).query(points, k=k, workers=-1)  # exact, all cores
    length, neighbours = length[:, 1:], neighbours[:, 1:]
    cost = length.copy()
    if k >= 4 and config.normal_weight > 0:
        normals = _normals(points, np.concatenate([np.arange(len(points))[:, None], neighbours],
                                                  axis=1))
        cosine = np.abs(np.einsum("vi,vki->vk", normals, normals[neighbours]))
        cost *= 1.0 + config.normal_weight * (1.0 - cosine)
    if colors is not None and config.color_weight > 0:
        rgb = np.asarray(colors, dtype=np.float64)
        if rgb.shape != points.shape:
            raise ValueError(f"colors must be (V, 3) like points, got {rgb.shape}")
        rgb = rgb / 255.0 if rgb.max(initial=0.0) > 1.0 else rgb
        change = np.linalg.norm(rgb[:, None, :] - rgb[neighbours], axis=2)
        cost *= 1.0 + config.color_weight * change
    # k entries per row, row by row: the CSR arrays directly (no COO sort)
    indptr = np.arange(0, neighbours.size + 1, neighbours.shape[1])
    matrix = csr_matrix((cost.reshape(-1) + EDGE_EPSILON, neighbours.reshape(-1), indptr),
                        shape=(len(points), len(points)))
    return VoxelGraph(matrix)
