"""Baseline methods (keras_admm.baselines) and the comparison (keras_admm.comparison).

A 3-level smoke version of the comparison on a tiny model checks that every method
runs and ends with exactly the planned kept groups and conv FLOPs reduction (no
accuracy is checked); unit tests compare the polynomial schedule and the
group-lasso penalty with NumPy; the tfmot baseline runs in its own process when
tensorflow-model-optimization is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_admm import PruningPlan, baselines, hard_prune, models, sparsity_report
from keras_admm import comparison as compare
from keras_admm import sparsity as sparsity_lib
from keras_admm.graph import DependencyGraph

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TYPES = ("filter", "shape", "filter_shape", "unstructured")


def tiny_model():
    """conv1 8@3x3 (14x14 out), pool, conv2 16@3x3 (5x5 out), fc1 16, fc2 10."""
    return keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ],
        name="tiny",
    )


class TinyData:
    """Random images and labels: enough to run every method, not to learn."""

    def __init__(self, train=128, test=64, seed=0):
        rng = np.random.default_rng(seed)
        self.x_train = rng.random((train, 16, 16, 1), dtype="float32")
        self.y_train = rng.integers(0, 10, train)
        self.x_test = rng.random((test, 16, 16, 1), dtype="float32")
        self.y_test = rng.integers(0, 10, test)
        self.source = f"random ({train} train, {test} test)"


# ---------------------------------------------------------------- schedule
def numpy_polynomial(step, s_i, s_f, t0, t1, power):
    progress = np.clip((step - t0) / (t1 - t0), 0.0, 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** power


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_polynomial_sparsity_matches_numpy(power):
    for step in range(-5, 130):
        got = baselines.polynomial_sparsity(
            step, 0.8, 110, initial_sparsity=0.1, begin_step=10, power=power
        )
        assert got == pytest.approx(numpy_polynomial(step, 0.1, 0.8, 10, 110, power))
    assert baselines.polynomial_sparsity(0, 0.8, 100) == 0.0
    assert baselines.polynomial_sparsity(100, 0.8, 100) == pytest.approx(0.8)
    assert baselines.polynomial_sparsity(500, 0.8, 100) == pytest.approx(0.8)


def test_polynomial_sparsity_rejects_bad_arguments():
    with pytest.raises(ValueError, match="end_step > begin_step"):
        baselines.polynomial_sparsity(5, 0.5, 10, begin_step=10)
    with pytest.raises(ValueError, match="final_sparsity must be in"):
        baselines.polynomial_sparsity(5, 1.0, 10)


def test_scheduled_sparsity_moves_every_ratio_on_the_schedule():
    spec = baselines.scheduled_sparsity("filter_shape:0.6:0.9", 30, 100)
    assert spec.kind == "filter_shape"
    assert spec.filter_ratio == pytest.approx(numpy_polynomial(30, 0, 0.6, 0, 100, 3))
    assert spec.shape_ratio == pytest.approx(numpy_polynomial(30, 0, 0.9, 0, 100, 3))
    assert baselines.scheduled_sparsity("shape:0.5", 100, 100).ratio == 0.5
    with pytest.raises(ValueError, match="no ratio to prune gradually"):
        baselines.scheduled_sparsity("nm:2:4", 1, 10)


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
    got = float(baselines.group_lasso_penalty(kernel, spec))
    assert got == pytest.approx(numpy_group_lasso(kernel, kind), rel=1e-5)


def test_group_lasso_penalty_unstructured_is_l1_and_dense_uses_units():
    kernel = np.random.default_rng(2).normal(size=(5, 7)).astype("float32")
    assert float(
        baselines.group_lasso_penalty(kernel, "unstructured:0.5")
    ) == pytest.approx(np.abs(kernel).sum(), rel=1e-5)
    units = sum(np.sqrt(5) * np.linalg.norm(kernel[:, o]) for o in range(7))
    assert float(baselines.group_lasso_penalty(kernel, "filter:0.5")) == (
        pytest.approx(units, rel=1e-5)
    )
    with pytest.raises(ValueError, match="no groups for nm:2:4"):
        baselines.group_lasso_penalty(np.ones((3, 3, 4, 4)), "nm:2:4")


def test_group_lasso_gradient_shrinks_each_group_along_itself():
    kernel = tf.Variable(
        np.random.default_rng(3).normal(size=(3, 3, 2, 4)), dtype="float32"
    )
    regularizer = baselines.GroupLasso(0.01, "filter:0.5")
    with tf.GradientTape() as tape:
        loss = regularizer(kernel)
    grad = tape.gradient(loss, kernel).numpy()
    w = kernel.numpy()
    norms = np.sqrt((w**2).sum(axis=(0, 1, 2), keepdims=True))
    np.testing.assert_allclose(grad, 0.01 * np.sqrt(18) * w / norms, rtol=1e-4)
    with pytest.raises(ValueError, match="strength must be >= 0"):
        baselines.GroupLasso(-1.0, "filter:0.5")


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
        masks = baselines.norm_masks(model, plan, norm=norm)
        (mask,) = masks.values()
        assert mask[:, kept_unit].all() and not mask[:, 1 - kept_unit].any()
        np.testing.assert_array_equal(model.get_weights()[0], kernel * mask)
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        baselines.norm_masks(model, plan, norm="linf")


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
        masks = baselines.norm_masks(model, plan, norm=norm, graph=True)
        fc = masks[model.get_layer("fc").kernel.path]
        assert fc[:, kept_unit].all() and not fc[:, 1 - kept_unit].any()
        # The consumer loses the cut unit's row; the weights are restored and
        # then masked, not left as sqrt(|W|).
        weights = model.get_weights()
        np.testing.assert_array_equal(weights[0], kernel * fc)
        assert not weights[1][1 - kept_unit].any() and weights[1][kept_unit].all()


def test_method_options_check_the_admm_schedule():
    options = baselines.MethodOptions()
    assert options.admm_epochs(6) == [1, 1, 1, 1]
    assert options.admm_epochs(0) == []
    assert baselines.MethodOptions(admm_stages=4, admm_fraction=1.0).admm_epochs(2) == [
        1,
        1,
    ]
    assert baselines.MethodOptions(admm_stages=2, admm_fraction=0.5).admm_epochs(9) == [
        3,
        2,
    ]
    with pytest.raises(ValueError, match="admm_fraction must be in"):
        baselines.MethodOptions(admm_fraction=0.0)
    with pytest.raises(ValueError, match="admm_stages must be >= 1"):
        baselines.MethodOptions(admm_stages=0)
    with pytest.raises(TypeError, match="admm_updates must be an int"):
        baselines.MethodOptions(admm_updates=2.5)


def test_stage_plan_climbs_the_schedule_to_the_plan():
    plan = PruningPlan({"conv2": "filter:0.75", "fc1": "nm:2:4"})
    ratios = []
    for stage in (1, 2, 3):
        staged = baselines.stage_plan(plan, stage, 3)
        rules = {r["name"]: r["sparsity"] for r in staged.to_dict()["rules"]}
        assert rules["fc1"] == "nm:2:4"
        ratios.append(sparsity_lib.parse(rules["conv2"]).ratio)
    assert 0 < ratios[0] < ratios[1] < ratios[2] == 0.75
    assert ratios[0] == pytest.approx(0.75 * (1 - (2 / 3) ** 3))
    assert baselines.stage_plan(plan, 3, 3) is plan
    with pytest.raises(ValueError, match="stage must be in"):
        baselines.stage_plan(plan, 0, 3)


def test_admm_runs_its_stages_then_masked_training():
    keras.utils.set_random_seed(0)
    plan = baselines.plan_for_flops_reduction(tiny_model(), "filter", 4).plan
    options = baselines.MethodOptions(admm_stages=2, admm_fraction=0.5)
    result = baselines.run_method(
        "admm",
        tiny_model,
        tiny_model().get_weights(),
        TinyData(),
        plan,
        baselines.TrainingBudget(epochs=5, finetune_epochs=1),
        options,
    )
    phase = result.phases[0]
    assert phase["admm_stage_epochs"] == [1, 1]
    assert phase["masked_epochs"] == 2
    report = sparsity_report(result.model, result.plan)
    rows = {row["layer"]: row for row in report.rows}
    for target in result.plan.targets:
        groups = rows[target.layer_name]["groups"]
        expected = [
            sparsity_lib.kept_count(g["total"], target.sparsity.ratio) for g in groups
        ]
        assert [g["kept"] for g in groups] == expected


@pytest.mark.parametrize(
    "kind, level",
    [(kind, level) for kind in TYPES for level in (2, 4, 8)] + [("channel", 2)],
)
def test_plan_for_flops_reduction_hits_the_level_exactly_as_reported(kind, level):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    level_plan = baselines.plan_for_flops_reduction(
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
    with pytest.raises(ValueError, match="must be a number > 1"):
        baselines.plan_for_flops_reduction(model, "filter", 1.0)
    with pytest.raises(ValueError, match="Unknown sparsity type 'rows'"):
        baselines.plan_for_flops_reduction(model, "rows", 4)
    with pytest.raises(ValueError, match="keeping one group per layer gives"):
        baselines.plan_for_flops_reduction(model, "filter", 100)
    # conv1 has one input channel: channel pruning cannot cut its FLOPs.
    with pytest.raises(ValueError, match="A channel plan cannot cut"):
        baselines.plan_for_flops_reduction(model, "channel", 4)
    with pytest.raises(ValueError, match="names conv layer 'conv2'"):
        baselines.plan_for_flops_reduction(
            model, "filter", 2, extra_rules=[("conv2", "filter:0.5")]
        )


def test_budget_split_gives_every_method_the_same_epochs():
    budget = baselines.TrainingBudget(epochs=9, finetune_epochs=3)
    for method in baselines.METHODS:
        phases = baselines.budget_split(method, budget)
        assert [p["epochs"] for p in phases] == [6, 3]
        assert [p["learning_rate"] for p in phases] == [1e-3, 3e-4]
    with pytest.raises(ValueError, match="finetune_epochs must be in"):
        baselines.TrainingBudget(epochs=2, finetune_epochs=3)
    with pytest.raises(ValueError, match="Unknown pruning method 'obd'"):
        baselines.budget_split("obd", budget)


def test_run_method_rejects_weights_of_another_model():
    with pytest.raises(ValueError, match="do not fit the model from model_fn"):
        baselines.run_method(
            "admm",
            tiny_model,
            models.lenet5().get_weights(),
            TinyData(),
            PruningPlan({"conv2": "filter:0.5"}),
        )


# ------------------------------------------------------ the smoke comparison
def _kept_values(report_kept):
    return list(report_kept.values())


def test_smoke_comparison_every_method_reaches_its_target(tmp_path):
    config = compare.ComparisonConfig(
        output_dir=str(tmp_path),
        levels=(2.0, 4.0, 8.0),
        types=("filter_shape",),
        seeds=2,
        seeded_levels=1,
        pretrain_epochs=1,
        epochs=2,
        finetune_epochs=1,
        fc1_sparsity="unstructured:0.5",
        tfmot=False,
        latency=False,
    )
    logs = []
    results = compare.run_comparison(
        config, tiny_model, TinyData(), model_name="tiny", log=logs.append
    )
    records = results["points"]
    expected_runs = len(compare.sweep_points(config))
    assert len(records) == expected_runs
    assert {r["method"] for r in records} == set(baselines.METHODS)
    for record in records:
        name = f"{record['type']} {record['level']}x {record['method']}"
        planned = record["planned"]
        for layer in planned["layers"]:
            kept = _kept_values(record["kept"][layer["layer"]])
            assert kept == list(layer["kept"].values()), name
        assert record["conv_flops_reduction"] == pytest.approx(
            planned["expected_conv_flops_reduction"]
        ), name
        assert record["conv_flops_reduction"] >= record["level"], name
        assert record["reached_target"], name
        assert record["params_reduction"] > 1.0, name
        assert 0.0 <= record["accuracy"] <= 1.0
        assert sum(p["epochs"] for p in record["phases"]) == config.epochs
    # The highest level ran 2 seeds per method, the others 1.
    cells = results["summary"]["cells"]
    assert {c["accuracy"]["n"] for c in cells if c["level"] == 8.0} == {2}
    assert {c["accuracy"]["n"] for c in cells if c["level"] < 8.0} == {1}
    assert len(results["summary"]["margins"]) == 3
    for key in ("json", "markdown", "plot"):
        assert os.path.getsize(results["files"][key]) > 0
    text = open(results["files"]["markdown"]).read()
    for method in baselines.METHODS:
        assert method in text
    with open(results["files"]["json"]) as f:
        assert (
            json.load(f)["summary"]["verdict"].keys()
            == results["summary"]["verdict"].keys()
        )

    # A rerun with the same settings reuses every stored point.
    logs.clear()
    again = compare.run_comparison(
        config, tiny_model, TinyData(), model_name="tiny", log=logs.append
    )
    assert logs == [f"{expected_runs} runs ({expected_runs} cached) of 2 epochs each"]
    assert [r["accuracy"] for r in again["points"]] == [r["accuracy"] for r in records]


@pytest.mark.parametrize("kind", ["filter", "shape", "unstructured"])
@pytest.mark.parametrize("method", ["gradual", "group_lasso"])
def test_type_specific_methods_reach_the_planned_groups(kind, method):
    """The schedule and the penalty depend on the type: run them on each."""
    keras.utils.set_random_seed(0)
    level_plan = baselines.plan_for_flops_reduction(tiny_model(), kind, 4)
    result = baselines.run_method(
        method,
        tiny_model,
        tiny_model().get_weights(),
        TinyData(),
        level_plan.plan,
        baselines.TrainingBudget(epochs=2, finetune_epochs=1),
    )
    report = sparsity_report(result.model, result.plan)
    for layer in level_plan.layers:
        (row,) = [r for r in report.rows if r["layer"] == layer["layer"]]
        assert [g["kept"] for g in row["groups"]] == list(layer["kept"].values())
    flops = report.totals["conv_flops_reduction"]
    if kind == "filter":
        # Group-aware masks (MethodOptions.graph) also zero the consumer's
        # inputs from cut filters: more conv FLOPs go than the plan counted.
        assert flops > level_plan.expected_conv_flops_reduction * 1.05
    else:
        assert flops == pytest.approx(level_plan.expected_conv_flops_reduction)
    assert result.accuracy is not None


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
    callback = baselines._GradualPruning(
        model, plan, end_step=8, frequency=2, power=3.0, graph=graph
    )
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


def test_latency_is_marked_not_measured_without_compaction(monkeypatch):
    monkeypatch.setattr(compare, "compaction_available", lambda: False)
    result = compare.measure_compact_latency(tiny_model(), "dense.keras", ".", "x")
    assert result == {"status": compare.NOT_MEASURED}


def test_sweep_points_seeds_only_the_highest_levels():
    config = compare.ComparisonConfig(
        output_dir="unused", levels=(2.0, 4.0, 8.0, 16.0), seeds=3, seeded_levels=2
    )
    points = compare.sweep_points(config)
    for kind, level, method, seed in points:
        assert seed == 0 or level in (8.0, 16.0)
        assert not (method == "one_shot_l1" and kind == "unstructured")
    assert len(points) == len(set(points))
    runs_per_level = 4 * 5 - 1  # 4 types x 5 methods, no l1 for unstructured
    assert len(points) == 4 * runs_per_level + 2 * 2 * runs_per_level


# --------------------------------------------------------------------- tfmot
def test_tfmot_baseline_reaches_its_sparsity_and_reports_latency(tmp_path):
    pytest.importorskip("tensorflow_model_optimization")
    pytest.importorskip("tf_keras")
    keras.utils.set_random_seed(0)
    model = models.lenet5()
    rng = np.random.default_rng(0)
    data = {
        "x_train": rng.integers(0, 256, (128, 28, 28, 1)).astype("uint8"),
        "y_train": rng.integers(0, 10, 128),
        "x_test": rng.integers(0, 256, (200, 28, 28, 1)).astype("uint8"),
        "y_test": rng.integers(0, 10, 200),
    }
    np.savez(tmp_path / "data.npz", **data)
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    level = baselines.plan_for_flops_reduction(
        model, "unstructured", 4, extra_rules=[("fc1", "unstructured:0.9")]
    )
    targets = {t.layer_name: t.sparsity.ratio for t in level.plan.targets}
    points = {
        "epochs": 2,
        "finetune_epochs": 1,
        "batch_size": 64,
        "mask_updates": 2,
        "points": [
            {"name": "u4", "kind": "unstructured", "level": 4, "sparsity": targets},
            {"name": "2:4", "kind": "m_by_n", "layers": ["conv2", "fc1"]},
        ],
    }
    (tmp_path / "points.json").write_text(json.dumps(points))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(_REPO, "tools", "tfmot_baseline.py"),
            f"--weights={tmp_path / 'weights.npz'}",
            f"--data={tmp_path / 'data.npz'}",
            f"--points={tmp_path / 'points.json'}",
            f"--output={tmp_path / 'out.json'}",
            "--latency_runs=5",
            "--warmup=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    # The same weights load into the tf_keras twin: same held-out accuracy.
    x_test = data["x_test"].astype("float32") / 255.0
    model.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")
    keras3 = model.evaluate(x_test, data["y_test"], verbose=0, return_dict=True)
    assert result["dense_accuracy_tf_keras"] == pytest.approx(
        keras3["accuracy"], abs=0.011
    )
    unstructured, m_by_n = result["points"]
    for layer in unstructured["layers"]:
        if layer["layer"] in targets:
            expected_kept = layer["weights"] - round(
                targets[layer["layer"]] * layer["weights"]
            )
            assert abs(layer["nonzero"] - expected_kept) <= 1, layer
        else:
            assert layer["weight_sparsity"] < 0.01, layer
    assert unstructured["conv_flops_reduction"] == pytest.approx(
        level.expected_conv_flops_reduction, rel=0.01
    )
    sparsities = {
        layer["layer"]: layer["weight_sparsity"] for layer in m_by_n["layers"]
    }
    assert sparsities["conv2"] == pytest.approx(0.5)
    assert sparsities["fc1"] == pytest.approx(0.5)
    assert sparsities["conv1"] < 0.01
    for point in (unstructured, m_by_n):
        for batch in ("1", "32"):
            latency = point["latency_stripped_vs_dense"][batch]
            assert latency["dense"]["median_ms"] > 0
            assert latency["pruned"]["runs"] == 5
            assert latency["speedup"] > 0
