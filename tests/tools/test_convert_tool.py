"""Tests for tools/convert.py: flags, error messages, and the end-to-end run.

Error paths run the tool's `main` in-process (fast); the end-to-end test runs the
script in a subprocess with the real keras_admm.compaction.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnxruntime
import pytest
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "convert.py")


@pytest.fixture(scope="module")
def tool():
    """tools/convert.py as a module; its flags are defined once per process."""
    if "convert_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location("convert_tool", TOOL)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["convert_tool"] = module
    return sys.modules["convert_tool"]


def run_main(tool, *args):
    """Parses `args` as the tool's command line and runs its main()."""
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["convert.py", *args])
        return tool.main(["convert.py"])
    finally:
        flags.FLAGS.unparse_flags()


def build_pruned_model():
    """A tiny conv net whose conv has two all-zero filters (as after hard_prune)."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="pruned")
    kernel, bias = model.get_layer("conv1").get_weights()
    kernel[..., [1, 4]] = 0.0
    bias[[1, 4]] = 0.0
    model.get_layer("conv1").set_weights([kernel, bias])
    return model


@pytest.fixture
def model_file(tmp_path):
    path = str(tmp_path / "pruned.keras")
    build_pruned_model().save(path)
    return path


# ------------------------------------------------------------------ flag errors
@pytest.mark.parametrize(
    "args, match",
    [
        (["--formats=keras,coreml"], "--formats has unknown or no formats"),
        (["--align=0"], "--align must be >= 1, got 0"),
        (["--rtol=-1"], "--rtol and --atol must be >= 0"),
        (["--formats=onnx,onnx_int8"], "onnx_int8 needs --calibration_data"),
        (["--formats=tflite_int8"], "tflite_int8 needs --calibration_data"),
        (["--min_agreement=1.5"], "min_agreement"),
    ],
)
def test_bad_flags_are_rejected(tool, tmp_path, args, match):
    base = ["--model=m.keras", f"--output_dir={tmp_path}"]
    with pytest.raises(flags.IllegalFlagValueError, match=match):
        run_main(tool, *base, *args)


def test_missing_model_file(tool, tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(SystemExit) as info:
        run_main(tool, f"--model={missing}", f"--output_dir={tmp_path / 'out'}")
    assert "error:" in str(info.value.code)
    assert f"'{missing}' does not exist" in str(info.value.code)
    assert not os.path.exists(tmp_path / "out")


def test_corrupt_model_file(tool, tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(SystemExit) as info:
        run_main(tool, f"--model={corrupt}", f"--output_dir={tmp_path / 'out'}")
    assert "not a valid .keras archive" in str(info.value.code)


def test_onnx_input_is_refused(tool, tmp_path):
    model = build_pruned_model()
    model(np.zeros((1, 8, 8, 3), "float32"))
    onnx_path = str(tmp_path / "m.onnx")
    model.export(onnx_path, format="onnx", verbose=False)
    with pytest.raises(SystemExit) as info:
        run_main(tool, f"--model={onnx_path}", f"--output_dir={tmp_path / 'out'}")
    assert "needs the .keras file" in str(info.value.code)


def test_flag_error_exits_nonzero_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, TOOL, "--model=m.keras", f"--output_dir={tmp_path}"]
        + ["--align=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "--align must be >= 1" in result.stderr


# ------------------------------------------------------------------ end to end
def test_missing_compaction_module_is_reported(tool, model_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_admm.compaction", None)
    with pytest.raises(SystemExit) as info:
        run_main(tool, f"--model={model_file}", "--output_dir=unused")
    assert "keras_admm.compaction is not available" in str(info.value.code)


def test_convert_end_to_end(tmp_path, model_file):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, TOOL, f"--model={model_file}", f"--output_dir={out}"]
        + ["--align=1", "--formats=keras,saved_model,onnx", "--verify"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saved_model" in result.stdout and "model.onnx" in result.stdout

    expected_files = ["model.keras", "model.onnx", "saved_model"]
    expected_files += ["summary.json", "summary.md"]
    assert sorted(os.listdir(out)) == expected_files
    summary = json.loads((out / "summary.json").read_text())
    assert [f["format"] for f in summary["export"]["formats"]] == [
        "keras",
        "saved_model",
        "onnx",
    ]
    assert all(
        f["verified"] and f["size_bytes"] > 0 for f in summary["export"]["formats"]
    )
    assert summary["compaction"]

    # The compact ONNX model computes what the pruned model computed, and is smaller.
    original = keras.saving.load_model(model_file)
    compact = keras.saving.load_model(out / "model.keras")
    assert compact.count_params() < original.count_params()
    sample = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype("float32")
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (got,) = session.run(None, {session.get_inputs()[0].name: sample})
    want = keras.ops.convert_to_numpy(original(sample))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ int8 formats
def test_onnx_int8_is_calibrated_on_the_given_batch(tool, tmp_path, model_file):
    images = np.random.default_rng(0).uniform(0, 1, (48, 8, 8, 3))
    np.save(tmp_path / "images.npy", images)  # float64: the tool casts it
    out = tmp_path / "out"
    run_main(
        tool,
        f"--model={model_file}",
        f"--output_dir={out}",
        "--formats=onnx,onnx_int8",
        f"--calibration_data={tmp_path / 'images.npy'}",
        "--min_agreement=0.5",
    )
    summary = json.loads((out / "summary.json").read_text())
    rows = {f["format"]: f for f in summary["export"]["formats"]}
    assert sorted(rows) == ["onnx", "onnx_int8"]
    assert rows["onnx_int8"]["verified"] and rows["onnx_int8"]["agreement"] >= 0.5
    assert rows["onnx"]["agreement"] is None
    assert summary["calibration_data"] == str(tmp_path / "images.npy")
    assert "top-1 agreement" in (out / "summary.md").read_text()
    session = onnxruntime.InferenceSession(str(out / "model_int8.onnx"))
    assert session.get_inputs()[0].type == "tensor(float)"
    # The int8 ranges come from that batch: the same images at 100x their
    # scale give a 100x larger scale for the quantized input.
    np.save(tmp_path / "images100.npy", images * 100)
    out100 = tmp_path / "out100"
    run_main(
        tool,
        f"--model={model_file}",
        f"--output_dir={out100}",
        "--formats=onnx_int8",
        f"--calibration_data={tmp_path / 'images100.npy'}",
        "--min_agreement=0.0",
    )
    ratio = _input_scale(out100 / "model_int8.onnx") / _input_scale(
        out / "model_int8.onnx"
    )
    assert ratio == pytest.approx(100, rel=0.05)


def _input_scale(path):
    """The scale of the QuantizeLinear that quantizes the model's input (tf2onnx
    puts a Transpose to NCHW between them)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    the_input = {graph.input[0].name}
    the_input |= {
        n.output[0]
        for n in graph.node
        if n.op_type == "Transpose" and n.input[0] == graph.input[0].name
    }
    (quantize,) = (
        n
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in the_input
    )
    (scale,) = (i for i in graph.initializer if i.name == quantize.input[1])
    return float(numpy_helper.to_array(scale))


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "does not exist"),
        (b"not numpy", "could not read --calibration_data"),
        (np.zeros((8, 8, 3), "float32"), "add the batch axis"),
    ],
)
def test_bad_calibration_data_is_reported(tool, tmp_path, model_file, content, match):
    path = tmp_path / "calib.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(SystemExit) as info:
        run_main(
            tool,
            f"--model={model_file}",
            f"--output_dir={tmp_path / 'out'}",
            "--formats=onnx_int8",
            f"--calibration_data={path}",
        )
    assert "error:" in str(info.value.code)
    assert match in str(info.value.code)
    assert not os.path.exists(tmp_path / "out" / "model_int8.onnx")


# ------------------------------------------------------------ BatchNorm folding
def test_fold_batchnorm_writes_a_model_without_them(tool, tmp_path, capsys):
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(6, 3, use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(1)
    gamma, beta, mean = rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6)
    bn.set_weights([gamma, beta, mean, rng.uniform(0.5, 2, 6)])
    kernel = model.get_layer("conv1").get_weights()[0]
    kernel[..., [2, 5]] = 0.0  # two pruned filters
    model.get_layer("conv1").set_weights([kernel])
    path = str(tmp_path / "pruned_bn.keras")
    model.save(path)
    out = tmp_path / "out"
    run_main(
        tool,
        f"--model={path}",
        f"--output_dir={out}",
        "--formats=keras",
        "--fold_batchnorm",
    )
    assert "BatchNorms folded: 1" in capsys.readouterr().out
    written = keras.saving.load_model(out / "model.keras")
    kinds = [type(layer).__name__ for layer in written.layers]
    assert "BatchNormalization" not in kinds
    assert written.get_layer("conv1").filters == 4
    sample = rng.standard_normal((4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(written(sample)),
        keras.ops.convert_to_numpy(model(sample)),
        rtol=1e-4,
        atol=1e-5,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batchnorm_folding"] == {
        "folded": [["bn1", "conv1"]],
        "skipped": [],
    }
    assert "## BatchNorm folding" in (out / "summary.md").read_text()
