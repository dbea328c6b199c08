"""Tests for keras_admm.pruning: hard_prune, masks helpers and sparsity_report."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import (
    assert_feasible,
    assert_weights_equal,
    build_lenet_like,
    to_numpy,
    weights_snapshot,
)

from keras_admm import pruning as masks_lib
from keras_admm import sparsity as sparsity_lib
from keras_admm.plan import PruningPlan

LENET_RULES = {
    "conv2": "filter_shape:0.5:0.5",
    "fc1": "channel:0.5",
    "fc2": "nm:2:4",
}


def kernel_of(model, layer_name):
    return to_numpy(model.get_layer(layer_name).kernel)


# ------------------------------------------------------------------ hard_prune
@pytest.mark.parametrize(
    "rules",
    [
        LENET_RULES,
        {"conv1": "unstructured:0.7", "conv2": "filter:0.5", "fc1": "shape:0.25"},
    ],
)
def test_hard_prune_applies_exactly_the_projection(lenet_model, rules):
    before = weights_snapshot(lenet_model)
    plan = PruningPlan(rules).resolve(lenet_model)
    masks = masks_lib.hard_prune(lenet_model, plan)

    assert set(masks) == {t.weight_path for t in plan.targets}
    for target in plan.targets:
        original = before[target.weight_path]
        expected = to_numpy(target.sparsity.project(original, target.layout))
        pruned = kernel_of(lenet_model, target.layer_name)
        np.testing.assert_array_equal(pruned, expected, err_msg=target.layer_name)
        assert_feasible(pruned, target.sparsity, target.layout)
        mask = masks[target.weight_path]
        assert mask.dtype == np.float32 and mask.shape == original.shape
        assert set(np.unique(mask)) <= {0.0, 1.0}
        # Random initial weights have no exact zeros: the mask is the zero pattern.
        np.testing.assert_array_equal(mask, (pruned != 0).astype("float32"))
        assert 0 < mask.sum() < mask.size
    planned = {t.weight_path for t in plan.targets}
    for variable in lenet_model.weights:
        if variable.path not in planned:
            np.testing.assert_array_equal(to_numpy(variable), before[variable.path])


def test_hard_prune_resolves_an_unresolved_plan_and_is_idempotent(lenet_model):
    first = masks_lib.hard_prune(lenet_model, PruningPlan(LENET_RULES))
    snapshot = weights_snapshot(lenet_model)
    second = masks_lib.hard_prune(lenet_model, LENET_RULES)  # a dict works too
    assert_weights_equal(lenet_model, snapshot)
    assert first.keys() == second.keys()
    for path in first:
        np.testing.assert_array_equal(first[path], second[path])


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"conv2": "filter:0.5", "missing": "filter:0.5"}, "missing"),
        ({"conv2": "filter:0.5", "pool1": "filter:0.5"}, "no prunable kernel"),
        # conv1 has one input channel: 2:4 means nothing for it.
        ({"conv2": "filter:0.5", "conv1": "nm:2:4"}, "conv1"),
    ],
)
def test_bad_plan_raises_and_changes_nothing(lenet_model, rules, message):
    snapshot = weights_snapshot(lenet_model)
    with pytest.raises(ValueError, match=message):
        masks_lib.hard_prune(lenet_model, PruningPlan(rules))
    assert_weights_equal(lenet_model, snapshot)


def test_plan_resolved_on_another_architecture_changes_nothing(lenet_model):
    keras.utils.set_random_seed(1)
    other = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.Conv2D(6, 3, name="conv2"),  # 6 filters, not 8
        ],
        name="lenet_like",
    )
    plan = PruningPlan({"conv1": "filter:0.5", "conv2": "filter:0.5"}).resolve(other)
    snapshot = weights_snapshot(lenet_model)
    with pytest.raises(ValueError, match="conv2.*shape"):
        masks_lib.hard_prune(lenet_model, plan)
    assert_weights_equal(lenet_model, snapshot)


def test_hard_prune_rejects_a_non_plan(lenet_model):
    with pytest.raises(TypeError, match="PruningPlan"):
        masks_lib.hard_prune(lenet_model, "filter:0.5")


def test_masks_from_model_and_apply_masks(lenet_model):
    plan = PruningPlan(LENET_RULES).resolve(lenet_model)
    masks = masks_lib.hard_prune(lenet_model, plan)
    read_back = masks_lib.masks_from_model(lenet_model, plan)
    assert read_back.keys() == masks.keys()
    for path in masks:
        np.testing.assert_array_equal(read_back[path], masks[path])
    every_kernel = masks_lib.masks_from_model(lenet_model)
    assert len(every_kernel) == 4 and set(masks) <= set(every_kernel)

    keras.utils.set_random_seed(3)
    fresh = build_lenet_like()  # same layer names, new weights, new model name
    before = weights_snapshot(fresh)
    masks_lib.apply_masks(fresh, masks)
    for target in plan.targets:
        new = kernel_of(fresh, target.layer_name)
        path = fresh.get_layer(target.layer_name).kernel.path
        np.testing.assert_array_equal(new, before[path] * masks[target.weight_path])


def test_apply_masks_checks_everything_first(lenet_model):
    snapshot = weights_snapshot(lenet_model)
    good = {lenet_model.get_layer("fc1").kernel.path: np.zeros((72, 16), "float32")}
    with pytest.raises(ValueError, match="no such variable"):
        masks_lib.apply_masks(lenet_model, {**good, "nowhere/kernel": np.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        path = lenet_model.get_layer("fc2").kernel.path
        masks_lib.apply_masks(lenet_model, {**good, path: np.ones((3, 3))})
    assert_weights_equal(lenet_model, snapshot)


# ------------------------------------------------------------ sparsity_report
def build_flops_model():
    """Every FLOP formula once, with shapes small enough to count by hand."""
    layers = keras.layers
    image = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, name="conv")(image)  # (6, 6, 4)
    x = layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)  # (6, 6, 6)
    x = layers.Conv2DTranspose(4, 3, strides=2, name="tconv")(x)  # (13, 13, 4)
    x = layers.Conv2D(4, 3, strides=2, groups=2, name="gconv")(x)  # (6, 6, 4)
    x = layers.Dense(3, name="dense_3d")(x)  # (6, 6, 3)
    x = layers.Flatten()(x)  # 108
    out = layers.Dense(5, name="fc")(x)
    return keras.Model(image, out, name="flops_model")


# Hand-counted multiply-accumulates (FLOPs = 2 x MACs).
HAND_MACS = {
    # output 6x6 positions x kernel 3*3*3*4
    "conv": 36 * (3 * 3 * 3 * 4),
    # output 6x6 x (depthwise 3*3*4*1 + pointwise 4*6)
    "sep": 36 * (3 * 3 * 4 + 4 * 6),
    # input 6x6 positions, each scattered through the kernel 3*3*(out 4)*(in 6)
    "tconv": 36 * (3 * 3 * 4 * 6),
    # output 6x6 x kernel 3*3*(4 in / 2 groups)*4 out: each output sees 2 channels
    "gconv": 36 * (3 * 3 * 2 * 4),
    # 6x6 positions x 4 in x 3 out
    "dense_3d": 36 * 4 * 3,
    "fc": 108 * 5,
}
CONV_LAYERS = ("conv", "sep", "tconv", "gconv")


def rows_by_layer(report):
    return {row["layer"]: row for row in report.rows}


def test_report_flops_match_hand_counts_before_pruning():
    keras.utils.set_random_seed(0)
    report = masks_lib.sparsity_report(build_flops_model())
    rows = rows_by_layer(report)
    assert list(rows) == list(HAND_MACS)
    for name, macs in HAND_MACS.items():
        row = rows[name]
        assert row["flops_before"] == 2 * macs, name
        assert row["flops_after"] == 2 * macs, name
        assert row["sparsity"] == "dense"
        assert row["weight_sparsity"] == 0.0
    assert rows["sep"]["params_before"] == 3 * 3 * 4 + 4 * 6
    assert rows["fc"]["params_before"] == 108 * 5
    conv_flops = 2 * sum(HAND_MACS[n] for n in CONV_LAYERS)
    assert report.totals["conv_flops_before"] == conv_flops
    assert report.totals["flops_before"] == 2 * sum(HAND_MACS.values())
    assert report.totals["conv_flops_reduction"] == 1.0


def test_report_after_hard_prune_counts_nonzero_weights():
    keras.utils.set_random_seed(0)
    model = build_flops_model()
    plan = PruningPlan(
        {
            "conv": "filter:0.5",
            "sep": "filter_shape:0.5:0.5",
            "tconv": "channel:0.5",
            "dense_3d": "unstructured:0.75",
            "fc": "nm:2:4",
        }
    )
    masks_lib.hard_prune(model, plan)
    report = masks_lib.sparsity_report(model, plan)
    rows = rows_by_layer(report)

    def groups(name):
        return [(g["unit"], g["kept"], g["total"]) for g in rows[name]["groups"]]

    assert groups("conv") == [("filters", 2, 4)]
    assert groups("sep") == [("filters", 3, 6), ("columns", 2, 4)]
    assert groups("tconv") == [("channels", 3, 6)]
    assert groups("gconv") == [("filters", 4, 4)]  # dense layers show filters
    assert groups("dense_3d") == [("weights", 3, 12)]
    assert groups("fc") == [("weights", 270, 540)]
    assert rows["gconv"]["sparsity"] == "dense"
    assert rows["sep"]["sparsity"] == "filter_shape:0.5:0.5"

    # FLOPs after = 2 x positions x non-zero kernel weights.
    nnz = {
        "conv": 3 * 3 * 3 * 2,
        "sep": 3 * 3 * 4 + 2 * 3,  # depthwise untouched + 3 filters x 2 columns
        "tconv": 3 * 3 * 4 * 3,
        "gconv": 3 * 3 * 2 * 4,
        "dense_3d": 3,
        "fc": 270,
    }
    positions = {"conv": 36, "sep": 36, "tconv": 36, "gconv": 36, "dense_3d": 36}
    positions["fc"] = 1
    for name in HAND_MACS:
        assert rows[name]["params_after"] == nnz[name], name
        assert rows[name]["flops_after"] == 2 * positions[name] * nnz[name], name
    assert rows["conv"]["weight_sparsity"] == 0.5
    assert rows["dense_3d"]["weight_sparsity"] == 0.75
    totals = report.totals
    conv_after = sum(2 * positions[n] * nnz[n] for n in CONV_LAYERS)
    assert totals["conv_flops_after"] == conv_after
    assert totals["conv_flops_reduction"] == pytest.approx(
        totals["conv_flops_before"] / conv_after
    )
    assert totals["params_after"] == sum(nnz.values())
    assert totals["params_reduction"] == pytest.approx(
        totals["params_before"] / sum(nnz.values())
    )
    assert totals["flops_after"] == sum(2 * positions[n] * nnz[n] for n in HAND_MACS)


def test_report_depthwise_flops():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        ]
    )
    (row,) = masks_lib.sparsity_report(model).rows
    # output 6x6 positions x kernel 3*3*3*2; each output channel sees 1 input.
    assert row["flops_before"] == 2 * 36 * (3 * 3 * 3 * 2)
    assert row["groups"] == [{"unit": "filters", "kept": 6, "total": 6}]


def test_report_channels_first_conv_uses_the_right_spatial_axes():
    model = keras.Sequential(
        [
            keras.Input((3, 8, 10)),
            keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv"),
        ]
    )
    (row,) = masks_lib.sparsity_report(model).rows
    assert row["flops_before"] == 2 * (6 * 8) * (3 * 3 * 3 * 4)


def test_report_text_json_markdown():
    keras.utils.set_random_seed(0)
    model = build_flops_model()
    plan = PruningPlan({"conv": "filter:0.5"})
    masks_lib.hard_prune(model, plan)
    report = masks_lib.sparsity_report(model, plan)

    lines = str(report).splitlines()
    table = lines[: 3 + len(report.rows)]
    assert table[0].split()[:3] == ["layer", "class", "sparsity"]
    assert len({len(line) for line in table}) == 1, "columns are not aligned"
    assert any(line.startswith("conv ") and "2/4 filters" in line for line in table)
    assert "conv FLOPs" in "\n".join(lines[len(table) :])

    data = json.loads(report.to_json())
    assert data == report.to_dict()
    assert data["rows"][0]["layer"] == "conv"
    assert data["totals"]["conv_flops_reduction"] == pytest.approx(
        report.totals["conv_flops_reduction"]
    )

    markdown = report.to_markdown().splitlines()
    assert markdown[0].startswith("| layer |")
    assert all(line.startswith("|") for line in markdown[: 2 + len(report.rows)])
    assert "2/4 filters" in markdown[2]


def test_report_needs_known_shapes_and_says_how():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, name="sub_conv")

        def call(self, x):
            return self.conv(x)

    model = Subclassed()
    model(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="sub_conv.*flops=False"):
        masks_lib.sparsity_report(model)
    (row,) = masks_lib.sparsity_report(model, flops=False).rows
    assert row["params_before"] == 3 * 3 * 3 * 4 and row["flops_before"] is None

    unknown = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, name="conv")]
    )
    with pytest.raises(ValueError, match="conv.*fixed input shape"):
        masks_lib.sparsity_report(unknown)


def test_report_reflects_sparsity_types_of_the_plan(lenet_model):
    plan = PruningPlan(LENET_RULES)
    report = masks_lib.sparsity_report(lenet_model, plan)  # before pruning
    rows = rows_by_layer(report)
    assert rows["conv1"]["sparsity"] == "dense"
    assert rows["fc2"]["sparsity"] == str(sparsity_lib.NM(2, 4))
    assert rows["fc1"]["groups"] == [{"unit": "inputs", "kept": 72, "total": 72}]
    assert report.totals["params_reduction"] == 1.0


# ------------------------------------------------ a requested cut not made (issue 12)
@pytest.mark.parametrize(
    "blocker",
    [
        lambda: keras.layers.LayerNormalization(name="blocker"),
        lambda: keras.layers.Lambda(lambda t: t * 2.0, name="blocker"),
        lambda: keras.layers.Permute((2, 1, 3), name="blocker"),
    ],
    ids=["layer_norm", "lambda", "permute"],
)
def test_a_group_cut_that_cannot_be_made_warns_and_names_the_layer(blocker):
    import warnings

    import keras_admm

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = blocker()(x)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    plan = PruningPlan({"c1": "filter:0.5"})
    with pytest.warns(keras_admm.PruningSkippedWarning, match="'c1'.*blocker"):
        masks = masks_lib.hard_prune(model, plan, graph=True)
    assert masks["c1/kernel"].all()  # honestly reported: nothing was cut
    with pytest.warns(keras_admm.PruningSkippedWarning, match="'c1'"):
        keras_admm.GroupProjection.from_plan(model, plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", keras_admm.KerasAdmmWarning)
        masks_lib.hard_prune(model, plan)  # per-layer: cut, no warning


@pytest.mark.parametrize("bad", [0.5, np.nan])
def test_apply_masks_refuses_values_other_than_zero_and_one(bad):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    before = model.get_weights()[0].copy()
    mask = np.ones((4, 3), "float32")
    mask[0, 0] = bad
    with pytest.raises(ValueError, match="only 0 and 1"):
        masks_lib.apply_masks(model, {"fc/kernel": mask})
    np.testing.assert_array_equal(model.get_weights()[0], before)


def test_apply_masks_needs_a_dict_of_masks(lenet_model):
    plan = PruningPlan.uniform(lenet_model, "filter:0.5")
    for bad in (plan, [np.ones((3, 3))]):
        with pytest.raises(TypeError, match=r"apply_masks needs \{weight_path"):
            masks_lib.apply_masks(lenet_model, bad)


def test_a_per_layer_filter_cut_of_an_output_layer_warns(lenet_model):
    import warnings

    from keras_admm.exceptions import KerasAdmmWarning

    with pytest.warns(KerasAdmmWarning, match="'fc2' cuts outputs of the model"):
        masks_lib.projection_masks(lenet_model, {"fc2": "filter:0.5"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasAdmmWarning)
        masks_lib.projection_masks(lenet_model, {"fc1": "filter:0.5"})
        masks_lib.projection_masks(lenet_model, {"fc2": "unstructured:0.5"})


def test_the_output_cut_warning_looks_through_layers_that_keep_channels_apart():
    # A Dense whose units feed a separate Softmax (or Dropout, Reshape), or a
    # conv whose channels are pooled into the outputs, makes the outputs too;
    # a Dense before a merge, another Dense or a nested model does not.
    import warnings

    from keras_admm.exceptions import KerasAdmmWarning

    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    logits = keras.layers.Dense(4, name="logits")(hidden)
    probs = keras.layers.Softmax(name="probs")(keras.layers.Dropout(0.1)(logits))
    reshaped = keras.layers.Reshape((2, 2))(logits)
    summed = keras.layers.Add()([logits, keras.layers.Dense(4, name="side")(hidden)])
    nested = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])(logits)
    for outputs in (probs, reshaped):
        model = keras.Model(inputs, outputs)
        with pytest.warns(KerasAdmmWarning, match="'logits' cuts outputs of the"):
            masks_lib.projection_masks(model, {"logits": "filter:0.5"})
    images = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, name="conv")(images)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(features))
    with pytest.warns(KerasAdmmWarning, match="'conv' cuts outputs of the"):
        masks_lib.projection_masks(keras.Model(images, pooled), {"conv": "filter:0.5"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", KerasAdmmWarning)
        masks_lib.projection_masks(keras.Model(inputs, probs), {"hidden": "filter:0.5"})
        for outputs in (summed, nested):
            model = keras.Model(inputs, outputs)
            masks_lib.projection_masks(model, {"logits": "filter:0.5"})
