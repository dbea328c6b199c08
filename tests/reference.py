"""Pure NumPy reference implementations of every sparsity projection.

Written from the definitions in docs/DESIGN.md, independently of `keras_admm`:
a group is one index tuple along the group axes, its norm is the L2 norm over
all other axes, the projection keeps the k groups with the largest norm (ties
to the lower flat group index) and never removes every group. N:M keeps the n
largest magnitudes in every block of m consecutive input channels.

Everything is computed in float64. The brute-force searches enumerate every
feasible support of a tiny tensor: the closest point of a support is the
kernel restricted to it, so the best support gives the exact projection.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

# Group kinds: which axes index one group, given (filter_axes, channel_axes).
GROUP_KINDS = ("unstructured", "filter", "channel", "shape")


def kept_count(num_groups: int, ratio: float) -> int:
    """Groups kept after removing floor(ratio * num_groups) of them (>= 1).

    The 1e-9 slack makes decimal ratios such as 0.3 * 10 count as 3.
    """
    removed = math.floor(ratio * num_groups + 1e-9)
    return max(1, num_groups - removed)


def _normalize(axes, rank):
    return tuple(sorted(a % rank for a in axes))


def group_axes(kind: str, layout, rank: int) -> tuple[int, ...]:
    """The (non-negative) axes indexing one group of `kind` for `layout`."""
    filters = _normalize(layout.filter_axes, rank)
    if kind == "unstructured":
        return tuple(range(rank))
    if kind == "filter":
        return filters
    if kind == "channel":
        return _normalize(layout.channel_axes, rank)
    if kind == "shape":
        return tuple(a for a in range(rank) if a not in filters)
    raise ValueError(f"Unknown group kind {kind!r}.")


def group_sq_norms(kernel, axes) -> np.ndarray:
    """Squared L2 norm of each group (shape: the kernel's sizes along `axes`)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    reduce_axes = tuple(a for a in range(kernel.ndim) if a not in axes)
    return np.sum(np.square(kernel), axis=reduce_axes)


def top_k_flat(values, k: int) -> np.ndarray:
    """Boolean mask of the k largest of a flat array, ties to the lower index."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.lexsort((np.arange(values.size), -values))
    keep = np.zeros(values.size, dtype=bool)
    keep[order[:k]] = True
    return keep


def expand_group_mask(group_mask, kernel_shape, axes) -> np.ndarray:
    """Broadcast a mask over groups (shape along `axes`) to the kernel shape."""
    rank = len(kernel_shape)
    shape = [kernel_shape[a] if a in axes else 1 for a in range(rank)]
    return np.broadcast_to(np.reshape(group_mask, shape), kernel_shape).copy()


def group_mask(kernel, axes, ratio: float) -> np.ndarray:
    """0/1 float mask keeping the kept_count groups of largest norm."""
    kernel = np.asarray(kernel)
    norms = group_sq_norms(kernel, axes)
    keep = top_k_flat(norms, kept_count(norms.size, ratio))
    return expand_group_mask(keep.reshape(norms.shape), kernel.shape, axes).astype(
        np.float64
    )


def project_groups(kernel, kind: str, layout, ratio: float):
    """(projection, mask) for a group kind: unstructured/filter/channel/shape."""
    kernel = np.asarray(kernel, dtype=np.float64)
    mask = group_mask(kernel, group_axes(kind, layout, kernel.ndim), ratio)
    return kernel * mask, mask


def _nm_blocks(array, channel_axis: int, m: int):
    moved = np.moveaxis(np.asarray(array), channel_axis, -1)
    return moved, moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))


def nm_mask(kernel, layout, n: int, m: int) -> np.ndarray:
    """0/1 mask keeping the n largest |w| of every m consecutive input channels."""
    kernel = np.asarray(kernel, dtype=np.float64)
    axis = layout.channel_axes[0] % kernel.ndim
    moved, blocks = _nm_blocks(np.abs(kernel), axis, m)
    flat = blocks.reshape(-1, m)
    keep = np.stack([top_k_flat(row, n) for row in flat]).astype(np.float64)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def project_nm(kernel, layout, n: int, m: int):
    kernel = np.asarray(kernel, dtype=np.float64)
    mask = nm_mask(kernel, layout, n, m)
    return kernel * mask, mask


def nm_block_counts(kernel, layout, m: int) -> np.ndarray:
    """Non-zero count of every N:M block of `kernel`."""
    kernel = np.asarray(kernel)
    axis = layout.channel_axes[0] % kernel.ndim
    _, blocks = _nm_blocks(kernel != 0, axis, m)
    return blocks.sum(axis=-1)


def nonzero_groups(kernel, axes) -> int:
    """How many groups along `axes` hold a non-zero entry."""
    kernel = np.asarray(kernel)
    reduce_axes = tuple(a for a in range(kernel.ndim) if a not in axes)
    return int(np.count_nonzero(np.any(kernel != 0, axis=reduce_axes)))


def as_rows_cols(kernel, layout) -> np.ndarray:
    """The kernel as a 2-D array: one row per filter group, one column per shape
    group (the transposed GEMM view used by FilterShape)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    rank = kernel.ndim
    rows = group_axes("filter", layout, rank)
    cols = group_axes("shape", layout, rank)
    moved = np.transpose(kernel, rows + cols)
    num_rows = math.prod(kernel.shape[a] for a in rows)
    return moved.reshape(num_rows, -1)


def has_near_tie(values, k: int, rel: float = 1e-4) -> bool:
    """True when the k-th and (k+1)-th largest values are too close to order."""
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    if k >= values.size:
        return False
    hi, lo = values[k - 1], values[k]
    return hi - lo <= rel * max(hi, 1e-30)


def brute_force_projection(kernel, is_feasible, max_size: int = 16):
    """The closest feasible point by enumerating every support of `kernel`.

    Args:
        kernel: a tiny array (at most `max_size` entries).
        is_feasible: maps a boolean support array (batch, *kernel.shape) to a
            boolean (batch,) array.

    Returns:
        (distance, support) of the best support.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    size = kernel.size
    if size > max_size:
        raise ValueError(f"brute force needs <= {max_size} entries, got {size}.")
    codes = np.arange(2**size, dtype=np.int64)
    supports = ((codes[:, None] >> np.arange(size)) & 1).astype(bool)
    supports = supports.reshape((-1,) + kernel.shape)
    feasible = is_feasible(supports)
    energy = np.square(kernel)[None]
    removed = np.sum(
        np.where(supports, 0.0, energy), axis=tuple(range(1, kernel.ndim + 1))
    )
    removed = np.where(feasible, removed, np.inf)
    best = int(np.argmin(removed))
    return math.sqrt(removed[best]), supports[best]


def group_feasibility(kind: str, layout, rank: int, k: int):
    """is_feasible for brute_force_projection: at most k non-zero groups."""
    axes = group_axes(kind, layout, rank)

    def is_feasible(supports):
        reduce_axes = tuple(1 + a for a in range(rank) if a not in axes)
        used = np.any(supports, axis=reduce_axes) if reduce_axes else supports
        return used.reshape(len(supports), -1).sum(axis=1) <= k

    return is_feasible


def nm_feasibility(layout, rank: int, n: int, m: int):
    """is_feasible for brute_force_projection: at most n per block of m."""
    axis = 1 + layout.channel_axes[0] % rank

    def is_feasible(supports):
        moved = np.moveaxis(supports, axis, -1)
        blocks = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
        counts = blocks.sum(axis=-1)
        return (counts <= n).reshape(len(supports), -1).all(axis=1)

    return is_feasible


def brute_force_filter_shape(kernel, layout, kept_rows: int, kept_cols: int):
    """Optimum of FilterShape: best (row subset, column subset) pair.

    Enumerates every pair of a row subset and a column subset. Returns
    (distance, mask) with the mask over `as_rows_cols(kernel)`. Subsets of
    exactly the kept sizes suffice: adding a row or a column never lowers the
    kept energy.
    """
    matrix = as_rows_cols(kernel, layout)
    energy = np.square(matrix)
    total = float(energy.sum())
    best_energy, best = -1.0, None
    for rows in itertools.combinations(range(matrix.shape[0]), kept_rows):
        for cols in itertools.combinations(range(matrix.shape[1]), kept_cols):
            value = float(energy[np.ix_(rows, cols)].sum())
            if value > best_energy:
                best_energy, best = value, (rows, cols)
    mask = np.zeros(matrix.shape, dtype=bool)
    mask[np.ix_(*best)] = True
    return math.sqrt(max(total - best_energy, 0.0)), mask


def distance(a, b) -> float:
    """Frobenius distance in float64."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.sum(np.square(diff))))
