"""Tests of keras_admm.profiling: FLOPs, timing protocol, errors, reports, export."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_admm import profiling
from keras_admm.profiling import engines as engines_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = profiling.TimingProtocol(warmup=1, min_repeats=3, min_time_s=0.0)


def _model(*layers, input_shape):
    return keras.Sequential([keras.Input(input_shape), *layers])


def _small_cnn(width):
    layers = keras.layers
    return _model(
        layers.Conv2D(width, 3, padding="same", activation="relu"),
        layers.DepthwiseConv2D(3, padding="same"),
        layers.Conv2D(width, 1),
        layers.GlobalAveragePooling2D(),
        layers.Dense(5),
        input_shape=(8, 8, 3),
    )


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """dense/half .keras files and their ONNX exports, plus an 8x8x4-input model."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, width in (("dense", 16), ("half", 8)):
        model = _small_cnn(width)
        paths[name] = str(root / f"{name}.keras")
        model.save(paths[name])
        model(np.zeros((1, 8, 8, 3), "float32"))
        paths[f"{name}_onnx"] = str(root / f"{name}.onnx")
        model.export(paths[f"{name}_onnx"], format="onnx", verbose=False)
    other = _model(keras.layers.Conv2D(2, 3), input_shape=(8, 8, 4))
    paths["other_shape"] = str(root / "other_shape.keras")
    other.save(paths["other_shape"])
    paths["root"] = str(root)
    return paths


# ---------------------------------------------------------------- FLOPs


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        # 6*6 outputs x (3*3*3 weights) x 4 filters
        (keras.layers.Conv2D(4, 3), (8, 8, 3), 2 * 36 * 27 * 4),
        # 7 outputs x 4 taps x 2 in x 3 filters
        (keras.layers.Conv1D(3, 4), (10, 2), 2 * 7 * 4 * 2 * 3),
        # 3*3*3 outputs x 2*2*2 taps x 1 in x 2 filters
        (keras.layers.Conv3D(2, 2), (4, 4, 4, 1), 2 * 27 * 8 * 2),
        # stride 2, same: 4*4 outputs x 3*3 taps x (4/2 groups) in x 6 filters
        (
            keras.layers.Conv2D(6, 3, strides=2, padding="same", groups=2),
            (8, 8, 4),
            2 * 16 * 9 * 2 * 6,
        ),
        (keras.layers.Dense(7), (5,), 2 * 5 * 7),
        # Dense on a rank-3 input: applied at each of 3 positions
        (keras.layers.Dense(7), (3, 5), 2 * 3 * 5 * 7),
        # 4*4 outputs x 3*3 taps x 3 channels x multiplier 2
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 3), 2 * 16 * 54),
        # depthwise 16*9*3*2 + pointwise 16*(3*2)*5
        (
            keras.layers.SeparableConv2D(5, 3, depth_multiplier=2),
            (6, 6, 3),
            2 * (16 * 9 * 3 * 2 + 16 * 6 * 5),
        ),
        # each of 4*4 input pixels scatters 3*3 taps x 3 in x 2 out
        (keras.layers.Conv2DTranspose(2, 3, strides=2), (4, 4, 3), 2 * 16 * 9 * 3 * 2),
        (
            keras.layers.Conv2D(4, 3, data_format="channels_first"),
            (3, 8, 8),
            2 * 36 * 27 * 4,
        ),
    ],
)
def test_count_flops_matches_hand_computed(layer, input_shape, expected):
    model = _model(layer, input_shape=input_shape)
    assert profiling.count_flops(model) == expected


def test_gather_conv_layer_of_compact_is_counted():
    from keras_admm.compaction import layers as layers_module

    columns = [[0, 0, 1], [1, 1, 0], [2, 2, 3]]
    layer = layers_module.ColumnSparseConv2D(8, (3, 3), columns=columns)
    model = _model(layer, input_shape=(6, 6, 4))
    # 4*4 output pixels x 3 kept columns x 8 filters
    assert profiling.count_flops(model) == 2 * 16 * 3 * 8


def test_layer_flops_lists_every_layer_and_sums_to_total():
    model = _model(
        keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
        input_shape=(8, 8, 3),
    )
    rows = profiling.layer_flops(model)
    assert [r["class"] for r in rows] == [
        "Conv2D",
        "BatchNormalization",
        "Flatten",
        "Dense",
    ]
    assert [r["flops"] for r in rows] == [2 * 36 * 27 * 4, 0, 0, 2 * 144 * 2]
    assert sum(r["flops"] for r in rows) == profiling.count_flops(model)


def test_shared_layer_counts_every_call_and_nested_models_are_entered():
    shared = keras.layers.Dense(4)
    inputs = keras.Input((4,))
    inner = keras.Model(inputs, shared(shared(inputs)))
    outer = _model(inner, keras.layers.Dense(2), input_shape=(4,))
    assert profiling.count_flops(outer) == 2 * (2 * 4 * 4) + 2 * 4 * 2
    assert [r["flops"] for r in profiling.layer_flops(outer)] == [64, 16]


def test_register_flops_extends_the_registry_and_subclasses_inherit():
    class Gather(keras.layers.Layer):
        def call(self, x):
            return x

    class GatherChild(Gather):
        pass

    @profiling.register_flops(Gather)
    def _gather_flops(layer, input_shape, output_shape):
        return 10 * input_shape[-1]

    model = _model(Gather(), GatherChild(), input_shape=(6,))
    assert profiling.count_flops(model) == 2 * 10 * 6
    from keras_admm import registry

    assert registry.lookup(GatherChild()).flops is _gather_flops


def test_register_flops_rejects_non_classes():
    with pytest.raises(TypeError, match="layer classes"):
        profiling.register_flops("Conv2D")


def test_count_flops_rejects_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="no layer graph"):
        profiling.count_flops(net)


def test_onnx_flops_equal_keras_flops_of_the_same_model(tmp_path):
    layers = keras.layers
    model = _model(
        layers.Conv2D(4, 3, padding="same"),
        layers.SeparableConv2D(6, 3, depth_multiplier=2),
        layers.Conv2DTranspose(3, 3, strides=2),
        layers.DepthwiseConv2D(3),
        layers.Dense(5),
        layers.Flatten(),
        layers.Dense(2),
        input_shape=(8, 8, 3),
    )
    model(np.zeros((1, 8, 8, 3), "float32"))
    path = str(tmp_path / "m.onnx")
    model.export(path, format="onnx", verbose=False)
    assert profiling.count_onnx_flops(path) == profiling.count_flops(model)


# ---------------------------------------------------------------- timing


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fake_runners(clock, log, costs):
    def make(name, cost):
        def run():
            log.append(name)
            clock.now += cost

        return run

    return {name: make(name, cost) for name, cost in costs.items()}


def test_timing_stops_at_min_repeats_when_time_is_already_reached():
    clock, log = FakeClock(), []
    runners = _fake_runners(clock, log, {"a": 1.0, "b": 2.0})
    protocol = profiling.TimingProtocol(warmup=2, min_repeats=7, min_time_s=0.5)
    samples = profiling.time_interleaved(runners, protocol, clock=clock)
    assert {n: len(s) for n, s in samples.items()} == {"a": 7, "b": 7}
    assert samples["a"] == [1.0] * 7 and samples["b"] == [2.0] * 7
    assert log.count("a") == 2 + 7  # warm-up calls are not timed


def test_timing_continues_until_min_time():
    clock, log = FakeClock(), []
    runners = _fake_runners(clock, log, {"a": 0.1, "b": 0.1})
    protocol = profiling.TimingProtocol(warmup=0, min_repeats=2, min_time_s=3.0)
    samples = profiling.time_interleaved(runners, protocol, clock=clock)
    rounds = len(samples["a"])
    assert rounds == 15  # 0.2 s per round until 3 s have passed
    assert sum(samples["a"]) + sum(samples["b"]) >= 3.0


def test_timing_rotates_the_first_model_every_round():
    clock, log = FakeClock(), []
    runners = _fake_runners(clock, log, {"a": 1, "b": 1, "c": 1})
    protocol = profiling.TimingProtocol(warmup=0, min_repeats=3, min_time_s=0)
    profiling.time_interleaved(runners, protocol, clock=clock)
    assert "".join(log) == "abc" + "bca" + "cab"


def test_timing_max_time_caps_the_loop():
    clock, log = FakeClock(), []
    runners = _fake_runners(clock, log, {"a": 1.0})
    protocol = profiling.TimingProtocol(warmup=0, min_repeats=100, max_time_s=5.0)
    samples = profiling.time_interleaved(runners, protocol, clock=clock)
    assert len(samples["a"]) == 5


def test_timing_with_the_real_clock_meets_both_minimums():
    calls = []
    protocol = profiling.TimingProtocol(warmup=1, min_repeats=4, min_time_s=0.05)
    start = time.perf_counter()
    samples = profiling.time_interleaved({"x": lambda: calls.append(1)}, protocol)
    elapsed = time.perf_counter() - start
    assert len(samples["x"]) >= 4
    assert len(calls) == len(samples["x"]) + 1
    # A call takes microseconds: only the 0.05 s minimum makes it repeat more.
    assert len(samples["x"]) > 4 and elapsed >= 0.05


class _LiveRunner:
    """A runner that counts how many of its kind are alive (not yet freed)."""

    alive = 0
    most_alive = 0

    def __init__(self, name, clock, log, cost):
        self.name, self.clock, self.log, self.cost = name, clock, log, cost
        _LiveRunner.alive += 1
        _LiveRunner.most_alive = max(_LiveRunner.most_alive, _LiveRunner.alive)
        log.append(f"new {name}")

    def __call__(self):
        self.log.append(self.name)
        self.clock.now += self.cost

    def __del__(self):
        _LiveRunner.alive -= 1


def test_blocks_time_one_fresh_runner_at_a_time_with_rotated_starts():
    clock, log = FakeClock(), []
    _LiveRunner.alive = _LiveRunner.most_alive = 0
    costs = {"a": 1.0, "b": 2.0, "c": 3.0}
    factories = {
        name: (lambda name=name: _LiveRunner(name, clock, log, costs[name]))
        for name in costs
    }
    protocol = profiling.TimingProtocol(
        warmup=1, min_repeats=2, min_time_s=0, order="blocks", blocks=4
    )
    blocks = profiling.time_in_blocks(factories, protocol, clock=clock)
    # A new runner per model and block, the first model rotated every block, and
    # the warm-up call untimed.
    turns = [entry[4:] for entry in log if entry.startswith("new ")]
    assert "".join(turns) == "abc" + "bca" + "cab" + "abc"
    assert log[:4] == ["new a", "a", "a", "a"]  # 1 warm-up + 2 timed
    assert _LiveRunner.most_alive == 1 and _LiveRunner.alive == 0
    assert {n: len(b) for n, b in blocks.items()} == {"a": 4, "b": 4, "c": 4}
    assert blocks["c"] == [[3.0, 3.0]] * 4


def test_blocks_apply_the_minimums_and_the_cap_to_each_turn():
    clock, log = FakeClock(), []
    factories = {"a": lambda: _fake_runners(clock, log, {"a": 0.5})["a"]}
    protocol = profiling.TimingProtocol(
        warmup=0, min_repeats=2, min_time_s=2.0, order="blocks", blocks=3
    )
    blocks = profiling.time_in_blocks(factories, protocol, clock=clock)
    assert [len(b) for b in blocks["a"]] == [4, 4, 4]  # 2 s per turn at 0.5 s
    capped = profiling.TimingProtocol(
        warmup=0, min_repeats=100, min_time_s=0, max_time_s=1.0, blocks=2
    )
    assert [
        len(b) for b in profiling.time_in_blocks(factories, capped, clock=clock)["a"]
    ] == [2, 2]
    with pytest.raises(ValueError, match="at least one runner factory"):
        profiling.time_in_blocks({}, protocol)


def test_blocks_order_pairs_block_medians_not_single_calls(monkeypatch):
    from keras_admm.profiling import profiler

    # Per call, b is 2x faster in every position; per block, its medians are
    # 4/2 = 2x and 30/5 = 6x faster: the paired speedup is the median of the
    # block ratios, (2 + 6) / 2 = 4, not the median of per-call ratios.
    blocks = {
        "a": [[4.0, 4.0, 4.0], [30.0, 30.0, 1.0]],
        "b": [[2.0, 2.0, 2.0], [5.0, 5.0, 1.0]],
    }
    monkeypatch.setattr(profiler.timing, "time_in_blocks", lambda f, p: blocks)
    protocol = profiling.TimingProtocol(order="blocks", blocks=2)
    samples, paired = profiler._time({"a": None, "b": None}, protocol)
    assert samples == {
        "a": [4.0] * 3 + [30.0, 30.0, 1.0],
        "b": [2.0] * 3 + [5.0, 5.0, 1.0],
    }
    assert paired == {"a": [4.0, 30.0], "b": [2.0, 5.0]}
    stats = {"a": {"flops": 8}, "b": {"flops": 2}}
    _, row = profiler._result_rows("e", "cpu", 1, samples, paired, stats, "a")
    assert row["paired_speedup"] == pytest.approx(4.0)
    assert row["speedup"] == pytest.approx(4.0 / 2.0)  # pooled medians: 4 / 2


def test_interleaved_timing_refuses_a_blocks_protocol():
    protocol = profiling.TimingProtocol(order="blocks")
    with pytest.raises(ValueError, match="time_in_blocks"):
        profiling.time_interleaved({"a": lambda: None}, protocol)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup": -1},
        {"min_repeats": 0},
        {"min_time_s": -1},
        {"max_time_s": 0},
        {"order": "random"},
        {"blocks": 0},
        {"blocks": 2.5},
    ],
)
def test_timing_protocol_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="must be"):
        profiling.TimingProtocol(**kwargs)


def test_summarize_reports_median_p90_and_throughput():
    summary = profiling.summarize([0.001 * i for i in range(1, 11)], batch_size=4)
    assert summary["median_ms"] == pytest.approx(5.5)
    assert summary["p90_ms"] == pytest.approx(9.1)
    assert summary["throughput"] == pytest.approx(4 / 0.0055)
    assert summary["count"] == 10


def test_paired_speedup_cancels_contention_shared_by_a_round():
    # Round 2 is 10x slower for both models (a busy spell): the ratio stays 4.
    baseline = [4.0, 40.0, 4.0]
    model = [1.0, 10.0, 1.0]
    assert profiling.paired_speedup(baseline, model) == 4.0
    with pytest.raises(ValueError, match="equally long"):
        profiling.paired_speedup([1.0], [1.0, 2.0])


# ---------------------------------------------------------------- errors


def test_missing_file_names_the_file(tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        profiling.profile_models(missing, engines=["onnxruntime"])


@pytest.mark.parametrize("suffix", [".keras", ".onnx"])
def test_corrupt_file_names_the_file_and_the_fix(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"not a model at all")
    with pytest.raises(ValueError) as info:
        profiling.open_source(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "model.save(" in message or "model.export(" in message


def test_directory_without_saved_model_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="not a SavedModel"):
        profiling.open_source(str(tmp_path))


@pytest.mark.parametrize("batch_size", [0, -3])
def test_non_positive_batch_size_is_rejected(model_files, batch_size):
    with pytest.raises(ValueError, match=f"batch size {batch_size} must be > 0"):
        profiling.profile_models(model_files["dense_onnx"], batch_sizes=[batch_size])


def test_non_integer_batch_size_is_rejected(model_files):
    with pytest.raises(TypeError, match="not an int"):
        profiling.profile_models(model_files["dense_onnx"], batch_sizes=["2"])


def test_mismatched_input_shapes_name_both_files(model_files):
    with pytest.raises(ValueError, match="input shapes differ.*other_shape.*dense"):
        profiling.profile_models(
            model_files["dense"], [model_files["other_shape"]], engines=["tf"]
        )


def test_models_of_their_own_input_shapes_are_timed_when_asked(tmp_path):
    # One conv layer cut to fewer input channels, against the dense layer.
    paths = []
    for name, channels in (("dense", 16), ("cut", 4)):
        model = _model(keras.layers.Conv2D(8, 3), input_shape=(8, 8, channels))
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
    report = profiling.profile_models(
        paths[0],
        paths[1:],
        engines=["onnxruntime"],
        batch_sizes=[2],
        protocol=FAST,
        names=["dense", "cut"],
        same_input=False,
    )
    assert [r["model"] for r in report["results"]] == ["dense", "cut"]
    assert all(r["median_ms"] > 0 for r in report["results"])
    assert "own input shape" in report["notes"][-1]
    ranks = _model(keras.layers.Dense(2), input_shape=(16,))
    ranks.save(str(tmp_path / "rank2.keras"))
    with pytest.raises(ValueError, match="input ranks differ.*rank2"):
        profiling.profile_models(
            paths[0], [str(tmp_path / "rank2.keras")], same_input=False
        )


def test_unknown_engine_lists_the_known_ones(model_files):
    with pytest.raises(ValueError, match="unknown engine 'trt'.*onnxruntime"):
        profiling.profile_models(model_files["dense_onnx"], engines=["trt"])


def test_engine_not_installed_says_how_to_install(model_files, monkeypatch):
    monkeypatch.setattr(
        engines_lib.OnnxRuntimeEngine, "is_installed", classmethod(lambda cls: False)
    )
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        profiling.profile_models(model_files["dense_onnx"], engines=["onnxruntime"])


def test_tf_engine_refuses_onnx_files(model_files):
    with pytest.raises(ValueError, match="cannot run the ONNX file"):
        profiling.profile_models(model_files["dense_onnx"], engines=["tf"])


def test_forcing_a_missing_gpu_is_an_error(model_files):
    store = profiling.ModelStore(model_files["root"])
    engine = profiling.create_engine("onnxruntime", store)
    if engine.detect_gpu():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="--device cpu"):
        engine.resolve_device("gpu")


# ---------------------------------------------------------------- end to end


def test_profile_models_reports_speedup_flop_ratio_and_efficiency(
    model_files, tmp_path
):
    report = profiling.profile_models(
        model_files["dense"],
        [model_files["half"]],
        engines=["tf", "onnxruntime"],
        batch_sizes=[1, 2],
        device="cpu",
        protocol=FAST,
        workdir=str(tmp_path),
        notes=["hand-built"],
    )
    dense, half = report["models"]
    assert dense["flops"] == profiling.count_flops(_small_cnn(16))
    assert half["flops"] == profiling.count_flops(_small_cnn(8))
    results = report["results"]
    assert len(results) == 2 * 2 * 2
    for row in results:
        assert row["count"] >= FAST.min_repeats
        assert row["p90_ms"] >= row["median_ms"] > 0
        if row["model"] == "dense":
            assert row["speedup"] == 1.0 and row["efficiency"] == 1.0
            assert row["paired_speedup"] == 1.0
        else:
            assert row["flop_ratio"] == pytest.approx(dense["flops"] / half["flops"])
            assert row["efficiency"] == pytest.approx(
                row["speedup"] / row["flop_ratio"]
            )
            # The speedup is the dense model's median over this one's, measured
            # on the same engine and batch size.
            (base,) = (
                r
                for r in results
                if r["model"] == "dense"
                and (r["engine"], r["batch_size"]) == (row["engine"], row["batch_size"])
            )
            assert row["speedup"] == pytest.approx(
                base["median_ms"] / row["median_ms"], rel=1e-2
            )
    assert report["engines"]["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
    assert "usable_cores" in report["environment"]

    paths = profiling.write_reports(report, str(tmp_path / "out"), stem="p")
    with open(paths["json"]) as f:
        assert json.load(f)["results"] == results
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results)
    assert float(rows[1]["efficiency"]) == pytest.approx(results[1]["efficiency"])
    with open(paths["markdown"]) as f:
        markdown = f.read()
    assert "| model | engine |" in markdown and "hand-built" in markdown
    for kind in ("latency_plot", "speedup_plot"):
        with open(paths[kind], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    table = profiling.results_table(report)
    assert len(table.splitlines()) == 2 + len(results)


def test_blocks_order_times_fresh_spinning_sessions_one_at_a_time(
    model_files, tmp_path
):
    protocol = profiling.TimingProtocol(
        warmup=1, min_repeats=3, min_time_s=0, order="blocks", blocks=2
    )
    report = profiling.profile_models(
        model_files["dense_onnx"],
        [model_files["half_onnx"]],
        engines=["onnxruntime"],
        batch_sizes=[2],
        device="cpu",
        protocol=protocol,
        names=["dense", "half"],
        workdir=str(tmp_path),
    )
    settings = report["engines"]["onnxruntime"]
    assert settings["allow_spinning"] == 1
    assert settings["sessions"] == "one at a time, a fresh one per block"
    assert report["protocol"]["order"].startswith("2 blocks, one model at a time")
    dense, half = report["results"]
    assert dense["count"] == half["count"] == 2 * 3
    assert dense["speedup"] == dense["paired_speedup"] == 1.0
    assert half["flop_ratio"] == pytest.approx(
        report["models"][0]["flops"] / report["models"][1]["flops"]
    )
    assert half["paired_speedup"] > 0
    # The default order keeps every session open, so spinning stays off.
    default = profiling.profile_models(
        model_files["dense_onnx"],
        [model_files["half_onnx"]],
        engines=["onnxruntime"],
        protocol=FAST,
        workdir=str(tmp_path),
    )
    assert default["engines"]["onnxruntime"]["allow_spinning"] == 0
    assert default["engines"]["onnxruntime"]["sessions"] == "all open at once"
    assert default["protocol"]["order"].startswith("interleaved")
    assert report["protocol"]["blocks"] == 2 and default["protocol"]["blocks"] is None
    # The sessions themselves are built with the setting the report names.
    store = profiling.ModelStore(str(tmp_path / "store"))
    key = "session.intra_op.allow_spinning"
    for one_at_a_time, expected in ((True, "1"), (False, "0")):
        engine = profiling.create_engine(
            "onnxruntime", store, one_at_a_time=one_at_a_time
        )
        options = engine._session_options()
        assert options.get_session_config_entry(key) == expected


def test_engines_written_without_the_one_at_a_time_argument_still_work(model_files):
    @profiling.register_engine
    class OldStyleEngine(engines_lib.Engine):
        name, package, install_hint = "old_style_test", "numpy", "pip install numpy"

        def __init__(self, store, threads=None, jit=False):
            super().__init__(store, threads=threads, jit=jit)

    try:
        store = profiling.ModelStore(model_files["root"])
        engine = profiling.create_engine("old_style_test", store, one_at_a_time=True)
        assert engine.one_at_a_time is True
        assert profiling.create_engine("old_style_test", store).one_at_a_time is False
    finally:
        engines_lib._ENGINES.pop("old_style_test")


def test_onnx_export_round_trip_matches_keras(model_files, tmp_path):
    import onnxruntime

    store = profiling.ModelStore(str(tmp_path))
    source = profiling.open_source(model_files["half"])
    session = onnxruntime.InferenceSession(store.onnx_file(source))
    x = np.random.default_rng(1).standard_normal((3, 8, 8, 3), "float32")
    expected = keras.ops.convert_to_numpy(store.keras_model(source)(x))
    (actual,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_saved_model_is_timed_and_converted(model_files, tmp_path):
    model = keras.saving.load_model(model_files["half"])
    saved = str(tmp_path / "half_sm")
    model.export(saved, verbose=False)
    report = profiling.profile_models(
        model_files["half"],
        [saved],
        engines=["tf", "onnxruntime"],
        device="cpu",
        protocol=FAST,
        workdir=str(tmp_path),
    )
    half, half_sm = report["models"]
    assert half_sm["kind"] == "savedmodel"
    assert half_sm["flops"] == half["flops"]
    assert half_sm["params"] == half["params"]
    assert len(report["results"]) == 4


@pytest.mark.parametrize("jit", [True, False])
def test_tf_engine_compiles_with_xla_only_when_asked(
    model_files, tmp_path, monkeypatch, jit
):
    import tensorflow as tf

    compiled = []  # the jit_compile of each tf.function the engine makes
    real_function = tf.function

    def recording_function(*args, **kwargs):
        # (Keras's own TF ops make some with jit_compile=True, e.g. for conv.)
        caller = sys._getframe(1).f_code.co_filename
        if caller.endswith(os.path.join("profiling", "engines.py")):
            compiled.append(kwargs.get("jit_compile"))
        return real_function(*args, **kwargs)

    monkeypatch.setattr(tf, "function", recording_function)
    report = profiling.profile_models(
        model_files["half"],
        engines=["tf"],
        device="cpu",
        jit=jit,
        protocol=FAST,
        workdir=str(tmp_path),
    )
    assert report["engines"]["tf"]["xla_jit"] is jit
    assert report["results"][0]["count"] >= FAST.min_repeats
    assert compiled and all(flag is jit for flag in compiled), compiled


def test_keras_engine_times_keras_files_on_the_active_backend(model_files):
    report = profiling.profile_models(
        model_files["dense"],
        [model_files["half"]],
        engines=["keras"],
        device="cpu",
        protocol=FAST,
    )
    assert report["engines"]["keras"]["backend"] == keras.backend.backend()
    assert [r["model"] for r in report["results"]] == ["dense", "half"]


def _run_python(code):
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_ADMM_LAZY": "1"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_onnx_only_profiling_never_imports_tensorflow(model_files):
    code = (
        "import sys\n"
        "from keras_admm import profiling\n"
        "protocol = profiling.TimingProtocol(warmup=1, min_repeats=2, min_time_s=0)\n"
        f"r = profiling.profile_models({model_files['dense_onnx']!r}, "
        f"[{model_files['half_onnx']!r}], engines=['onnxruntime'], "
        "protocol=protocol)\n"
        "assert r['models'][1]['flops'] > 0\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_cli_prints_a_table_and_fails_clearly_on_a_missing_file(model_files):
    script = os.path.join(REPO, "tools", "profile_models.py")
    common = ["--engines", "onnxruntime", "--min_repeats", "2", "--min_time_s", "0"]
    ok = subprocess.run(
        [
            sys.executable,
            script,
            "--baseline",
            model_files["dense_onnx"],
            *common,
            "--models",
            f"{model_files['half_onnx']},{model_files['other_shape']}",
            "--batch_sizes",
            "1,2",
            # other_shape reads 4 channels, not 3: timed only with this flag
            "--nosame_input",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("onnxruntime") == 6
    blocks = subprocess.run(
        [
            sys.executable,
            script,
            "--baseline",
            model_files["dense_onnx"],
            *common,
            "--models",
            model_files["half_onnx"],
            "--order",
            "blocks",
            "--blocks",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert blocks.returncode == 0, blocks.stderr
    assert blocks.stdout.count("onnxruntime") == 2
    no_blocks = subprocess.run(
        [
            sys.executable,
            script,
            "--baseline",
            model_files["dense_onnx"],
            *common,
            "--order",
            "blocks",
            "--blocks",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_blocks.returncode != 0 and "--blocks" in no_blocks.stderr
    stray = subprocess.run(
        [
            sys.executable,
            script,
            "--baseline",
            model_files["dense_onnx"],
            *common,
            "--blocks",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stray.returncode != 0 and "--order blocks" in stray.stderr
    bad = subprocess.run(
        [sys.executable, script, "--baseline", "/no/such/model.onnx", *common],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "/no/such/model.onnx" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- litert, openvino

needs_litert = pytest.mark.skipif(
    not engines_lib.LiteRTEngine.is_installed(),
    reason="neither ai-edge-litert nor tensorflow is installed",
)
needs_openvino = pytest.mark.skipif(
    not engines_lib.OpenVINOEngine.is_installed(),
    reason="openvino is not installed (pip install openvino)",
)


@pytest.fixture(scope="module")
def tflite_file(model_files):
    """A verified float .tflite export of the 'half' model."""
    from keras_admm.exporting import export

    model = keras.saving.load_model(model_files["half"])
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3), "float32")
    root = os.path.join(model_files["root"], "half_tflite")
    return export(model, root, formats="tflite", sample=x)["tflite"].path


def _keras_outputs(model_files, name, x):
    model = keras.saving.load_model(model_files[name])
    return keras.ops.convert_to_numpy(model(x))


@needs_litert
def test_litert_runs_tflite_and_converted_keras_files_like_keras(
    model_files, tflite_file, tmp_path
):
    store = profiling.ModelStore(str(tmp_path))
    engine = profiling.create_engine("litert", store, threads=1)
    x = np.random.default_rng(2).standard_normal((3, 8, 8, 3), "float32")
    expected = _keras_outputs(model_files, "half", x)
    keras_source = profiling.open_source(model_files["half"])
    tflite_source = profiling.open_source(tflite_file, name="half_tflite")
    assert tflite_source.kind == "tflite"
    for source in (keras_source, tflite_source):
        run = engine.runner(source, 3, engine.resolve_device("auto"), x)
        for _ in range(3):
            (got,) = run()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The .keras model was converted once, and the conversion is reused.
    converted = store.tflite_file(keras_source)
    assert converted.endswith(".tflite") and converted != model_files["half"]
    assert store.tflite_file(keras_source) == converted
    settings = engine.settings()
    assert settings["num_threads"] == 1
    assert settings["converted_to_tflite"] == ["half"]
    litert_installed = importlib.util.find_spec("ai_edge_litert") is not None
    assert settings["interpreter"] == (
        "ai_edge_litert.interpreter.Interpreter"
        if litert_installed
        else "tf.lite.Interpreter"
    )


@needs_litert
def test_litert_falls_back_to_tf_lite_without_ai_edge_litert(
    model_files, tflite_file, monkeypatch, tmp_path
):
    from keras_admm.profiling import sources

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        sources.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ai_edge_litert" else real_find_spec(name),
    )
    engine = profiling.create_engine("litert", profiling.ModelStore(str(tmp_path)))
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 3), "float32")
    (got,) = engine.runner(profiling.open_source(tflite_file), 2, "cpu", x)()
    np.testing.assert_allclose(
        got, _keras_outputs(model_files, "half", x), rtol=1e-5, atol=1e-5
    )
    assert engine.settings()["interpreter"] == "tf.lite.Interpreter"


@needs_litert
def test_litert_runs_full_integer_files(tmp_path):
    from keras_admm.exporting import export

    keras.utils.set_random_seed(0)
    model = _small_cnn(4)
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 3), "float32")
    path = export(model, tmp_path, formats="tflite_int8", sample=x, min_agreement=0.0)[
        "tflite_int8"
    ].path
    engine = profiling.create_engine("litert", profiling.ModelStore(str(tmp_path)))
    (got,) = engine.runner(profiling.open_source(path), 4, "cpu", x[:4])()
    assert got.dtype == np.int8 and got.shape == (4, 5)


@needs_litert
def test_litert_refuses_onnx_files_gpu_and_a_fixed_other_batch(model_files, tmp_path):
    store = profiling.ModelStore(str(tmp_path))
    engine = profiling.create_engine("litert", store)
    x = np.zeros((2, 8, 8, 3), "float32")
    onnx_source = profiling.open_source(model_files["half_onnx"])
    with pytest.raises(ValueError, match="litert' cannot run the ONNX file.*openvino"):
        engine.runner(onnx_source, 2, "cpu", x)
    with pytest.raises(ValueError, match="CPU only.*--device cpu"):
        engine.resolve_device("gpu")
    # A file converted with a fixed batch of 1: it cannot be resized to 2.
    import tensorflow as tf

    # (from_concrete_functions of a Keras 3 model writes a file whose outputs
    # are not the model's on TF 2.21; from_keras_model with a fixed Input is exact.)
    model = keras.Sequential(
        [keras.Input((8, 8, 3), batch_size=1), keras.layers.Dense(2)]
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path / "fixed.tflite"
    path.write_bytes(converter.convert())
    with pytest.raises(ValueError, match="fixed batch size of 1.*batch 2"):
        engine.runner(profiling.open_source(str(path)), 2, "cpu", x)
    # Its own batch size runs, and gives the model's outputs.
    one = np.random.default_rng(0).standard_normal((1, 8, 8, 3), "float32")
    (got,) = engine.runner(profiling.open_source(str(path)), 1, "cpu", one)()
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(one)), atol=1e-5)


@needs_openvino
def test_openvino_runs_onnx_keras_and_tflite_files_like_keras(
    model_files, tflite_file, tmp_path
):
    store = profiling.ModelStore(str(tmp_path))
    engine = profiling.create_engine("openvino", store, threads=1)
    x = np.random.default_rng(4).standard_normal((3, 8, 8, 3), "float32")
    expected = _keras_outputs(model_files, "half", x)
    for path in (model_files["half_onnx"], model_files["half"], tflite_file):
        run = engine.runner(profiling.open_source(path), 3, "cpu", x)
        for _ in range(3):
            outputs = run()
            np.testing.assert_allclose(outputs[0], expected, rtol=1e-4, atol=1e-5)
    settings = engine.settings()
    assert settings["inference_num_threads"] == 1
    assert settings["inference_precision_hint"] == "f32"
    assert settings["performance_hint"] == "LATENCY"
    assert settings["execution_devices"] == ["CPU"]
    json.dumps(settings)  # JSON-ready for the reports


@needs_openvino
def test_openvino_refuses_a_fixed_other_batch(model_files, tmp_path):
    import onnx

    proto = onnx.load(model_files["half_onnx"])
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch.Clear()
    batch.dim_value = 1  # as if exported with a fixed batch size of 1
    path = str(tmp_path / "fixed.onnx")
    onnx.save(proto, path)
    engine = profiling.create_engine("openvino", profiling.ModelStore(str(tmp_path)))
    x = np.zeros((2, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match="fixed batch size of 1.*batch 2"):
        engine.runner(profiling.open_source(path), 2, "cpu", x)
    # Its own batch size runs, and gives the model's outputs.
    one = np.random.default_rng(0).standard_normal((1, 8, 8, 3), "float32")
    outputs = engine.runner(profiling.open_source(path), 1, "cpu", one)()
    expected = _keras_outputs(model_files, "half", one)
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "engine, missing, hint",
    [
        ("openvino", ("openvino",), "pip install openvino"),
        ("litert", ("ai_edge_litert", "tensorflow"), "pip install ai-edge-litert"),
    ],
)
def test_missing_litert_or_openvino_says_how_to_install(
    model_files, monkeypatch, engine, missing, hint
):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        engines_lib.importlib.util,
        "find_spec",
        lambda name, *a: None if name in missing else real_find_spec(name),
    )
    assert not engines_lib._ENGINES[engine].is_installed()
    with pytest.raises(ImportError, match=f"engine '{engine}' needs.*{hint}"):
        profiling.profile_models(model_files["dense_onnx"], engines=[engine])


def test_tflite_files_are_refused_by_tf_and_keras_engines(tflite_file, tmp_path):
    store = profiling.ModelStore(str(tmp_path))
    source = profiling.open_source(tflite_file)
    x = np.zeros((1, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match="cannot run the .tflite file.*litert"):
        profiling.create_engine("tf", store).runner(source, 1, "cpu", x)
    with pytest.raises(ValueError, match="needs a .keras file.*litert"):
        profiling.create_engine("keras", store).runner(source, 1, "cpu", x)


def test_corrupt_tflite_file_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="broken.tflite' is not a valid .tflite.*"):
        profiling.open_source(str(path))


@needs_litert
@needs_openvino
def test_litert_and_openvino_in_every_report(model_files, tflite_file, tmp_path):
    report = profiling.profile_models(
        model_files["dense"],
        [tflite_file],
        names=["dense", "half_tflite"],
        engines=["litert", "openvino"],
        batch_sizes=[1, 2],
        device="cpu",
        threads=1,
        protocol=FAST,
        workdir=str(tmp_path),
    )
    dense, half = report["models"]
    assert half["kind"] == "tflite"
    # FLOPs of the .tflite file, counted on its ONNX form, equal the Keras count.
    assert half["flops"] == profiling.count_flops(_small_cnn(8))
    results = report["results"]
    assert {(r["engine"], r["batch_size"], r["model"]) for r in results} == {
        (e, b, m)
        for e in ("litert", "openvino")
        for b in (1, 2)
        for m in ("dense", "half_tflite")
    }
    assert all(r["count"] >= FAST.min_repeats and r["median_ms"] > 0 for r in results)
    assert report["engines"]["litert"]["num_threads"] == 1
    assert report["engines"]["litert"]["converted_to_tflite"] == ["dense"]
    assert report["engines"]["openvino"]["inference_num_threads"] == 1
    assert report["engines"]["openvino"]["device"] == "cpu"

    paths = profiling.write_reports(report, str(tmp_path / "out"), stem="p")
    with open(paths["json"]) as f:
        assert json.load(f)["engines"] == report["engines"]
    with open(paths["markdown"]) as f:
        markdown = f.read()
    assert "| half_tflite | tflite |" in markdown
    assert "| dense | litert | cpu | 1 |" in markdown
    assert "| half_tflite | openvino | cpu | 2 |" in markdown
    for kind in ("latency_plot", "speedup_plot"):
        with open(paths[kind], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.tensorflow_only
def test_store_forget_drops_the_loaded_model_and_its_conversion(model_files, tmp_path):
    store = profiling.ModelStore(str(tmp_path / "work"))
    source = profiling.open_source(model_files["dense"])
    converted = store.onnx_file(source)
    first = store.keras_model(source)
    assert os.path.isfile(converted)
    store.forget(source)
    assert not os.path.exists(converted)
    assert store.keras_model(source) is not first  # loaded again
    again = store.onnx_file(source)
    assert os.path.isfile(again) and again != converted


def test_profile_models_refuses_a_string_where_a_list_belongs(model_files):
    # A string was read letter by letter: "unknown engine 'o'".
    with pytest.raises(TypeError, match=r"engines must be a list, got 'onnxruntime'"):
        profiling.profile_models(model_files["dense"], engines="onnxruntime")
    with pytest.raises(TypeError, match="models must be a list"):
        profiling.profile_models(model_files["dense"], model_files["half"])
    with pytest.raises(TypeError, match="batch_sizes must be a list, got 32"):
        profiling.profile_models(model_files["dense"], batch_sizes=32)
    with pytest.raises(ValueError, match="engines is empty"):
        profiling.profile_models(model_files["dense"], engines=[])


def test_a_model_object_instead_of_a_file_says_to_save_it():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"times model files, got Sequential.*save"):
        profiling.profile_models(model)
