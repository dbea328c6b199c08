"""Tests for keras_admm.exporting: every format reloads and reproduces the model."""

import os

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf

from keras_admm import exporting
from keras_admm.exporting import ExportError, ExportVerificationError, export


@keras.saving.register_keras_serializable(package="keras_admm_tests")
class GatherMatMul(keras.layers.Layer):
    """A gather-conv-like custom layer: y = take(x[..., offset:], idx) @ W + b.

    Built from slice, gather, matmul and add, the ops a compacted column-sparse
    layer lowers to.
    """

    def __init__(self, units, indices, offset=0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.indices = tuple(int(i) for i in indices)
        self.offset = offset

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(len(self.indices), self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="random_normal")

    def call(self, x):
        x = x[..., self.offset :]
        x = keras.ops.take(x, np.array(self.indices, "int32"), axis=-1)
        return keras.ops.add(keras.ops.matmul(x, self.kernel), self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, indices=list(self.indices), offset=self.offset)
        return config


def build_conv_model():
    """Single input, single output: conv, BN, pooling, dense."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="conv_model")


def build_two_in_two_out_model():
    image = keras.Input((6, 6, 2), name="image")
    features = keras.Input((5,), name="features")
    x = keras.layers.Conv2D(3, 3, name="conv")(image)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Concatenate(name="concat")([x, features])
    scores = keras.layers.Dense(4, name="scores")(x)
    value = keras.layers.Dense(1, name="value")(features)
    return keras.Model([image, features], [scores, value], name="two_heads")


def build_custom_layer_model():
    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = GatherMatMul(4, indices=[0, 2, 3], offset=1, name="gather_matmul")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="custom")


def _as_list(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(outputs)]


def _assert_reloads_match(model, result, sample):
    """Reloads every written file independently and compares with the model."""
    expected = _as_list(model(sample))
    if "keras" in [r.format for r in result]:
        reloaded = keras.saving.load_model(result["keras"].path, compile=False)
        for got, want in zip(_as_list(reloaded(sample)), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if "saved_model" in [r.format for r in result]:
        loaded = tf.saved_model.load(result["saved_model"].path)  # keep it alive
        for got, want in zip(_as_list(loaded.serve(sample)), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if "onnx" in [r.format for r in result]:
        session = onnxruntime.InferenceSession(result["onnx"].path)
        flat = keras.tree.flatten(sample)
        feed = {i.name: x for i, x in zip(session.get_inputs(), flat)}
        got = session.run([o.name for o in session.get_outputs()], feed)
        for got_one, want in zip(got, expected):
            np.testing.assert_allclose(got_one, want, rtol=1e-4, atol=1e-5)


def test_all_formats_written_verified_and_reloadable(tmp_path):
    model = build_conv_model()
    result = export(model, tmp_path)

    assert [r.format for r in result] == ["keras", "saved_model", "onnx"]
    assert result.verified
    assert result["keras"].path == os.path.join(tmp_path, "model.keras")
    assert os.path.isfile(os.path.join(tmp_path, "saved_model", "saved_model.pb"))
    assert os.path.isfile(os.path.join(tmp_path, "model.onnx"))
    for r in result:
        assert r.size_bytes > 0
        assert r.max_abs_diff <= 1e-5
        assert r.max_rel_diff <= 1e-4
    # Only the three exports remain: no staging folder, no temp files.
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.onnx", "saved_model"]
    sample = np.random.default_rng(1).standard_normal((3, 8, 8, 3)).astype("float32")
    _assert_reloads_match(model, result, sample)


def test_multi_input_multi_output_model(tmp_path):
    model = build_two_in_two_out_model()
    result = export(model, tmp_path)

    assert result.verified
    session = onnxruntime.InferenceSession(result["onnx"].path)
    assert [i.name for i in session.get_inputs()] == ["image", "features"]
    outputs = session.get_outputs()
    # ONNX outputs are named like the Keras outputs, with a dynamic batch.
    assert [o.name for o in outputs] == ["scores", "value"]
    assert [o.shape[1:] for o in outputs] == [[4], [1]]
    assert not isinstance(outputs[0].shape[0], int)
    rng = np.random.default_rng(2)
    sample = [
        rng.standard_normal((5, 6, 6, 2)).astype("float32"),
        rng.standard_normal((5, 5)).astype("float32"),
    ]
    _assert_reloads_match(model, result, sample)


def test_dict_inputs_and_outputs(tmp_path):
    a = keras.Input((4,), name="a_in")
    b = keras.Input((3,), name="b_in")
    x = keras.layers.Concatenate()([a, b])
    model = keras.Model(
        {"zeta": a, "alpha": b},
        {"z": keras.layers.Dense(2, name="z")(x), "a": keras.layers.Dense(3)(x)},
    )
    result = export(model, tmp_path, formats=("saved_model", "onnx"))

    assert result.verified
    session = onnxruntime.InferenceSession(result["onnx"].path)
    assert sorted(o.name for o in session.get_outputs()) == ["a", "z"]


def test_custom_registered_layer_survives_all_formats(tmp_path):
    model = build_custom_layer_model()
    result = export(model, tmp_path)

    assert result.verified
    reloaded = keras.saving.load_model(result["keras"].path)
    layer = reloaded.get_layer("gather_matmul")
    assert isinstance(layer, GatherMatMul)
    assert layer.indices == (0, 2, 3) and layer.offset == 1
    sample = np.random.default_rng(3).standard_normal((2, 6, 6, 3)).astype("float32")
    _assert_reloads_match(model, result, sample)


def test_sequential_model_with_explicit_sample(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3, activation="tanh")]
    )
    sample = np.linspace(-1, 1, 20, dtype="float32").reshape(4, 5)
    result = export(model, tmp_path, formats=["keras", "onnx"], sample=sample)

    assert result.verified
    assert not os.path.exists(os.path.join(tmp_path, "saved_model"))


def test_verification_failure_is_reported_and_nothing_is_written(tmp_path, monkeypatch):
    model = build_conv_model()
    real_run = exporting._RUNNERS["onnx"]

    def perturbed(target, inputs):
        return [np.asarray(o) + 0.01 for o in real_run(target, inputs)]

    monkeypatch.setitem(exporting._RUNNERS, "onnx", perturbed)
    with pytest.raises(ExportVerificationError) as info:
        export(model, tmp_path, formats=("keras", "onnx"))

    error = info.value
    assert error.format == "onnx"
    assert error.max_abs_diff == pytest.approx(0.01, rel=1e-3)
    message = str(error)
    assert "onnx" in message and "max abs diff 0.01" in message
    assert "export without 'onnx'" in message
    # All or nothing: the .keras file, although it verified, was not kept either.
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_the_previous_good_files(tmp_path, monkeypatch):
    model = build_conv_model()
    export(model, tmp_path, formats=("onnx",))
    before = open(os.path.join(tmp_path, "model.onnx"), "rb").read()

    monkeypatch.setitem(
        exporting._RUNNERS, "onnx", lambda target, inputs: [np.full((2, 3), np.nan)]
    )
    with pytest.raises(ExportVerificationError, match="max abs diff inf"):
        export(build_conv_model(), tmp_path, formats=("onnx",))
    assert open(os.path.join(tmp_path, "model.onnx"), "rb").read() == before
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_unloadable_file_raises_export_error(tmp_path, monkeypatch):
    def broken(target, inputs):
        raise OSError("disk gone")

    monkeypatch.setitem(exporting._RUNNERS, "keras", broken)
    with pytest.raises(ExportError, match="keras file was written but could not"):
        export(build_conv_model(), tmp_path, formats="keras")
    assert os.listdir(tmp_path) == []


def test_export_twice_replaces_the_files(tmp_path):
    model = build_conv_model()
    export(model, tmp_path, formats=("saved_model",))
    model.get_layer("logits").bias.assign(np.ones(3, "float32"))
    result = export(model, tmp_path, formats=("saved_model",))

    loaded = tf.saved_model.load(result["saved_model"].path)
    sample = np.zeros((1, 8, 8, 3), "float32")
    np.testing.assert_allclose(loaded.serve(sample), model(sample), atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_without_verify_files_are_written_unverified(tmp_path):
    result = export(build_conv_model(), tmp_path, formats=("keras",), verify=False)

    assert not result.verified
    assert result["keras"].max_abs_diff is None
    assert result["keras"].size_bytes == os.path.getsize(result["keras"].path)


def test_result_table_dict_and_markdown(tmp_path):
    result = export(build_conv_model(), tmp_path, formats=("keras",))

    as_dict = result.to_dict()
    assert as_dict["formats"][0]["format"] == "keras"
    assert as_dict["formats"][0]["verified"] is True
    assert as_dict["rtol"] == 1e-4
    markdown = result.to_markdown()
    assert markdown.splitlines()[0].startswith("| format | path | size")
    assert "| keras |" in markdown
    text = str(result)
    assert text.splitlines()[0].split()[0] == "format"
    assert "model.keras" in text and "yes" in text
    with pytest.raises(KeyError, match="'onnx' was not exported"):
        result["onnx"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"formats": ("keras", "coreml")}, ValueError, "unknown export format"),
        ({"formats": ()}, ValueError, "formats is empty"),
        ({"rtol": -1.0}, ValueError, "rtol and atol must be numbers >= 0"),
        ({"rtol": "abc"}, ValueError, "rtol and atol must be numbers >= 0"),
        ({"formats": None}, TypeError, "formats must be a format name or a list"),
        ({"sample": np.zeros((2, 5, 5, 3), "float32")}, ValueError, "has shape"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export(build_conv_model(), tmp_path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_not_a_model_and_file_path_raise(tmp_path):
    with pytest.raises(TypeError, match="takes a keras.Model"):
        export(keras.layers.Dense(2), tmp_path)
    a_file = tmp_path / "model.keras"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export(build_conv_model(), a_file)
    with pytest.raises(ValueError, match="model.keras' is a file, not a directory"):
        export(build_conv_model(), a_file / "exports")
    with pytest.raises(TypeError, match="path must be a directory path, got None"):
        export(build_conv_model(), None)
    assert os.listdir(tmp_path) == ["model.keras"]


def test_dynamic_input_shape_needs_a_sample(tmp_path):
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="dynamic shape .* pass sample="):
        export(model, tmp_path, formats=("keras",))

    sample = np.ones((2, 7, 3), "float32")
    assert export(model, tmp_path, formats=("keras",), sample=sample).verified


def test_subclassed_model_needs_a_sample(tmp_path):
    class Scale(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x) * 2.0

    with pytest.raises(ValueError, match="no known inputs .* pass sample="):
        export(Scale(), tmp_path)
    sample = np.ones((2, 3), "float32")
    result = export(Scale(), tmp_path, formats=("saved_model", "onnx"), sample=sample)
    assert result.verified


class _Patches(keras.layers.Layer):
    """tf.image.extract_patches: fine in TF, refused by ONNX (see docs/DESIGN.md)."""

    def call(self, x):
        return tf.image.extract_patches(
            x,
            sizes=[1, 2, 2, 1],
            strides=[1, 1, 1, 1],
            rates=[1, 1, 1, 1],
            padding="VALID",
        )


def test_layer_that_onnx_cannot_run_fails_with_the_format_named(tmp_path):
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, _Patches()(inputs))
    with pytest.raises(ExportError, match="onnx .*leave 'onnx' out of formats"):
        export(model, tmp_path, formats=("saved_model", "onnx"))
    assert os.listdir(tmp_path) == []


def test_nan_tolerance_is_refused_before_anything_is_written(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="rtol and atol"):
        export(model, tmp_path / "out", rtol=float("nan"))
    assert not (tmp_path / "out").exists()


def test_exports_are_checked_against_the_model_they_were_made_from(tmp_path):
    keras.utils.set_random_seed(0)
    original = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2)]
    )
    rewritten = keras.models.clone_model(original)
    rewritten.set_weights(original.get_weights())
    ok = export(rewritten, tmp_path / "same", formats="keras", reference=original)
    assert ok.verified
    # A rewrite that changed the outputs: the export itself would match it.
    kernel = rewritten.get_layer("a").kernel
    kernel.assign(kernel.numpy() * 1.5)
    assert export(rewritten, tmp_path / "alone", formats="keras").verified
    with pytest.raises(ExportVerificationError, match="differs from the reference"):
        export(rewritten, tmp_path / "checked", formats="keras", reference=original)
    assert not (tmp_path / "checked").exists()


def test_a_mixed_precision_mismatch_is_explained_as_float16_rounding(tmp_path):
    """ONNX Runtime rounds float16 differently: the error says so, and how."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.Conv2D(16, 3),
                keras.layers.ReLU(),
                keras.layers.Conv2D(16, 3),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10),
            ]
        )
        with pytest.raises(ExportVerificationError, match="float16.*rtol=1e-2"):
            export(model, tmp_path / "strict", formats="onnx")
        result = export(model, tmp_path / "loose", formats="onnx", rtol=1e-2)
        assert result.verified
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_tflite_float32_of_a_compact_resnet_matches_the_pruned_model(tmp_path):
    import keras_admm
    from keras_admm import models

    keras.utils.set_random_seed(0)
    model = models.resnet_cifar(8, mean=(125, 123, 114), std=(63, 62, 66))
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5", skip_first=False)
    keras_admm.hard_prune(model, plan, graph=True)
    small = keras_admm.compact(model)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
    result = export(
        small,
        tmp_path / "lite",
        formats="tflite",
        reference=model,
        sample=pixels.astype("float32"),
    )
    assert result.verified
    assert result["tflite"].path.endswith("model.tflite")
    assert result["tflite"].max_rel_diff < 1e-4
    # Not in the default set: the default export stays keras, saved_model, onnx.
    assert "tflite" not in exporting.FORMATS


def _separable_classifier():
    """A classifier with clear margins: int8 rounding cannot flip its argmax."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="h")]
        + [keras.layers.Dense(4, name="out")]
    )
    hidden = np.zeros((8, 16), "float32")
    hidden[np.arange(8), np.arange(8)] = 1.0
    out = np.zeros((16, 4), "float32")
    out[np.arange(8), np.arange(8) % 4] = 4.0
    model.get_layer("h").set_weights([hidden, np.zeros(16, "float32")])
    model.get_layer("out").set_weights([out, np.zeros(4, "float32")])
    rows = np.eye(8, dtype="float32")[np.arange(64) % 8]
    sample = rows + np.random.default_rng(0).uniform(0, 0.2, rows.shape)
    return model, sample.astype("float32")


def test_tflite_int8_is_full_integer_and_checked_by_top1_agreement(tmp_path):
    import tensorflow as tf

    model, sample = _separable_classifier()
    result = export(
        model, tmp_path / "q", formats=("tflite", "tflite_int8"), sample=sample
    )
    assert result.verified
    assert result["tflite_int8"].agreement == 1.0
    assert result["tflite"].agreement is None
    assert "top-1 agreement" in str(result)
    details = tf.lite.Interpreter(model_path=result["tflite_int8"].path)
    assert details.get_input_details()[0]["dtype"] == np.int8
    assert details.get_output_details()[0]["dtype"] == np.int8


def test_tflite_int8_needs_real_calibration_data(tmp_path):
    model, sample = _separable_classifier()
    with pytest.raises(ValueError, match="needs sample="):
        export(model, tmp_path / "a", formats="tflite_int8")
    with pytest.raises(ValueError, match="min_agreement"):
        export(model, tmp_path / "b", formats="tflite_int8", sample=sample,
               min_agreement=1.5)  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------ onnx_int8
def _int8_weight_scales(path):
    """{op type: [scale shape of each int8 weight it dequantizes]} of a QDQ file."""
    import onnx

    graph = onnx.load(path).graph
    initializers = {i.name: i for i in graph.initializer}
    consumers = {name: node.op_type for node in graph.node for name in node.input}
    scales = {}
    for node in graph.node:
        weight = initializers.get(node.input[0])
        if node.op_type != "DequantizeLinear" or weight is None:
            continue
        if weight.data_type != onnx.TensorProto.INT8:
            continue
        scale = list(initializers[node.input[1]].dims)
        scales.setdefault(consumers[node.output[0]], []).append(scale)
    return scales


def test_onnx_int8_is_qdq_per_channel_and_checked_by_top1_agreement(tmp_path):
    model, sample = _separable_classifier()
    result = export(model, tmp_path / "q", formats=("onnx", "onnx_int8"), sample=sample)

    assert result.verified
    assert result["onnx_int8"].path == str(tmp_path / "q" / "model_int8.onnx")
    assert result["onnx_int8"].agreement == 1.0
    assert result["onnx"].agreement is None
    assert 0 < result["onnx_int8"].max_abs_diff < 0.5  # int8 rounding, not exact
    assert "top-1 agreement" in str(result) and "100.0%" in str(result)
    assert result.to_dict()["formats"][1]["agreement"] == 1.0
    assert sorted(os.listdir(tmp_path / "q")) == ["model.onnx", "model_int8.onnx"]
    # QDQ with per-channel weights: one scale per output unit of each Dense.
    assert _int8_weight_scales(result["onnx_int8"].path)["MatMul"] == [[16], [4]]
    # Reloaded on its own, it takes float inputs and agrees with Keras.
    session = onnxruntime.InferenceSession(result["onnx_int8"].path)
    x = sample[::3]
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
    np.testing.assert_allclose(got, want, atol=0.5)


def test_onnx_int8_of_a_conv_model_quantizes_conv_weights_per_channel(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_conv_model()
    sample = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype("float32")
    result = export(
        model, tmp_path, formats="onnx_int8", sample=sample, min_agreement=0.8
    )
    assert result["onnx_int8"].verified
    assert 0.8 <= result["onnx_int8"].agreement <= 1.0
    scales = _int8_weight_scales(result["onnx_int8"].path)
    assert scales["Conv"] == [[4]] and scales["MatMul"] == [[3]]


def test_onnx_int8_needs_a_calibration_sample_shaped_like_the_inputs(tmp_path):
    model, sample = _separable_classifier()
    with pytest.raises(ValueError, match="needs sample="):
        export(model, tmp_path, formats="onnx_int8")
    with pytest.raises(ValueError, match=r"shape \(8,\).*add the batch axis"):
        export(model, tmp_path, formats="onnx_int8", sample=sample[0])
    with pytest.raises(ValueError, match=r"shape \(64, 5\).*takes \(batch, 8\)"):
        export(model, tmp_path, formats="onnx_int8", sample=sample[:, :5])
    with pytest.raises(ValueError, match="has 2 array.*takes 1 input"):
        export(model, tmp_path, formats="onnx_int8", sample=[sample, sample])
    with pytest.raises(ValueError, match="non-empty batch"):
        export(model, tmp_path, formats="onnx_int8", sample=sample[:0])
    assert os.listdir(tmp_path) == []


def test_onnx_int8_below_min_agreement_writes_nothing(tmp_path):
    model, sample = _separable_classifier()
    export(model, tmp_path, formats="onnx", sample=sample)
    before = (tmp_path / "model.onnx").read_bytes()
    # One outlier row stretches the int8 input range: the other rows round to
    # zero and all get the same class.
    outlier = sample.copy()
    outlier[0] *= 1000.0
    with pytest.raises(ExportVerificationError) as info:
        export(model, tmp_path, formats=("onnx", "onnx_int8"), sample=outlier)
    assert info.value.format == "onnx_int8"
    assert "below min_agreement=0.9" in str(info.value)
    assert "Nothing was written" in str(info.value)
    # All or nothing: neither the int8 file nor the (good) new float file landed.
    assert os.listdir(tmp_path) == ["model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == before


def test_onnx_int8_quantizer_failure_names_the_format(tmp_path, monkeypatch):
    from onnxruntime import quantization

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(quantization, "quantize_static", broken)
    model, sample = _separable_classifier()
    with pytest.raises(ExportError, match="onnx_int8 format.*no kernel.*onnx_int8"):
        export(model, tmp_path, formats=("keras", "onnx_int8"), sample=sample)
    assert os.listdir(tmp_path) == []


def test_a_dict_sample_is_matched_to_list_inputs_by_name(tmp_path):
    # Flattening a dict sorts its keys: 'alpha' would be fed to 'zeta'.
    zeta, alpha = keras.Input((3,), name="zeta"), keras.Input((5,), name="alpha")
    outputs = keras.layers.Dense(2)(
        keras.layers.Concatenate()([keras.layers.Dense(4)(zeta), alpha])
    )
    model = keras.Model([zeta, alpha], outputs)
    rng = np.random.default_rng(0)
    sample = {
        "zeta": rng.normal(size=(2, 3)).astype("float32"),
        "alpha": rng.normal(size=(2, 5)).astype("float32"),
    }
    result = export(model, tmp_path / "out", formats=("keras",), sample=sample)
    assert result["keras"].verified
