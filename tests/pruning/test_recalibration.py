"""Tests for keras_admm.recalibrate_batchnorm (keras_admm/pruning/recalibration.py)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import assert_weights_equal, to_numpy, weights_snapshot

import keras_admm
from keras_admm.exceptions import KerasAdmmWarning


def conv_bn_model(name="conv_bn"):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def images(count=50, seed=0):
    rng = np.random.default_rng(seed)
    # A channel offset and scale, so that the true statistics are far from 0 / 1.
    return (rng.normal(size=(count, 8, 8, 3)) * 3 + 2).astype("float32")


def stale(model):
    """Sets every BatchNorm's statistics to wrong values, like a prune does."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.full(size, 5.0, "float32"))
            layer.moving_variance.assign(np.full(size, 0.01, "float32"))


def moments(values):
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    return flat.mean(0), flat.var(0)


def stats(layer):
    return to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)


def test_first_batchnorm_gets_the_exact_statistics_of_its_inputs_over_all_batches():
    model, x = conv_bn_model(), images(50)
    stale(model)
    # 50 = 16 + 16 + 16 + 2: uneven batches are weighted by their size.
    result = keras_admm.recalibrate_batchnorm(model, x, batch_size=16)
    conv1 = keras.Model(model.input, model.get_layer("conv1").output)
    mean, variance = moments(to_numpy(conv1(x)))
    got_mean, got_variance = stats(model.get_layer("bn1"))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-4, atol=1e-5)
    assert result.layers == ("bn1", "bn2")
    assert (result.batches, result.samples) == (4, 50)


def test_deeper_batchnorm_gets_the_statistics_of_training_mode_inputs():
    model, x = conv_bn_model(), images(40)
    stale(model)
    keras_admm.recalibrate_batchnorm(model, x, batch_size=40)  # one batch
    got_mean, got_variance = stats(model.get_layer("bn2"))
    # bn2's input in training mode: bn1 normalizes with the batch's statistics.
    before_bn2 = keras.Model(model.input, model.get_layer("conv2").output)
    mean, variance = moments(to_numpy(before_bn2(x, training=True)))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-4, atol=1e-5)


def test_inference_outputs_are_normalized_after_recalibration():
    model, x = conv_bn_model(), images(64)
    stale(model)
    bn1_out = keras.Model(model.input, model.get_layer("bn1").output)
    mean, _ = moments(to_numpy(bn1_out(x)))
    assert np.abs(mean).max() > 1.0  # stale statistics: far from normalized
    keras_admm.recalibrate_batchnorm(model, x, batch_size=16)
    mean, variance = moments(to_numpy(bn1_out(x)))  # gamma 1, beta 0
    np.testing.assert_allclose(mean, 0.0, atol=1e-3)
    np.testing.assert_allclose(variance, 1.0, rtol=1e-2)


def test_nothing_but_the_moving_statistics_changes():
    model, x = conv_bn_model(), images(32)
    model.get_layer("bn1").gamma.assign(np.linspace(0.5, 2, 6).astype("float32"))
    snapshot = weights_snapshot(model)
    model.get_layer("bn2").trainable = False  # a frozen BatchNorm is recalibrated too
    momentum = model.get_layer("bn1").momentum
    keras_admm.recalibrate_batchnorm(model, x, batch_size=8)
    changed = {
        p
        for p, v in snapshot.items()
        if not np.array_equal(v, weights_snapshot(model)[p])
    }
    assert changed == {
        "bn1/moving_mean",
        "bn1/moving_variance",
        "bn2/moving_mean",
        "bn2/moving_variance",
    }
    assert model.get_layer("bn2").trainable is False
    assert model.get_layer("bn1").momentum == momentum


def test_datasets_generators_and_arrays_give_the_same_statistics():
    x = images(48)
    y = np.zeros(48, "int32")
    results = []
    for data in (
        x,
        ((x[i : i + 12], y[i : i + 12]) for i in range(0, 48, 12)),
        (x[i : i + 12] for i in range(0, 48, 12)),
    ):
        model = conv_bn_model()
        model.set_weights(conv_bn_model_weights())
        keras_admm.recalibrate_batchnorm(model, data, batch_size=12)
        results.append(stats(model.get_layer("bn2")))
    for mean, variance in results[1:]:
        np.testing.assert_allclose(mean, results[0][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variance, results[0][1], rtol=1e-5, atol=1e-6)


_WEIGHTS = []


def conv_bn_model_weights():
    if not _WEIGHTS:
        keras.utils.set_random_seed(1)
        _WEIGHTS.append(conv_bn_model().get_weights())
    return _WEIGHTS[0]


@pytest.mark.tensorflow_only
def test_tf_data_dataset():
    import tensorflow as tf

    x = images(48)
    model = conv_bn_model()
    model.set_weights(conv_bn_model_weights())
    keras_admm.recalibrate_batchnorm(model, x, batch_size=12)
    expected = stats(model.get_layer("bn2"))
    model.set_weights(conv_bn_model_weights())
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(48))).batch(12)
    keras_admm.recalibrate_batchnorm(model, dataset)
    for got, want in zip(stats(model.get_layer("bn2")), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_steps_limits_the_batches():
    model, x = conv_bn_model(), images(48)
    result = keras_admm.recalibrate_batchnorm(model, x, batch_size=8, steps=2)
    assert (result.batches, result.samples) == (2, 16)
    conv1 = keras.Model(model.input, model.get_layer("conv1").output)
    mean, _ = moments(to_numpy(conv1(x[:16])))
    np.testing.assert_allclose(
        stats(model.get_layer("bn1"))[0], mean, rtol=1e-4, atol=1e-5
    )


def test_batchnorm_inside_a_nested_model():
    inner = conv_bn_model("inner")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    stale(inner)
    x = images(20)
    result = keras_admm.recalibrate_batchnorm(model, x, batch_size=10)
    assert result.layers == ("bn1", "bn2")
    conv1 = keras.Model(inner.input, inner.get_layer("conv1").output)
    mean, variance = moments(to_numpy(conv1(x)))
    got_mean, got_variance = stats(inner.get_layer("bn1"))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-4, atol=1e-5)


def test_an_error_midway_leaves_the_model_as_it_was():
    model, x = conv_bn_model(), images(32)
    stale(model)
    snapshot = weights_snapshot(model)

    def failing():
        yield x[:16]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        keras_admm.recalibrate_batchnorm(model, failing())
    assert_weights_equal(model, snapshot)
    assert model.get_layer("bn1").momentum == 0.99


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 1}, "batch_size=1; use at least 2"),
        ({"steps": 0}, "steps=0; use 1 or more"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_admm.recalibrate_batchnorm(conv_bn_model(), images(8), **kwargs)


def test_empty_data_is_refused_and_changes_nothing():
    model = conv_bn_model()
    snapshot = weights_snapshot(model)
    with pytest.raises(ValueError, match="gave no samples"):
        keras_admm.recalibrate_batchnorm(model, iter(()))
    assert_weights_equal(model, snapshot)


def test_shared_batchnorm_is_refused_with_its_name():
    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization(name="shared_bn")
    a = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Add()([bn(a), bn(inputs)]))
    snapshot = weights_snapshot(model)
    with pytest.raises(ValueError, match="'shared_bn' ran 2 times"):
        keras_admm.recalibrate_batchnorm(model, np.ones((4, 4), "float32"))
    assert_weights_equal(model, snapshot)


def test_a_nested_model_called_twice_is_refused():
    inner = conv_bn_model("inner")
    inputs = [keras.Input((8, 8, 3)), keras.Input((8, 8, 3))]
    siamese = keras.Model(
        inputs, keras.layers.Add()([inner(inputs[0]), inner(inputs[1])])
    )
    x = images(8)
    with pytest.raises(ValueError, match="'bn1' ran 2 times"):
        keras_admm.recalibrate_batchnorm(siamese, [x, x])
    assert "call" not in inner.get_layer("bn1").__dict__  # the class's call is back


def test_sequential_built_with_add_and_a_second_model_on_its_layers():
    model = keras.Sequential()
    model.add(keras.Input((8, 8, 3)))
    model.add(keras.layers.Conv2D(4, 3, name="conv"))
    model.add(keras.layers.BatchNormalization(name="bn"))
    keras.Model(model.inputs, model.layers[0].output)  # another model, same layers
    stale(model)
    x = images(20)
    result = keras_admm.recalibrate_batchnorm(model, x, batch_size=8)
    assert result.layers == ("bn",)
    mean, _ = moments(to_numpy(model.layers[0](x)))
    np.testing.assert_allclose(stats(model.layers[1])[0], mean, rtol=1e-4, atol=1e-5)


class NormedDense(keras.layers.Layer):
    """A custom layer that owns a BatchNormalization."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)
        self.bn = keras.layers.BatchNormalization(name="inner_bn")

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


def test_batchnorm_inside_a_custom_layer():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, NormedDense()(inputs))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32") + 3
    result = keras_admm.recalibrate_batchnorm(model, x, batch_size=16)
    assert result.layers == ("inner_bn",)
    dense = model.layers[1].dense
    mean, variance = moments(to_numpy(dense(x)))
    got_mean, got_variance = stats(model.layers[1].bn)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-4)


def test_a_last_batch_of_one_joins_the_batch_before():
    model, x = conv_bn_model(), images(17)
    result = keras_admm.recalibrate_batchnorm(model, x, batch_size=8)
    assert (result.batches, result.samples) == (2, 17)


def test_steps_takes_no_batch_beyond_them():
    taken = []

    def batches():
        for i in range(5):
            taken.append(i)
            yield images(4, seed=i)

    keras_admm.recalibrate_batchnorm(conv_bn_model(), batches(), steps=2)
    assert taken == [0, 1]


def test_a_tuple_is_refused():
    with pytest.raises(TypeError, match="is a tuple; pass the inputs alone"):
        keras_admm.recalibrate_batchnorm(conv_bn_model(), (images(4), np.zeros(4)))


def test_a_model_without_batchnorm_warns_and_is_untouched():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="no_bn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = keras_admm.recalibrate_batchnorm(model, np.ones((4, 4), "float32"))
    assert result.layers == ()
    assert any(
        issubclass(w.category, KerasAdmmWarning) and "'no_bn'" in str(w.message)
        for w in caught
    )


def test_no_data_says_what_to_pass():
    with pytest.raises(TypeError, match="data is None; pass training images"):
        keras_admm.recalibrate_batchnorm(conv_bn_model(), None)
