"""Index mappings: how a channel group's index j maps to indices along a weight axis.

Small named objects (Identity, Offset, Interleave, Repeat, Explicit), so that a
group printed by the dependency graph says how a Concatenate offset or a
Flatten interleave moves its channels.

>>> from keras_admm.graph.mappings import Offset
>>> Offset(4, 2).indices().ravel().tolist()
[4, 5]
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["IndexMapping", "Identity", "Offset", "Interleave", "Repeat", "Explicit"]


@dataclasses.dataclass(frozen=True)
class IndexMapping:
    """How a group's channel index j maps to indices along a weight axis.

    `indices()` is an int array of shape (group size, per_slot): row j lists
    the weight indices that group channel j owns.
    """

    def indices(self) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def from_indices(index: np.ndarray) -> IndexMapping:
        """The simplest named mapping that reproduces `index` (n, r)."""
        n, r = index.shape
        if n == 0:
            return Explicit(index)
        if r == 1:
            first = int(index[0, 0])
            if np.array_equal(index[:, 0], np.arange(first, first + n)):
                return Identity(n) if first == 0 else Offset(first, n)
        else:
            base = index[:, 0]
            steps = np.diff(index, axis=1)
            if np.all(steps == 1) and np.array_equal(base, np.arange(n) * r):
                return Repeat(n, r)
            if np.all(steps == steps[0, 0]):
                candidate = Interleave(int(steps[0, 0]), r, base.tolist())
                if np.array_equal(candidate.indices(), index):
                    return candidate
        return Explicit(index)


@dataclasses.dataclass(frozen=True)
class Identity(IndexMapping):
    """Group channel j is weight index j."""

    size: int

    def indices(self):
        return np.arange(self.size)[:, None]

    def __str__(self):
        return "identity"


@dataclasses.dataclass(frozen=True)
class Offset(IndexMapping):
    """Group channel j is weight index offset + j (a Concatenate segment)."""

    offset: int
    size: int

    def indices(self):
        return (self.offset + np.arange(self.size))[:, None]

    def __str__(self):
        return f"offset {self.offset}"


@dataclasses.dataclass(frozen=True)
class Interleave(IndexMapping):
    """Flatten (channels_last): channel c owns units {k * channels + c}.

    Attributes:
        channels: the channel count C of the flattened tensor (the stride).
        positions: the number of spatial positions (units per channel).
        channel_indices: for each group channel, its c (plus any offset).
    """

    channels: int
    positions: int
    channel_indices: list

    def indices(self):
        base = np.asarray(self.channel_indices, dtype=np.int64)[:, None]
        return base + self.channels * np.arange(self.positions)[None, :]

    def __str__(self):
        return f"flatten x{self.positions} (stride {self.channels})"


@dataclasses.dataclass(frozen=True)
class Repeat(IndexMapping):
    """Channel j owns indices j * multiplier .. j * multiplier + multiplier - 1.

    DepthwiseConv outputs (depth multiplier) and separable pointwise rows.
    """

    size: int
    multiplier: int

    def indices(self):
        return np.arange(self.size * self.multiplier).reshape(
            self.size, self.multiplier
        )

    def __str__(self):
        return f"repeat x{self.multiplier}"


@dataclasses.dataclass(frozen=True, eq=False)
class Explicit(IndexMapping):
    """Any other mapping, as an explicit (n, r) index array."""

    index: np.ndarray

    def indices(self):
        return np.asarray(self.index)

    def __str__(self):
        return "explicit"
