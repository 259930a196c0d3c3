"""Sparse primitives against dense ``conv3d`` / ``conv_transpose3d`` (float64, forward + backward).

Alignment convention checked here: a sparse site ``c`` (spatial, finest units) of a stride-``s``
level sits at dense index ``(c - origin) / s`` with ``origin`` the per-axis minimum rounded down
to a multiple of ``2s``. With that origin, dense ``conv3d(kernel_size=2, stride=2)`` output ``i``
is the sparse parent ``origin + 2s·i`` and ``conv_transpose3d(kernel_size=2, stride=2)`` writes
child ``2i + d`` from input ``i`` — exactly the sparse parent/child relation
``parent = floor(c / 2s)·2s``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from npiseg_ros.core.sparse import (
    CoordinateLevel,
    down_conv,
    kernel_offsets,
    submanifold_conv,
    up_conv,
)
from npiseg_ros.core.sparse.weights import (
    from_dense,
    from_minkowski,
    from_spconv,
    to_dense,
    to_minkowski,
    to_spconv,
)

DTYPE = torch.float64
LOOKUPS = ["grid", "sorted"]


def random_coords(seed: int, batches: int = 2, extent: int = 7, density: float = 0.35,
                  stride: int = 1, low: int = -5) -> torch.Tensor:
    """Unique ``(N, 4)`` int64 sites of a random occupancy in a small (negative-reaching) box."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for batch in range(batches):
        mask = torch.rand((extent, extent, extent), generator=generator) < density
        xyz = torch.nonzero(mask) + low
        rows.append(torch.cat([torch.full((len(xyz), 1), batch), xyz * stride], dim=1))
    coords = torch.cat(rows)
    permutation = torch.randperm(len(coords), generator=generator)  # rows in arbitrary order
    return coords[permutation].long()


def to_dense_grid(features: torch.Tensor, coords: torch.Tensor, stride: int, origin: torch.Tensor,
                  shape: tuple[int, int, int], batches: int) -> torch.Tensor:
    """Differentiable scatter of sparse rows into ``(B, C, X, Y, Z)``."""
    index = (coords[:, 1:] - origin) // stride
    grid = features.new_zeros((batches, *shape, features.shape[1]))
    grid = grid.index_put((coords[:, 0], index[:, 0], index[:, 1], index[:, 2]), features)
    return grid.permute(0, 4, 1, 2, 3)


def sample(
    grid: torch.Tensor, coords: torch.Tensor, stride: int, origin: torch.Tensor
) -> torch.Tensor:
    index = (coords[:, 1:] - origin) // stride
    return grid.permute(0, 2, 3, 4, 1)[coords[:, 0], index[:, 0], index[:, 1], index[:, 2]]


def geometry(coords: torch.Tensor, stride: int) -> tuple[torch.Tensor, tuple[int, int, int], int]:
    origin = torch.div(coords[:, 1:].min(0).values, 2 * stride, rounding_mode="floor") * 2 * stride
    extent = (coords[:, 1:].max(0).values - origin) // stride + 2
    return origin, tuple(int(v) for v in extent), int(coords[:, 0].max()) + 1


def assert_matches_dense(out: torch.Tensor, expected: torch.Tensor, inputs: tuple,
                         dense_inputs: tuple, generator: torch.Generator) -> None:
    """Forward outputs and the gradients of every input pair agree to float64 precision."""
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(out.shape, dtype=DTYPE, generator=generator)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for sparse, dense in zip(inputs, dense_inputs):
        torch.testing.assert_close(sparse.grad, dense.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lookup", LOOKUPS)
@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (5, 1), (3, 2), (1, 1)])
def test_submanifold_conv_matches_dense(lookup: str, kernel_size: int, stride: int) -> None:
    coords = random_coords(seed=kernel_size + 10 * stride, stride=stride)
    level = CoordinateLevel(coords, stride=stride, lookup=lookup)
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(len(coords), 4, dtype=DTYPE, generator=generator, requires_grad=True)
    weight = torch.randn(
        kernel_size**3, 4, 5, dtype=DTYPE, generator=generator, requires_grad=True
    )
    out = submanifold_conv(features, weight, level)

    dense_features = features.detach().clone().requires_grad_(True)
    dense_weight = weight.detach().clone().requires_grad_(True)
    origin, shape, batches = geometry(coords, stride)
    grid = to_dense_grid(dense_features, coords, stride, origin, shape, batches)
    dense = F.conv3d(grid, to_dense(dense_weight), padding=kernel_size // 2)
    expected = sample(dense, coords, stride, origin)
    assert_matches_dense(out, expected, (features, weight), (dense_features, dense_weight),
                         generator)


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_lookup_paths_give_identical_kernel_maps(lookup: str) -> None:
    coords = random_coords(seed=3, extent=9)
    reference = CoordinateLevel(coords, lookup="grid").kernel_map(3)
    other = CoordinateLevel(coords, lookup=lookup).kernel_map(3)
    assert [slot for slot, _, _ in reference.pairs] == [slot for slot, _, _ in other.pairs]
    for (_, out_a, in_a), (_, out_b, in_b) in zip(reference.pairs, other.pairs):
        assert torch.equal(out_a, out_b) and torch.equal(in_a, in_b)
    # Each pair really is a neighbour at the slot's offset.
    offsets = kernel_offsets(3)
    for slot, out_idx, in_idx in other.pairs:
        expected = offsets[slot].expand(len(out_idx), 3)
        assert torch.equal(coords[in_idx, 1:] - coords[out_idx, 1:], expected)
        assert torch.equal(coords[in_idx, 0], coords[out_idx, 0])


def test_auto_lookup_switches_to_sorted_keys_for_huge_boxes() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 4000, 4000, 100], [1, -4000, 0, 0]])
    level = CoordinateLevel(coords)
    kernel_map = level.kernel_map(3)
    assert level._lookup(1).mode == "sorted"
    found = {(slot, int(o), int(i)) for slot, out_idx, in_idx in kernel_map.pairs
             for o, i in zip(out_idx, in_idx)}
    offsets = kernel_offsets(3).tolist()
    assert found == {(offsets.index([1, 0, 0]), 0, 1), (offsets.index([-1, 0, 0]), 1, 0)}


@pytest.mark.parametrize("lookup", LOOKUPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_down_conv_matches_dense_stride2(lookup: str, stride: int) -> None:
    coords = random_coords(seed=20 + stride, stride=stride, low=-3)
    level = CoordinateLevel(coords, stride=stride, lookup=lookup)
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(len(coords), 3, dtype=DTYPE, generator=generator, requires_grad=True)
    weight = torch.randn(8, 3, 4, dtype=DTYPE, generator=generator, requires_grad=True)
    out, parent = down_conv(features, weight, level)
    assert parent.stride == 2 * stride
    assert torch.all(parent.coords[:, 1:] % (2 * stride) == 0)

    dense_features = features.detach().clone().requires_grad_(True)
    dense_weight = weight.detach().clone().requires_grad_(True)
    origin, shape, batches = geometry(coords, stride)
    grid = to_dense_grid(dense_features, coords, stride, origin, shape, batches)
    dense = F.conv3d(grid, to_dense(dense_weight), stride=2)
    expected = sample(dense, parent.coords, 2 * stride, origin)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # Every dense output that sees an active input is a sparse parent (none missing).
    ones = torch.ones(1, 1, 2, 2, 2, dtype=DTYPE)
    occupied = F.conv3d(grid.abs().sum(1, keepdim=True), ones, stride=2)
    assert int((occupied > 0).sum()) == len(parent)

    upstream = torch.randn(out.shape, dtype=DTYPE, generator=generator)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(features.grad, dense_features.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weight.grad, dense_weight.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lookup", LOOKUPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_up_conv_matches_dense_transposed(lookup: str, stride: int) -> None:
    coords = random_coords(seed=30 + stride, stride=stride, low=-4)
    fine = CoordinateLevel(coords, stride=stride, lookup=lookup)
    parent = fine.downsample()[0]
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(len(parent), 3, dtype=DTYPE, generator=generator, requires_grad=True)
    weight = torch.randn(8, 3, 4, dtype=DTYPE, generator=generator, requires_grad=True)
    out = up_conv(features, weight, fine)

    dense_features = features.detach().clone().requires_grad_(True)
    dense_weight = weight.detach().clone().requires_grad_(True)
    origin, shape, batches = geometry(coords, stride)
    coarse_shape = tuple((s + 1) // 2 for s in shape)
    grid = to_dense_grid(dense_features, parent.coords, 2 * stride, origin, coarse_shape, batches)
    dense = F.conv_transpose3d(grid, to_dense(dense_weight).transpose(0, 1), stride=2)
    expected = sample(dense, coords, stride, origin)
    assert_matches_dense(out, expected, (features, weight), (dense_features, dense_weight),
                         generator)


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_gradcheck_tiny(lookup: str) -> None:
    coords = random_coords(seed=5, batches=1, extent=3, density=0.6)
    level = CoordinateLevel(coords, lookup=lookup)
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(len(coords), 2, dtype=DTYPE, generator=generator, requires_grad=True)
    sub_w = torch.randn(27, 2, 3, dtype=DTYPE, generator=generator, requires_grad=True)
    down_w = torch.randn(8, 3, 2, dtype=DTYPE, generator=generator, requires_grad=True)
    up_w = torch.randn(8, 2, 2, dtype=DTYPE, generator=generator, requires_grad=True)

    def chain(x, a, b, c):
        hidden = submanifold_conv(x, a, level)
        coarse, _ = down_conv(hidden, b, level)
        return up_conv(coarse, c, level)

    assert torch.autograd.gradcheck(chain, (features, sub_w, down_w, up_w))


def test_kernel_maps_are_cached_per_level() -> None:
    level = CoordinateLevel(random_coords(seed=6))
    assert level.kernel_map(3) is level.kernel_map(3)
    assert level.downsample()[0] is level.downsample()[0]


def test_malformed_inputs_raise_value_error() -> None:
    coords = random_coords(seed=7)
    level = CoordinateLevel(coords)
    with pytest.raises(ValueError):
        CoordinateLevel(coords.int())
    with pytest.raises(ValueError):
        CoordinateLevel(coords[:, :3])
    with pytest.raises(ValueError):
        CoordinateLevel(coords, lookup="hash")
    with pytest.raises(ValueError):
        submanifold_conv(torch.zeros(len(coords) + 1, 2), torch.zeros(27, 2, 2), level)
    with pytest.raises(ValueError):
        submanifold_conv(torch.zeros(len(coords), 2), torch.zeros(27, 3, 2), level)
    with pytest.raises(ValueError):
        kernel_offsets(4)


def _dense_reference(features, coords, dense_weight, kernel_size):
    origin, shape, batches = geometry(coords, 1)
    grid = to_dense_grid(features, coords, 1, origin, shape, batches)
    return sample(F.conv3d(grid, dense_weight, padding=kernel_size // 2), coords, 1, origin)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_converted_minkowski_and_spconv_kernels_match_dense(kernel_size: int) -> None:
    coords = random_coords(seed=8)
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(len(coords), 3, dtype=DTYPE, generator=generator)
    k = kernel_size
    dense_weight = torch.randn(4, 3, k, k, k, dtype=DTYPE, generator=generator)
    expected = _dense_reference(features, coords, dense_weight, kernel_size)
    level = CoordinateLevel(coords)

    # MinkowskiEngine: slot = (iz·k + iy)·k + ix (x fastest), each slot (C_in, C_out).
    minkowski = torch.empty(k**3, 3, 4, dtype=DTYPE)
    for ix in range(k):
        for iy in range(k):
            for iz in range(k):
                minkowski[(iz * k + iy) * k + ix] = dense_weight[:, :, ix, iy, iz].t()
    spconv_weight = dense_weight.permute(0, 2, 3, 4, 1)  # (C_out, kx, ky, kz, C_in)
    converted = (from_minkowski(minkowski), from_spconv(spconv_weight), from_dense(dense_weight))
    for internal in converted:
        torch.testing.assert_close(submanifold_conv(features, internal, level), expected)
    internal = from_dense(dense_weight)
    assert torch.equal(to_minkowski(internal), minkowski)
    assert torch.equal(to_spconv(internal), spconv_weight)
    assert torch.equal(to_dense(internal), dense_weight)
    assert torch.equal(from_minkowski(minkowski[:1, :, :].squeeze(0)), minkowski[:1])


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_spconv_backend_submanifold_matches_dense(kernel_size: int) -> None:
    pytest.importorskip("spconv", reason="optional accelerator; the torch path is the reference")
    from npiseg_ros.core.sparse.spconv_backend import SpconvLevel
    from npiseg_ros.core.sparse import get_backend

    coords = random_coords(seed=40 + kernel_size, extent=8)
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(len(coords), 3, dtype=DTYPE, generator=generator, requires_grad=True)
    weight = torch.randn(
        kernel_size**3, 3, 4, dtype=DTYPE, generator=generator, requires_grad=True
    )
    backend = get_backend("spconv")
    level = SpconvLevel(coords)
    for _ in range(5):  # repeated calls: spconv's multi-threaded CPU path was racy (see adapter)
        out = backend.submanifold_conv(features, weight, level)
        reference = submanifold_conv(features, weight, CoordinateLevel(coords))
        torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
        upstream = torch.randn(out.shape, dtype=DTYPE, generator=generator)
        grads = torch.autograd.grad((out * upstream).sum(), [features, weight])
        expected = torch.autograd.grad((reference * upstream).sum(), [features, weight])
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_chunked_neighbour_queries_give_the_same_kernel_map(monkeypatch) -> None:
    import npiseg_ros.core.sparse.coords as coords_module

    coords = random_coords(seed=11, extent=9)
    reference = CoordinateLevel(coords).kernel_map(5)
    monkeypatch.setattr(coords_module, "_QUERY_CHUNK", 3 * len(coords))  # 3 offsets per chunk
    chunked = CoordinateLevel(coords).kernel_map(5)
    assert [slot for slot, _, _ in chunked.pairs] == [slot for slot, _, _ in reference.pairs]
    for (_, out_a, in_a), (_, out_b, in_b) in zip(reference.pairs, chunked.pairs):
        assert torch.equal(out_a, out_b) and torch.equal(in_a, in_b)
