"""layers_registry: weight names, layouts and lookups for every layer class."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import DEPTHWISE, STANDARD, TRANSPOSED

from keras_admm import layers_registry
from keras_admm.layers_registry import KernelSpec

L = keras.layers

# (layer factory, input shape without batch, weight name, layout, op)
#
# Keras 3 names the DepthwiseConv1D/2D kernel variable "kernel" (attribute
# `layer.kernel`), not "depthwise_kernel" as Keras 2 did.
CASES = {
    "Dense": (lambda: L.Dense(6), (5,), "kernel", STANDARD, "dense"),
    "Conv1D": (lambda: L.Conv1D(6, 3), (8, 5), "kernel", STANDARD, "conv"),
    "Conv2D": (lambda: L.Conv2D(6, 3), (8, 8, 5), "kernel", STANDARD, "conv"),
    "Conv3D": (lambda: L.Conv3D(6, 3), (5, 5, 5, 5), "kernel", STANDARD, "conv"),
    "Conv1DTranspose": (
        lambda: L.Conv1DTranspose(6, 3),
        (8, 5),
        "kernel",
        TRANSPOSED,
        "conv_transpose",
    ),
    "Conv2DTranspose": (
        lambda: L.Conv2DTranspose(6, 3),
        (8, 8, 5),
        "kernel",
        TRANSPOSED,
        "conv_transpose",
    ),
    "Conv3DTranspose": (
        lambda: L.Conv3DTranspose(6, 3),
        (4, 4, 4, 5),
        "kernel",
        TRANSPOSED,
        "conv_transpose",
    ),
    "DepthwiseConv1D": (
        lambda: L.DepthwiseConv1D(3, depth_multiplier=2),
        (8, 5),
        "kernel",
        DEPTHWISE,
        "depthwise",
    ),
    "DepthwiseConv2D": (
        lambda: L.DepthwiseConv2D(3, depth_multiplier=2),
        (8, 8, 5),
        "kernel",
        DEPTHWISE,
        "depthwise",
    ),
    "SeparableConv1D": (
        lambda: L.SeparableConv1D(6, 3, depth_multiplier=2),
        (8, 5),
        "pointwise_kernel",
        STANDARD,
        "separable",
    ),
    "SeparableConv2D": (
        lambda: L.SeparableConv2D(6, 3, depth_multiplier=2),
        (8, 8, 5),
        "pointwise_kernel",
        STANDARD,
        "separable",
    ),
}


def built(factory, input_shape):
    layer = factory()
    layer.build((2,) + input_shape)
    return layer


@pytest.fixture
def clean_registry():
    """Restore the registry after a test that registers classes."""
    saved = dict(layers_registry.REGISTRY)
    yield
    layers_registry.REGISTRY.clear()
    layers_registry.REGISTRY.update(saved)


def test_registry_lists_every_supported_class():
    registered = {cls.__name__ for cls in layers_registry.REGISTRY}
    assert set(CASES) <= registered


@pytest.mark.parametrize("name", sorted(CASES))
def test_spec_and_variable(name):
    factory, input_shape, weight_name, layout, op = CASES[name]
    layer = built(factory, input_shape)
    spec = layers_registry.kernel_spec(layer)
    assert spec == KernelSpec(weight_name, layout, op)
    assert layers_registry.kernel_spec(type(layer)) == spec
    variable = layers_registry.kernel_variable(layer)
    assert variable is getattr(layer, weight_name)
    assert any(variable is w for w in layer.weights)
    assert variable.name == weight_name
    assert variable.path.endswith("/" + weight_name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_axes_match_the_layer_channels(name):
    """The filter axes enumerate the op's outputs and the channel axis its
    inputs: checked against the layer's real input and output shapes."""
    factory, input_shape, _, layout, op = CASES[name]
    layer = built(factory, input_shape)
    kernel = layers_registry.kernel_variable(layer)
    shape = tuple(kernel.shape)
    filters = math.prod(shape[a] for a in layout.filter_axes)
    (channel_axis,) = layout.channel_axes
    in_channels = input_shape[-1]
    out_channels = layer.compute_output_shape((2,) + input_shape)[-1]
    if op == "separable":
        # The pointwise kernel reads the depthwise output: in * multiplier.
        assert shape[channel_axis] == in_channels * layer.depth_multiplier
        assert filters == out_channels
    elif op == "depthwise":
        assert shape[channel_axis] == in_channels
        assert filters == out_channels == in_channels * layer.depth_multiplier
    else:
        assert shape[channel_axis] == in_channels
        assert filters == out_channels


def test_subclass_inherits_its_base_entry():
    class MyConv(keras.layers.Conv2D):
        pass

    class MyConvChild(MyConv):
        pass

    base = layers_registry.kernel_spec(keras.layers.Conv2D)
    assert layers_registry.kernel_spec(MyConv) is base
    assert layers_registry.kernel_spec(MyConvChild(4, 3)) is base
    layer = built(lambda: MyConvChild(4, 3), (6, 6, 2))
    assert layers_registry.kernel_variable(layer) is layer.kernel


class Scale(keras.layers.Layer):
    """A custom layer with a kernel called 'w' (out, in), unknown to Keras."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(self.units, input_shape[-1]), name="w")
        self.b = self.add_weight(shape=(self.units,), name="b")

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.w)) + self.b


def test_register_a_custom_layer(clean_registry):
    layer = Scale(4, name="scale")
    layer.build((2, 3))
    assert layers_registry.kernel_spec(layer) is None
    spec = KernelSpec("w", TRANSPOSED, "dense")
    layers_registry.register(Scale, spec)
    assert layers_registry.kernel_spec(layer) is spec
    assert layers_registry.kernel_variable(layer) is layer.w

    class ScaleChild(Scale):
        pass

    assert layers_registry.kernel_spec(ScaleChild) is spec


def test_register_overrides_a_base_for_a_subclass(clean_registry):
    class Special(keras.layers.Dense):
        pass

    spec = KernelSpec("kernel", TRANSPOSED, "dense")
    layers_registry.register(Special, spec)
    assert layers_registry.kernel_spec(Special) is spec
    assert layers_registry.kernel_spec(keras.layers.Dense).layout == STANDARD


@pytest.mark.parametrize("value", [int, "Dense", keras.layers.Dense(2)])
def test_register_rejects_non_layer_classes(value):
    with pytest.raises(TypeError, match="keras.Layer subclass"):
        layers_registry.register(value, KernelSpec("kernel", STANDARD, "dense"))


@pytest.mark.parametrize(
    "layer",
    [
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flat"),
        L.BatchNormalization(name="bn"),
        L.Embedding(10, 4, name="embed"),
    ],
    ids=lambda layer: layer.name,
)
def test_unknown_layer(layer):
    assert layers_registry.kernel_spec(layer) is None
    with pytest.raises(ValueError, match=f"'{layer.name}'.*no prunable kernel"):
        layers_registry.kernel_variable(layer)


def test_unbuilt_layer_raises_with_its_name():
    layer = L.Conv2D(4, 3, name="not_yet")
    with pytest.raises(ValueError, match=r"'not_yet'.*Build the model"):
        layers_registry.kernel_variable(layer)


def test_kernel_variable_in_a_model(multi_conv_model):
    for layer in multi_conv_model.layers:
        spec = layers_registry.kernel_spec(layer)
        if spec is None:
            continue
        variable = layers_registry.kernel_variable(layer)
        assert variable.path == f"{layer.name}/{spec.weight_name}"
        np.testing.assert_array_equal(
            variable.numpy(), getattr(layer, spec.weight_name).numpy()
        )
