"""The layer table: everything keras-admm knows about a layer class, in one entry.

One `LayerType` per layer class says
  * which kernel is pruned and its layout (plans, projections, hard pruning),
  * how the layer moves channels (`ChannelRule`: the dependency graph, and how
    `compact` rebuilds it with fewer channels),
  * how its multiply-accumulates are counted (the one FLOP counter, read by
    the sparsity report, `compact`'s summary and the profiler).
Every stage of the pipeline reads this table; adding a layer type is one
`register` call (and its test).

Lookups: the kernel and FLOPs of an entry are inherited by subclasses (walk of
the class hierarchy, the most specific entry wins); the channel rule is used
only for the exact class, because a subclass may move channels differently.

Example:

>>> import keras
>>> from keras_admm import registry
>>> registry.kernel_spec(keras.layers.Conv2D(8, 3)).weight_name
'kernel'
>>> registry.channel_rule(keras.layers.ReLU()).kind
'channelwise'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import keras

from keras_admm.sparsity import KernelLayout

__all__ = [
    "ChannelRule",
    "LayerType",
    "REGISTRY",
    "register",
    "register_flops",
    "lookup",
    "kernel_spec",
    "kernel_variable",
    "channel_rule",
    "flops_of",
    "node_flops",
    "counts_flops",
    "ELEMENTWISE_ACTIVATIONS",
    "acts_per_channel",
    "activation_name",
    "register_elementwise_activation",
]

_KINDS = (
    "weighted",
    "depthwise",
    "separable",
    "channelwise",
    "merge",
    "concat",
    "flatten",
)
_OPS = ("dense", "conv", "conv_transpose", "depthwise", "separable")
# Activations known to act on each value alone (by their __name__). Any other
# activation (softmax, sparsemax, glu, a custom one) may mix channels, so the
# graph does not cut channels through it; register_elementwise_activation adds
# a custom one that is known to be elementwise.
ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu",
    "sigmoid", "hard_sigmoid", "log_sigmoid", "tanh", "hard_tanh", "tanh_shrink",
    "softplus", "softsign", "swish", "silu", "hard_silu", "hard_swish", "mish",
    "exponential", "squareplus", "sparse_plus", "soft_shrink", "hard_shrink",
    "threshold",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ChannelRule:
    """How one layer class moves channels (the dependency graph, `compact`).

    Attributes:
        kind: "weighted" (mixes input channels into output channels: conv,
            dense), "depthwise", "separable", "channelwise" (per-channel, with
            or without parameters: BN, activations, pooling, padding),
            "merge" (Add and friends), "concat" or "flatten".
        kernel: the kernel variable's name (weighted, depthwise, separable).
        in_axis / out_axis: kernel axes of input / output channels.
        count_key: the config key of the output channel count ("filters",
            "units"), or None.
        params: per-channel parameter names of a channelwise layer.
        constant: what a channelwise layer does to a spatially constant input:
            "eval" (apply the layer), "keep" (the same constant: pooling,
            cropping, upsampling) or "zero_border" (zero padding: only a zero
            constant stays constant).
        fold: how a constant input folds into the bias: "dense", "conv"
            (exact only without padding), or None (not foldable).
        resize: for a channelwise layer whose config names its channel count,
            a function (config, kept channels) -> new config.
    """

    kind: str
    kernel: str | None = None
    in_axis: int = -2
    out_axis: int = -1
    count_key: str | None = None
    params: tuple[str, ...] = ()
    constant: str = "eval"
    fold: str | None = None
    resize: object = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(
                f"ChannelRule kind must be one of {', '.join(_KINDS)}, got "
                f"{self.kind!r}."
            )


@dataclasses.dataclass(frozen=True)
class LayerType:
    """What keras-admm knows about one layer class.

    Attributes:
        weight_name: the prunable kernel's variable name (`variable.name`),
            e.g. "kernel"; None when the layer has nothing to prune.
        layout: filter and input-channel axes of that kernel.
        op: "dense", "conv", "conv_transpose", "depthwise" or "separable".
        channels: its ChannelRule, or None (a barrier for the graph).
        flops_at: "input" or "output": the tensor whose positions (all dims
            but batch and channels) each multiply-accumulate the kernels.
        flops_weights: the variables multiply-accumulated at every position.
        flops: optional counter fn(layer, input_shape, output_shape) ->
            FLOPs of one sample (shapes without the batch axis), for layers
            the positions x weights formula does not fit.

    Example:

        registry.register(MyConv, registry.LayerType(
            weight_name="kernel", layout=KernelLayout((-1,), (-2,)), op="conv",
            channels=registry.ChannelRule("weighted", "kernel", -2, -1, "filters"),
            flops_at="output", flops_weights=("kernel",)))
    """

    weight_name: str | None = None
    layout: KernelLayout | None = None
    op: str | None = None
    channels: ChannelRule | None = None
    flops_at: str | None = None
    flops_weights: tuple[str, ...] = ()
    flops: Callable | None = None

    def __post_init__(self):
        if self.weight_name is not None and (self.layout is None or self.op is None):
            raise ValueError(
                f"LayerType with a prunable kernel '{self.weight_name}' needs its "
                "layout (KernelLayout) and op (e.g. 'conv')."
            )
        if self.op is not None and self.op not in _OPS:
            raise ValueError(f"LayerType op must be one of {_OPS}, got {self.op!r}.")
        if self.channels is not None and not isinstance(self.channels, ChannelRule):
            raise TypeError(
                f"LayerType channels must be a ChannelRule, got {self.channels!r}."
            )
        if self.flops_at not in (None, "input", "output"):
            raise ValueError(
                f"LayerType flops_at must be 'input' or 'output', got "
                f"{self.flops_at!r}."
            )


_STANDARD = KernelLayout(filter_axes=(-1,), channel_axes=(-2,))
_TRANSPOSED = KernelLayout(filter_axes=(-2,), channel_axes=(-1,))
# DepthwiseConv kernels are (*spatial, in, multiplier): output channel
# c * multiplier + m is the pair (c, m); input channel c is the slice [..., c, :].
_DEPTHWISE = KernelLayout(filter_axes=(-2, -1), channel_axes=(-2,))


def _resize_reshape(config, channels):
    target = list(config["target_shape"])
    if target[-1] != -1:
        target[-1] = int(channels)
    return {**config, "target_shape": tuple(target)}


_K = ("kernel",)
_CONV = LayerType(
    "kernel",
    _STANDARD,
    "conv",
    ChannelRule("weighted", "kernel", -2, -1, "filters", fold="conv"),
    "output",
    _K,
)
# A transposed conv scatters every input position through the whole kernel.
_TRANSPOSE = LayerType(
    "kernel",
    _TRANSPOSED,
    "conv_transpose",
    ChannelRule("weighted", "kernel", -1, -2, "filters"),
    "input",
    _K,
)
_DENSE = LayerType(
    "kernel",
    _STANDARD,
    "dense",
    ChannelRule("weighted", "kernel", -2, -1, "units", fold="dense"),
    "input",
    _K,
)
_DEPTHWISE_TYPE = LayerType(
    "kernel",
    _DEPTHWISE,
    "depthwise",
    ChannelRule("depthwise", "kernel", -2, -1, fold="conv"),
    "output",
    _K,
)
# Separable convolutions: the pointwise (1x1) kernel carries most FLOPs.
_SEPARABLE = LayerType(
    "pointwise_kernel",
    _STANDARD,
    "separable",
    ChannelRule("separable", "pointwise_kernel", -2, -1, "filters", fold="conv"),
    "output",
    ("depthwise_kernel", "pointwise_kernel"),
)
_EVAL = LayerType(channels=ChannelRule("channelwise"))
_KEEP = LayerType(channels=ChannelRule("channelwise", constant="keep"))
_ZERO_BORDER = LayerType(channels=ChannelRule("channelwise", constant="zero_border"))
_MERGE = LayerType(channels=ChannelRule("merge"))

_L = keras.layers
REGISTRY: dict[type, LayerType] = {
    _L.Dense: _DENSE,
    _L.Conv1D: _CONV,
    _L.Conv2D: _CONV,
    _L.Conv3D: _CONV,
    _L.Conv1DTranspose: _TRANSPOSE,
    _L.Conv2DTranspose: _TRANSPOSE,
    _L.Conv3DTranspose: _TRANSPOSE,
    _L.DepthwiseConv1D: _DEPTHWISE_TYPE,
    _L.DepthwiseConv2D: _DEPTHWISE_TYPE,
    _L.SeparableConv1D: _SEPARABLE,
    _L.SeparableConv2D: _SEPARABLE,
    _L.BatchNormalization: LayerType(
        channels=ChannelRule(
            "channelwise", params=("gamma", "beta", "moving_mean", "moving_variance")
        )
    ),
    _L.PReLU: LayerType(channels=ChannelRule("channelwise", params=("alpha",))),
    **dict.fromkeys(
        (
            _L.ReLU,
            _L.LeakyReLU,
            _L.ELU,
            _L.Activation,
            _L.Identity,
            _L.Dropout,
            _L.SpatialDropout1D,
            _L.SpatialDropout2D,
            _L.SpatialDropout3D,
            _L.GaussianDropout,
            _L.GaussianNoise,
            _L.AlphaDropout,
        ),
        _EVAL,
    ),
    **dict.fromkeys(
        (
            _L.MaxPooling1D,
            _L.MaxPooling2D,
            _L.MaxPooling3D,
            _L.AveragePooling1D,
            _L.AveragePooling2D,
            _L.AveragePooling3D,
            _L.GlobalAveragePooling1D,
            _L.GlobalAveragePooling2D,
            _L.GlobalAveragePooling3D,
            _L.GlobalMaxPooling1D,
            _L.GlobalMaxPooling2D,
            _L.GlobalMaxPooling3D,
            _L.Cropping1D,
            _L.Cropping2D,
            _L.Cropping3D,
            _L.UpSampling1D,
            _L.UpSampling2D,
            _L.UpSampling3D,
        ),
        _KEEP,
    ),
    **dict.fromkeys(
        (_L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D), _ZERO_BORDER
    ),
    **dict.fromkeys(
        (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum), _MERGE
    ),
    # A Reshape that keeps the last axis only moves positions (the graph checks).
    _L.Reshape: LayerType(
        channels=ChannelRule("channelwise", constant="keep", resize=_resize_reshape)
    ),
    _L.Concatenate: LayerType(channels=ChannelRule("concat")),
    _L.Flatten: LayerType(channels=ChannelRule("flatten")),
}
del _L


def _register_keras_ops():
    """Keras ops called on symbolic tensors (`x + y`, `x * 0.5`) are nodes too."""
    try:
        from keras.src.ops import nn as nn_ops
        from keras.src.ops import numpy as numpy_ops
    except ImportError:  # another Keras layout: such nodes become barriers
        return
    for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide"):
        if hasattr(numpy_ops, name):
            REGISTRY[getattr(numpy_ops, name)] = _MERGE
    for name in ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Tanh"):
        if hasattr(nn_ops, name):
            REGISTRY[getattr(nn_ops, name)] = _EVAL


_register_keras_ops()


# -------------------------------------------------------------- registering
def register(layer_class: type, layer_type: LayerType) -> None:
    """Teach keras-admm a layer class: its kernel, channel rule and FLOPs.

    Args:
        layer_class: a keras.Layer subclass (or a keras Operation class).
        layer_type: its LayerType; replaces any earlier entry of the class.

    Raises:
        TypeError: `layer_class` is not a keras.Layer / Operation subclass, or
            `layer_type` is not a LayerType.

    Example:

        registry.register(Scale, registry.LayerType(
            channels=registry.ChannelRule("channelwise", params=("scale",))))
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Operation)):
        raise TypeError(
            f"register() needs a keras.Layer subclass, got {layer_class!r}."
        )
    if not isinstance(layer_type, LayerType):
        raise TypeError(
            f"register() needs a LayerType for {layer_class.__name__}, got "
            f"{layer_type!r}. Build one with keras_admm.registry.LayerType(...)."
        )
    REGISTRY[layer_class] = layer_type


def register_flops(*layer_classes):
    """Decorator: a per-sample FLOP counter fn(layer, input_shape, output_shape).

    Sets the `flops` of each class's LayerType (creating an entry if needed);
    subclasses inherit it. Shapes are tuples without the batch axis.

    Raises:
        TypeError: no class given, or an argument is not a class.

    Example:

        @registry.register_flops(MyGatherConv)
        def gather_flops(layer, input_shape, output_shape):
            return 2 * math.prod(output_shape[:-1]) * layer.kept * layer.filters
    """
    if not layer_classes:
        raise TypeError("register_flops() needs at least one layer class.")
    for cls in layer_classes:
        if not isinstance(cls, type):
            raise TypeError(
                f"register_flops() takes layer classes, got {cls!r}; pass the class "
                "itself, e.g. register_flops(keras.layers.Conv2D)."
            )

    def decorator(fn):
        for cls in layer_classes:
            entry = REGISTRY.get(cls, LayerType())
            REGISTRY[cls] = dataclasses.replace(entry, flops=fn)
        return fn

    return decorator


def register_elementwise_activation(activation) -> None:
    """Declare a custom activation elementwise, so channels are cut through it.

    Args:
        activation: the function or its `__name__`.

    Example:

        registry.register_elementwise_activation(my_clipped_relu)
    """
    name = activation if isinstance(activation, str) else activation.__name__
    ELEMENTWISE_ACTIVATIONS.add(name)


def activation_name(layer):
    """The `__name__` of a layer's activation ("linear" without one)."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return getattr(activation, "__name__", type(activation).__name__)


def acts_per_channel(layer) -> bool:
    """Whether the layer's activation (if any) is known to be elementwise."""
    return activation_name(layer) in ELEMENTWISE_ACTIVATIONS


# ------------------------------------------------------------------ lookups
def lookup(layer, exact=False) -> LayerType | None:
    """The LayerType of `layer` (a layer or a class), or None.

    Args:
        exact: only the class's own entry; otherwise the most specific entry
            along its class hierarchy.
    """
    cls = layer if isinstance(layer, type) else type(layer)
    if exact:
        return REGISTRY.get(cls)
    for base in cls.__mro__:
        if base in REGISTRY:
            return REGISTRY[base]
    return None


def kernel_spec(layer) -> LayerType | None:
    """The entry of `layer` if it has a prunable kernel (inherited), else None."""
    cls = layer if isinstance(layer, type) else type(layer)
    for base in cls.__mro__:
        entry = REGISTRY.get(base)
        if entry is not None and entry.weight_name is not None:
            return entry
    return None


def prunable_classes() -> list[str]:
    return sorted(c.__name__ for c, e in REGISTRY.items() if e.weight_name)


def kernel_variable(layer):
    """The prunable kernel variable of a built `layer`.

    Raises:
        ValueError: the layer has no registered kernel or is not built yet.
    """
    spec = kernel_spec(layer)
    if spec is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no prunable kernel. "
            f"Prunable layer types: {', '.join(prunable_classes())}; register "
            "others with keras_admm.registry.register."
        )
    for variable in layer.weights:
        if variable.name == spec.weight_name:
            return variable
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) has no built variable "
        f"'{spec.weight_name}'. Build the model first, e.g. call it on a batch "
        "or give its Input a shape."
    )


def channel_rule(layer) -> ChannelRule | None:
    """The channel rule of `layer`'s exact class (subclasses may differ)."""
    entry = lookup(layer, exact=True)
    return None if entry is None else entry.channels


def counts_flops(layer) -> bool:
    """Whether the table counts FLOPs for `layer` (kernel layers, custom counters)."""
    entry = lookup(layer)
    return entry is not None and (entry.flops is not None or entry.flops_at is not None)


def _positions(layer, shape):
    """Product of a per-sample shape's dims other than the channel axis."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        dims = tuple(shape[1:])
    else:
        dims = tuple(shape[:-1])
    if any(d is None for d in dims):
        raise ValueError(
            f"FLOPs of layer '{layer.name}' need static shapes, got {tuple(shape)}; "
            "build the model with a fixed input shape, e.g. keras.Input((32, 32, 3))."
        )
    return math.prod(dims)


def node_flops(layer, node):
    """`flops_of` for one call (a Keras node) of `layer`; None: unknown shapes."""
    input_shape = tuple(node.input_tensors[0].shape)[1:]
    output_shape = tuple(node.output_tensors[0].shape)[1:]
    try:
        return flops_of(layer, input_shape, output_shape)
    except ValueError:
        return None


def flops_of(layer, input_shape, output_shape, weight_count=None) -> int:
    """FLOPs (2 x multiply-accumulates) of one sample through one call of `layer`.

    Args:
        layer: the layer.
        input_shape / output_shape: that call's shapes without the batch axis.
        weight_count: the number of kernel weights executed (e.g. only the
            non-zero ones); None counts every weight of `flops_weights`.

    Returns:
        The FLOPs; 0 for layers the table counts nothing for (activations,
        normalisation, pooling).
    """
    entry = lookup(layer)
    if entry is None:
        return 0
    if entry.flops is not None and weight_count is None:
        return int(entry.flops(layer, tuple(input_shape), tuple(output_shape)))
    if entry.flops_at is None:
        return 0
    shape = input_shape if entry.flops_at == "input" else output_shape
    if weight_count is None:
        sizes = {v.name: math.prod(v.shape) for v in layer.weights}
        weight_count = sum(sizes[name] for name in entry.flops_weights)
    return 2 * _positions(layer, shape) * int(weight_count)
