"""Export a Keras model to .keras, SavedModel and ONNX, and prove each file is right.

`export` writes every requested format into one directory, reloads each file with
the runtime that serves it (Keras, `tf.saved_model.load`, ONNX Runtime) and compares
its outputs with the Keras model's on a sample batch. Files are written into a
staging folder first and moved to their final names only when every format has
been written and verified, so a failed export never leaves a file that looks good.

ONNX goes through `model.export(path, format="onnx")`: `tf2onnx.convert.from_keras`
is broken on Keras 3 (see docs/DESIGN.md). Custom layers survive all three formats when
they are registered with `keras.saving.register_keras_serializable` (for .keras) and
built from ops that tf2onnx converts (for ONNX).

On request it also writes LiteRT files ("tflite", full-integer "tflite_int8") and
an int8 ONNX file ("onnx_int8", ONNX Runtime static quantization). The int8
formats are calibrated on `sample` and checked by top-1 agreement with the float
model instead of a float tolerance.

    result = keras_admm.export(small_model, "exports/small")
    print(result)                       # format, path, size, max diffs, verified
    result["onnx"].path                 # 'exports/small/model.onnx'
"""

import dataclasses
import numbers
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_admm import backends

FORMATS = ("keras", "saved_model", "onnx")  # the default set
# Formats written only when asked for.
EXTRA_FORMATS = ("tflite", "tflite_int8", "onnx_int8")
# Quantized formats: checked by top-1 agreement with the float model, not by a
# float tolerance.
QUANTIZED_FORMATS = ("tflite_int8", "onnx_int8")
FILE_NAMES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "onnx": "model.onnx",
    "tflite": "model.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx_int8": "model_int8.onnx",
}
# Rows per batch fed to ONNX Runtime's calibrator.
_CALIBRATION_BATCH = 32
_SAMPLE_SEED = 0
_SAMPLE_BATCH = 2


class ExportError(RuntimeError):
    """A format could not be written or reloaded."""


class ExportVerificationError(ExportError):
    """A reloaded file's outputs differ from the Keras model's beyond tolerance.

    Attributes:
        format: the format that failed (e.g. "onnx" or "onnx_int8").
        max_abs_diff: the largest absolute difference over all outputs.
        max_rel_diff: that difference relative to the output's largest magnitude.
    """

    def __init__(self, message, format, max_abs_diff, max_rel_diff):
        super().__init__(message)
        self.format = format
        self.max_abs_diff = max_abs_diff
        self.max_rel_diff = max_rel_diff


@dataclasses.dataclass(frozen=True)
class FormatResult:
    """One written format.

    Attributes:
        format: its name, e.g. "keras", "onnx" or "onnx_int8" (see FILE_NAMES).
        path: the file (or SavedModel directory).
        size_bytes: its size on disk (all files, for a directory).
        max_abs_diff: largest |reloaded - keras| over all outputs; None unverified.
        max_rel_diff: the worst output's max_abs_diff / max|keras output|.
        verified: True when the reloaded file was checked and matched.
        agreement: quantized formats: the share of sample rows whose top-1 class
            (argmax of the last axis) equals the Keras model's.
    """

    format: str
    path: str
    size_bytes: int
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    verified: bool = False
    agreement: float | None = None


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export` wrote: one `FormatResult` per format, in the order asked.

    Index it by format name (`result["onnx"]`); `str(result)` is a plain-text table,
    `to_markdown()` a Markdown one, `to_dict()` a JSON-ready dict.
    """

    directory: str
    results: tuple
    rtol: float
    atol: float

    def __getitem__(self, format_name):
        for result in self.results:
            if result.format == format_name:
                return result
        written = ", ".join(r.format for r in self.results)
        raise KeyError(f"format '{format_name}' was not exported (got: {written})")

    def __iter__(self):
        return iter(self.results)

    @property
    def verified(self):
        """True when every format was reloaded and matched the Keras model."""
        return all(r.verified for r in self.results)

    def to_dict(self):
        """A JSON-serialisable dict: directory, tolerances and per-format rows."""
        return {
            "directory": self.directory,
            "rtol": self.rtol,
            "atol": self.atol,
            "formats": [dataclasses.asdict(r) for r in self.results],
        }

    def _rows(self):
        header = ["format", "path", "size", "max abs diff", "max rel diff", "verified"]
        rows = [
            [
                r.format,
                r.path,
                _human_size(r.size_bytes),
                _number(r.max_abs_diff),
                _number(r.max_rel_diff),
                "yes" if r.verified else "no",
            ]
            for r in self.results
        ]
        if any(r.agreement is not None for r in self.results):
            header.append("top-1 agreement")
            for row, r in zip(rows, self.results):
                row.append("-" if r.agreement is None else f"{100 * r.agreement:.1f}%")
        return header, rows

    def to_markdown(self):
        """A Markdown table, one row per format."""
        header, rows = self._rows()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"

    def __str__(self):
        header, rows = self._rows()
        widths = [
            max(len(row[i]) for row in [header, *rows]) for i in range(len(header))
        ]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
            for row in [header, *rows]
        ]
        return "\n".join(lines)


def _human_size(size):
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _number(value):
    return "-" if value is None else f"{value:.2e}"


def _tree_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


# ------------------------------------------------------------------ arguments
def _check_formats(formats):
    if isinstance(formats, str):
        formats = [formats]
    if formats is None or not hasattr(formats, "__iter__"):
        raise TypeError(
            f"formats must be a format name or a list of them, got {formats!r}; "
            f"e.g. formats=('keras', 'onnx'). Known: {list(FORMATS)}."
        )
    formats = list(dict.fromkeys(formats))
    if not formats:
        raise ValueError(f"formats is empty; pass one or more of {list(FORMATS)}.")
    known = FORMATS + EXTRA_FORMATS
    unknown = [f for f in formats if f not in known]
    if unknown:
        raise ValueError(
            f"unknown export format(s) {unknown}; choose from {list(known)} "
            "(e.g. formats=('keras', 'onnx'))."
        )
    return formats


def _make_sample(model):
    """A seeded random batch shaped like the model's inputs (same structure)."""
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"model '{model.name}' has no known inputs (a subclassed model that "
            "was never built?); pass sample=..., a batch the model accepts."
        )
    rng = np.random.default_rng(_SAMPLE_SEED)

    def random_input(tensor):
        shape = tuple(tensor.shape)
        batch = _SAMPLE_BATCH if shape[0] is None else shape[0]
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"input '{tensor.name}' of model '{model.name}' has a dynamic shape "
                f"{shape}; pass sample=..., a batch with concrete sizes."
            )
        dtype = np.dtype(keras.backend.standardize_dtype(tensor.dtype))
        if dtype.kind in "iub":
            return rng.integers(0, 2, size=(batch, *shape[1:])).astype(dtype)
        if dtype.kind != "f":
            raise ValueError(
                f"cannot make a random sample for input '{tensor.name}' of dtype "
                f"{dtype}; pass sample=..., a batch the model accepts."
            )
        return rng.standard_normal((batch, *shape[1:])).astype(dtype)

    return keras.tree.map_structure(random_input, _input_structure(model))


def _check_calibration_sample(model, sample):
    """Raises ValueError unless `sample` is a batch shaped like the model's inputs.

    The int8 formats calibrate on it, so a missing batch axis or a wrong size
    must fail here, with the shapes named, rather than deep in a converter.
    """
    if not getattr(model, "inputs", None):
        return  # a subclassed model: no declared shapes to compare with.
    expected = keras.tree.flatten(_input_structure(model))
    try:
        arrays = [
            np.asarray(keras.ops.convert_to_numpy(x))
            for x in keras.tree.flatten(sample)
        ]
    except Exception as error:  # not array-like
        raise ValueError(
            f"export() sample= must be a batch of arrays shaped like the inputs of "
            f"model '{model.name}', got {type(sample).__name__} ({error})."
        ) from error
    if len(arrays) != len(expected):
        raise ValueError(
            f"export() sample= has {len(arrays)} array(s) but model '{model.name}' "
            f"takes {len(expected)} input(s) {[t.name for t in expected]}; pass one "
            "batch per input, structured like model.inputs."
        )
    for array, tensor in zip(arrays, expected):
        want = tuple(tensor.shape)
        ok = array.ndim == len(want) and all(
            w is None or w == g for w, g in zip(want[1:], array.shape[1:])
        )
        if not ok or array.shape[0] == 0:
            hint = (
                " (a single example? add the batch axis: sample[None])"
                if array.shape == tuple(want[1:])
                else ""
            )
            takes = "(batch, " + ", ".join(map(str, want[1:])) + ")"
            raise ValueError(
                f"export() sample= for input '{tensor.name}' has shape {array.shape}"
                f", but model '{model.name}' takes {takes}{hint}; pass a non-empty "
                "batch of real inputs of that shape to "
                "calibrate the int8 formats."
            )


def _input_structure(model):
    """The model's symbolic inputs, nested like the batches it takes."""
    try:
        return model.input
    except (AttributeError, ValueError):  # a Sequential model has only `inputs`.
        inputs = list(model.inputs)
        return inputs[0] if len(inputs) == 1 else inputs


def _in_input_order(model, sample):
    """A dict sample keyed by input names, for a model whose inputs are a list
    (or one tensor), as that list: flattening a dict sorts its keys, which
    would pair the arrays with the wrong inputs."""
    structure = _input_structure(model) if getattr(model, "inputs", None) else None
    if not isinstance(sample, dict) or structure is None or isinstance(structure, dict):
        return sample
    inputs = keras.tree.flatten(structure)
    if not all(t.name in sample for t in inputs) or len(sample) != len(inputs):
        return sample
    ordered = [sample[t.name] for t in inputs]
    return ordered[0] if len(ordered) == 1 else ordered


def _input_names(model, flat_sample):
    if getattr(model, "inputs", None):
        names = [t.name for t in keras.tree.flatten(_input_structure(model))]
        if len(names) == len(flat_sample):
            return names
    return [f"input_{i}" for i in range(len(flat_sample))]


def _output_names(model, reference):
    """Names of the flattened outputs: dict keys, or the model's output names."""
    if isinstance(reference, dict):
        return sorted(reference)
    count = len(keras.tree.flatten(reference))
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == count and len(set(names)) == count:
        return names
    return [f"output_{i}" for i in range(count)]


# ------------------------------------------------------------------ formats
def _write_keras(model, target, inputs):
    del inputs
    model.save(target)


def _run_keras(target, inputs):
    reloaded = keras.saving.load_model(target, compile=False)
    return keras.tree.flatten(reloaded(inputs.structured, training=False))


def _write_saved_model(model, target, inputs):
    del inputs
    model.export(target, format="tf_saved_model", verbose=False)


def _run_saved_model(target, inputs):
    import tensorflow as tf

    loaded = tf.saved_model.load(target)
    if "serving_default" not in loaded.signatures:
        raise ExportError(f"SavedModel '{target}' has no 'serving_default' signature")
    signature = loaded.signatures["serving_default"]
    expected = list(signature.structured_input_signature[1])
    feed = _feed(expected, inputs, "saved_model")
    outputs = signature(**{k: tf.constant(v) for k, v in feed.items()})
    return _ordered(outputs, inputs.output_names, "saved_model")


def _write_onnx(model, target, inputs):
    model.export(target, format="onnx", verbose=False)
    _rename_onnx_outputs(target, inputs.output_names)


def _run_onnx(target, inputs, format_name="onnx"):
    import onnxruntime

    session = onnxruntime.InferenceSession(target, providers=["CPUExecutionProvider"])
    feed = _feed([i.name for i in session.get_inputs()], inputs, format_name)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, feed)))
    return _ordered(outputs, inputs.output_names, format_name)


def _write_onnx_int8(model, target, inputs):
    """ONNX Runtime static quantization of the float ONNX export: QDQ format,
    int8 activations and per-channel int8 weights (Conv, MatMul, Gemm), with
    activation ranges calibrated (min/max) on the export sample."""
    import onnxruntime
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as work:
        float_path = os.path.join(work, "float.onnx")
        _write_onnx(model, float_path, inputs)
        prepared = os.path.join(work, "prepared.onnx")
        try:
            # Shape inference and graph fusions (e.g. Conv + BN) before quantizing,
            # as ONNX Runtime recommends. Optional: a graph it cannot process is
            # quantized as exported.
            quant_pre_process(float_path, prepared)
        except Exception:  # onnx / sympy raise many types on unusual graphs.
            prepared = float_path
        session = onnxruntime.InferenceSession(
            prepared, providers=["CPUExecutionProvider"]
        )
        feed = _feed([i.name for i in session.get_inputs()], inputs, "onnx_int8")
        del session
        quantization.quantize_static(
            prepared,
            target,
            _calibration_reader(quantization.CalibrationDataReader, feed),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )


def _calibration_reader(base, feed):
    """A `CalibrationDataReader` (`base`) over the sample, in small batches."""
    rows = len(next(iter(feed.values())))
    batches = iter(
        {
            name: np.asarray(value[i : i + _CALIBRATION_BATCH])
            for name, value in feed.items()
        }
        for i in range(0, rows, _CALIBRATION_BATCH)
    )

    class SampleReader(base):
        def get_next(self):
            return next(batches, None)

    return SampleReader()


def _run_onnx_int8(target, inputs):
    """The QDQ file takes and returns float tensors: run it like the float one."""
    return _run_onnx(target, inputs, "onnx_int8")


def _write_tflite(model, target, inputs):
    """LiteRT (TFLite) float32, converted from a SavedModel of the model."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        flatbuffer = converter.convert()
    with open(target, "wb") as f:
        f.write(flatbuffer)


def _write_tflite_int8(model, target, inputs):
    """Full-integer LiteRT: int8 weights, activations, inputs and outputs,
    calibrated on the export sample (the representative data)."""
    import tensorflow as tf

    if len(inputs.flat) != 1:
        raise ValueError("tflite_int8 supports single-input models only")
    calibration = np.asarray(inputs.flat[0], np.float32)

    def representative():
        for row in calibration:
            yield [row[None]]

    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        flatbuffer = converter.convert()
    with open(target, "wb") as f:
        f.write(flatbuffer)


def _int8_call(runner, feed):
    """Runs a full-integer signature: float inputs quantized, outputs dequantized."""
    input_details = runner.get_input_details()
    quantized = {}
    for name, value in feed.items():
        scale, zero = input_details[name]["quantization"]
        q = np.round(np.asarray(value, np.float32) / scale + zero)
        quantized[name] = np.clip(q, -128, 127).astype(np.int8)
    output_details = runner.get_output_details()
    result = {}
    for name, value in runner(**quantized).items():
        scale, zero = output_details[name]["quantization"]
        result[name] = (np.asarray(value, np.float32) - zero) * scale
    return result


def predict_tflite_int8(path, x):
    """Float outputs of a single-input, full-integer LiteRT file on batch `x`.

    Example:

        logits = predict_tflite_int8("export/model_int8.tflite", images)
    """
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=os.fspath(path)).get_signature_runner()
    (name,) = runner.get_input_details()
    outputs = _int8_call(runner, {name: x})
    return next(iter(outputs.values()))


def _run_tflite_int8(target, inputs):
    """Runs the int8 file on the sample: inputs quantized, outputs dequantized."""
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=target).get_signature_runner()
    feed = _feed(list(runner.get_input_details()), inputs, "tflite_int8")
    return _ordered(_int8_call(runner, feed), inputs.output_names, "tflite_int8")


def _run_tflite(target, inputs):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=target)
    runner = interpreter.get_signature_runner()
    expected = list(runner.get_input_details())
    feed = _feed(expected, inputs, "tflite")
    outputs = runner(**{k: np.asarray(v, np.float32) for k, v in feed.items()})
    return _ordered(outputs, inputs.output_names, "tflite")


_WRITERS = {
    "keras": _write_keras,
    "saved_model": _write_saved_model,
    "onnx": _write_onnx,
    "tflite": _write_tflite,
    "tflite_int8": _write_tflite_int8,
    "onnx_int8": _write_onnx_int8,
}
_RUNNERS = {
    "keras": _run_keras,
    "saved_model": _run_saved_model,
    "onnx": _run_onnx,
    "tflite": _run_tflite,
    "tflite_int8": _run_tflite_int8,
    "onnx_int8": _run_onnx_int8,
}
_WRITE_HINTS = {
    "keras": "register custom layers with "
    "@keras.saving.register_keras_serializable and give them get_config()",
    "saved_model": "make every layer's call() traceable by tf.function",
    "onnx": "build custom layers from ops tf2onnx converts (slice, gather, matmul, "
    "add, conv...), or leave 'onnx' out of formats",
    "tflite": "build custom layers from ops the TFLite converter supports, or "
    "leave 'tflite' out of formats",
    "tflite_int8": "pass sample= a batch of real inputs (it calibrates the int8 "
    "ranges) and use ops with int8 kernels, or leave 'tflite_int8' out of formats",
    "onnx_int8": "pass sample= a batch of real inputs (it calibrates the int8 "
    "ranges), check that the 'onnx' format exports, or leave 'onnx_int8' out of "
    "formats",
}


def _feed(expected_names, inputs, format_name):
    """Maps the runtime's input names to sample arrays: by name, else by position."""
    if set(expected_names) == set(inputs.names):
        return dict(zip(inputs.names, inputs.flat))
    if len(expected_names) == len(inputs.flat):
        return dict(zip(expected_names, inputs.flat))
    raise ExportError(
        f"the {format_name} file expects inputs {expected_names}, but the model has "
        f"{inputs.names}"
    )


def _ordered(outputs, output_names, format_name):
    """The runtime's outputs in the Keras flattening order: by name, else by index."""
    if all(name in outputs for name in output_names):
        return [outputs[name] for name in output_names]
    if len(outputs) != len(output_names):
        raise ExportError(
            f"the {format_name} file has outputs {sorted(outputs)}, but the model "
            f"has {output_names}"
        )
    if all(key.startswith("output_") for key in outputs):  # SavedModel: output_<i>
        return [outputs[f"output_{i}"] for i in range(len(outputs))]
    return list(outputs.values())


def _rename_onnx_outputs(path, names):
    """Names the ONNX graph outputs like the Keras outputs, when that is safe."""
    import onnx

    proto = onnx.load(path)
    graph = proto.graph
    old = [o.name for o in graph.output]
    if len(old) != len(names) or len(set(old)) != len(old) or old == list(names):
        return
    graph_inputs = {i.name for i in graph.input}
    taken = graph_inputs | {i.name for i in graph.initializer}
    taken |= {name for node in graph.node for name in (*node.input, *node.output)}
    mapping = {o: n for o, n in zip(old, names) if o != n}
    if any(n in taken for n in mapping.values()) or graph_inputs & set(mapping):
        return  # a clash, or an input passed straight through: keep tf2onnx's names
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for info in [*graph.output, *graph.value_info]:
        info.name = mapping.get(info.name, info.name)
    onnx.save(proto, path)


@dataclasses.dataclass
class _Inputs:
    structured: object
    flat: list
    names: list
    output_names: list


def _compare(reference, outputs, rtol, atol):
    """(max abs diff, max rel diff, ok) over all outputs; rel = abs / max|ref|."""
    if len(reference) != len(outputs):
        return float("inf"), float("inf"), False
    worst_abs, worst_rel, ok = 0.0, 0.0, True
    for ref, out in zip(reference, outputs):
        ref = np.asarray(keras.ops.convert_to_numpy(ref), dtype=np.float64)
        out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
        if ref.shape != out.shape:
            return float("inf"), float("inf"), False
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        diff = float(np.max(np.abs(out - ref))) if ref.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf")
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / scale if scale > 0 else diff)
        ok = ok and diff <= atol + rtol * scale
    return worst_abs, worst_rel, ok


# ------------------------------------------------------------------ export
def export(
    model,
    path,
    formats=FORMATS,
    verify=True,
    sample=None,
    rtol=1e-4,
    atol=1e-5,
    reference=None,
    min_agreement=0.9,
):
    """Writes `model` as .keras, SavedModel and/or ONNX, and verifies each file.

    Each format is written under `path` as `model.keras`, `saved_model/` and
    `model.onnx`, reloaded (`keras.saving.load_model`, `tf.saved_model.load` and
    its serving signature, `onnxruntime.InferenceSession`) and run on a sample
    batch. An output matches when `max|reloaded - keras| <= atol + rtol *
    max|keras|`, per output tensor. Nothing is moved to its final name until every
    format has been written and verified: a failed export leaves the directory as
    it was (an older export there stays untouched).

    Args:
        model: a built `keras.Model` (multi-input and multi-output too).
        path: the output directory; created if missing.
        formats: any of "keras", "saved_model", "onnx" (the default set), and on
            request "tflite", "tflite_int8" or "onnx_int8" (a single name is
            fine).
        verify: reload and compare each file; with False the files are only
            written and reported as unverified.
        sample: a batch the model accepts (same structure as its inputs). By
            default a seeded random batch of 2 shaped like `model.inputs`.
        rtol: allowed difference relative to an output's largest magnitude.
        atol: allowed absolute difference on top of that.
        reference: the model `model` was made from (e.g. the pruned model
            before `compact`). Then `model` itself and every file are compared
            with the reference's outputs, not only with `model`'s: a rewrite
            that changed the outputs fails here instead of exporting "verified".
        min_agreement: quantized formats ("tflite_int8", "onnx_int8", on
            request): the least share of sample rows whose top-1 class must match
            the Keras model's. They need `sample`: a batch of real inputs, which
            also calibrates the int8 ranges (a few hundred images is typical).
            "onnx_int8" is ONNX Runtime static quantization (QDQ, int8
            activations, per-channel int8 weights); its file takes and returns
            float tensors.

    Returns:
        An `ExportResult`: per format its path, size in bytes, max abs / rel
        difference and verified flag; `str()` of it is a table.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: for an unknown or empty `formats`, negative tolerances, a
            `path` that is a file, or no way to build a sample (pass `sample`);
            for a quantized format, a missing `sample` or one not shaped like the
            model's inputs.
        ExportError: if a format cannot be written or reloaded (names the format
            and the fix).
        ExportVerificationError: if a reloaded file's outputs differ beyond the
            tolerance (names the format and the difference).

    Example:
        >>> result = export(model, "exports/lenet", formats=("keras", "onnx"))
        >>> result["onnx"].verified, result["onnx"].max_abs_diff < 1e-5
        (True, True)
        >>> q = export(model, "exports/lenet", formats="onnx_int8", sample=images)
        >>> q["onnx_int8"].agreement  # top-1 agreement with the float model
        0.995
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"export() takes a keras.Model, got {type(model).__name__}; wrap layers "
            "in keras.Model(inputs, outputs) first."
        )
    formats = _check_formats(formats)
    tolerances = (rtol, atol)
    if not all(
        isinstance(t, numbers.Real) and not isinstance(t, bool) and t >= 0
        for t in tolerances
    ):  # NaN fails too
        raise ValueError(
            f"export() rtol and atol must be numbers >= 0, got rtol={rtol!r}, "
            f"atol={atol!r}; e.g. rtol=1e-4, atol=1e-5."
        )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"export() path must be a directory path, got {path!r}; e.g. "
            "export(model, 'exports/small')."
        )
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"'{path}' is a file; export() writes a directory of model files, so "
            "pass a directory path."
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:  # a missing drive or share: makedirs will say so
            break
        parent = up
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ValueError(
            f"export() cannot create '{path}': '{parent}' is a file, not a "
            "directory. Pass a path under a directory."
        )

    if any(f in QUANTIZED_FORMATS for f in _check_formats(formats)):
        if sample is None:
            raise ValueError(
                "export() to a quantized format needs sample=: a batch of real "
                "inputs of the model (e.g. 200 training images), to calibrate the "
                "int8 ranges and to check the top-1 agreement."
            )
        if not 0.0 <= min_agreement <= 1.0:
            raise ValueError(
                f"export() min_agreement must be in [0, 1], got {min_agreement!r}."
            )
    if sample is not None:
        sample = _in_input_order(model, sample)
        _check_calibration_sample(model, sample)
    original = reference
    if original is not None and not isinstance(original, keras.Model):
        raise TypeError(
            f"export() `reference` must be the keras.Model the exported one was "
            f"made from, got {type(original).__name__}."
        )
    if sample is None:
        sample = _make_sample(model)
    # Calling the model also marks it as called, which Keras' ONNX export requires.
    reference = model(sample, training=False)
    flat_sample = [
        np.asarray(keras.ops.convert_to_numpy(x)) for x in keras.tree.flatten(sample)
    ]
    inputs = _Inputs(
        structured=sample,
        flat=flat_sample,
        names=_input_names(model, flat_sample),
        output_names=_output_names(model, reference),
    )
    flat_reference = [
        keras.ops.convert_to_numpy(x) for x in keras.tree.flatten(reference)
    ]
    if original is not None and verify:
        expected = [
            keras.ops.convert_to_numpy(x)
            for x in keras.tree.flatten(original(sample, training=False))
        ]
        abs_diff, rel_diff, ok = _compare(expected, flat_reference, rtol, atol)
        if not ok:
            raise ExportVerificationError(
                f"The model to export differs from the reference model it was made "
                f"from: max abs diff {abs_diff:.3g} (relative {rel_diff:.3g}) > "
                f"atol {atol:g} + rtol {rtol:g} x max|output|. Nothing was written. "
                "The rewrite (e.g. compact) changed the outputs: report it with "
                "the model.",
                "model",
                abs_diff,
                rel_diff,
            )
        flat_reference = expected

    low_precision = _low_precision(model)
    os.makedirs(path, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=path)
    try:
        results = []
        for format_name in formats:
            staged = os.path.join(staging, FILE_NAMES[format_name])
            final = os.path.join(path, FILE_NAMES[format_name])
            _write(model, format_name, staged, inputs)
            diffs = (None, None)
            if verify:
                diffs = _verify(
                    format_name,
                    staged,
                    inputs,
                    flat_reference,
                    rtol,
                    atol,
                    low_precision,
                    min_agreement,
                )
            results.append(
                FormatResult(
                    format=format_name,
                    path=final,
                    size_bytes=_tree_bytes(staged),
                    max_abs_diff=diffs[0],
                    max_rel_diff=diffs[1],
                    verified=verify,
                    agreement=diffs[2] if len(diffs) > 2 else None,
                )
            )
        for result in results:
            _move_into_place(
                os.path.join(staging, FILE_NAMES[result.format]), result.path, staging
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(directory=path, results=tuple(results), rtol=rtol, atol=atol)


def _write(model, format_name, target, inputs):
    try:
        _WRITERS[format_name](model, target, inputs)
    except Exception as error:  # Keras, TF and tf2onnx raise many types here.
        hint = _WRITE_HINTS[format_name]
        backend = backends.name()
        if backend != "tensorflow" and format_name != "keras":
            hint = (
                f"on the {backend} backend Keras may have no path to this format: "
                "write the 'keras' format (it loads on every backend), load that "
                "file in a process started with KERAS_BACKEND=tensorflow and "
                f"export it there (keras_admm.export or tools/convert.py); else {hint}"
            )
        raise ExportError(
            f"could not write the {format_name} format of model '{model.name}' "
            f"({type(error).__name__}: {error}). Nothing was written; {hint}."
        ) from error


def _low_precision(model) -> str | None:
    """The float16 / bfloat16 compute dtype of a mixed-precision model, or None."""
    for layer in getattr(model, "layers", []):
        policy = getattr(layer, "dtype_policy", None)
        dtype = getattr(policy, "compute_dtype", None)
        if dtype in ("float16", "bfloat16"):
            return dtype
    return None


def _agreement(reference, outputs):
    """Share of rows whose argmax over the last axis agrees (first output)."""
    ref = np.asarray(keras.ops.convert_to_numpy(reference[0]))
    out = np.asarray(keras.ops.convert_to_numpy(outputs[0]))
    if ref.shape != out.shape or ref.ndim < 2:
        return 0.0
    return float(np.mean(np.argmax(ref, -1) == np.argmax(out, -1)))


def _verify(
    format_name,
    target,
    inputs,
    reference,
    rtol,
    atol,
    low_precision=None,
    min_agreement=0.9,
):
    try:
        outputs = _RUNNERS[format_name](target, inputs)
    except ExportError:
        raise
    except Exception as error:  # each runtime raises its own types.
        raise ExportError(
            f"the {format_name} file was written but could not be reloaded and run "
            f"({type(error).__name__}: {error}). Nothing was written; "
            f"{_WRITE_HINTS[format_name]}."
        ) from error
    outputs = [keras.ops.convert_to_numpy(x) for x in outputs]
    max_abs, max_rel, ok = _compare(reference, outputs, rtol, atol)
    if format_name in QUANTIZED_FORMATS:
        agreement = _agreement(reference, outputs)
        if agreement < min_agreement:
            raise ExportVerificationError(
                f"the {format_name} export agrees with the Keras model's top-1 "
                f"class on {100 * agreement:.1f}% of the sample, below "
                f"min_agreement={min_agreement:g} (max abs diff {max_abs:.3g}). "
                "Nothing was written. Calibrate on more representative inputs "
                "(sample=), or accept it with a lower min_agreement.",
                format=format_name,
                max_abs_diff=max_abs,
                max_rel_diff=max_rel,
            )
        return max_abs, max_rel, agreement
    if not ok:
        if low_precision and max_rel <= 1e-2:
            cause = (
                f"The model computes in {low_precision} (a mixed-precision "
                f"policy), whose rounding is about 1e-3 of an output: pass e.g. "
                "rtol=1e-2 to accept it, or export a float32 copy of the model."
            )
        else:
            cause = (
                "Check that every custom layer's get_config() restores its weights "
                "and options and that its ops convert exactly; loosen rtol/atol "
                f"only for known float error, or export without '{format_name}'."
            )
        raise ExportVerificationError(
            f"the {format_name} export does not reproduce the Keras model: max abs "
            f"diff {max_abs:.3g}, max rel diff {max_rel:.3g} (allowed: atol={atol:g} "
            f"+ rtol={rtol:g} x max|output|). Nothing was written. {cause}",
            format=format_name,
            max_abs_diff=max_abs,
            max_rel_diff=max_rel,
        )
    return max_abs, max_rel


def _move_into_place(staged, final, staging):
    """Replaces `final` by `staged`; an older file there goes to the staging bin."""
    if os.path.lexists(final):
        os.replace(final, os.path.join(staging, ".old-" + os.path.basename(final)))
    os.replace(staged, final)
