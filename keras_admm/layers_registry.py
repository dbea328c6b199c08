"""Per-layer knowledge in one table: which weight is pruned and its layout.

`kernel_spec(layer)` answers for any layer: the name of its prunable kernel
variable, the kernel layout (which axes are filters and input channels) and the
kind of operation (for FLOP counting). Layers not in the table have no
prunable kernel. Subclasses of a registered class inherit its entry.

Example:

>>> import keras
>>> from keras_admm import layers_registry
>>> layers_registry.kernel_spec(keras.layers.Conv2D(8, 3)).weight_name
'kernel'
"""

from __future__ import annotations

import dataclasses

import keras

from keras_admm.sparsity import KernelLayout

__all__ = ["KernelSpec", "kernel_spec", "kernel_variable", "register", "REGISTRY"]


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """What to prune in a layer.

    Attributes:
        weight_name: the variable's name (`variable.name`), e.g. "kernel".
        layout: filter and input-channel axes of that kernel.
        op: "dense", "conv", "conv_transpose", "depthwise" or "separable".
    """

    weight_name: str
    layout: KernelLayout
    op: str


_STANDARD = KernelLayout(filter_axes=(-1,), channel_axes=(-2,))
_TRANSPOSED = KernelLayout(filter_axes=(-2,), channel_axes=(-1,))
# DepthwiseConv kernels are (*spatial, in, multiplier): output channel
# c * multiplier + m is the pair (c, m); input channel c is the slice [..., c, :].
_DEPTHWISE = KernelLayout(filter_axes=(-2, -1), channel_axes=(-2,))

REGISTRY: dict[type, KernelSpec] = {
    keras.layers.Dense: KernelSpec("kernel", _STANDARD, "dense"),
    keras.layers.Conv1D: KernelSpec("kernel", _STANDARD, "conv"),
    keras.layers.Conv2D: KernelSpec("kernel", _STANDARD, "conv"),
    keras.layers.Conv3D: KernelSpec("kernel", _STANDARD, "conv"),
    keras.layers.Conv1DTranspose: KernelSpec("kernel", _TRANSPOSED, "conv_transpose"),
    keras.layers.Conv2DTranspose: KernelSpec("kernel", _TRANSPOSED, "conv_transpose"),
    keras.layers.Conv3DTranspose: KernelSpec("kernel", _TRANSPOSED, "conv_transpose"),
    keras.layers.DepthwiseConv1D: KernelSpec("kernel", _DEPTHWISE, "depthwise"),
    keras.layers.DepthwiseConv2D: KernelSpec("kernel", _DEPTHWISE, "depthwise"),
    # Separable convolutions: the pointwise (1x1) kernel carries most FLOPs.
    keras.layers.SeparableConv1D: KernelSpec(
        "pointwise_kernel", _STANDARD, "separable"
    ),
    keras.layers.SeparableConv2D: KernelSpec(
        "pointwise_kernel", _STANDARD, "separable"
    ),
}


def register(layer_class: type, spec: KernelSpec) -> None:
    """Teach keras-admm the prunable kernel of a custom layer class."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Layer)):
        raise TypeError(
            f"register() needs a keras.Layer subclass, got {layer_class!r}."
        )
    REGISTRY[layer_class] = spec


def kernel_spec(layer) -> KernelSpec | None:
    """The KernelSpec of `layer` (a layer or a layer class), or None."""
    cls = layer if isinstance(layer, type) else type(layer)
    for base in cls.__mro__:
        if base in REGISTRY:
            return REGISTRY[base]
    return None


def kernel_variable(layer):
    """The prunable kernel variable of a built `layer`.

    Raises:
        ValueError: the layer has no registered kernel or is not built yet.
    """
    spec = kernel_spec(layer)
    if spec is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no prunable kernel. "
            f"Prunable layer types: {', '.join(sorted(c.__name__ for c in REGISTRY))}."
        )
    for variable in layer.weights:
        if variable.name == spec.weight_name:
            return variable
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) has no built variable "
        f"'{spec.weight_name}'. Build the model first, e.g. call it on a batch "
        "or give its Input a shape."
    )
