"""Plans for a speed target: candidate counts, the solver, the latency model,
the sensitivity, the cached latency table, and plan_for_target end to end.

The end-to-end tests time nothing: a fake table whose "latency" is a layer's
multiply-accumulates makes every prediction checkable; one test times real
layers on ONNX Runtime to check the table's cache.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

import keras_admm
from keras_admm.graph import DependencyGraph
from keras_admm.profiling import count_flops
from keras_admm.targeting import (
    LatencyModel,
    LatencyTable,
    TargetPlan,
    candidate_counts,
    check_prediction,
    choose_counts,
    compact_for_counts,
    group_sensitivity,
    plan_for_target,
)
from keras_admm.targeting import target_plan as target_plan_module


def residual_net(seed=0):
    """A small residual CNN: one stream group, two inner groups, a Dense head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    for b in range(2):
        y = keras.layers.Conv2D(16, 3, padding="same", name=f"b{b}_conv1")(x)
        y = keras.layers.BatchNormalization(name=f"b{b}_bn1")(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(16, 3, padding="same", name=f"b{b}_conv2")(y)
        y = keras.layers.BatchNormalization(name=f"b{b}_bn2")(y)
        x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inputs, outputs)
    # Spread the BatchNorm statistics so that cuts change the loss.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(np.random.uniform(0.2, 2.0, size).astype("float32"))
            layer.beta.assign(np.random.uniform(-0.5, 0.5, size).astype("float32"))
    return model


def calibration_data(model, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 12, 12, 3)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1)
    return x, y


def cuttable_candidates(graph, granularity=4):
    return {
        g.index: candidate_counts(g.size, granularity)
        for g in graph.groups
        if g.prunable and g.size > 1 and g.producers
    }


class MacTable:
    """A LatencyTable stand-in whose latency of a layer is its MACs / 1e6 ms
    and whose latency of a whole model is its count_flops / 1e6 + 0.05 ms."""

    def __init__(self, engine="fake", batch_size=1, threads=None, *_args, **_kw):
        self.engine_name, self.batch_size = engine, batch_size
        self.threads, self.path, self.entries, self.measured = 1, None, {}, 0
        self.asked = []

    supports = staticmethod(LatencyTable.supports)

    def measure(self, items, verbose=0):
        self.asked += list(items)
        return len(items)

    def latency_ms(self, layer, cin, cout):
        kernel = keras_admm.registry.kernel_variable(layer)
        taps = int(np.prod(kernel.shape[:-2])) if len(kernel.shape) > 2 else 1
        positions = int(np.prod([d for d in layer.output.shape[1:-1]])) or 1
        return self.batch_size * taps * positions * cin * cout / 1e6

    def time_models(self, paths, names=None):
        names = list(names) if names is not None else list(paths)
        medians = {}
        for path, name in zip(paths, names):
            model = keras.saving.load_model(path, compile=False)
            medians[name] = self.batch_size * count_flops(model) / 1e6 + 0.05
        samples = {n: [m / 1e3] * 3 for n, m in medians.items()}
        return medians, samples


@pytest.fixture
def mac_table(monkeypatch):
    monkeypatch.setattr(target_plan_module, "LatencyTable", MacTable)


def test_candidate_counts_are_multiples_of_the_step():
    assert candidate_counts(16) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert candidate_counts(64, 4) == [16, 32, 48, 64]
    assert candidate_counts(10, 4) == [2, 4, 6, 8, 10]  # the full size is kept
    assert candidate_counts(16, 8, min_keep_fraction=0.5) == [8, 10, 12, 14, 16]
    assert candidate_counts(3, 8) == [1, 2, 3]


def test_choose_counts_meets_the_target_at_the_least_cost():
    # Two groups of 4; latency = sum of counts; group "a" is 10x as costly.
    candidates = {"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]}
    sens = {
        "a": {1: 30.0, 2: 20.0, 3: 10.0, 4: 0.0},
        "b": {1: 3.0, 2: 2.0, 3: 1.0, 4: 0.0},
    }

    def predict(kept):
        return float(sum(kept.values()))

    assert choose_counts(candidates, sens, predict, 8.0) == {"a": 4, "b": 4}
    assert choose_counts(candidates, sens, predict, 6.0) == {"a": 4, "b": 2}
    assert choose_counts(candidates, sens, predict, 4.0) == {"a": 3, "b": 1}
    with pytest.raises(ValueError, match="fastest candidate cut is predicted at 2"):
        choose_counts(candidates, sens, predict, 1.5)


def test_choose_counts_gives_back_cuts_the_target_does_not_need():
    # A cut of b that saves nothing but costs: the solver must not keep it;
    # cutting a to 2 reaches the target only together with growing back.
    candidates = {"a": [2, 4], "b": [1, 2]}
    sens = {"a": {2: 1.0, 4: 0.0}, "b": {1: 5.0, 2: 0.0}}

    def predict(kept):
        return kept["a"] * 1.0 + (0.0 if kept["b"] == 1 else 0.5)

    kept = choose_counts(candidates, sens, predict, 2.6)
    assert kept == {"a": 2, "b": 2}
    assert predict(kept) <= 2.6


def test_latency_model_channel_counts_match_the_compact_model():
    model = residual_net()
    graph = DependencyGraph.from_model(model)
    candidates = cuttable_candidates(graph)
    lm = LatencyModel(model, graph, MacTable(), candidates)
    rng = np.random.default_rng(1)
    for _ in range(3):
        kept = {g: int(rng.choice(c)) for g, c in candidates.items()}
        small = compact_for_counts(model, graph, kept)
        for timed in lm.layers:
            kernel = small.get_layer(timed.layer.name).kernel
            cin, cout = timed.counts(kept, lm.sizes)
            assert tuple(kernel.shape[-2:]) == (cin, cout), timed.layer.name
    # The stream group (stem + both conv2) and fc's input follow one count.
    stream = [g for g in graph.groups if len(g.producers) == 3][0]
    fc = [t for t in lm.layers if t.layer.name == "fc"][0]
    assert fc.reads == [(max(candidates), 1)]
    assert {m.layer for m in stream.producers} == {"stem", "b0_conv2", "b1_conv2"}


def test_calibration_fits_scale_and_rest_exactly_at_both_points():
    model = residual_net()
    graph = DependencyGraph.from_model(model)
    candidates = cuttable_candidates(graph)
    lm = LatencyModel(model, graph, MacTable(), candidates)
    half = {g: c[len(c) // 2 - 1] for g, c in candidates.items()}
    dense_ms = 2.0 * lm.layer_ms({}) + 0.3
    half_ms = 2.0 * lm.layer_ms(half) + 0.3
    calibration = lm.calibrate(dense_ms, half, half_ms)
    assert calibration["scale"] == pytest.approx(2.0)
    assert calibration["rest_ms"] == pytest.approx(0.3)
    assert lm.predict({}) == pytest.approx(dense_ms)
    assert lm.predict(half) == pytest.approx(half_ms)


def test_sensitivity_measures_one_group_at_a_time_and_restores_weights():
    model = residual_net()
    graph = DependencyGraph.from_model(model)
    data = calibration_data(model)
    before = [w.copy() for w in model.get_weights()]
    inner = [g.index for g in graph.groups if g.producers and g.size == 16][-1]
    sens = group_sensitivity(model, graph, {inner: [2, 8, 16]}, data=data)
    assert sens.measure == "loss" and sens.samples == 64
    assert sens.values[inner][16] == 0.0
    assert sens.values[inner][2] != 0.0  # the cut changes the loss
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The value is the loss of the model cut to that count.
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    plan = target_plan_module.plan_for_counts(graph, {inner: 2}).resolve(clone)
    keras_admm.hard_prune(clone, plan, graph=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    cut = float(loss(data[1], clone(data[0])))
    base = float(loss(data[1], model(data[0])))
    assert sens.values[inner][2] == pytest.approx(cut - base, rel=1e-4, abs=1e-6)
    proxy = group_sensitivity(model, graph, {inner: [2, 8, 16]})
    assert proxy.measure == "weight_norm"
    assert 0 < proxy.values[inner][8] < proxy.values[inner][2] < 1


def test_plan_for_target_meets_the_target_and_predicts_the_compact_model(mac_table):
    model = residual_net()
    data = calibration_data(model)
    plan = plan_for_target(model, speedup=1.6, data=data, granularity=4, verbose=0)
    assert isinstance(plan, TargetPlan) and plan.resolved
    p = plan.prediction
    assert p["predicted_ms"] <= p["target_ms"] * (1 + 1e-9)
    assert p["target_ms"] == pytest.approx(p["dense_ms"] / 1.6)
    assert plan.predicted_speedup >= 1.6
    assert p["sensitivity"]["measure"] == "loss"
    # The joint cost is the calibration loss of the model cut to the plan.
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    keras_admm.hard_prune(clone, plan, graph=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    cut_cost = float(loss(data[1], clone(data[0]))) - float(
        loss(data[1], model(data[0]))
    )
    assert p["sensitivity"]["joint"]["joint_cut_cost"] == pytest.approx(
        cut_cost, rel=1e-4, abs=1e-6
    )
    # Every planned kernel is a Filter cut; kept counts are candidate counts.
    assert all(t.sparsity.kind == "filter" for t in plan.targets)
    for g in p["groups"]:
        assert g["kept"] in candidate_counts(g["size"], 4)
    check = check_prediction(model, plan)
    assert abs(check["relative_error"]) < 0.05, check
    assert check["measured_speedup"] == pytest.approx(
        check["dense_ms"] / check["measured_ms"]
    )
    # Its JSON form keeps the prediction; PruningPlan.for_target is the same.
    again = TargetPlan.from_dict(json.loads(plan.to_json()))
    assert again.prediction["predicted_ms"] == p["predicted_ms"]
    assert again.targets == plan.targets
    same = keras_admm.PruningPlan.for_target(
        model, speedup=1.6, data=data, granularity=4, verbose=0
    )
    assert same.prediction["groups"] == p["groups"]
    assert "predicted" in plan.summary()


def test_plan_for_target_trains_with_admm_and_compacts_to_the_counts(mac_table):
    model = residual_net()
    x, y = calibration_data(model, 32)
    target_ms = 0.6 * count_flops(model) / 1e6
    plan = plan_for_target(model, latency_ms=target_ms, data=(x, y), verbose=0)
    model.compile(
        optimizer=keras_admm.ADMMWrapper(
            keras.optimizers.SGD(0.01),
            plan,
            projection=keras_admm.GroupProjection.from_plan(model, plan),
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    keras_admm.hard_prune(model, plan, graph=True)
    small = keras_admm.compact(model)
    for g in plan.prediction["groups"]:
        for name in g["producers"]:
            assert small.get_layer(name).kernel.shape[-1] == g["kept"]


def test_plan_for_target_errors_name_the_fix(mac_table):
    model = residual_net()
    with pytest.raises(ValueError, match="exactly one target"):
        plan_for_target(model)
    with pytest.raises(ValueError, match="exactly one target"):
        plan_for_target(model, speedup=2.0, latency_ms=1.0)
    with pytest.raises(ValueError, match="speedup must be > 1"):
        plan_for_target(model, speedup=0.5)
    with pytest.raises(ValueError, match="fastest candidate cut"):
        plan_for_target(model, speedup=1000.0, verbose=0)
    with pytest.raises(TypeError, match=r"\(x, y\) pair"):
        plan_for_target(model, speedup=1.2, data=np.zeros((4, 12, 12, 3)))
    with pytest.raises(ValueError, match="already meets the target"):
        plan_for_target(model, latency_ms=1e6, verbose=0)


@pytest.mark.tensorflow_only
def test_latency_table_times_layers_once_and_reuses_its_file(tmp_path):
    model = residual_net()
    layer = model.get_layer("b0_conv1")
    table = LatencyTable("onnxruntime", batch_size=1, cache_dir=str(tmp_path))
    assert table.measure([(layer, 16, 8), (layer, 8, 8), (layer, 16, 8)]) == 2
    assert table.latency_ms(layer, 16, 8) > 0
    # Timed units and their conversions are deleted (VGG-sized units hold MBs).
    left = [f for _, _, names in os.walk(table._workdir) for f in names]
    assert left == []
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("onnxruntime-b1-")
    saved = json.load(open(tmp_path / files[0]))
    assert len(saved["entries"]) == 2 and saved["machine"]["cpu"]
    again = LatencyTable("onnxruntime", batch_size=1, cache_dir=str(tmp_path))
    assert again.measure([(layer, 8, 8)]) == 0 and again.measured == 0
    other = LatencyTable("onnxruntime", batch_size=4, cache_dir=str(tmp_path))
    assert other.path != again.path and other.entries == {}
    # The same layer config elsewhere in the model shares the entry.
    twin = model.get_layer("b1_conv1")
    assert again.key(twin, 8, 8) == again.key(layer, 8, 8)
    assert again.key(model.get_layer("down"), 8, 8) != again.key(layer, 8, 8)
    with pytest.raises(ValueError, match="cannot be timed alone"):
        again.key(keras.layers.DepthwiseConv2D(3), 8, 8)
    # A corrupt cache is ignored (and rewritten), never fatal.
    (tmp_path / files[0]).write_text("{not json")
    broken = LatencyTable("onnxruntime", batch_size=1, cache_dir=str(tmp_path))
    assert broken.entries == {}


def test_for_target_without_the_targeting_package_says_how_to_load_it():
    import subprocess
    import sys

    code = (
        "from keras_admm.plan import PruningPlan\n"
        "try:\n"
        "    PruningPlan.for_target(None, speedup=2.0)\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "KERAS_ADMM_LAZY": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert "import keras_admm.targeting" in result.stdout, result.stderr[-2000:]


@pytest.mark.tensorflow_only
def test_onnx_units_have_the_layer_shapes_in_nchw():
    import onnxruntime as ort

    from keras_admm.targeting.latency_table import _onnx_unit

    keras.utils.set_random_seed(0)
    inputs = keras.Input((15, 15, 6))
    a = keras.layers.Conv2D(10, 3, strides=2, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(
        12, 3, padding="valid", dilation_rate=2, activation="relu", name="b"
    )(a)
    c = keras.layers.Dense(7, name="c")(keras.layers.Flatten()(b))
    model = keras.Model(inputs, c)
    for name, cin, cout in (("a", 4, 8), ("b", 8, 5), ("c", 64, 3)):
        layer = model.get_layer(name)
        unit, shape = _onnx_unit(layer, cin, cout)
        session = ort.InferenceSession(unit.SerializeToString())
        x = np.random.default_rng(0).standard_normal((2, *shape)).astype("float32")
        (y,) = session.run(None, {"x": x})
        spatial = tuple(layer.output.shape[1:-1])
        assert y.shape == (2, cout, *spatial), name
    # Keras-only forms (causal padding) have no ONNX unit: the Keras one is timed.
    causal = keras.layers.Conv1D(4, 3, padding="causal")
    causal.build((None, 9, 2))
    assert _onnx_unit(causal, 2, 4) is None


def test_latency_table_refuses_the_blocks_timing_order(tmp_path):
    from keras_admm.profiling import TimingProtocol

    with pytest.raises(ValueError, match="order='blocks'.*interleaved"):
        LatencyTable(
            "onnxruntime",
            batch_size=1,
            cache_dir=str(tmp_path),
            protocol=TimingProtocol(order="blocks"),
        )


@pytest.mark.tensorflow_only
def test_latency_table_removes_its_work_folder_when_dropped():
    import gc

    table = LatencyTable("onnxruntime", batch_size=1, cache_dir="")
    folder = table._workdir
    assert os.path.isdir(folder)
    del table
    gc.collect()
    assert not os.path.exists(folder)
