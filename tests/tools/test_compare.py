"""The comparison harness (tools/harness: methods at equal budgets, the sweep).

A 2-level smoke version of the comparison on a tiny model checks that every method
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
from conftest import TinyData, tiny_model
from harness import comparison as compare
from harness import methods

import keras_admm
from keras_admm import PruningPlan, models, sparsity_report
from keras_admm import sparsity as sparsity_lib

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TYPES = ("filter", "shape", "filter_shape", "unstructured")


def test_method_options_check_the_admm_schedule():
    options = methods.MethodOptions()
    assert options.admm_epochs(6) == [1, 1, 1, 1]
    assert options.admm_epochs(0) == []
    assert methods.MethodOptions(admm_stages=4, admm_fraction=1.0).admm_epochs(2) == [
        1,
        1,
    ]
    assert methods.MethodOptions(admm_stages=2, admm_fraction=0.5).admm_epochs(9) == [
        3,
        2,
    ]
    with pytest.raises(ValueError, match="admm_fraction must be in"):
        methods.MethodOptions(admm_fraction=0.0)
    with pytest.raises(ValueError, match="admm_stages must be >= 1"):
        methods.MethodOptions(admm_stages=0)
    with pytest.raises(TypeError, match="admm_updates must be an int"):
        methods.MethodOptions(admm_updates=2.5)


def test_admm_runs_its_stages_then_masked_training():
    keras.utils.set_random_seed(0)
    plan = keras_admm.plan_for_flops_reduction(tiny_model(), "filter", 4).plan
    options = methods.MethodOptions(admm_stages=2, admm_fraction=0.5)
    result = methods.run_method(
        "admm",
        tiny_model,
        tiny_model().get_weights(),
        TinyData(),
        plan,
        methods.TrainingBudget(epochs=5, finetune_epochs=1),
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


def test_budget_split_gives_every_method_the_same_epochs():
    budget = methods.TrainingBudget(epochs=9, finetune_epochs=3)
    for method in methods.METHODS:
        phases = methods.budget_split(method, budget)
        assert [p["epochs"] for p in phases] == [6, 3]
        assert [p["learning_rate"] for p in phases] == [1e-3, 3e-4]
    with pytest.raises(ValueError, match="finetune_epochs must be in"):
        methods.TrainingBudget(epochs=2, finetune_epochs=3)
    with pytest.raises(ValueError, match="Unknown pruning method 'obd'"):
        methods.budget_split("obd", budget)


def test_run_method_rejects_weights_of_another_model():
    with pytest.raises(ValueError, match="do not fit the model from model_fn"):
        methods.run_method(
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
        levels=(2.0, 8.0),
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
    assert {r["method"] for r in records} == set(methods.METHODS)
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
    assert len(results["summary"]["margins"]) == 2
    for key in ("json", "markdown", "plot"):
        assert os.path.getsize(results["files"][key]) > 0
    text = open(results["files"]["markdown"]).read()
    for method in methods.METHODS:
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
    level_plan = keras_admm.plan_for_flops_reduction(tiny_model(), kind, 4)
    result = methods.run_method(
        method,
        tiny_model,
        tiny_model().get_weights(),
        TinyData(),
        level_plan.plan,
        methods.TrainingBudget(epochs=2, finetune_epochs=1),
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
    level = keras_admm.plan_for_flops_reduction(
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
            f"--data_file={tmp_path / 'data.npz'}",
            f"--points={tmp_path / 'points.json'}",
            f"--output_dir={tmp_path / 'out'}",
            "--latency_runs=5",
            "--warmup=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "tfmot.json").read_text())
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


def test_the_flag_checks_know_every_method_and_type():
    """compare.py checks --types / --methods at parse time from its own lists."""
    from keras_admm.pruning.flops_target import LEVEL_TYPES

    code = (
        "import sys; sys.path.insert(0, 'tools'); import compare; "
        "print(list(compare.KNOWN_METHODS)); print(list(compare.KNOWN_TYPES))"
    )  # its own process: compare.py defines absl flags other tools define too
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=_REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    known_methods, known_types = run.stdout.strip().splitlines()
    assert known_methods == str(list(methods.METHODS))
    assert known_types == str(list(LEVEL_TYPES))
