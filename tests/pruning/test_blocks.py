"""Depth pruning: residual branches found, zeroed, ranked, and removed by compact()."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_admm
from keras_admm import models
from keras_admm.compaction.zero_branches import remove_zero_branches, zero_tensors
from keras_admm.pruning.blocks import residual_branches, zero_branches
from keras_admm.targeting import branch_sensitivity


def _x(n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype("float32")


def _randomize_batchnorms(model, seed=0):
    """Non-trivial BN statistics and affine terms, so a zero is a real zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0, 0.2, c))
            layer.moving_mean.assign(rng.normal(0, 0.2, c))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c))


def test_resnet_branches_are_the_long_paths_with_their_macs():
    model = models.resnet_cifar(20)
    branches = residual_branches(model)
    assert [b.add for b in branches] == [
        f"s{s}b{b}_add" for s in (1, 2, 3) for b in range(3)
    ]
    first = branches[0]
    assert first.layers == (
        "s1b0_conv1",
        "s1b0_bn1",
        "s1b0_relu1",
        "s1b0_conv2",
        "s1b0_bn2",
    )
    assert first.batchnorm == "s1b0_bn2"
    assert first.macs == 2 * 9 * 16 * 16 * 32 * 32  # two 3x3 16->16 convs at 32x32
    # A projection block's long branch is taken; its 1x1 shortcut stays.
    projection = branches[3]
    assert "s2b0_proj" not in projection.layers and projection.macs < first.macs


def test_compact_removes_zeroed_branches_exactly_and_reports_them():
    model = models.resnet_cifar(20)
    _randomize_batchnorms(model)
    adds = ["s1b1_add", "s2b0_add", "s3b2_add"]
    masks = zero_branches(model, adds)
    assert sorted(masks) == sorted(
        f"{a[:4]}_bn2/{w}" for a in adds for w in ("gamma", "beta")
    )
    assert all(not m.any() for m in masks.values())
    x = _x()
    expected = keras.ops.convert_to_numpy(model(x))
    names_before = [layer.name for layer in model.layers]
    weights_before = [np.array(w) for w in model.get_weights()]
    small, summary = keras_admm.compact(model, return_summary=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x)), expected, atol=1e-5
    )
    names = {layer.name for layer in small.layers}
    for branch in residual_branches(models.resnet_cifar(20)):
        gone = branch.add in adds
        assert all((name not in names) == gone for name in branch.layers), branch.add
    assert "s2b0_proj" in names  # the projection shortcut carries the block
    rows = {r["layer"]: r for r in summary.rows}
    assert rows["s1b1_conv1"]["params_after"] == 0
    assert rows["s1b1_conv1"]["note"] == "in a residual branch of exact zeros"
    removed_macs = sum(b.macs for b in residual_branches(model) if b.add in adds)
    totals = summary.totals
    assert totals["flops_before"] - totals["flops_after"] == 2 * removed_macs
    # The input model is unchanged: same layers, same weights.
    assert [layer.name for layer in model.layers] == names_before
    for before, after in zip(weights_before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(after, before)


def test_only_a_gamma_and_beta_of_zero_make_a_branch_of_zeros():
    model = models.resnet_cifar(8)
    _randomize_batchnorms(model)
    bn = model.get_layer("s1b0_bn2")
    bn.gamma.assign(np.zeros(16))  # beta still non-zero: a constant, not zero
    assert remove_zero_branches(model) == (model, [])
    bn.beta.assign(np.zeros(16))
    smaller, removed = remove_zero_branches(model)
    assert removed == [
        "s1b0_conv1",
        "s1b0_bn1",
        "s1b0_relu1",
        "s1b0_conv2",
        "s1b0_bn2",
        "s1b0_add",
    ]
    x = _x(2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(smaller(x)), keras.ops.convert_to_numpy(model(x))
    )


def test_zeros_flow_through_zero_preserving_layers_only():
    inputs = keras.Input((6,))
    zero = layers.Dense(4, use_bias=False, kernel_initializer="zeros", name="z")(inputs)
    relu = layers.ReLU(name="relu")(zero)
    shifted = layers.Dense(4, bias_initializer="ones", name="shift")(relu)
    other = layers.Dense(4, name="other")(inputs)
    total = layers.Add(name="add")([relu, other])
    three = layers.Add(name="add3")([zero, other, shifted])
    model = keras.Model(inputs, [total, three])
    ids = zero_tensors(model)
    assert id(zero) in ids and id(relu) in ids
    assert id(shifted) not in ids and id(other) not in ids  # a bias of 1 is not 0
    smaller, removed = remove_zero_branches(model)
    # add: its one live input takes its place. add3 keeps two live inputs, and
    # z and relu stay for it and for shift (compact's per-channel constants
    # handle what is left).
    assert removed == ["add"]
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    for got, want in zip(smaller(x), model(x)):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want)
        )


def test_zero_branches_rejects_unknown_adds_and_names_the_choices():
    model = models.resnet_cifar(8)
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError, match=r"\['relu1'\] are not Adds .*s1b0_add"):
        zero_branches(model, ["s1b0_add", "relu1"])
    for w, b in zip(model.weights, before):  # nothing was changed
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)


def test_branch_sensitivity_ranks_and_restores():
    keras.utils.set_random_seed(0)
    model = models.resnet_cifar(8)
    _randomize_batchnorms(model)
    x, y = _x(64, seed=1), np.arange(64) % 10
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    ranked = branch_sensitivity(model, (x, y), batch_size=32)
    assert sorted(b.add for b, _ in ranked) == ["s1b0_add", "s2b0_add", "s3b0_add"]
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)
    # Each cost is the loss with that branch alone zeroed, minus the loss without.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_now():
        return float(keras.ops.convert_to_numpy(loss(y, model(x, training=False))))

    base = loss_now()
    for branch, cost in ranked:
        zero_branches(model, [branch.add])
        assert cost == pytest.approx(loss_now() - base, rel=1e-4, abs=1e-5)
        model.set_weights(before)
    assert len({round(c, 6) for _, c in ranked}) == 3  # three different branches


def _block(inputs, name, *, bn=None, after=None, tap=None):
    """x + BN(conv(x)); optional changes that each make the branch unremovable."""
    conv = layers.Conv2D(4, 3, padding="same", name=f"{name}_conv")(inputs)
    y = (bn or layers.BatchNormalization(name=f"{name}_bn"))(conv)
    if after is not None:
        y = after(y)
    out = layers.Add(name=f"{name}_add")([inputs, y])
    return out, {"conv": conv, "bn": y}[tap] if tap else None


def _model_with(**change):
    inputs = keras.Input((8, 8, 4))
    out, tapped = _block(inputs, "b", **change)
    outputs = [out] if tapped is None else [out, tapped]
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "change",
    [
        {"bn": layers.BatchNormalization(scale=False, name="b_bn")},
        {"bn": layers.BatchNormalization(center=False, name="b_bn")},
        {"after": layers.Conv2D(4, 1, name="b_after")},  # a bias after the BN
        {"tap": "conv"},  # a branch tensor is also a model output
        {"tap": "bn"},
    ],
    ids=["no_scale", "no_center", "layer_after_bn", "conv_is_output", "bn_is_output"],
)
def test_branches_that_cannot_be_zeroed_by_their_batchnorm_are_not_listed(change):
    assert [b.add for b in residual_branches(_model_with())] == ["b_add"]  # control
    assert residual_branches(_model_with(**change)) == []


def test_a_shared_add_or_an_input_in_the_branch_gives_no_branch():
    inputs = keras.Input((8, 8, 4))
    add = layers.Add(name="shared_add")
    bn1 = layers.BatchNormalization(name="bn1")(
        layers.Conv2D(4, 3, padding="same")(inputs)
    )
    y = add([inputs, bn1])
    bn2 = layers.BatchNormalization(name="bn2")(layers.Conv2D(4, 3, padding="same")(y))
    model = keras.Model(inputs, add([y, bn2]))
    assert residual_branches(model) == []
    model.get_layer("bn2").gamma.assign(np.zeros(4))
    model.get_layer("bn2").beta.assign(np.zeros(4))
    assert remove_zero_branches(model) == (model, [])  # left to compact()

    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    branch = layers.BatchNormalization(name="bn")(layers.Dense(6, name="db")(b))
    two_inputs = keras.Model(
        [a, b], layers.Add(name="add")([layers.Dense(6)(a), branch])
    )
    assert residual_branches(two_inputs) == []  # input b would stay a model input


def test_zero_branches_wants_a_list_of_names():
    model = models.resnet_cifar(8)
    with pytest.raises(TypeError, match=r"pass \['s1b0_add'\]"):
        zero_branches(model, "s1b0_add")
    with pytest.raises(TypeError, match="must be a list of Add layer names, got None"):
        zero_branches(model, None)
    # The ResidualBranch objects residual_branches() returns also do.
    first = residual_branches(model)[0]
    by_object = zero_branches(model, [first])
    assert sorted(by_object) == sorted(zero_branches(model, [first.add]))
    assert all(not mask.any() for mask in by_object.values())


def _assert_compact_is_exact(model, shape):
    """compact(model) gives model's outputs on random inputs of `shape`."""
    small = keras_admm.compact(model)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-6,
    )


def test_an_add_that_broadcasts_its_live_input_is_kept():
    inputs = keras.Input((4, 4, 3))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(inputs)
    zero = layers.Conv2D(3, 1, use_bias=False, kernel_initializer="zeros", name="zero")(
        inputs
    )
    model = keras.Model(
        inputs, layers.Flatten()(layers.Add(name="add")([pooled, zero]))
    )
    smaller, removed = remove_zero_branches(model)
    assert removed == [] and smaller.output_shape == model.output_shape == (None, 48)
    _assert_compact_is_exact(model, (2, 4, 4, 3))


@pytest.mark.parametrize("with_relu", [False, True])
def test_zero_branches_with_unknown_image_sizes(with_relu):
    # A conv with a zero kernel and no bias is zero at any size, so its branch
    # goes. A layer after it is only known to keep zeros by running it, which
    # needs sizes: with Input((None, None, 3)) that branch stays, and compact
    # (which crashed on such models before) still gives the same outputs.
    inputs = keras.Input((None, None, 3))
    zero = layers.Conv2D(
        3, 3, padding="same", use_bias=False, kernel_initializer="zeros", name="zero"
    )(inputs)
    branch = layers.ReLU(name="relu")(zero) if with_relu else zero
    other = layers.Conv2D(3, 1, name="other")(inputs)
    model = keras.Model(inputs, layers.Add(name="add")([other, branch]))
    smaller, removed = remove_zero_branches(model)
    if with_relu:
        assert removed == [] and smaller is model
    else:
        assert sorted(removed) == ["add", "zero"]
        assert [layer.name for layer in smaller.layers[1:]] == ["other"]
    _assert_compact_is_exact(model, (2, 5, 7, 3))
