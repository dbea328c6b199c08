"""The pruning methods a user can pick besides ADMM, and plans for a FLOPs target.

Schedules (polynomial, staged plans), group lasso against NumPy, one-shot L1/L2
masks, gradual pruning as a callback, and `plan_for_flops_reduction`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TinyData, tiny_model, to_numpy, value_and_grad

import keras_admm
from keras_admm import PruningPlan, hard_prune, schedules, sparsity_report
from keras_admm import sparsity as sparsity_lib
from keras_admm.graph import DependencyGraph
from keras_admm.pruning import group_lasso, one_shot
from keras_admm.pruning.gradual import GradualPruning

TYPES = ("filter", "shape", "filter_shape", "unstructured")


# ---------------------------------------------------------------- schedule
def numpy_polynomial(step, s_i, s_f, t0, t1, power):
    progress = np.clip((step - t0) / (t1 - t0), 0.0, 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** power


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_polynomial_sparsity_matches_numpy(power):
    for step in range(-5, 130):
        got = schedules.polynomial_sparsity(
            step, 0.8, 110, initial_sparsity=0.1, begin_step=10, power=power
        )
        assert got == pytest.approx(numpy_polynomial(step, 0.1, 0.8, 10, 110, power))
    assert schedules.polynomial_sparsity(0, 0.8, 100) == 0.0
    assert schedules.polynomial_sparsity(100, 0.8, 100) == pytest.approx(0.8)
    assert schedules.polynomial_sparsity(500, 0.8, 100) == pytest.approx(0.8)


def test_polynomial_sparsity_rejects_bad_arguments():
    with pytest.raises(ValueError, match="end_step > begin_step"):
        schedules.polynomial_sparsity(5, 0.5, 10, begin_step=10)
    with pytest.raises(ValueError, match="final_sparsity must be in"):
        schedules.polynomial_sparsity(5, 1.0, 10)


def test_scheduled_sparsity_moves_every_ratio_on_the_schedule():
    spec = schedules.scheduled_sparsity("filter_shape:0.6:0.9", 30, 100)
    assert spec.kind == "filter_shape"
    assert spec.filter_ratio == pytest.approx(numpy_polynomial(30, 0, 0.6, 0, 100, 3))
    assert spec.shape_ratio == pytest.approx(numpy_polynomial(30, 0, 0.9, 0, 100, 3))
    assert schedules.scheduled_sparsity("shape:0.5", 100, 100).ratio == 0.5
    with pytest.raises(ValueError, match="no ratio to prune gradually"):
        schedules.scheduled_sparsity("nm:2:4", 1, 10)


# ------------------------------------------------------------- group lasso
def numpy_group_lasso(kernel, kind):
    """sum_g sqrt(|g|) ||W_g|| for a HWIO conv kernel, written out per type."""
    kh, kw, cin, cout = kernel.shape
    filters = sum(
        np.sqrt(kh * kw * cin) * np.linalg.norm(kernel[..., o]) for o in range(cout)
    )
    columns = sum(
        np.sqrt(cout) * np.linalg.norm(kernel[i, j, c, :])
        for i in range(kh)
        for j in range(kw)
        for c in range(cin)
    )
    channels = sum(
        np.sqrt(kh * kw * cout) * np.linalg.norm(kernel[:, :, c, :]) for c in range(cin)
    )
    return {
        "filter": filters,
        "shape": columns,
        "filter_shape": filters + columns,
        "channel": channels,
        "unstructured": np.abs(kernel).sum(),
    }[kind]


@pytest.mark.parametrize("kind", ["filter", "shape", "filter_shape", "channel"])
def test_group_lasso_penalty_matches_numpy(kind):
    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 6)).astype("float32")
    spec = f"{kind}:0.5:0.5" if kind == "filter_shape" else f"{kind}:0.5"
    got = float(group_lasso.group_lasso_penalty(kernel, spec))
    assert got == pytest.approx(numpy_group_lasso(kernel, kind), rel=1e-5)


def test_group_lasso_penalty_unstructured_is_l1_and_dense_uses_units():
    kernel = np.random.default_rng(2).normal(size=(5, 7)).astype("float32")
    assert float(
        group_lasso.group_lasso_penalty(kernel, "unstructured:0.5")
    ) == pytest.approx(np.abs(kernel).sum(), rel=1e-5)
    units = sum(np.sqrt(5) * np.linalg.norm(kernel[:, o]) for o in range(7))
    assert float(group_lasso.group_lasso_penalty(kernel, "filter:0.5")) == (
        pytest.approx(units, rel=1e-5)
    )
    with pytest.raises(ValueError, match="no groups for nm:2:4"):
        group_lasso.group_lasso_penalty(np.ones((3, 3, 4, 4)), "nm:2:4")


def test_group_lasso_gradient_shrinks_each_group_along_itself():
    kernel = keras.Variable(
        np.random.default_rng(3).normal(size=(3, 3, 2, 4)), dtype="float32"
    )
    regularizer = group_lasso.GroupLasso(0.01, "filter:0.5")
    _, (grad,) = value_and_grad(lambda: regularizer(kernel), [kernel])
    grad = to_numpy(grad)
    w = to_numpy(kernel)
    norms = np.sqrt((w**2).sum(axis=(0, 1, 2), keepdims=True))
    np.testing.assert_allclose(grad, 0.01 * np.sqrt(18) * w / norms, rtol=1e-4)
    with pytest.raises(ValueError, match="strength must be >= 0"):
        group_lasso.GroupLasso(-1.0, "filter:0.5")


# ------------------------------------------------------------- norms, plans
def test_norm_masks_l1_and_l2_rank_groups_differently():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(2, use_bias=False, name="fc")]
    )
    # Unit 0: one large weight (L2 3, L1 3); unit 1: spread (L2 2, L1 4).
    kernel = np.array([[3.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], "float32")
    plan = PruningPlan({"fc": "filter:0.5"})
    for norm, kept_unit in (("l2", 0), ("l1", 1)):
        model.set_weights([kernel])
        masks = one_shot.one_shot_prune(model, plan, norm=norm)
        (mask,) = masks.values()
        assert mask[:, kept_unit].all() and not mask[:, 1 - kept_unit].any()
        np.testing.assert_array_equal(model.get_weights()[0], kernel * mask)
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        one_shot.one_shot_prune(model, plan, norm="linf")


def test_norm_masks_l1_with_a_graph_ranks_by_l1_and_cuts_the_consumer():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(2, use_bias=False, name="fc"),
            keras.layers.Dense(3, use_bias=False, name="out"),
        ]
    )
    kernel = np.array([[3.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], "float32")
    out = np.ones((2, 3), "float32")
    plan = PruningPlan({"fc": "filter:0.5"})
    for norm, kept_unit in (("l2", 0), ("l1", 1)):
        model.set_weights([kernel, out])
        masks = one_shot.one_shot_prune(model, plan, norm=norm, graph=True)
        fc = masks[model.get_layer("fc").kernel.path]
        assert fc[:, kept_unit].all() and not fc[:, 1 - kept_unit].any()
        # The consumer loses the cut unit's row; the weights are restored and
        # then masked, not left as sqrt(|W|).
        weights = model.get_weights()
        np.testing.assert_array_equal(weights[0], kernel * fc)
        assert not weights[1][1 - kept_unit].any() and weights[1][kept_unit].all()


def test_stage_plan_climbs_the_schedule_to_the_plan():
    plan = PruningPlan({"conv2": "filter:0.75", "fc1": "nm:2:4"})
    ratios = []
    for stage in (1, 2, 3):
        staged = schedules.stage_plan(plan, stage, 3)
        rules = {r["name"]: r["sparsity"] for r in staged.to_dict()["rules"]}
        assert rules["fc1"] == "nm:2:4"
        ratios.append(sparsity_lib.parse(rules["conv2"]).ratio)
    assert 0 < ratios[0] < ratios[1] < ratios[2] == 0.75
    assert ratios[0] == pytest.approx(0.75 * (1 - (2 / 3) ** 3))
    assert schedules.stage_plan(plan, 3, 3) is plan
    with pytest.raises(ValueError, match="stage must be in"):
        schedules.stage_plan(plan, 0, 3)


@pytest.mark.parametrize(
    "kind, level",
    [(kind, level) for kind in TYPES for level in (2, 4, 8)] + [("channel", 2)],
)
def test_plan_for_flops_reduction_hits_the_level_exactly_as_reported(kind, level):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    level_plan = keras_admm.plan_for_flops_reduction(
        model, kind, level, extra_rules=[("fc1", "unstructured:0.5")]
    )
    assert level_plan.expected_conv_flops_reduction >= level
    assert {t.layer_name for t in level_plan.plan.targets} == {"conv1", "conv2", "fc1"}
    hard_prune(model, level_plan.plan)
    report = sparsity_report(model, level_plan.plan)
    assert report.totals["conv_flops_reduction"] == pytest.approx(
        level_plan.expected_conv_flops_reduction
    )
    for layer in level_plan.layers:
        (row,) = [r for r in report.rows if r["layer"] == layer["layer"]]
        assert [g["kept"] for g in row["groups"]] == list(layer["kept"].values())


def test_plan_for_flops_reduction_rejects_bad_requests():
    model = tiny_model()
    with pytest.raises(ValueError, match="`level` must be a finite number > 1"):
        keras_admm.plan_for_flops_reduction(model, "filter", 1.0)
    with pytest.raises(ValueError, match="Unknown sparsity type 'rows'"):
        keras_admm.plan_for_flops_reduction(model, "rows", 4)
    with pytest.raises(ValueError, match="keeping one group per layer gives"):
        keras_admm.plan_for_flops_reduction(model, "filter", 100)
    # conv1 has one input channel: channel pruning cannot cut its FLOPs.
    with pytest.raises(ValueError, match="A channel plan cannot cut"):
        keras_admm.plan_for_flops_reduction(model, "channel", 4)
    with pytest.raises(ValueError, match="names conv layer 'conv2'"):
        keras_admm.plan_for_flops_reduction(
            model, "filter", 2, extra_rules=[("conv2", "filter:0.5")]
        )


@pytest.mark.parametrize("with_graph", [False, True])
def test_gradual_prunes_on_the_schedule_during_phase_one(with_graph):
    """Sparsity grows step by step: the weights are pruned before the end."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    plan = PruningPlan({"conv2": "filter:0.75"}).resolve(model)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            kernel = self.model.get_layer("conv2").kernel.numpy()
            seen.append(int((np.abs(kernel).sum(axis=(0, 1, 2)) > 0).sum()))

    graph = DependencyGraph.from_model(model) if with_graph else None
    callback = GradualPruning(plan, end_step=8, frequency=2, power=3.0, graph=graph)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    data = TinyData(train=16 * 8)
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[callback, Spy()],
    )
    # 16 filters; kept = 16 - floor(16 * s_t) with s_t on the cubic schedule.
    expected = [
        16 - int(np.floor(16 * numpy_polynomial(2 * (i // 2), 0, 0.75, 0, 8, 3) + 1e-9))
        for i in range(1, 9)
    ]
    assert seen == expected
    assert seen[-1] == 4 and seen[0] == 16
    # With the graph, fc1 also loses the rows of conv2's cut filters
    # (Flatten interleaves: row r reads channel r % 16); without, it keeps them.
    cut = np.abs(model.get_layer("conv2").kernel.numpy()).sum(axis=(0, 1, 2)) == 0
    fc1 = model.get_layer("fc1").kernel.numpy()
    dead_rows = np.tile(cut, fc1.shape[0] // 16)
    assert (np.abs(fc1[dead_rows]).sum() == 0) == with_graph


# ------------------------------------------------------------- bad arguments
def test_plan_for_flops_reduction_rejects_nan_and_takes_extra_rules_as_a_dict():
    model = tiny_model()
    with pytest.raises(
        ValueError, match="`level` must be a finite number > 1, got nan"
    ):
        keras_admm.plan_for_flops_reduction(model, "filter", float("nan"))
    as_pairs = keras_admm.plan_for_flops_reduction(
        model, "filter", 2, extra_rules=[("fc1", "unstructured:0.9")]
    )
    as_dict = keras_admm.plan_for_flops_reduction(
        model, "filter", 2, extra_rules={"fc1": "unstructured:0.9"}
    )
    assert as_dict.to_dict() == as_pairs.to_dict()
    assert "fc1" in as_dict.to_dict()["plan"]
    with pytest.raises(TypeError, match="extra_rules must be .layer, sparsity. pairs"):
        keras_admm.plan_for_flops_reduction(
            model, "filter", 2, extra_rules=[("fc1", "unstructured:0.9", "x")]
        )


@pytest.mark.parametrize(
    "power, error",
    [
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("abc", TypeError),
        (True, TypeError),
    ],
)
def test_gradual_rejects_a_power_that_is_not_positive(power, error):
    with pytest.raises(error, match="`power` must be a finite number > 0, got"):
        GradualPruning({"conv2": "filter:0.5"}, end_step=4, power=power)


def test_gradual_and_hard_prune_reject_a_graph_that_is_not_one():
    with pytest.raises(TypeError, match="graph must be None or False"):
        GradualPruning({"conv2": "filter:0.5"}, end_step=4, graph="yes")
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    for graph in ("yes", 1):
        with pytest.raises(TypeError, match="graph must be None or False"):
            hard_prune(model, {"conv2": "filter:0.5"}, graph=graph)
        with pytest.raises(TypeError, match="graph must be None or False"):
            one_shot.one_shot_prune(model, {"conv2": "filter:0.5"}, graph=graph)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_graph_of_another_model_is_refused():
    # Its channel choices would read the other model's weights.
    model, other = tiny_model(), tiny_model()
    graph = DependencyGraph.from_model(other)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(
        ValueError,
        match=r"another model object named 'tiny' \(a clone or a loaded copy\?\)",
    ):
        hard_prune(model, {"conv2": "filter:0.5"}, graph=graph)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    plan = PruningPlan({"conv2": "filter:0.5"}).resolve(model)
    with pytest.raises(
        ValueError, match="DependencyGraph does not belong to the model being pruned"
    ):
        keras_admm.GroupProjection.from_plan(model, plan, graph=graph)
    callback = GradualPruning(plan, end_step=4, graph=graph)
    callback.set_model(model)
    with pytest.raises(
        ValueError, match="DependencyGraph does not belong to the model being pruned"
    ):
        callback.on_train_begin()
    # Its own model's graph is accepted, also after the Sequential rebuilt
    # its graph (same layers).
    own = DependencyGraph.from_model(model)
    model.build((None, 16, 16, 1))
    assert hard_prune(model, plan, graph=own)
    # A model with another name is named.
    renamed = keras.Sequential(
        [keras.Input((16, 16, 1)), *tiny_model().layers], name="other"
    )
    with pytest.raises(
        ValueError, match="the graph is of model 'other', not of 'tiny'"
    ):
        hard_prune(model, plan, graph=DependencyGraph.from_model(renamed))
