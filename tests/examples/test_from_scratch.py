"""examples/from_scratch.py: fresh weights, pruned weights zero again, nothing
else touched, and a bad mask refused before the model changes."""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

from from_scratch import reinitialize  # noqa: E402


def pruned_model():
    """Rescaling -> conv (filters 1 and 3 pruned) -> BN -> frozen Dense -> Dense."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="normalize")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(5, name="frozen")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("frozen").trainable = False
    rng = np.random.default_rng(0)
    for variable in model.weights:  # "trained" values, none of them initial
        variable.assign(rng.normal(size=variable.shape).astype("float32") + 2.0)
    mask = np.ones((3, 3, 3, 4), "float32")
    mask[..., [1, 3]] = 0.0
    masks = {model.get_layer("conv").kernel.path: mask}
    model.get_layer("conv").kernel.assign(model.get_layer("conv").kernel * mask)
    return model, masks


def values(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


def test_fresh_weights_with_the_pruned_ones_zero_again():
    model, masks = pruned_model()
    before = values(model)
    reinitialize(model, masks, seed=0)
    after = values(model)
    kernel = after[model.get_layer("conv").kernel.path]
    assert np.all(kernel[..., [1, 3]] == 0.0)
    assert np.all(kernel[..., [0, 2]] != 0.0)
    assert not np.allclose(
        kernel[..., [0, 2]], before[model.get_layer("conv").kernel.path][..., [0, 2]]
    )
    bn = model.get_layer("bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), np.ones(4))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.beta), np.zeros(4))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_mean), np.zeros(4)
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_variance), np.ones(4)
    )
    head = model.get_layer("head")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.bias), np.zeros(3))
    for variable in model.get_layer("frozen").weights:  # no trainable weights: kept
        np.testing.assert_array_equal(after[variable.path], before[variable.path])


def test_the_seed_decides_the_fresh_weights():
    first, masks = pruned_model()
    second, _ = pruned_model()
    third, _ = pruned_model()
    reinitialize(first, masks, seed=3)
    reinitialize(second, masks, seed=3)
    reinitialize(third, masks, seed=4)
    path = first.get_layer("head").kernel.path
    np.testing.assert_array_equal(values(first)[path], values(second)[path])
    assert not np.allclose(values(first)[path], values(third)[path])


def test_a_mask_for_no_variable_is_refused_before_the_model_changes():
    model, masks = pruned_model()
    before = values(model)
    with pytest.raises(ValueError, match="no such variable"):
        reinitialize(model, {"nowhere/kernel": np.ones((3, 3, 3, 4))}, seed=0)
    for path, value in values(model).items():
        np.testing.assert_array_equal(value, before[path])
