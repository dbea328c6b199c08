"""fold_batchnorm(): BatchNorms merged into the layer before them, same outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_admm
from keras_admm import models
from keras_admm.compaction import fold_batchnorm
from keras_admm.plan import PruningPlan
from keras_admm.testing import fuzz

layers = keras.layers
TOLERANCE = 1e-4


def _x(model, batch=3, seed=0):
    shape = (batch, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _check_same(model, folded, seed=0):
    x = _x(model, seed=seed)
    expected = to_numpy(model(x, training=False))
    actual = to_numpy(folded(x))
    assert fuzz.max_relative_error(expected, actual) <= TOLERANCE


def _bn_count(model):
    return sum(isinstance(la, layers.BatchNormalization) for la in model.layers)


def _conv_bn(producer, input_shape=(9, 9, 4), name="m"):
    inputs = keras.Input(input_shape)
    x = producer(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    outputs = layers.ReLU(name="relu")(x)
    model = keras.Model(inputs, outputs, name=name)
    fuzz.randomize_weights(model, 1)  # non-trivial gamma, beta, mean, variance
    return model


@pytest.mark.parametrize(
    "producer, input_shape",
    [
        (lambda: layers.Conv2D(6, 3, padding="same", use_bias=False), (9, 9, 4)),
        (lambda: layers.Conv2D(6, 3, strides=2, use_bias=True), (9, 9, 4)),
        (lambda: layers.Conv2D(6, 3, groups=2), (9, 9, 4)),
        (lambda: layers.Conv1D(5, 3), (12, 4)),
        (lambda: layers.Conv2DTranspose(5, 3, strides=2), (5, 5, 4)),
        (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (9, 9, 4)),
        (lambda: layers.SeparableConv2D(7, 3, depth_multiplier=2), (9, 9, 4)),
        (lambda: layers.Dense(7, use_bias=False), (4,)),
        (lambda: layers.Dense(7), (3, 4)),
    ],
    ids=[
        "conv2d",
        "conv2d_bias",
        "conv2d_groups",
        "conv1d",
        "conv2d_transpose",
        "depthwise_m2",
        "separable",
        "dense",
        "dense_rank3",
    ],
)
def test_folds_each_layer_kind_exactly(producer, input_shape):
    model = _conv_bn(producer(), input_shape)
    folded, folds, skipped = fold_batchnorm(model, return_folds=True)
    assert skipped == []
    assert [bn for bn, _ in folds] == ["bn"]
    assert _bn_count(folded) == 0
    _check_same(model, folded)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the ResNet integration runs in the tensorflow pass (30 s on JAX); "
    "every layer kind's fold is checked on every backend above",
)
def test_resnet_folds_every_batchnorm_before_and_after_compact():
    model = models.resnet_cifar(depth=8, input_shape=(16, 16, 3))
    fuzz.randomize_weights(model, 0)
    bns = _bn_count(model)
    folded, folds, skipped = fold_batchnorm(model, return_folds=True)
    assert bns > 0 and len(folds) == bns and skipped == []
    assert _bn_count(folded) == 0
    assert len(folded.layers) == len(model.layers) - bns
    _check_same(model, folded)
    # The folded convs keep their names; every other layer is still there.
    kept = {la.name for la in model.layers} - {bn for bn, _ in folds}
    assert {la.name for la in folded.layers} == kept

    # Pruned, compacted, then folded: still the pruned model's outputs.
    plan = PruningPlan.uniform(model, "filter:0.5", skip_last=True)
    keras_admm.hard_prune(model, plan, graph=True)
    folded = fold_batchnorm(keras_admm.compact(model))
    assert _bn_count(folded) == 0
    assert folded.count_params() < model.count_params()
    _check_same(model, folded)


def test_input_model_is_left_alone():
    model = _conv_bn(layers.Conv2D(6, 3, name="conv"))
    before = [w.copy() for w in model.get_weights()]
    layer_names = [la.name for la in model.layers]
    folded = fold_batchnorm(model)
    assert [la.name for la in model.layers] == layer_names
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)
    assert folded.get_layer("conv") is not model.get_layer("conv")


def test_sequential_model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    fuzz.randomize_weights(model, 4)
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 0
    _check_same(model, folded)


def _skip_reason(model):
    folded, folds, skipped = fold_batchnorm(model, return_folds=True)
    assert folds == []
    assert _bn_count(folded) == _bn_count(model)
    _check_same(model, folded)
    assert len(skipped) == 1 and skipped[0][0] == "bn"
    return skipped[0][1]


def test_skips_a_layer_with_its_own_activation():
    model = _conv_bn(layers.Conv2D(6, 3, activation="relu", name="conv"))
    assert "activation" in _skip_reason(model)


def test_skips_an_output_read_twice():
    inputs = keras.Input((8, 8, 3))
    y = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(y)
    model = keras.Model(inputs, layers.Add()([x, y]))
    fuzz.randomize_weights(model, 5)
    assert "also reads 'conv'" in _skip_reason(model)


def test_skips_a_shared_layer():
    inputs = keras.Input((8, 8, 3))
    conv = layers.Conv2D(3, 3, padding="same", name="conv")
    x = layers.BatchNormalization(name="bn")(conv(inputs))
    model = keras.Model(inputs, layers.ReLU()(conv(x)))
    fuzz.randomize_weights(model, 6)
    assert "shared" in _skip_reason(model)


def test_skips_a_batchnorm_that_is_a_model_output():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, layers.BatchNormalization(name="bn")(x))
    fuzz.randomize_weights(model, 7)
    assert "model output" in _skip_reason(model)


def test_skips_another_axis_and_a_batchnorm_on_the_input():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(axis=1, name="bn")(x)
    model = keras.Model(inputs, layers.ReLU()(x))
    fuzz.randomize_weights(model, 8)
    assert "axis" in _skip_reason(model)
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn")(inputs)
    model = keras.Model(inputs, layers.Conv2D(2, 3)(x))
    fuzz.randomize_weights(model, 9)
    assert "no foldable kernel" in _skip_reason(model)


def test_rejects_a_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(TypeError, match="subclassed"):
        fold_batchnorm(Net())


def test_channels_first_and_a_batchnorm_without_scale_or_center():
    inputs = keras.Input((4, 12))
    x = layers.Conv1D(5, 3, data_format="channels_first", name="conv")(inputs)
    x = layers.BatchNormalization(axis=1, name="bn")(x)
    y = layers.Conv1D(5, 3, name="conv2")(x)
    y = layers.BatchNormalization(center=False, scale=False, name="bn2")(y)
    model = keras.Model(inputs, layers.ReLU()(y))
    fuzz.randomize_weights(model, 10)
    folded, folds, skipped = fold_batchnorm(model, return_folds=True)
    assert sorted(folds) == [("bn", "conv"), ("bn2", "conv2")] and skipped == []
    _check_same(model, folded)


def test_skips_lora_and_quantized_kernels():
    model = _conv_bn(layers.Dense(6, name="dense"), (4,))
    model.get_layer("dense").enable_lora(2)
    lora_b = model.get_layer("dense").lora_kernel_b
    lora_b.assign(np.ones(lora_b.shape, "float32"))  # the factors add to the kernel
    assert "LoRA" in _skip_reason(model)
    model = _conv_bn(layers.Dense(6, name="dense"), (4,))
    model.get_layer("dense").quantize("int8")
    assert "quantized" in _skip_reason(model)


def test_skips_training_true_subclasses_and_nested_models():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x, training=True)
    model = keras.Model(inputs, layers.ReLU()(x))
    fuzz.randomize_weights(model, 11)
    folded, folds, skipped = fold_batchnorm(model, return_folds=True)
    assert folds == [] and "training=True" in skipped[0][1]
    x = _x(model)
    np.testing.assert_allclose(to_numpy(folded(x)), to_numpy(model(x)), atol=1e-5)

    class MyBatchNorm(layers.BatchNormalization):
        pass

    inner = _conv_bn(layers.Conv2D(4, 3, name="conv"), (8, 8, 3), name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    x = layers.Conv2D(2, 1, name="head")(x)
    x = MyBatchNorm(name="mine")(x)
    model = keras.Model(inputs, layers.ReLU()(x))
    fuzz.randomize_weights(model, 12)
    folded, folds, skipped = fold_batchnorm(model, return_folds=True)
    reasons = dict(skipped)
    assert folds == [] and set(reasons) == {"bn", "mine"}
    assert "nested model 'backbone'" in reasons["bn"]
    assert "MyBatchNorm" in reasons["mine"]
    _check_same(model, folded)
