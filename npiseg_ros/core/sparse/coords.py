"""Coordinate sets of a sparse tensor and the neighbour maps between them.

A :class:`CoordinateLevel` is one resolution of a sparse U-Net: an ``(N, 4)`` int64 tensor of
``[batch, x, y, z]`` coordinates in finest-voxel units, all spatial values multiples of
``stride``. It builds (lazily, once) everything a convolution at that level needs and caches it,
so the many convolutions of one level in one forward share a single neighbour search:

- ``kernel_map(k)``: for a submanifold k×k×k convolution, the ``(out, in)`` index pairs of every
  kernel offset;
- ``downsample()``: the stride-2 parent level plus an ``(N_parent, 8)`` child table, used by both
  the stride-2 kernel-2 convolution and its transposed counterpart.

Neighbour lookup linearises coordinates into a mixed-radix key over the padded bounding box of
the level. When that box has at most ``DENSE_GRID_MAX_CELLS`` cells, and at most
``DENSE_GRID_CELLS_PER_ROW`` per coordinate, a dense id grid answers each query with one gather;
otherwise sorted keys + ``torch.searchsorted`` do (e.g. 100 m LiDAR scans, whose sparse levels
would spend longer filling the grid than the sorted search takes).
Everything stays on the coordinates' device; the only host syncs are the bounding-box extents.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "DENSE_GRID_CELLS_PER_ROW",
    "DENSE_GRID_MAX_CELLS",
    "key_radix",
    "lexicographic_keys",
    "CoordinateLevel",
    "KernelMap",
    "kernel_offsets",
    "check_coords",
    "spatial_order",
]

#: Largest padded bounding box (cells) for which the dense id-grid lookup is used (int32: 128 MiB).
DENSE_GRID_MAX_CELLS = 2**25
#: ... and the most cells per coordinate row: filling a grid costs per cell, the sorted search per
#: row. Measured crossover on the bundled 100 m sweep (2 cores): at 965 cells per row (its
#: stride-4 level) the sorted kernel map took 11 ms against the grid's 33 ms; at 288 cells per
#: row (stride 8) the grid took 2.7 ms against 5.3 ms.
DENSE_GRID_CELLS_PER_ROW = 400
# Every lookup structure is padded by at least this many cells so that kernels up to 5 share it.
_MIN_PAD = 2
# Keys must stay well inside int64 even after adding a kernel offset.
_MAX_KEY = 2**62
# Largest (offset × row) block of one vectorised neighbour query (≈ 300 MB of temporaries).
_QUERY_CHUNK = 2**24

LookupMode = Literal["auto", "grid", "sorted"]


def kernel_offsets(kernel_size: int) -> Tensor:
    """All offsets of a cubic kernel, ``(k³, 3)`` int64 in kernel cells, z varying fastest.

    Row ``i`` is the offset of weight slot ``i`` (the internal layout, see docs/backbone.md):
    odd kernels are centred (``-r..r``), kernel 2 spans ``0..1`` (the stride-2 convention).
    """
    if kernel_size == 2:
        values = [0, 1]
    elif kernel_size >= 1 and kernel_size % 2 == 1:
        radius = kernel_size // 2
        values = list(range(-radius, radius + 1))
    else:
        raise ValueError(f"kernel_size must be odd or 2, got {kernel_size}")
    return torch.tensor(list(itertools.product(values, values, values)), dtype=torch.int64)


def check_coords(coords: Tensor, num_rows: int | None = None) -> None:
    """Raise ``ValueError`` unless ``coords`` is ``(N, 4)`` int64 (with ``num_rows`` rows)."""
    if not isinstance(coords, Tensor):
        raise ValueError(f"coords must be a torch.Tensor, got {type(coords).__name__}")
    if coords.dtype != torch.int64:
        raise ValueError(f"coords must be int64 [batch, x, y, z], got dtype {coords.dtype}")
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(
            f"coords must have shape (V, 4) [batch, x, y, z], got {tuple(coords.shape)}"
        )
    if num_rows is not None and coords.shape[0] != num_rows:
        raise ValueError(f"coords has {coords.shape[0]} rows but features have {num_rows}")


def lexicographic_keys(coords: Tensor) -> Tensor:
    """``(N,)`` int64 mixed-radix keys of ``(N, D)`` int64 rows over their bounding box: the key
    order is the lexicographic row order, and equal rows get equal keys (a 1-D sort or unique
    of the keys is that of the rows, many times faster on CPU than a row-wise one).

    Raises:
        ValueError: the bounding box has too many cells for 64-bit keys.
    """
    if coords.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=coords.device)
    low = coords.min(dim=0).values
    radix = torch.tensor(key_radix((coords.max(dim=0).values - low + 1).tolist()),
                         dtype=torch.int64, device=coords.device)
    return ((coords - low) * radix).sum(dim=1)


def key_radix(extent: list[int]) -> list[int]:
    """Place values of the mixed-radix keys of ``lexicographic_keys`` over a bounding box of
    ``extent`` cells per column: a row's key is ``(row - low) . radix``, so a row moved by an
    offset that stays in the box moves its key by ``offset . radix``.

    Raises:
        ValueError: the bounding box has too many cells for 64-bit keys.
    """
    extent = [int(v) for v in extent]
    if math.prod(extent) >= _MAX_KEY:
        raise ValueError(f"coordinate bounding box {extent} is too large for 64-bit keys")
    return [math.prod(extent[i + 1:]) for i in range(len(extent))]


def spatial_order(coords: Tensor) -> Tensor:
    """Permutation ``(N,)`` int64 sorting ``coords`` lexicographically by ``(batch, x, y, z)``.

    Convolving in this order makes every per-offset gather and scatter a monotone sweep over
    memory (neighbour rows of sorted rows are sorted too), several times faster than the random
    access of an arbitrary input order, and makes results independent of the input row order.
    """
    check_coords(coords)
    return torch.argsort(lexicographic_keys(coords))


@dataclass(frozen=True)
class KernelMap:
    """Index pairs of a submanifold convolution on one coordinate set.

    ``pairs[j] = (slot, out_idx, in_idx)``: output row ``out_idx[t]`` receives
    ``features[in_idx[t]] @ weight[slot]``. The centre slot (identity, ``center``) is not
    listed. Empty offsets are omitted. Every slot occurs at most once, and within one slot every
    output index occurs at most once.
    """

    kernel_size: int
    center: int
    pairs: tuple[tuple[int, Tensor, Tensor], ...]


class _Lookup:
    """Coordinate → row index over a padded bounding box (dense grid or sorted keys)."""

    def __init__(self, coords: Tensor, stride: int, pad: int, mode: LookupMode) -> None:
        scaled = coords.clone()
        scaled[:, 1:] = torch.div(scaled[:, 1:], stride, rounding_mode="floor")
        low = scaled.min(dim=0).values
        high = scaled.max(dim=0).values
        low[1:] -= pad
        high[1:] += pad
        extent = [int(v) for v in (high - low + 1).tolist()]  # one host sync per level
        cells = extent[0] * extent[1] * extent[2] * extent[3]
        if cells >= _MAX_KEY:
            raise ValueError(
                f"coordinate bounding box {extent} is too large for 64-bit keys; "
                "check the voxel coordinates (units are voxels, not metres)"
            )
        # Mixed radix: key = ((b * X + x) * Y + y) * Z + z, so an offset is a constant key delta
        # and the padding guarantees x/y/z never wrap into a neighbouring row.
        self.radix = (extent[1] * extent[2] * extent[3], extent[2] * extent[3], extent[3], 1)
        self.stride = stride
        self.pad = pad
        self.keys = self._key(scaled - low)
        num = coords.shape[0]
        if mode == "auto":
            dense = cells <= min(DENSE_GRID_MAX_CELLS, DENSE_GRID_CELLS_PER_ROW * max(num, 1))
            mode = "grid" if dense else "sorted"
        self.mode = mode
        if mode == "grid":
            self.grid = torch.full((cells,), -1, dtype=torch.int32, device=coords.device)
            self.grid[self.keys] = torch.arange(num, dtype=torch.int32, device=coords.device)
        elif mode == "sorted":
            self.sorted_keys, self.order = torch.sort(self.keys)
        else:
            raise ValueError(f"lookup mode must be 'auto', 'grid' or 'sorted', got {mode!r}")

    def _key(self, shifted: Tensor) -> Tensor:
        radix = torch.tensor(self.radix, dtype=torch.int64, device=shifted.device)
        return (shifted * radix).sum(dim=1)

    def delta(self, offset: tuple[int, int, int]) -> int:
        """Key difference of a spatial offset given in cells of this level."""
        return offset[0] * self.radix[1] + offset[1] * self.radix[2] + offset[2]

    def query(self, deltas: Tensor) -> tuple[Tensor, Tensor, list[int]]:
        """Neighbours at several key offsets at once (one vectorised lookup, one host sync).

        Args:
            deltas: ``(H,)`` int64 key differences.

        Returns:
            ``(rows, neighbours, counts)``: rows ``a`` and their neighbour rows ``b`` with
            ``key[b] = key[a] + deltas[h]``, grouped by ``h`` (``counts[h]`` pairs each) and
            sorted by ``a`` within a group.
        """
        query = self.keys.unsqueeze(0) + deltas.unsqueeze(1)  # (H, N)
        if self.mode == "grid":
            found = self.grid[query]
            valid = found >= 0
        else:
            position = torch.searchsorted(self.sorted_keys, query.reshape(-1)).view(query.shape)
            position.clamp_(max=self.sorted_keys.numel() - 1)
            valid = self.sorted_keys[position] == query
            found = self.order[position]
        group, rows = torch.nonzero(valid, as_tuple=True)
        counts = valid.sum(dim=1).tolist()
        return rows, found[group, rows].long(), counts


class CoordinateLevel:
    """One coordinate set (``(N, 4)`` int64, spatial multiples of ``stride``) and its caches.

    Args:
        coords: ``(N, 4)`` int64 ``[batch, x, y, z]`` in finest-voxel units, unique rows.
        stride: spacing of this level in finest voxels (1, 2, 4, ...).
        lookup: ``"auto"`` (dense grid if the padded box has ≤ ``DENSE_GRID_MAX_CELLS`` cells and
            ≤ ``DENSE_GRID_CELLS_PER_ROW`` per row,
            else sorted keys), or force ``"grid"`` / ``"sorted"`` (tests, benchmarks).
    """

    def __init__(self, coords: Tensor, stride: int = 1, lookup: LookupMode = "auto") -> None:
        check_coords(coords)
        if lookup not in ("auto", "grid", "sorted"):
            raise ValueError(f"lookup must be 'auto', 'grid' or 'sorted', got {lookup!r}")
        self.coords = coords
        self.stride = int(stride)
        self.lookup_mode: LookupMode = lookup
        self._lookups: dict[int, _Lookup] = {}
        self._kernel_maps: dict[int, KernelMap] = {}
        self._down: tuple[CoordinateLevel, Tensor, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def _lookup(self, radius: int) -> _Lookup:
        pad = max(radius, _MIN_PAD)
        if pad not in self._lookups:
            self._lookups[pad] = _Lookup(self.coords, self.stride, pad, self.lookup_mode)
        return self._lookups[pad]

    def kernel_map(self, kernel_size: int) -> KernelMap:
        """Cached pairs of a submanifold ``kernel_size``³ convolution (odd ``kernel_size``)."""
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"submanifold kernels must be odd, got {kernel_size}")
        if kernel_size not in self._kernel_maps:
            self._kernel_maps[kernel_size] = self._build_kernel_map(kernel_size)
        return self._kernel_maps[kernel_size]

    def _build_kernel_map(self, kernel_size: int) -> KernelMap:
        offsets = kernel_offsets(kernel_size).tolist()
        center = len(offsets) // 2
        if kernel_size == 1 or len(self) == 0:
            return KernelMap(kernel_size, center, ())
        lookup = self._lookup(kernel_size // 2)
        pairs: list[tuple[int, Tensor, Tensor]] = []
        # Offsets are symmetric around the centre slot: slot center+j is -(slot center-j).
        # If b = a + o then a = b - o, so the mirrored offset's pairs are the swapped list.
        # Offsets are looked up in chunks of ≤ _QUERY_CHUNK (offset, row) cells: few launches and
        # host syncs on CUDA, bounded temporary memory for very large scenes.
        half = list(range(center + 1, len(offsets)))
        step = max(1, _QUERY_CHUNK // max(len(self), 1))
        for start in range(0, len(half), step):
            slots = half[start : start + step]
            deltas = torch.tensor(
                [lookup.delta(tuple(offsets[slot])) for slot in slots], device=self.device
            )
            rows, neighbours, counts = lookup.query(deltas)
            for slot, slot_rows, slot_neighbours in zip(
                slots, rows.split(counts), neighbours.split(counts)
            ):
                if slot_rows.numel() == 0:
                    continue
                pairs.append((slot, slot_rows, slot_neighbours))
                pairs.append((2 * center - slot, slot_neighbours, slot_rows))
        return KernelMap(kernel_size, center, tuple(pairs))

    def downsample(self) -> tuple[CoordinateLevel, Tensor, Tensor, Tensor]:
        """The stride-2 parent level and the maps between the two (cached).

        Parent of a site ``c`` is ``floor(c / (2s)) · 2s`` per spatial axis (``s`` = this stride);
        its child slot is ``(dx·4 + dy·2 + dz)`` with ``d = (c - parent) / s ∈ {0, 1}``, i.e. the
        z-fastest order of :func:`kernel_offsets` (2).

        Returns:
            ``(parent_level, child_table, parent_index, slot)``: ``child_table`` is
            ``(N_parent, 8)`` int64 rows of this level (-1 where absent); ``parent_index`` and
            ``slot`` are ``(N,)`` int64, the parent row and slot of every row of this level.
        """
        if self._down is None:
            self._down = self._build_down()
        return self._down

    def _build_down(self) -> tuple[CoordinateLevel, Tensor, Tensor, Tensor]:
        step = 2 * self.stride
        coarse = self.coords.clone()
        coarse[:, 1:] = torch.div(coarse[:, 1:], step, rounding_mode="floor")
        child = torch.div(
            self.coords[:, 1:] - coarse[:, 1:] * step, self.stride, rounding_mode="floor"
        )
        slot = child[:, 0] * 4 + child[:, 1] * 2 + child[:, 2]
        keys = lexicographic_keys(coarse)
        # Sorted unique keys: the parent order depends only on the coordinate set, never on the
        # input row order, so coarse levels are bit-identical under row permutations.
        unique_keys, parent_index = torch.unique(keys, sorted=True, return_inverse=True)
        num_parents = unique_keys.numel()
        parent_coords = torch.empty((num_parents, 4), dtype=torch.int64, device=self.device)
        parent_coords[parent_index] = coarse  # duplicates write identical values
        parent_coords[:, 1:] *= step
        table = torch.full((num_parents, 8), -1, dtype=torch.int64, device=self.device)
        table[parent_index, slot] = torch.arange(len(self), dtype=torch.int64, device=self.device)
        parent = CoordinateLevel(parent_coords, step, self.lookup_mode)
        return parent, table, parent_index, slot
