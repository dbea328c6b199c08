"""compact(): the converted model is smaller and computes the same outputs."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_admm
from keras_admm import compaction, graph, models
from keras_admm.compaction import ColumnSparseConv2D, compact
from keras_admm.plan import PruningPlan
from keras_admm.testing import fuzz

layers = keras.layers
TOLERANCE = 1e-4


# --------------------------------------------------------------- builders
def vgg_bn(name="vgg_bn"):
    """A small VGG with BN: two conv-BN-ReLU stages, max pooling, dense head."""
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for stage, width in enumerate((16, 32)):
        for i in range(2):
            x = layers.Conv2D(width, 3, padding="same", name=f"c{stage}{i}")(x)
            x = layers.BatchNormalization(name=f"bn{stage}{i}")(x)
            x = layers.ReLU(name=f"relu{stage}{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    outputs = layers.Dense(10, name="fc2")(x)
    return keras.Model(inputs, outputs, name=name)


def dense_block(name="densenet"):
    """DenseNet-style: every layer reads the concatenation of all before it."""
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    for i in range(3):
        y = layers.BatchNormalization(name=f"bn{i}")(x)
        y = layers.ReLU(name=f"relu{i}")(y)
        y = layers.Conv2D(12, 1, name=f"bottleneck{i}")(y)
        y = layers.Conv2D(8, 3, padding="same", name=f"grow{i}")(y)
        x = layers.Concatenate(name=f"concat{i}")([x, y])
    x = layers.Conv2D(24, 1, name="transition")(x)
    x = layers.AveragePooling2D(2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def inception_block(name="inception"):
    """Inception-style: four branches (1x1, 3x3, 5x5, pool-proj), concatenated."""
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    b1 = layers.Conv2D(8, 1, activation="relu", name="b1_1x1")(x)
    b2 = layers.Conv2D(8, 1, activation="relu", name="b2_reduce")(x)
    b2 = layers.Conv2D(12, 3, padding="same", activation="relu", name="b2_3x3")(b2)
    b3 = layers.Conv2D(4, 1, activation="relu", name="b3_reduce")(x)
    b3 = layers.Conv2D(8, 5, padding="same", activation="relu", name="b3_5x5")(b3)
    b4 = layers.MaxPooling2D(3, 1, padding="same", name="b4_pool")(x)
    b4 = layers.Conv2D(8, 1, activation="relu", name="b4_proj")(b4)
    x = layers.Concatenate(name="mixed")([b1, b2, b3, b4])
    x = layers.Conv2D(16, 1, activation="relu", name="after")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def shared_layer_model(name="shared"):
    """One Conv2D called twice (two nodes, one set of weights)."""
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    shared = layers.Conv2D(16, 3, padding="same", name="shared")
    y = shared(x)
    y = layers.ReLU(name="relu")(y)
    y = shared(y)
    x = layers.Add(name="add")([x, y])
    x = layers.Conv2D(16, 1, name="head")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def conv1d_model(name="conv1d"):
    inputs = keras.Input((20, 4))
    x = layers.Conv1D(16, 3, activation="relu", name="c1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling1D(2, name="pool")(x)
    x = layers.Conv1D(16, 3, padding="same", name="c2")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def conv3d_and_separable1d(name="exotic"):
    """Conv3D and 1D depthwise / separable layers, side by side."""
    volume = keras.Input((6, 6, 6, 2), name="volume")
    v = layers.Conv3D(12, 3, activation="relu", name="c3d")(volume)
    v = layers.BatchNormalization(name="bn3d")(v)
    v = layers.Conv3D(12, 1, name="c3d_2")(v)
    v = layers.GlobalAveragePooling3D(name="gap3d")(v)
    sequence = keras.Input((16, 3), name="sequence")
    s = layers.Conv1D(12, 3, name="c1d")(sequence)
    s = layers.SeparableConv1D(12, 3, depth_multiplier=2, name="sep1d")(s)
    s = layers.DepthwiseConv1D(3, name="dw1d")(s)
    s = layers.Conv1D(12, 1, name="c1d_2")(s)
    s = layers.GlobalAveragePooling1D(name="gap1d")(s)
    x = layers.Concatenate(name="joint")([v, s])
    outputs = layers.Dense(4, name="fc")(x)
    return keras.Model([volume, sequence], outputs, name=name)


def transpose_model(name="transpose"):
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.Conv2DTranspose(16, 3, strides=2, padding="same", name="up")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Conv2D(8, 3, name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def vgg16_bn(width=16, name="vgg16_bn"):
    """VGG-16 with BN (CIFAR head): 13 conv-BN-ReLU, 5 pools, 3 dense layers.

    Widths are width x (1, 2, 4, 8, 8) (64 in the original) to keep tests fast.
    """
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for stage, (repeat, factor) in enumerate(((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))):
        for i in range(repeat):
            x = layers.Conv2D(
                width * factor, 3, padding="same", name=f"conv{stage}_{i}"
            )(x)
            x = layers.BatchNormalization(name=f"bn{stage}_{i}")(x)
            x = layers.ReLU(name=f"relu{stage}_{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    x = layers.Dense(64, activation="relu", name="fc2")(x)
    outputs = layers.Dense(10, name="fc3")(x)
    return keras.Model(inputs, outputs, name=name)


def two_in_two_out(name="multi_io"):
    """Two inputs (image, vector) and a dict of two outputs."""
    image = keras.Input((8, 8, 3), name="image")
    vector = keras.Input((5,), name="vector")
    x = layers.Conv2D(16, 3, activation="relu", name="c1")(image)
    x = layers.Conv2D(16, 3, activation="relu", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    v = layers.Dense(12, activation="relu", name="v1")(vector)
    joint = layers.Concatenate(name="joint")([x, v])
    joint = layers.Dense(16, activation="relu", name="j1")(joint)
    outputs = {
        "logits": layers.Dense(4, name="logits")(joint),
        "score": layers.Dense(1, name="score")(x),
    }
    return keras.Model({"image": image, "vector": vector}, outputs, name=name)


def squeeze_excite(name="squeeze_excite"):
    """A conv with a squeeze-and-excitation gate: GAP, Reshape, 2 Dense, Multiply."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    s = layers.GlobalAveragePooling2D(name="squeeze")(x)
    s = layers.Reshape((1, 1, 16), name="reshape")(s)
    s = layers.Dense(4, activation="relu", name="se_reduce")(s)
    s = layers.Dense(16, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="excite")([x, s])
    x = layers.Conv2D(8, 1, name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def keras_ops_model(name="keras_ops"):
    """Keras ops on symbolic tensors are nodes too: hard-swish, residual `+`."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = x * keras.ops.relu6(x + 3.0) * (1.0 / 6.0)  # MobileNetV3's hard-swish
    y = layers.Conv2D(16, 1, name="c2")(x)
    x = keras.ops.sigmoid(x + y)
    x = layers.Conv2D(8, 3, name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2():
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )


def resnet20():
    return models.resnet_cifar(20)


def resnet56():
    return models.resnet_cifar(56)


def lenet5():
    return models.lenet5()


# ------------------------------------------------------------------ helpers
def _inputs(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [
        rng.normal(size=(batch, *x.shape[1:])).astype("float32") for x in model.inputs
    ]
    return arrays[0] if len(arrays) == 1 else arrays


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()]


def _prune(model, spec, seed=0, **uniform):
    fuzz.randomize_weights(model, seed)
    plan = PruningPlan.uniform(model, spec, **uniform)
    return keras_admm.hard_prune(model, plan, graph=True)


def _compact_and_check(model, x, **kwargs):
    before = _snapshot(model)
    nodes = [len(layer._inbound_nodes) for layer in model.layers]
    expected = keras.ops.convert_to_numpy(model(x))
    small, summary = compact(model, return_summary=True, **kwargs)
    actual = keras.ops.convert_to_numpy(small(x))
    error = fuzz.max_relative_error(expected, actual)
    assert error <= TOLERANCE, f"{model.name}: relative error {error}"
    for a, b in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(a, b)  # the input model is not mutated
    assert nodes == [len(layer._inbound_nodes) for layer in model.layers]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), expected)
    return small, summary


# ------------------------------------------------------------- equivalence
ARCHITECTURES = {
    "lenet5": (lenet5, "filter:0.8", {"skip_first": False}),
    "resnet20": (resnet20, "filter:0.8", {"skip_first": False}),
    "resnet56": (resnet56, "filter:0.8", {"skip_first": False}),
    "vgg16_bn": (vgg16_bn, "filter:0.8", {"skip_first": False}),
    "vgg_bn": (vgg_bn, "filter:0.75", {}),
    "mobilenet_v2": (mobilenet_v2, "filter:0.8", {}),
    "densenet": (dense_block, "filter:0.75", {"skip_first": False}),
    "inception": (inception_block, "filter:0.75", {"skip_first": False}),
    "shared_layer": (shared_layer_model, "filter:0.75", {"skip_first": False}),
    "squeeze_excite": (squeeze_excite, "filter:0.75", {"skip_first": False}),
    "keras_ops": (keras_ops_model, "filter:0.75", {"skip_first": False}),
    "conv1d": (conv1d_model, "filter:0.75", {"skip_first": False}),
    "conv2d_transpose": (transpose_model, "filter:0.75", {"skip_first": False}),
    "conv3d_separable1d": (
        conv3d_and_separable1d,
        "filter:0.75",
        {"skip_first": False},
    ),
}


# The larger graphs: the same graph code on every backend, and
# the slowest tests of the jax pass (eager ops compile each shape): run there
# only on tensorflow.
# ResNet-20 is compacted on jax by the summary and save/load tests below.
_LARGE = {"mobilenet_v2", "inception", "densenet", "resnet20", "resnet56", "vgg16_bn"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.tensorflow_only) if n in _LARGE else n
        for n in sorted(ARCHITECTURES)
    ],
)
def test_compact_matches_and_shrinks(name):
    build, spec, uniform = ARCHITECTURES[name]
    model = build()
    _prune(model, spec, **uniform)
    small, summary = _compact_and_check(model, _inputs(model))
    assert small is not model
    assert small.count_params() < 0.6 * model.count_params()
    totals = summary.totals
    assert totals["flops_after"] < 0.6 * totals["flops_before"]
    assert totals["params_after"] == sum(r["params_after"] for r in summary.rows)
    assert summary.removed_channels > summary.kept_channels  # most channels go


def test_resnet20_removes_most_groups_through_residual_adds():
    model = resnet20()
    _prune(model, "filter:0.9", skip_first=False)
    small, _ = _compact_and_check(model, _inputs(model))
    kept = {
        layer.name: layer.filters for layer in small.layers if hasattr(layer, "filters")
    }
    # One residual group per stage: every conv writing into it keeps the same
    # (small) number of filters, so the Adds line up.
    assert kept["conv1"] == kept["s1b0_conv2"] == kept["s1b2_conv2"] < 16
    assert kept["s3b0_proj"] == kept["s3b2_conv2"] < 64


@pytest.mark.tensorflow_only  # MobileNetV2 is one of the _LARGE graphs above
def test_mobilenet_depthwise_channels_follow_their_group():
    model = mobilenet_v2()
    _prune(model, "filter:0.8")
    small, summary = _compact_and_check(model, _inputs(model))
    for layer in small.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            original = model.get_layer(layer.name)
            assert layer.kernel.shape[-2] <= original.kernel.shape[-2]
    shrunk = [
        r
        for r in summary.rows
        if r["class_before"] == "DepthwiseConv2D"
        and r["params_after"] < r["params_before"]
    ]
    assert len(shrunk) > 10


def test_densenet_concatenate_keeps_offsets_right():
    model = dense_block()
    _prune(model, "filter:0.75", skip_first=False)
    small, _ = _compact_and_check(model, _inputs(model))
    concat = small.get_layer("concat2").output.shape[-1]
    parts = [
        small.get_layer(n).output.shape[-1] for n in ("stem", "grow0", "grow1", "grow2")
    ]
    assert concat == sum(parts) < 16 + 3 * 8


def test_multiple_inputs_and_a_dict_of_outputs():
    model = two_in_two_out()
    _prune(model, "filter:0.75", skip_first=False)
    rng = np.random.default_rng(0)
    x = {
        "image": rng.normal(size=(3, 8, 8, 3)).astype("float32"),
        "vector": rng.normal(size=(3, 5)).astype("float32"),
    }
    expected = model(x)
    small = compact(model)
    actual = small(x)
    assert set(actual) == {"logits", "score"}
    assert fuzz.max_relative_error(expected, actual) <= TOLERANCE
    assert small.get_layer("c1").filters < 16 and small.get_layer("v1").units < 12


def test_shared_layer_stays_one_layer_with_two_nodes():
    model = shared_layer_model()
    _prune(model, "filter:0.75", skip_first=False)
    small, _ = _compact_and_check(model, _inputs(model))
    shared = small.get_layer("shared")
    assert len(shared._inbound_nodes) == 2
    assert shared.filters < 16


def test_dense_after_flatten_rows_follow_conv_channels():
    model = lenet5()
    _prune(model, "filter:0.8", skip_first=False)
    small, _ = _compact_and_check(model, _inputs(model))
    conv2 = small.get_layer("conv2").filters
    assert small.get_layer("fc1").kernel.shape[0] == 4 * 4 * conv2


# ----------------------------------------------------- constant folding
def _folding_model(consumer_padding, between=(), activation="relu"):
    inputs = keras.Input((9, 9, 3))
    x = layers.Conv2D(8, 3, activation=activation, name="producer")(inputs)
    for layer in between:
        x = layer(x)
    x = layers.Conv2D(6, 3, padding=consumer_padding, use_bias=False, name="consumer")(
        x
    )
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(4, name="fc")(x)
    return keras.Model(inputs, outputs, name="folding")


def _zero_filters(model, layer_name, filters, bias_value=0.7):
    layer = model.get_layer(layer_name)
    kernel = np.array(layer.kernel)
    kernel[..., filters] = 0.0
    layer.kernel.assign(kernel)
    bias = np.array(layer.bias)
    bias[filters] = bias_value  # a non-zero constant flows on
    layer.bias.assign(bias)


def test_pruned_filter_with_bias_is_folded_into_valid_conv():
    model = _folding_model("valid")
    _zero_filters(model, "producer", [1, 4, 6])
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == 5
    # The consumer had no bias: folding the constant gave it one.
    assert small.get_layer("consumer").use_bias


def test_bn_beta_constant_is_folded_through_bn_and_pooling():
    between = [
        layers.BatchNormalization(name="bn"),
        layers.ReLU(name="relu"),
        layers.MaxPooling2D(1, name="pool"),
    ]
    model = _folding_model("valid", between)
    fuzz.randomize_weights(model, 3)
    _zero_filters(model, "producer", [0, 2])
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == 6
    assert small.get_layer("bn").gamma.shape == (6,)


@pytest.mark.parametrize("shared_axes, removed", [([1, 2], True), (None, False)])
def test_prelu_constant_folds_only_with_per_channel_alpha(shared_axes, removed):
    # A negative constant through PReLU is alpha * constant: uniform with a
    # per-channel alpha, varying over positions with a per-position alpha.
    prelu = layers.PReLU(shared_axes=shared_axes, name="prelu")
    model = _folding_model("valid", [prelu], activation=None)
    fuzz.randomize_weights(model, 5)
    _zero_filters(model, "producer", [2, 5], bias_value=-0.8)
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == (6 if removed else 8)


def test_constant_channel_kept_where_same_padding_makes_folding_inexact():
    model = _folding_model("same")
    _zero_filters(model, "producer", [1, 4])
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == 8


def test_zero_padding_stops_constant_folding():
    model = _folding_model("valid", [layers.ZeroPadding2D(1, name="pad")])
    _zero_filters(model, "producer", [3])
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == 8


def test_zero_constant_is_removed_even_through_zero_padding():
    model = _folding_model("same", [layers.ZeroPadding2D(1, name="pad")])
    _zero_filters(model, "producer", [3, 5], bias_value=-1.0)  # relu(-1) == 0
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == 6


def test_filters_nobody_reads_are_removed_backwards():
    model = _folding_model("valid")
    consumer = model.get_layer("consumer")
    kernel = np.array(consumer.kernel)
    kernel[:, :, [0, 5], :] = 0.0  # the consumer ignores producer channels 0, 5
    consumer.kernel.assign(kernel)
    small, _ = _compact_and_check(model, _inputs(model))
    assert small.get_layer("producer").filters == 6


# ------------------------------------------------------------------- align
def test_align_keeps_multiples_and_stays_exact():
    model = vgg_bn()
    _prune(model, "filter:0.7", skip_first=False)
    small, _ = _compact_and_check(model, _inputs(model), align=8)
    plain = compact(model)
    for name in ("c00", "c01", "c10", "c11"):
        filters = small.get_layer(name).filters
        assert filters % 8 == 0
        assert filters >= plain.get_layer(name).filters


# -------------------------------------------------------- barriers, errors
def test_unknown_layer_is_a_barrier_and_reported():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = layers.Reshape((8, 4, 16), name="reshape")(x)
    x = layers.Conv2D(8, 3, name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    _prune(model, "filter:0.75", skip_first=False)
    small, summary = _compact_and_check(model, _inputs(model))
    assert [b.layer for b in summary.barriers] == ["reshape"]
    assert small.get_layer("c1").filters == 8  # pinned by the barrier
    assert small.get_layer("c2").filters < 8
    assert "reshape" in str(summary)


def test_lambda_and_nested_models_are_copied_as_barriers():
    inner = keras.Sequential(
        [keras.Input((6, 6, 8)), layers.Conv2D(8, 1, name="inner_conv")], name="inner"
    )
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = inner(x)
    x = layers.Conv2D(8, 3, name="c2")(x)
    x = layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = layers.Conv2D(8, 1, name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    _prune(model, "filter:0.75", skip_first=False)
    small, summary = _compact_and_check(model, _inputs(model))
    assert {b.layer for b in summary.barriers} == {"inner", "double"}
    assert small.get_layer("inner") is not inner
    assert small.get_layer("c3").filters < 8  # between the Lambda and the head


def test_subclassed_model_gets_a_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        compact(net)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"align": 0}, ValueError),
        ({"align": "8"}, TypeError),
        ({"align": True}, TypeError),
        ({"column_sparse": "sometimes"}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match="compact"):
        compact(lenet5(), **kwargs)


# ------------------------------------------------------- column sparsity
def _column_model():
    inputs = keras.Input((12, 12, 16))
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", name="c2")(x)
    x = layers.Conv2D(16, 3, dilation_rate=2, padding="valid", name="c3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, name="fc")(x)
    return keras.Model(inputs, outputs, name="columns")


@pytest.mark.parametrize(
    "strides, padding, dilation",
    [(1, "same", 1), (2, "same", 1), (1, "valid", 2), (2, "valid", 1), (3, "same", 1)],
)
def test_column_sparse_conv_matches_conv2d(strides, padding, dilation):
    rng = np.random.default_rng(0)
    conv = layers.Conv2D(5, 3, strides=strides, padding=padding, dilation_rate=dilation)
    x = rng.normal(size=(2, 9, 10, 4)).astype("float32")
    conv(x)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    keep = rng.random((3, 3, 4)) < 0.3
    keep[1, 1, 0] = True
    kernel *= keep[..., None]
    conv.kernel.assign(kernel)
    columns = np.argwhere(keep)
    sparse = ColumnSparseConv2D(
        5, 3, columns.tolist(), strides, padding, dilation, use_bias=True
    )
    sparse(x)
    sparse.kernel.assign(kernel[keep])
    sparse.bias.assign(np.array(conv.bias))
    np.testing.assert_allclose(
        to_numpy(sparse(x)), to_numpy(conv(x)), rtol=1e-5, atol=1e-5
    )


def test_column_sparse_rewrite_saves_and_loads(tmp_path):
    model = _column_model()
    fuzz.randomize_weights(model, 0)
    keras_admm.hard_prune(model, PruningPlan({"c2": "shape:0.8", "c3": "shape:0.8"}))
    x = _inputs(model)
    small, summary = _compact_and_check(model, x, column_sparse="always")
    assert isinstance(small.get_layer("c2"), ColumnSparseConv2D)
    assert isinstance(small.get_layer("c3"), ColumnSparseConv2D)
    assert "column-sparse" in str(summary)
    row = next(r for r in summary.rows if r["layer"] == "c2")
    assert row["flops_after"] < 0.3 * row["flops_before"]
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_numpy(loaded(x)), to_numpy(small(x)), rtol=1e-6, atol=1e-6
    )
    config = small.get_layer("c2").get_config()
    clone = ColumnSparseConv2D.from_config(config)
    assert clone.get_config() == config


def test_column_sparse_auto_follows_the_cost_model():
    model = _column_model()
    keras_admm.hard_prune(model, PruningPlan({"c1": "shape:0.5"}))
    small, summary = compact(model, return_summary=True)
    assert not any(isinstance(layer, ColumnSparseConv2D) for layer in small.layers)
    row = next(r for r in summary.rows if r["layer"] == "c1")
    assert "would not pay" in row["note"]
    assert isinstance(
        compact(model, column_sparse="always").get_layer("c1"), ColumnSparseConv2D
    )


def test_cost_model_prefers_deep_small_layers():
    pays = compaction.column_sparse_pays
    assert pays(0.2, 8 * 8, 256)
    assert not pays(0.5, 8 * 8, 256)
    assert pays(0.1, 16 * 16, 128) and not pays(0.25, 16 * 16, 128)
    assert not pays(0.1, 32 * 32, 64)
    assert not pays(0.1, None, 256)


@pytest.mark.tensorflow_only
def test_column_sparse_layer_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _column_model()
    keras_admm.hard_prune(model, PruningPlan({"c2": "shape:0.8"}))
    small = compact(model, column_sparse="always")
    x = _inputs(small)
    expected = keras.ops.convert_to_numpy(small(x))
    path = os.path.join(tmp_path, "small.onnx")
    small.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- summary
def test_summary_as_text_dict_and_markdown():
    model = lenet5()
    _prune(model, "filter:0.8", skip_first=False)
    _, summary = compact(model, return_summary=True)
    data = summary.to_dict()
    row = next(r for r in data["rows"] if r["layer"] == "conv2")
    assert row["shape_before"] == [None, 8, 8, 50]
    assert row["shape_after"][-1] < 50
    assert row["flops_after"] < row["flops_before"]
    assert data["totals"]["params_reduction"] > 5
    # FLOPs before agree with sparsity_report's count of the dense kernels.
    report = {r["layer"]: r for r in keras_admm.sparsity_report(model).rows}
    for name in ("conv1", "conv2", "fc1", "fc2"):
        mine = next(r for r in data["rows"] if r["layer"] == name)
        assert mine["flops_before"] == report[name]["flops_before"]
    text = str(summary)
    assert "conv2" in text and "fewer" in text
    markdown = summary.to_markdown()
    assert markdown.startswith("| layer |") and "| conv2 |" in markdown


def test_summary_json_round_trips_and_compacting_twice_changes_nothing():
    import json

    model = resnet20()
    _prune(model, "filter:0.8", skip_first=False)
    small, summary = compact(model, return_summary=True)
    data = json.loads(summary.to_json())
    assert data["totals"]["params_after"] == small.count_params()
    assert data["totals"]["params_before"] == model.count_params()
    again, second = _compact_and_check(small, _inputs(small))
    assert again.count_params() == small.count_params()
    assert second.removed_channels == 0


def test_compact_needs_nothing_pruned_to_work():
    model = vgg_bn()
    x = _inputs(model)
    small, summary = _compact_and_check(model, x)
    assert small.count_params() == model.count_params()
    assert summary.removed_channels == 0


def test_compact_of_saved_and_loaded_model(tmp_path):
    model = resnet20()
    _prune(model, "filter:0.8", skip_first=False)
    path = os.path.join(tmp_path, "small.keras")
    compact(model).save(path)
    loaded = keras.saving.load_model(path)
    x = _inputs(model)
    error = fuzz.max_relative_error(model(x), loaded(x))
    assert error <= TOLERANCE


def test_graph_module_reports_the_same_barriers():
    """A layer without a channel rule between two convs: compact's summary and
    the dependency graph name the same barrier, and its channels stay."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = layers.LayerNormalization(name="norm")(x)  # mixes channels: no rule
    x = layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    _prune(model, "filter:0.75", skip_first=False)
    # Channels 0-3 of c1 emit zeros and c2 does not read them: only the barrier
    # keeps them (LayerNormalization's mean and variance run over all 8).
    c1, c2 = model.get_layer("c1"), model.get_layer("c2")
    c1.kernel.assign(np.asarray(c1.kernel) * (np.arange(8) >= 4))
    c1.bias.assign(np.asarray(c1.bias) * (np.arange(8) >= 4))
    c2.kernel.assign(np.asarray(c2.kernel) * (np.arange(8) >= 4)[:, None])

    barriers = graph.DependencyGraph.from_model(model).barriers
    assert [(b.layer, b.layer_class) for b in barriers] == [
        ("norm", "LayerNormalization")
    ]
    assert "no channel rule" in barriers[0].reason
    small, summary = _compact_and_check(model, _inputs(model))
    assert summary.barriers == barriers
    assert summary.to_dict()["barriers"] == [
        {
            "layer": "norm",
            "layer_class": "LayerNormalization",
            "reason": barriers[0].reason,
        }
    ]
    row = next(r for r in summary.rows if r["layer"] == "norm")
    assert row["note"] == f"barrier: {barriers[0].reason}"
    # The channels on both sides of the barrier are kept, those past c2 are not.
    assert small.get_layer("c1").filters == 8
    assert tuple(small.get_layer("norm").gamma.shape) == (8,)
    assert small.get_layer("c2").kernel.shape[-2] == 8
    assert small.get_layer("c2").filters < 8


# ------------------------------------------------------------------- fuzz
# The fuzzed graphs run on tensorflow (graph code, the same on every backend;
# on jax eager ops compile each shape: 2-7 s a graph).
@pytest.mark.tensorflow_only
@pytest.mark.parametrize("seed", range(10))
def test_fuzzed_architectures_match(seed):
    result = fuzz.check_seed(seed)
    assert result.matched, str(result)


def test_max_relative_error_rejects_a_lost_output_or_a_broadcast_shape():
    # The equivalence checks of this file rest on it: a compacted model that
    # dropped an output, or returns (1, N) for (B, N), must not count as equal.
    batch = np.ones((3, 4), np.float32)
    assert fuzz.max_relative_error([batch, 2 * batch], [batch, 2 * batch]) == 0.0
    assert fuzz.max_relative_error(batch, batch + 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 outputs expected, got 1"):
        fuzz.max_relative_error([batch, batch], [batch])
    with pytest.raises(ValueError, match=r"output 0: shape \(3, 4\) expected"):
        fuzz.max_relative_error(batch, batch[:1])


# ------------------------------------- activations that may mix channels (issue 12)
def _zero_first_units(layer, count):
    kernel = layer.kernel.numpy()
    kernel[..., :count] = 0.0
    layer.kernel.assign(kernel)


@pytest.mark.parametrize("where", ["dense_activation", "activation_layer", "custom"])
def test_compact_keeps_channels_behind_activations_that_mix_them(where):
    keras.utils.set_random_seed(0)

    def l2_normalize(x):  # a custom activation that mixes channels
        return x / keras.ops.sqrt(keras.ops.sum(x * x, axis=-1, keepdims=True) + 1.0)

    inputs = keras.Input((6,))
    if where == "dense_activation":
        hidden = keras.layers.Dense(8, activation="sparsemax", name="hidden")(inputs)
    elif where == "activation_layer":
        hidden = keras.layers.Dense(8, name="hidden")(inputs)
        hidden = keras.layers.Activation("sparsemax", name="act")(hidden)
    else:
        hidden = keras.layers.Dense(8, name="hidden")(inputs)
        hidden = keras.layers.Activation(l2_normalize, name="act")(hidden)
    outputs = keras.layers.Dense(3, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    _zero_first_units(model.get_layer("hidden"), 4)  # what a per-layer filter cut does
    small = compact(model)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32") * 3
    np.testing.assert_allclose(
        to_numpy(small(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
    assert small.get_layer("hidden").units == 8  # nothing cut through it


def test_an_elementwise_custom_activation_can_be_declared():
    from keras_admm import registry

    @keras.saving.register_keras_serializable(package="test_compaction")
    def clipped(x):
        return keras.ops.clip(x, 0.0, 6.0)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation=clipped, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    _zero_first_units(model.get_layer("hidden"), 4)
    assert compact(model).get_layer("hidden").units == 8
    registry.register_elementwise_activation(clipped)
    try:
        small = compact(model)
    finally:
        registry.ELEMENTWISE_ACTIVATIONS.discard("clipped")
    assert small.get_layer("hidden").units == 4
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(small(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
