"""Structured sparsity sets and their Euclidean projections.

Every sparsity type partitions a kernel into groups (a filter, an input channel,
a GEMM column, a single weight) and its set is "at most k groups are non-zero".
The Euclidean projection onto that set keeps the k groups with the largest L2
norm and zeroes the rest:

    Proj_S(W) = argmin_{V in S} ||V - W||_F

Ties are broken deterministically (the lower flat group index wins) and at least
one group is always kept. Everything is written with `keras.ops`, so the
projections run inside a compiled train step on any Keras backend.

Kernels use Keras' layouts: Dense (in, out); ConvND (*spatial, in, out). Other
layouts (Conv2DTranspose, DepthwiseConv2D) are described by a `KernelLayout`,
which `keras_admm.registry` supplies per layer class.

Example:

>>> import numpy as np
>>> from keras_admm import sparsity
>>> w = np.random.rand(3, 3, 16, 32).astype("float32")
>>> z = sparsity.parse("filter:0.5").project(w)   # 16 of 32 filters kept
>>> int((np.abs(np.asarray(z)).sum(axis=(0, 1, 2)) > 0).sum())
16
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras
from keras import ops

__all__ = [
    "KernelLayout",
    "Sparsity",
    "Unstructured",
    "Filter",
    "Channel",
    "Shape",
    "FilterShape",
    "NM",
    "parse",
    "kept_count",
    "top_k_mask",
]


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Which kernel axes index output filters and input channels.

    Axes are negative, so one layout serves Conv1D, Conv2D and Conv3D alike.

    Attributes:
        filter_axes: axes whose index tuple names one output channel.
        channel_axes: axes whose index tuple names one input channel.
    """

    filter_axes: tuple[int, ...] = (-1,)
    channel_axes: tuple[int, ...] = (-2,)

    def normalized(self, rank: int) -> KernelLayout:
        """The same layout with non-negative axes for a kernel of `rank`."""
        return KernelLayout(
            tuple(sorted(a % rank for a in self.filter_axes)),
            tuple(sorted(a % rank for a in self.channel_axes)),
        )

    def to_dict(self) -> dict:
        return {
            "filter_axes": list(self.filter_axes),
            "channel_axes": list(self.channel_axes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> KernelLayout:
        return cls(tuple(data["filter_axes"]), tuple(data["channel_axes"]))


DEFAULT_LAYOUT = KernelLayout()


def kept_count(num_groups: int, ratio: float) -> int:
    """How many of `num_groups` groups survive removing a `ratio` of them.

    The removed count is floor(ratio * num_groups); at least one group is kept.

    >>> kept_count(10, 0.55), kept_count(3, 0.99)
    (5, 1)
    """
    removed = int(math.floor(ratio * num_groups + 1e-9))
    return max(1, num_groups - removed)


def _check_ratio(ratio, what="ratio"):
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise TypeError(
            f"Sparsity {what} must be a number in [0, 1), got {ratio!r} "
            f"({type(ratio).__name__}). Pass e.g. 0.5 to remove half the groups."
        )
    if not 0.0 <= float(ratio) < 1.0 or math.isnan(ratio):
        raise ValueError(
            f"Sparsity {what} must be in [0, 1) (the fraction of groups "
            f"removed), got {ratio!r}. Use e.g. 0.5 to remove half the groups; "
            "1.0 would remove every group and is not allowed."
        )
    return float(ratio)


def top_k_mask(values, k):
    """0/1 float32 mask of the `k` largest entries along the last axis.

    Ties go to the lower index on every backend (torch's top_k orders ties
    arbitrarily): everything above the k-th largest value is kept, then the
    first entries equal to it, by index, until k are kept.

    >>> keras.ops.convert_to_numpy(top_k_mask([0.5, 2.0, 2.0, 2.0], 2)).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    values = ops.cast(ops.convert_to_tensor(values), "float32")
    kth = ops.top_k(values, k)[0][..., k - 1 : k]
    greater = ops.cast(ops.greater(values, kth), "float32")
    equal = ops.cast(ops.equal(values, kth), "float32")
    room = k - ops.sum(greater, axis=-1, keepdims=True)
    first_equal = ops.cast(ops.cumsum(equal, axis=-1) <= room, "float32") * equal
    return greater + first_equal


def _group_mask(kernel, kept_axes, ratio):
    """0/1 mask keeping the `kept_count` groups with the largest L2 norm.

    A group is one index tuple along `kept_axes`; its norm is taken over all
    the other axes. Ties go to the lower flat group index (`top_k_mask`).
    """
    rank = len(kernel.shape)
    kept_axes = sorted(a % rank for a in kept_axes)
    reduce_axes = [a for a in range(rank) if a not in kept_axes]
    squares = ops.square(ops.cast(kernel, "float32"))
    if reduce_axes:
        norms = ops.sum(squares, axis=reduce_axes, keepdims=True)
    else:
        norms = squares
    group_shape = tuple(norms.shape)
    num_groups = math.prod(group_shape)
    keep = kept_count(num_groups, ratio)
    if keep >= num_groups:
        return ops.ones(kernel.shape, dtype="float32")
    flat = top_k_mask(ops.reshape(norms, (num_groups,)), keep)
    return ops.broadcast_to(ops.reshape(flat, group_shape), kernel.shape)


def _apply_mask(kernel, mask):
    kernel = ops.convert_to_tensor(kernel)
    return kernel * ops.cast(mask, kernel.dtype)


class Sparsity:
    """Base class: a set of kernels with at most k non-zero groups.

    Subclasses define `group_axes(layout, rank)` (the axes that index a group)
    or override `mask`. `project(kernel)` = kernel * mask(kernel).
    """

    kind = ""

    def mask(self, kernel, layout: KernelLayout = DEFAULT_LAYOUT):
        """The 0/1 float32 mask of the projection of `kernel` (same shape)."""
        kernel = ops.convert_to_tensor(kernel)
        self.check_kernel(kernel.shape, layout)
        rank = len(kernel.shape)
        return _group_mask(kernel, self.group_axes(layout, rank), self.ratio)

    def project(self, kernel, layout: KernelLayout = DEFAULT_LAYOUT):
        """The Euclidean projection of `kernel` onto this sparsity set."""
        return _apply_mask(kernel, self.mask(kernel, layout))

    def group_axes(self, layout: KernelLayout, rank: int) -> tuple[int, ...]:
        raise NotImplementedError

    def check_kernel(self, shape, layout: KernelLayout, layer_name: str = None):
        """Raise ValueError when this sparsity means nothing for `shape`."""
        where = f"layer '{layer_name}'" if layer_name else "the kernel"
        if len(shape) < 2:
            raise ValueError(
                f"{self} needs a kernel of rank >= 2, but {where} has shape "
                f"{tuple(shape)}. Prune Dense or convolution kernels only."
            )

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(str(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def get_config(self) -> dict:
        return {"ratio": self.ratio}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _RatioSparsity(Sparsity):
    def __init__(self, ratio):
        self.ratio = _check_ratio(ratio)

    def __str__(self):
        return f"{self.kind}:{self.ratio!r}"


@keras.saving.register_keras_serializable(package="keras_admm")
class Unstructured(_RatioSparsity):
    """Single weights: keep the largest-magnitude (1 - ratio) of all entries.

    >>> Unstructured(0.9)   # 90% of the weights become zero
    Unstructured(ratio=0.9)
    """

    kind = "unstructured"

    def group_axes(self, layout, rank):
        return tuple(range(rank))


@keras.saving.register_keras_serializable(package="keras_admm")
class Filter(_RatioSparsity):
    """Whole output channels (GEMM rows): kernel[..., o] for a conv.

    Removing a filter removes this layer's output channel and the matching
    input channel of every consumer.
    """

    kind = "filter"

    def group_axes(self, layout, rank):
        return layout.filter_axes


@keras.saving.register_keras_serializable(package="keras_admm")
class Channel(_RatioSparsity):
    """Whole input channels: kernel[..., c, :] for a conv, kernel[c, :] for Dense."""

    kind = "channel"

    def group_axes(self, layout, rank):
        return layout.channel_axes


@keras.saving.register_keras_serializable(package="keras_admm")
class Shape(_RatioSparsity):
    """GEMM columns (shape-wise): one (i, j, c) kernel position over all filters.

    For Dense this is the same set as `Channel` (a column is an input unit).
    """

    kind = "shape"

    def group_axes(self, layout, rank):
        filters = layout.normalized(rank).filter_axes
        return tuple(a for a in range(rank) if a not in filters)


@keras.saving.register_keras_serializable(package="keras_admm")
class FilterShape(Sparsity):
    """Filters and GEMM columns together: at most kf rows and ks columns kept.

    The exact projection onto this intersection is a maximum-energy submatrix
    search (NP-hard in general). `project` runs two alternating maximisations,
    one starting from rows and one from columns, and keeps the better. It is
    exact when either ratio is 0, always feasible, leaves feasible kernels
    unchanged, and is never farther than projecting on filters then columns.
    """

    kind = "filter_shape"

    def __init__(self, filter_ratio, shape_ratio):
        self.filter_ratio = _check_ratio(filter_ratio, "filter_ratio")
        self.shape_ratio = _check_ratio(shape_ratio, "shape_ratio")

    @property
    def ratio(self):
        return self.filter_ratio

    def __str__(self):
        return f"{self.kind}:{self.filter_ratio!r}:{self.shape_ratio!r}"

    def get_config(self):
        return {"filter_ratio": self.filter_ratio, "shape_ratio": self.shape_ratio}

    def mask(self, kernel, layout: KernelLayout = DEFAULT_LAYOUT):
        kernel = ops.convert_to_tensor(kernel)
        self.check_kernel(kernel.shape, layout)
        rank = len(kernel.shape)
        rows = Filter(0.0).group_axes(layout, rank)
        cols = Shape(0.0).group_axes(layout, rank)
        energy = ops.square(ops.cast(kernel, "float32"))

        def alternate(first_axes, first_ratio, second_axes, second_ratio):
            first = _group_mask(kernel, first_axes, first_ratio)
            for _ in range(2):
                second = _group_mask(kernel * first, second_axes, second_ratio)
                first = _group_mask(kernel * second, first_axes, first_ratio)
            second = _group_mask(kernel * first, second_axes, second_ratio)
            return first * second

        by_rows = alternate(rows, self.filter_ratio, cols, self.shape_ratio)
        by_cols = alternate(cols, self.shape_ratio, rows, self.filter_ratio)
        better = ops.sum(energy * by_rows) >= ops.sum(energy * by_cols)
        return ops.where(better, by_rows, by_cols)


@keras.saving.register_keras_serializable(package="keras_admm")
class NM(Sparsity):
    """N:M sparsity: at most n non-zero weights in every m consecutive input channels.

    2:4 is what sparse tensor cores accelerate. The input-channel count must be a
    multiple of m.
    """

    kind = "nm"

    def __init__(self, n, m):
        for what, value in (("n", n), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"NM {what} must be an int, got {value!r}.")
        if not 0 < n < m:
            raise ValueError(
                f"NM sparsity needs 0 < n < m, got n={n}, m={m}. "
                "Use e.g. NM(2, 4) to keep 2 of every 4 weights."
            )
        self.n, self.m = n, m

    @property
    def ratio(self):
        return 1.0 - self.n / self.m

    def __str__(self):
        return f"nm:{self.n}:{self.m}"

    def get_config(self):
        return {"n": self.n, "m": self.m}

    def check_kernel(self, shape, layout, layer_name=None):
        super().check_kernel(shape, layout, layer_name)
        where = f"layer '{layer_name}'" if layer_name else "the kernel"
        if len(layout.channel_axes) != 1:
            raise ValueError(
                f"{self} needs one input-channel axis, but {where} has "
                f"{len(layout.channel_axes)}. Use Unstructured or Filter instead."
            )
        channels = shape[layout.channel_axes[0]]
        if channels % self.m:
            raise ValueError(
                f"{self} needs the input-channel count to be a multiple of "
                f"{self.m}, but {where} has {channels} input channels (kernel "
                f"shape {tuple(shape)}). Use an m that divides {channels}, or "
                "another sparsity type for this layer."
            )

    def mask(self, kernel, layout: KernelLayout = DEFAULT_LAYOUT):
        kernel = ops.convert_to_tensor(kernel)
        self.check_kernel(kernel.shape, layout)
        rank = len(kernel.shape)
        axis = layout.channel_axes[0] % rank
        moved = ops.moveaxis(ops.abs(ops.cast(kernel, "float32")), axis, -1)
        moved_shape = tuple(moved.shape)
        blocks = ops.reshape(
            moved, moved_shape[:-1] + (moved_shape[-1] // self.m, self.m)
        )
        block_mask = top_k_mask(blocks, self.n)
        return ops.moveaxis(ops.reshape(block_mask, moved_shape), -1, axis)


_KINDS = {
    cls.kind: cls for cls in (Unstructured, Filter, Channel, Shape, FilterShape, NM)
}


def parse(spec) -> Sparsity:
    """A Sparsity from its text form, or the Sparsity itself.

    Text forms: "unstructured:0.9", "filter:0.5", "channel:0.5", "shape:0.7",
    "filter_shape:0.5:0.3", "nm:2:4". `str(sparsity)` gives this form back.

    Raises:
        ValueError: unknown kind, wrong number of fields, or a bad ratio.

    >>> parse("filter_shape:0.5:0.3")
    FilterShape(filter_ratio=0.5, shape_ratio=0.3)
    """
    if isinstance(spec, Sparsity):
        return spec
    if isinstance(spec, dict):
        try:
            sparsity = keras.saving.deserialize_keras_object(spec)
        except Exception as error:  # noqa: BLE001 - any bad config, one message
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(
                f"Could not read a sparsity from {spec!r} ({error}). Use a text form "
                "such as 'filter:0.5', or a Sparsity's serialized config."
            ) from error
        if not isinstance(sparsity, Sparsity):
            raise TypeError(
                f"{spec!r} is not a serialized Sparsity. Use a text form such as "
                "'filter:0.5', or keras.saving.serialize_keras_object(Filter(0.5))."
            )
        return sparsity
    if not isinstance(spec, str):
        raise TypeError(
            f"Expected a Sparsity or a text form such as 'filter:0.5', got {spec!r}."
        )
    kind, *fields = spec.strip().lower().split(":")
    if kind not in _KINDS:
        raise ValueError(
            f"Unknown sparsity kind {kind!r} in {spec!r}. Known kinds: "
            f"{', '.join(sorted(_KINDS))} (e.g. 'filter:0.5', 'nm:2:4')."
        )
    cls = _KINDS[kind]
    arity = 2 if cls in (FilterShape, NM) else 1
    if len(fields) != arity:
        example = {
            1: f"{kind}:0.5",
            2: "filter_shape:0.5:0.3" if cls is FilterShape else "nm:2:4",
        }
        raise ValueError(
            f"Sparsity {spec!r} needs {arity} field(s) after '{kind}:', "
            f"got {len(fields)}. Write it like {example[arity]!r}."
        )
    try:
        values = [int(f) if cls is NM else float(f) for f in fields]
    except ValueError:
        raise ValueError(
            f"Could not read the numbers in sparsity {spec!r}. "
            "Write it like 'filter:0.5' or 'nm:2:4'."
        ) from None
    return cls(*values)
