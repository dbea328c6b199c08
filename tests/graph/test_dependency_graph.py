"""The channel dependency graph and group-aware Filter / Channel pruning."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keras_admm
from keras_admm import graph, models, pruning
from keras_admm.graph import DependencyGraph, IndexMapping
from keras_admm.plan import PruningPlan
from keras_admm.sparsity import kept_count

layers = keras.layers


def _group_of(g, layer, role="producer", weight="kernel"):
    found = [(grp, m) for grp, m in g.groups_of(layer, role) if m.weight == weight]
    assert len(found) == 1, found
    return found[0]


def _producer_names(group):
    return sorted(m.layer for m in group.producers)


def _consumer_names(group):
    return sorted(m.layer for m in group.consumers)


# ------------------------------------------------------------------ groups
def test_lenet_flatten_maps_channels_to_interleaved_units():
    g = DependencyGraph.from_model(models.lenet5())
    group, _ = _group_of(g, "conv2")
    assert group.size == 50 and group.prunable
    (fc1,) = group.consumers
    assert fc1.layer == "fc1" and fc1.axis == 0
    assert isinstance(fc1.mapping, graph.Interleave)
    index = fc1.mapping.indices()
    assert index.shape == (50, 16)
    np.testing.assert_array_equal(index[3], 3 + 50 * np.arange(16))
    assert "pool2" in group.passthrough and "flatten" in group.passthrough


def test_resnet_residual_adds_tie_every_producer_of_a_stage():
    g = DependencyGraph.from_model(models.resnet_cifar(20))
    group, _ = _group_of(g, "conv1")
    assert group.size == 16
    assert _producer_names(group) == sorted(
        ["conv1", "s1b0_conv2", "s1b1_conv2", "s1b2_conv2"]
    )
    assert "s2b0_proj" in _consumer_names(group)
    assert {"bn1", "s1b0_add", "s1b2_out"} <= set(group.passthrough)
    stage3, _ = _group_of(g, "s3b0_proj")
    assert "fc" in _consumer_names(stage3)
    # Block-internal channels are their own group.
    inner, _ = _group_of(g, "s2b1_conv1")
    assert _consumer_names(inner) == ["s2b1_conv2"]
    assert g.barriers == []


def test_concatenate_maps_inputs_to_offsets():
    inputs = keras.Input((6, 6, 3))
    a = layers.Conv2D(4, 1, name="a")(inputs)
    b = layers.Conv2D(6, 1, name="b")(inputs)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.Conv2D(5, 1, name="reader")(x)
    model = keras.Model(inputs, x)
    g = DependencyGraph.from_model(model)
    group_b, _ = _group_of(g, "b")
    (reader,) = [m for m in group_b.consumers if m.layer == "reader"]
    assert reader.mapping == graph.Offset(4, 6)
    group_a, _ = _group_of(g, "a")
    (reader_a,) = [m for m in group_a.consumers if m.layer == "reader"]
    assert reader_a.mapping == graph.Identity(4)
    assert group_a.index != group_b.index


def test_depthwise_couples_input_and_output_with_multiplier():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 1, name="expand")(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = layers.Conv2D(5, 1, name="project")(x)
    g = DependencyGraph.from_model(keras.Model(inputs, x))
    group, _ = _group_of(g, "expand")
    assert group.size == 4
    bias = next(m for m in group.params if m.layer == "dw" and m.weight == "bias")
    assert bias.mapping == graph.Repeat(4, 2)
    project = next(m for m in group.consumers if m.layer == "project")
    assert project.mapping == graph.Repeat(4, 2)
    assert "dw" in {m.layer for m in group.consumers}


def test_layer_called_twice_ties_both_calls():
    inputs = keras.Input((6, 6, 8))
    shared = layers.Conv2D(8, 3, padding="same", name="shared")
    y = shared(inputs)
    y = layers.ReLU(name="relu")(y)
    y = shared(y)
    y = layers.Conv2D(4, 1, name="head")(y)
    g = DependencyGraph.from_model(keras.Model(inputs, y))
    assert len(g.node_infos("shared")) == 2
    # The second call reads the first call's output: both kernel axes are
    # tied to the same channels (and to the model input, so pinned).
    out_group, _ = _group_of(g, "shared", "producer")
    in_group, _ = _group_of(g, "shared", "consumer")
    assert out_group.index == in_group.index
    assert not out_group.prunable


def test_unknown_layer_is_a_barrier_that_pins_its_channels():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 1, name="c1")(inputs)
    x = layers.Reshape((6, 12, 2), name="reshape")(x)
    x = layers.Conv2D(5, 1, name="c2")(x)
    x = layers.Softmax(name="softmax")(x)
    x = layers.Conv2D(5, 1, name="c3")(x)
    g = DependencyGraph.from_model(keras.Model(inputs, x))
    assert [b.layer for b in g.barriers] == ["reshape", "softmax"]
    assert "changes the channel axis" in g.barriers[0].reason
    assert "no channel rule" in g.barriers[1].reason
    for name in ("c1", "c2"):
        group, _ = _group_of(g, name)
        assert not group.prunable
        assert any("barrier" in reason for reason in group.pinned)
    text = str(g)
    assert "barriers" in text and "reshape (Reshape)" in text


def test_channels_first_and_cross_channel_activations_are_barriers():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 1, name="c1")(inputs)
    x = layers.Activation("softmax", name="act")(x)
    x = layers.MaxPooling2D(2, data_format="channels_first", name="pool_cf")(x)
    g = DependencyGraph.from_model(keras.Model(inputs, x))
    reasons = {b.layer: b.reason for b in g.barriers}
    assert "softmax" in reasons["act"]
    assert "channels_first" in reasons["pool_cf"]


@pytest.mark.tensorflow_only  # backend-independent; slow on jax's eager ops
def test_mobilenet_v2_has_no_barriers():
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )
    g = DependencyGraph.from_model(model)
    assert g.barriers == []
    prunable = [grp for grp in g.groups if grp.prunable and grp.producers]
    assert len(prunable) > 15


def test_subclassed_and_unbuilt_models_get_clear_errors():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        DependencyGraph.from_model(Net())
    with pytest.raises(ValueError, match="keras.Input"):
        DependencyGraph.from_model(keras.Sequential([layers.Dense(3)]))
    with pytest.raises(TypeError, match="from_model"):
        DependencyGraph()


def test_sequential_models_work():
    model = keras.Sequential(
        [keras.Input((8,)), layers.Dense(6, name="d1"), layers.Dense(2, name="d2")]
    )
    g = DependencyGraph.from_model(model)
    group, _ = _group_of(g, "d1")
    assert _consumer_names(group) == ["d2"] and group.prunable


def test_dense_on_rank3_inputs_groups_the_last_axis():
    inputs = keras.Input((5, 4))
    x = layers.Dense(6, name="d1")(inputs)
    x = layers.Dense(3, name="d2")(x)
    g = DependencyGraph.from_model(keras.Model(inputs, x))
    group, _ = _group_of(g, "d1")
    assert group.size == 6 and _consumer_names(group) == ["d2"]


@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.sampled_from(["identity", "offset", "repeat", "interleave"]),
)
def test_index_mappings_round_trip_through_from_indices(n, r, kind):
    mapping = {
        "identity": graph.Identity(n),
        "offset": graph.Offset(r, n),
        "repeat": graph.Repeat(n, r + 1),
        "interleave": graph.Interleave(n + 1, r + 1, list(range(n))),
    }[kind]
    rebuilt = IndexMapping.from_indices(mapping.indices())
    np.testing.assert_array_equal(rebuilt.indices(), mapping.indices())
    assert type(rebuilt) is not graph.Explicit


# ------------------------------------------------------ group-aware masks
def _cut_channels(mask, axis):
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return np.flatnonzero(~mask.astype(bool).any(axis=other))


def test_group_masks_cut_the_same_index_everywhere_in_a_group():
    model = models.resnet_cifar(20)
    plan = PruningPlan.uniform(model, "filter:0.5")
    g = DependencyGraph.from_model(model)
    masks = pruning.group_masks(model, plan, graph=g)
    group, _ = _group_of(g, "conv1")
    cuts = []
    for member in group.producers + group.consumers:
        path = model.get_layer(member.layer).kernel.path
        cuts.append(tuple(_cut_channels(masks[path], member.axis)))
    assert len(set(cuts)) == 1
    assert len(cuts[0]) == 16 - kept_count(16, 0.5)
    # conv1 is not in the plan (skip_first), yet its filters follow the group.
    assert model.get_layer("conv1").kernel.path in masks


def test_group_masks_keep_the_channels_with_the_largest_group_norm():
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(4, 1, use_bias=False, name="a")(inputs)
    b = layers.Conv2D(4, 1, use_bias=False, name="b")(inputs)
    x = layers.Add(name="add")([a, b])
    x = layers.Conv2D(3, 1, use_bias=False, name="reader")(x)
    model = keras.Model(inputs, x)
    # Channel 0 is strongest in a, channel 3 in b; the sum decides.
    model.get_layer("a").kernel.assign(np.array([[[[5.0, 1, 1, 0], [0, 0, 0, 0]]]]))
    model.get_layer("b").kernel.assign(np.array([[[[0.0, 1, 1, 4], [0, 0, 0, 0]]]]))
    model.get_layer("reader").kernel.assign(np.zeros((1, 1, 4, 3)))
    plan = PruningPlan({"a": "filter:0.5", "b": "filter:0.5"})
    masks = keras_admm.hard_prune(model, plan, graph=True)
    kept = np.flatnonzero(masks[model.get_layer("b").kernel.path][0, 0, 0])
    np.testing.assert_array_equal(kept, [0, 3])
    assert np.all(np.array(model.get_layer("a").kernel)[..., [1, 2]] == 0)


def test_group_masks_are_a_projection():
    model = models.resnet_cifar(20)
    plan = PruningPlan.uniform(model, "filter:0.6")
    first = keras_admm.hard_prune(model, plan, graph=True)
    weights = [np.array(w) for w in model.get_weights()]
    second = keras_admm.hard_prune(model, plan, graph=True)
    for path in first:
        np.testing.assert_array_equal(first[path], second[path])
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_channel_plan_on_dense_after_flatten_cuts_conv_channels():
    model = models.lenet5()
    masks = keras_admm.hard_prune(
        model, PruningPlan({"fc1": "channel:0.5"}), graph=True
    )
    fc1 = masks[model.get_layer("fc1").kernel.path]
    conv2 = masks[model.get_layer("conv2").kernel.path]
    cut = _cut_channels(conv2, 3)
    assert len(cut) == 25
    rows = (cut[None, :] + 50 * np.arange(16)[:, None]).ravel()
    assert not fc1[rows].any()
    assert fc1.sum() == (800 - rows.size) * 500


def test_pinned_groups_are_not_cut_and_other_sparsities_still_apply():
    model = models.lenet5()
    plan = PruningPlan({"fc2": "filter:0.5", "fc1": "unstructured:0.9"})
    masks = keras_admm.hard_prune(model, plan, graph=True)
    assert masks[model.get_layer("fc2").kernel.path].all()  # model output
    fc1 = masks[model.get_layer("fc1").kernel.path]
    assert fc1.shape == (800, 500) and fc1.sum() == kept_count(800 * 500, 0.9)


def test_unstructured_budget_goes_to_live_inputs_after_a_filter_cut():
    # conv2 keeps 5 of 50 filters, so 80 of fc1's 800 input rows stay live
    # (40,000 weights). fc1 may keep 20% = 80,000: all live weights fit, and
    # none of the budget may be spent on rows that the filter cut zeroes.
    model = models.lenet5()
    plan = PruningPlan({"conv2": "filter:0.9", "fc1": "unstructured:0.8"})
    masks = keras_admm.hard_prune(model, plan, graph=True)
    fc1 = masks[model.get_layer("fc1").kernel.path]
    live = np.flatnonzero(masks[model.get_layer("conv2").kernel.path].any((0, 1, 2)))
    assert live.size == 5
    rows = (live[None, :] + 50 * np.arange(16)[:, None]).ravel()
    assert fc1[rows].all()
    assert fc1.sum() == rows.size * 500
    # With fewer live weights than the budget, it keeps the largest live ones.
    tight = PruningPlan({"conv2": "filter:0.9", "fc1": "unstructured:0.95"})
    model = models.lenet5()
    kernel = np.array(model.get_layer("fc1").kernel)
    masks = keras_admm.hard_prune(model, tight, graph=True)
    fc1 = masks[model.get_layer("fc1").kernel.path]
    live = np.flatnonzero(masks[model.get_layer("conv2").kernel.path].any((0, 1, 2)))
    rows = (live[None, :] + 50 * np.arange(16)[:, None]).ravel()
    assert fc1.sum() == kept_count(kernel.size, 0.95)
    assert fc1[rows].sum() == fc1.sum()
    threshold = np.sort(np.abs(kernel[rows]).ravel())[::-1][int(fc1.sum()) - 1]
    assert np.all(np.abs(kernel[rows])[fc1[rows] == 1] >= threshold)


def test_only_the_kernels_that_ask_for_the_cut_score_the_channels():
    # fc1 (unstructured) reads conv2's channels but does not ask for their cut:
    # huge fc1 rows behind conv2's weakest filters must not save those filters,
    # in hard_prune and in the ADMM Z-step alike.
    model = models.lenet5()
    conv2, fc1 = model.get_layer("conv2").kernel, model.get_layer("fc1").kernel
    norms = np.square(np.array(conv2)).sum(axis=(0, 1, 2))
    weakest = np.argsort(norms)[:5]
    big = np.array(fc1)
    for c in weakest:
        big[c::50] = 10.0
    fc1.assign(big)
    plan = PruningPlan({"conv2": "filter:0.9", "fc1": "unstructured:0.9"}).resolve(
        model
    )
    projection = pruning.GroupProjection.from_plan(model, plan)
    values = {
        t.weight_path: np.array(v)
        for t, v in keras_admm.plan.planned_kernels(model, plan)
    }
    z = projection.project(values, plan.targets)
    masks = keras_admm.hard_prune(model, plan, graph=True)
    expected = np.sort(np.argsort(-norms)[:5])
    for kernel in (masks[conv2.path], np.array(z[plan.targets[0].weight_path])):
        kept = np.flatnonzero(np.abs(kernel).sum(axis=(0, 1, 2)) > 0)
        np.testing.assert_array_equal(kept, expected)
    z_fc1 = np.array(z[plan.targets[1].weight_path])
    rows = (expected[None, :] + 50 * np.arange(16)[:, None]).ravel()
    assert np.count_nonzero(z_fc1) == np.count_nonzero(z_fc1[rows]) == 40000


def test_hard_prune_with_a_graph_object_and_str():
    model = models.resnet_cifar(20)
    twin = models.resnet_cifar(20)
    twin.set_weights(model.get_weights())
    g = DependencyGraph.from_model(model)
    masks = keras_admm.hard_prune(
        model, PruningPlan.uniform(model, "filter:0.5"), graph=g
    )
    # A graph object gives the masks graph=True builds its own graph for.
    expected = keras_admm.hard_prune(
        twin, PruningPlan.uniform(twin, "filter:0.5"), graph=True
    )
    assert sorted(masks) == sorted(expected)
    for path, mask in expected.items():
        np.testing.assert_array_equal(masks[path], mask, err_msg=path)
    assert any(not mask.all() for mask in masks.values())
    text = str(g)
    assert text.startswith("DependencyGraph of 'resnet20'")
    assert "producers: conv1.kernel" in text
    assert repr(g).startswith("DependencyGraph(")


# ------------------------------------------------------ ADMM projection
def _residual_model():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = layers.Conv2D(8, 3, padding="same", name="body1")(x)
    y = layers.ReLU(name="relu")(y)
    y = layers.Conv2D(8, 3, padding="same", name="body2")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs, name="residual")


def _cut_sets(values, g, group, model):
    cuts = set()
    for member in group.producers + group.consumers:
        path = model.get_layer(member.layer).kernel.path
        if path in values:
            mask = np.asarray(values[path]) != 0
            cuts.add(tuple(_cut_channels(mask, member.axis)))
    return cuts


def test_group_projection_agrees_with_group_masks_and_is_idempotent():
    model = models.resnet_cifar(20)
    plan = PruningPlan.uniform(model, "filter:0.5")
    g = DependencyGraph.from_model(model)
    projection = pruning.GroupProjection.from_plan(model, plan, graph=g)
    values = {
        t.weight_path: np.array(model.get_layer(t.layer_name).kernel)
        for t in plan.targets
    }
    projected = {
        k: keras.ops.convert_to_numpy(v)
        for k, v in projection.project(values, plan.targets).items()
    }
    masks = pruning.group_masks(model, plan, graph=g)
    for path, z in projected.items():
        # The same cut (a weight may itself be exactly zero, so compare values).
        np.testing.assert_array_equal(z, values[path] * masks[path])
    again = projection.project(projected, plan.targets)
    for path, z in again.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(z), projected[path])
    group, _ = _group_of(g, "s1b0_conv2")
    assert len(_cut_sets(projected, g, group, model)) == 1
    config = projection.get_config()
    assert pruning.GroupProjection.from_config(config).get_config() == config


def test_admm_wrapper_with_group_projection_cuts_coupled_channels_together():
    model = _residual_model()
    plan = PruningPlan.uniform(model, "filter:0.5", skip_first=False)
    projection = pruning.GroupProjection.from_plan(model, plan)
    optimizer = keras_admm.ADMMWrapper(
        keras.optimizers.SGD(0.01), plan, admm_steps=2, projection=projection
    )
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    z = {
        s["weight"].path: keras.ops.convert_to_numpy(s["z"])
        for s in optimizer.admm_state()
    }
    g = DependencyGraph.from_model(model)
    group, _ = _group_of(g, "stem")
    cuts = _cut_sets(z, g, group, model)
    assert len(cuts) == 1 and len(next(iter(cuts))) == 4
    config = optimizer.get_config()
    clone = keras_admm.ADMMWrapper.from_config(config)
    assert clone.projection.get_config() == projection.get_config()


def test_admm_wrapper_rejects_a_projection_without_project():
    model = _residual_model()
    plan = PruningPlan.uniform(model, "filter:0.5")
    with pytest.raises(TypeError, match="GroupProjection"):
        keras_admm.ADMMWrapper(keras.optimizers.SGD(), plan, projection=object())


def test_admm_wrapper_with_group_projection_saves_and_loads(tmp_path):
    model = _residual_model()
    plan = PruningPlan.uniform(model, "filter:0.5", skip_first=False)
    projection = pruning.GroupProjection.from_plan(model, plan)
    model.compile(
        optimizer=keras_admm.ADMMWrapper(
            keras.optimizers.Adam(1e-2), plan, admm_steps=2, projection=projection
        ),
        loss="mse",
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "admm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer.projection, pruning.GroupProjection)
    assert loaded.optimizer.projection.get_config() == projection.get_config()
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    z = {
        s["weight"].path: keras.ops.convert_to_numpy(s["z"])
        for s in loaded.optimizer.admm_state()
    }
    g = DependencyGraph.from_model(loaded)
    group, _ = _group_of(g, "stem")
    cuts = _cut_sets(z, g, group, loaded)
    assert len(cuts) == 1 and len(next(iter(cuts))) == 4  # one cut, half of 8
