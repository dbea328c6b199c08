"""registry: the one layer table (kernels, channel rules, FLOPs) and its lookups."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import DEPTHWISE, STANDARD, TRANSPOSED, to_numpy

import keras_admm
from keras_admm import registry
from keras_admm.registry import ChannelRule, LayerType

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
    saved = dict(registry.REGISTRY)
    yield
    registry.REGISTRY.clear()
    registry.REGISTRY.update(saved)


def test_registry_lists_every_supported_class():
    registered = {cls.__name__ for cls in registry.REGISTRY}
    assert set(CASES) <= registered
    for name in CASES:
        entry = registry.lookup(getattr(L, name))
        # One entry holds all three: kernel, channel rule, FLOPs.
        assert entry.weight_name and entry.channels and entry.flops_at


def test_register_rejects_a_non_layer_type():
    with pytest.raises(TypeError, match="LayerType"):
        registry.register(L.ReLU, "channelwise")
    with pytest.raises(ValueError, match="kind"):
        ChannelRule("sideways")
    with pytest.raises(ValueError, match="layout"):
        LayerType(weight_name="kernel")


def test_channel_rule_is_for_the_exact_class_only():
    class MyReLU(L.ReLU):
        pass

    assert registry.channel_rule(L.ReLU()).kind == "channelwise"
    assert registry.channel_rule(MyReLU()) is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_spec_and_variable(name):
    factory, input_shape, weight_name, layout, op = CASES[name]
    layer = built(factory, input_shape)
    spec = registry.kernel_spec(layer)
    assert (spec.weight_name, spec.layout, spec.op) == (weight_name, layout, op)
    assert registry.kernel_spec(type(layer)) == spec
    variable = registry.kernel_variable(layer)
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
    kernel = registry.kernel_variable(layer)
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

    base = registry.kernel_spec(keras.layers.Conv2D)
    assert registry.kernel_spec(MyConv) is base
    assert registry.kernel_spec(MyConvChild(4, 3)) is base
    layer = built(lambda: MyConvChild(4, 3), (6, 6, 2))
    assert registry.kernel_variable(layer) is layer.kernel


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
    assert registry.kernel_spec(layer) is None
    spec = LayerType(weight_name="w", layout=TRANSPOSED, op="dense")
    registry.register(Scale, spec)
    assert registry.kernel_spec(layer) is spec
    assert registry.kernel_variable(layer) is layer.w

    class ScaleChild(Scale):
        pass

    assert registry.kernel_spec(ScaleChild) is spec


def test_register_overrides_a_base_for_a_subclass(clean_registry):
    class Special(keras.layers.Dense):
        pass

    spec = LayerType(weight_name="kernel", layout=TRANSPOSED, op="dense")
    registry.register(Special, spec)
    assert registry.kernel_spec(Special) is spec
    assert registry.kernel_spec(keras.layers.Dense).layout == STANDARD


@pytest.mark.parametrize("value", [int, "Dense", keras.layers.Dense(2)])
def test_register_rejects_non_layer_classes(value):
    with pytest.raises(TypeError, match="keras.Layer subclass"):
        registry.register(value, LayerType("kernel", STANDARD, "dense"))


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
    assert registry.kernel_spec(layer) is None
    with pytest.raises(ValueError, match=f"'{layer.name}'.*no prunable kernel"):
        registry.kernel_variable(layer)


def test_unbuilt_layer_raises_with_its_name():
    layer = L.Conv2D(4, 3, name="not_yet")
    with pytest.raises(ValueError, match=r"'not_yet'.*Build the model"):
        registry.kernel_variable(layer)


def test_kernel_variable_in_a_model(multi_conv_model):
    for layer in multi_conv_model.layers:
        spec = registry.kernel_spec(layer)
        if spec is None:
            continue
        variable = registry.kernel_variable(layer)
        assert variable.path == f"{layer.name}/{spec.weight_name}"
        np.testing.assert_array_equal(
            variable.numpy(), getattr(layer, spec.weight_name).numpy()
        )


# ------------------------------------------- a user's own layer types, end to end
@keras.saving.register_keras_serializable(package="test_registry")
class ChannelScale(keras.layers.Layer):
    """A learned per-channel multiplier: moves channels one to one."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer="random_uniform", name="scale"
        )

    def call(self, x):
        return x * self.scale


@keras.saving.register_keras_serializable(package="test_registry")
class MyDense(keras.layers.Layer):
    """A dense layer of the user's own, kernel 'w' (in, out) and 'bias'."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = True

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.bias = self.add_weight(
            shape=(self.units,), initializer="random_normal", name="bias"
        )

    def call(self, x):
        return keras.ops.matmul(x, self.w) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_users_layer_types_prune_compact_and_count(clean_registry):
    """Two entries teach every stage: plan, group pruning, compaction, FLOPs."""
    registry.register(
        ChannelScale, LayerType(channels=ChannelRule("channelwise", params=("scale",)))
    )
    registry.register(
        MyDense,
        LayerType(
            weight_name="w",
            layout=STANDARD,
            op="dense",
            channels=ChannelRule("weighted", "w", -2, -1, "units", fold="dense"),
            flops_at="input",
            flops_weights=("w",),
        ),
    )
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="c1")(inputs)
    x = ChannelScale(name="scale")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = MyDense(12, name="mine")(x)
    x = L.ReLU()(x)
    outputs = L.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)

    plan = keras_admm.PruningPlan({"c1": "filter:0.5", "mine": "filter:0.5"})
    masks = keras_admm.hard_prune(model, plan, graph=True)
    # The filter cut of c1 reaches MyDense's input rows through ChannelScale.
    mine_mask = masks["mine/w"]
    assert (mine_mask.sum(axis=1) > 0).sum() == 4
    assert (mine_mask.sum(axis=0) > 0).sum() == 6

    small, summary = keras_admm.compact(model, return_summary=True)
    x = np.random.RandomState(0).uniform(0, 1, (5, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(small(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
    assert small.get_layer("c1").filters == 4
    assert tuple(small.get_layer("scale").scale.shape) == (4,)
    assert small.get_layer("mine").units == 6
    # One FLOP counter: the profiler, the report and the summary agree.
    assert keras_admm.count_flops(small) == summary.totals["flops_after"]
    mine_row = next(r for r in summary.rows if r["layer"] == "mine")
    assert mine_row["flops_before"] == 2 * 8 * 12
    assert mine_row["flops_after"] == 2 * 4 * 6
    report = keras_admm.sparsity_report(model, plan)
    mine_report = next(r for r in report.rows if r["layer"] == "mine")
    assert mine_report["flops_before"] == 2 * 8 * 12
