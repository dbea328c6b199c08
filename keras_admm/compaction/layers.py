"""Layers that `compact` writes into the converted model.

`ColumnSparseConv2D` computes a Conv2D whose kernel keeps only some GEMM
columns (kernel positions (i, j, c)): it pads the input once, and for each
kernel position (i, j) that keeps any column it slices the shifted input,
gathers the kept channels and multiplies them with the kept rows of the
kernel, summing the products. These are standard ops (Pad, Slice, Gather,
MatMul, Add), so the layer exports to ONNX; `tf.image.extract_patches` would
not. docs/DESIGN.md has the measured speedups: worth it only when few
columns remain on deep layers with a small H x W.

Example:

>>> import numpy as np
>>> from keras_admm.compaction.layers import ColumnSparseConv2D
>>> layer = ColumnSparseConv2D(8, (3, 3), columns=[[0, 0, 1], [1, 1, 0]])
>>> tuple(layer(np.zeros((1, 6, 6, 4), "float32")).shape)
(1, 4, 4, 8)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_admm import registry

__all__ = ["ColumnSparseConv2D", "same_padding"]


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"ColumnSparseConv2D `{name}` needs 2 values, got {value}.")
    return value


def same_padding(size, kernel, stride, dilation):
    """(before, after) padding of TF / Keras 'same' along one dimension."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="keras_admm")
class ColumnSparseConv2D(keras.layers.Layer):
    """A Conv2D (channels_last, groups=1) restricted to a set of kernel columns.

    Args:
        filters: output channels.
        kernel_size: (kh, kw) of the original convolution.
        columns: the kept kernel positions, a list of [i, j, c] (row, column,
            input channel). The kernel variable has shape (len(columns),
            filters): row r multiplies input channel c at tap (i, j).
        strides, padding ("valid" or "same"), dilation_rate: as Conv2D.
        activation, use_bias: as Conv2D.

    Raises:
        ValueError: an empty or out-of-range column list, or a bad padding.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        columns,
        strides=(1, 1),
        padding="valid",
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(
                f"ColumnSparseConv2D '{self.name}' supports padding 'valid' or "
                f"'same', got {padding!r}."
            )
        self.columns = [[int(i), int(j), int(c)] for i, j, c in columns]
        if not self.columns:
            raise ValueError(
                f"ColumnSparseConv2D '{self.name}' needs at least one column; an "
                "all-zero kernel is a constant, keep the dense Conv2D instead."
            )
        kh, kw = self.kernel_size
        for i, j, _ in self.columns:
            if not (0 <= i < kh and 0 <= j < kw):
                raise ValueError(
                    f"ColumnSparseConv2D '{self.name}': column position ({i}, {j}) is "
                    f"outside the {kh}x{kw} kernel."
                )
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        # Group the columns by kernel position, keeping the kernel-row order.
        taps = {}
        for row, (i, j, c) in enumerate(self.columns):
            taps.setdefault((i, j), ([], []))
            taps[(i, j)][0].append(c)
            taps[(i, j)][1].append(row)
        self._taps = [
            (ij, np.asarray(cs), np.asarray(rows)) for ij, (cs, rows) in taps.items()
        ]

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and max(c for _, _, c in self.columns) >= channels:
            raise ValueError(
                f"ColumnSparseConv2D '{self.name}' reads channel "
                f"{max(c for _, _, c in self.columns)}, but its input has {channels}."
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(len(self.columns), self.filters)
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )

    def _geometry(self, height, width):
        (kh, kw), (sh, sw), (dh, dw) = (
            self.kernel_size,
            self.strides,
            self.dilation_rate,
        )
        if self.padding == "same":
            pads = (same_padding(height, kh, sh, dh), same_padding(width, kw, sw, dw))
        else:
            pads = ((0, 0), (0, 0))
        padded_h = height + sum(pads[0])
        padded_w = width + sum(pads[1])
        out_h = (padded_h - ((kh - 1) * dh + 1)) // sh + 1
        out_w = (padded_w - ((kw - 1) * dw + 1)) // sw + 1
        return pads, out_h, out_w

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError(
                f"ColumnSparseConv2D '{self.name}' needs a known input height and "
                f"width, got shape {inputs.shape}."
            )
        pads, out_h, out_w = self._geometry(height, width)
        x = inputs
        if any(p for pair in pads for p in pair):
            x = ops.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        (sh, sw), (dh, dw) = self.strides, self.dilation_rate
        kernel = ops.convert_to_tensor(self.kernel)
        total = None
        for (i, j), channels, rows in self._taps:
            top, left = i * dh, j * dw
            shifted = x[
                :,
                top : top + (out_h - 1) * sh + 1 : sh,
                left : left + (out_w - 1) * sw + 1 : sw,
                :,
            ]
            gathered = ops.take(shifted, channels, axis=-1)
            weights = ops.take(kernel, rows, axis=0)
            product = ops.matmul(gathered, weights)
            total = product if total is None else total + product
        if self.use_bias:
            total = total + self.bias
        return self.activation(total)

    def compute_output_shape(self, input_shape):
        if input_shape[1] is None or input_shape[2] is None:
            return (input_shape[0], None, None, self.filters)
        _, out_h, out_w = self._geometry(input_shape[1], input_shape[2])
        return (input_shape[0], out_h, out_w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": list(self.kernel_size),
                "columns": self.columns,
                "strides": list(self.strides),
                "padding": self.padding,
                "dilation_rate": list(self.dilation_rate),
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
            }
        )
        return config


# Its FLOPs: one multiply-accumulate per kept column per filter per output
# position (the kernel is (kept columns, filters)). Not prunable, no channel rule.
registry.register(
    ColumnSparseConv2D, registry.LayerType(flops_at="output", flops_weights=("kernel",))
)
