"""Model files to profile: format detection, validation, loading and conversion.

Four formats are read: Keras `.keras` archives, SavedModel directories, `.onnx`
files and LiteRT `.tflite` files. `ModelStore` loads each file once, converts it
on demand (to ONNX for the onnxruntime and openvino engines, to a float .tflite
for the litert engine), and computes its static figures. Each framework is
imported only when a file needs it, so an ONNX-only run never imports TensorFlow.
"""

import dataclasses
import importlib.util
import math
import os
import shutil
import zipfile

KERAS, SAVED_MODEL, ONNX, TFLITE = "keras", "savedmodel", "onnx", "tflite"
# Bytes 4-8 of every TFLite flatbuffer: the schema's file identifier.
_TFLITE_IDENTIFIER = b"TFL3"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model file to profile.

    Attributes:
        path: the file (or SavedModel directory).
        kind: "keras", "savedmodel", "onnx" or "tflite".
        name: the label used in reports.
    """

    path: str
    kind: str
    name: str


def _default_name(path):
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".keras", ".onnx", ".tflite"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def open_source(path, name=None):
    """Checks that `path` is a readable model file and tells its format.

    This is a cheap check (no framework import): the file exists, a .keras file is
    a zip archive, a directory holds saved_model.pb, an .onnx file parses, a
    .tflite file carries the TFLite flatbuffer identifier.

    Args:
        path: a .keras file, a SavedModel directory, an .onnx or a .tflite file.
        name: the label in reports; the file name without extension by default.

    Returns:
        A `ModelSource`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the format is unknown or the file is corrupt.

    Example:
        >>> open_source("dense.keras").kind
        'keras'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"the profiler times model files, got {type(path).__name__}; save it "
            "first (model.save('model.keras')) and pass the path."
        )
    path = os.fspath(path)
    name = name or _default_name(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"model file '{path}' does not exist; check the path, or save the model "
            "first with model.save('model.keras') or model.export('model.onnx', "
            "format='onnx')."
        )
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"'{path}' is a directory but not a SavedModel (no saved_model.pb); "
                "pass a SavedModel directory written by model.export(path), a "
                ".keras file or an .onnx file."
            )
        return ModelSource(path, SAVED_MODEL, name)
    if path.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"'{path}' is not a valid .keras archive (not a zip file; truncated "
                f"or corrupt?); save the model again with model.save('{path}')."
            )
        return ModelSource(path, KERAS, name)
    if path.endswith(".onnx"):
        _check_onnx(path)
        return ModelSource(path, ONNX, name)
    if path.endswith(".tflite"):
        with open(path, "rb") as f:
            header = f.read(8)
        if header[4:8] != _TFLITE_IDENTIFIER:
            raise ValueError(
                f"'{path}' is not a valid .tflite (LiteRT) file (no TFL3 flatbuffer "
                "identifier; truncated or corrupt?); convert the model again, e.g. "
                "keras_admm.export(model, dir, formats='tflite')."
            )
        return ModelSource(path, TFLITE, name)
    if path.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"'{path}' is a legacy HDF5 model; load it and save it again as "
            "'.keras' with model.save('model.keras')."
        )
    raise ValueError(
        f"'{path}' has an unknown model format; pass a .keras file, a SavedModel "
        "directory, an .onnx or a .tflite file."
    )


def _check_onnx(path):
    import onnx

    try:
        onnx.checker.check_model(path)
    except Exception as error:  # onnx raises several unrelated types here.
        raise ValueError(
            f"'{path}' is not a valid ONNX model ({type(error).__name__}: {error}); "
            "export it again, e.g. with model.export('model.onnx', format='onnx')."
        ) from error


def _onnx_inputs(path):
    """The non-initializer graph inputs of an ONNX file."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def tflite_interpreter(path, num_threads=None):
    """A LiteRT interpreter for `path` and the name of the class that runs it.

    Uses `ai_edge_litert.interpreter.Interpreter` when ai-edge-litert is installed,
    else TensorFlow's `tf.lite.Interpreter` (deprecated by TensorFlow in its
    favour).

    Example:
        >>> interpreter, which = tflite_interpreter("model.tflite", num_threads=2)
    """
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        which = "ai_edge_litert.interpreter.Interpreter"
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
        which = "tf.lite.Interpreter"
    try:
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
    except Exception as error:  # the runtime raises ValueError / RuntimeError.
        raise ValueError(
            f"could not load '{path}' with {which} ({type(error).__name__}: "
            f"{error}); convert the model again, e.g. "
            "keras_admm.export(model, dir, formats='tflite')."
        ) from error
    return interpreter, which


def _tree_bytes(path):
    """Size in bytes of a file, or of every file under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _single_input(inputs, path):
    if len(inputs) != 1:
        raise ValueError(
            f"'{path}' has {len(inputs)} inputs; the profiler times single-input "
            "models only. Wrap the model so that it takes one tensor."
        )
    return inputs[0]


class ModelStore:
    """Loads model files once, converts them on demand, reports statics.

    Args:
        workdir: where conversions are written: ONNX forms of .keras, SavedModel
            and .tflite inputs, float .tflite forms of .keras and SavedModel ones.

    Example:
        >>> store = ModelStore("/tmp/profile")
        >>> store.input_shape(open_source("dense.keras"))
        (32, 32, 3)
    """

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self._keras = {}
        self._saved = {}
        self._onnx = {}
        self._tflite = {}
        self._targets = set()

    def _target(self, source, suffix):
        """A fresh path in workdir for a conversion of `source`: model.keras and
        model.tflite (or two dirs' model.keras) must not share model.onnx."""
        os.makedirs(self.workdir, exist_ok=True)
        base, index = _default_name(source.path), 1
        name = f"{base}{suffix}"
        while name in self._targets:
            index += 1
            name = f"{base}_{index}{suffix}"
        self._targets.add(name)
        return os.path.join(self.workdir, name)

    def forget(self, source):
        """Drops the loaded model and conversions of `source` (and their files)."""
        for cache in (self._keras, self._saved):
            cache.pop(source.path, None)
        for cache in (self._onnx, self._tflite):
            converted = cache.pop(source.path, None)
            if converted and os.path.isfile(converted):
                os.remove(converted)
            elif converted and os.path.isdir(converted):
                shutil.rmtree(converted, ignore_errors=True)

    def keras_model(self, source):
        """The loaded `keras.Model` of a .keras source."""
        if source.kind != KERAS:
            raise ValueError(
                f"'{source.path}' is a {source.kind} model, not a .keras file; the "
                "'keras' engine needs .keras files (use --engines tf or onnxruntime)."
            )
        if source.path not in self._keras:
            import keras

            try:
                model = keras.saving.load_model(source.path, compile=False)
            except Exception as error:  # Keras raises many types for bad archives.
                raise ValueError(
                    f"could not load '{source.path}' as a Keras model "
                    f"({type(error).__name__}: {error}); save it again with "
                    "model.save(), and import the modules that register its custom "
                    "layers before profiling."
                ) from error
            self._keras[source.path] = model
        return self._keras[source.path]

    def saved_model(self, source):
        """(loaded object, serving signature, input name) of a SavedModel source."""
        if source.path not in self._saved:
            import tensorflow as tf

            try:
                loaded = tf.saved_model.load(source.path)
            except Exception as error:  # TF raises many types for bad directories.
                raise ValueError(
                    f"could not load SavedModel '{source.path}' "
                    f"({type(error).__name__}: {error}); export it again with "
                    "model.export(path)."
                ) from error
            if "serving_default" not in loaded.signatures:
                raise ValueError(
                    f"SavedModel '{source.path}' has no 'serving_default' signature; "
                    "export it with model.export(path), which writes one."
                )
            signature = loaded.signatures["serving_default"]
            specs = signature.structured_input_signature[1]
            name = _single_input(list(specs), source.path)
            self._saved[source.path] = (loaded, signature, name)
        return self._saved[source.path]

    def input_shape(self, source):
        """The per-sample input shape (no batch dimension) of a source, as ints."""
        if source.kind == KERAS:
            model = self.keras_model(source)
            shape = tuple(_single_input(model.inputs, source.path).shape[1:])
        elif source.kind == SAVED_MODEL:
            _, signature, name = self.saved_model(source)
            shape = tuple(signature.structured_input_signature[1][name].shape[1:])
        elif source.kind == TFLITE:
            interpreter, _ = tflite_interpreter(source.path)
            details = _single_input(interpreter.get_input_details(), source.path)
            signature = details.get("shape_signature", details["shape"])
            shape = tuple(None if d < 0 else int(d) for d in signature[1:])
        else:
            graph_input = _single_input(_onnx_inputs(source.path), source.path)
            dims = graph_input.type.tensor_type.shape.dim[1:]
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in dims
            )
        if any(d is None for d in shape):
            raise ValueError(
                f"'{source.path}' has a dynamic input shape {shape}; the profiler "
                "needs fixed non-batch dimensions. Build the model on "
                "keras.Input((H, W, C)) with a fixed size."
            )
        return shape

    def onnx_file(self, source):
        """Path of an ONNX form of the source, exporting it on first use."""
        if source.kind == ONNX:
            return source.path
        if source.path not in self._onnx:
            target = self._target(source, ".onnx")
            if source.kind == KERAS:
                self._export_keras(source, target)
            elif source.kind == TFLITE:
                self._export_tflite(source, target)
            else:
                self._export_saved_model(source, target)
            self._onnx[source.path] = target
        return self._onnx[source.path]

    def _export_tflite(self, source, target):
        import tf2onnx

        try:
            tf2onnx.convert.from_tflite(source.path, output_path=target)
        except Exception as error:  # tf2onnx raises many types on unknown ops.
            raise ValueError(
                f"could not convert '{source.path}' to ONNX with tf2onnx "
                f"({type(error).__name__}: {error}); pass the .keras or .onnx form "
                "of the model, or profile the .tflite file with --engines litert."
            ) from error

    def tflite_file(self, source):
        """Path of a float .tflite form of the source, converting it on first use.

        .keras models are exported to a SavedModel first (as
        `keras_admm.export(..., formats="tflite")` does); ONNX files cannot be
        converted.
        """
        if source.kind == TFLITE:
            return source.path
        if source.kind == ONNX:
            raise ValueError(
                f"'{source.path}' is an ONNX file, which cannot be converted to "
                "LiteRT; pass its .keras, SavedModel or .tflite form, or profile it "
                "with --engines onnxruntime or openvino."
            )
        if source.path not in self._tflite:
            target = self._target(source, ".tflite")
            try:
                self._convert_to_tflite(source, target)
            except ValueError:
                raise
            except Exception as error:  # the TFLite converter raises many types.
                raise ValueError(
                    f"could not convert '{source.path}' to a float .tflite file "
                    f"({type(error).__name__}: {error}); build its layers from ops "
                    "the TFLite converter supports, or pass a .tflite file."
                ) from error
            self._tflite[source.path] = target
        return self._tflite[source.path]

    def _convert_to_tflite(self, source, target):
        import tempfile

        import tensorflow as tf

        with tempfile.TemporaryDirectory(dir=self.workdir) as saved:
            if source.kind == KERAS:
                import numpy as np

                model = self.keras_model(source)
                model(np.zeros((1, *self.input_shape(source)), "float32"))
                model.export(saved, format="tf_saved_model", verbose=False)
                saved_path = saved
            else:
                saved_path = source.path
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_path)
            flatbuffer = converter.convert()
        with open(target, "wb") as f:
            f.write(flatbuffer)

    def _export_keras(self, source, target):
        import numpy as np

        model = self.keras_model(source)
        # Keras' ONNX export needs a model that has been called at least once.
        model(np.zeros((1, *self.input_shape(source)), "float32"))
        model.export(target, format="onnx", verbose=False)

    def _export_saved_model(self, source, target):
        import tensorflow as tf
        import tf2onnx

        _, signature, name = self.saved_model(source)
        spec = signature.structured_input_signature[1][name]
        function = tf.function(lambda x: signature(**{name: x}))
        tf2onnx.convert.from_function(
            function,
            input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=name)],
            output_path=target,
        )

    def stats(self, source):
        """Static figures: params, FLOPs (per sample), file size, per-layer FLOPs.

        Keras models are counted from their layers (the registry in `flops`);
        SavedModels, ONNX and .tflite files from their ONNX graph. FLOPs are None,
        with a "flops_note", when they cannot be counted.
        """
        from . import flops as keras_flops
        from . import onnx_flops

        stats = {
            "name": source.name,
            "path": source.path,
            "kind": source.kind,
            "file_bytes": _tree_bytes(source.path),
            "input_shape": list(self.input_shape(source)),
        }
        try:
            if source.kind == KERAS:
                model = self.keras_model(source)
                stats["params"] = int(model.count_params())
                layers = keras_flops.layer_flops(model)
            else:
                stats["params"] = self._graph_params(source)
                layers = onnx_flops.onnx_layer_flops(self.onnx_file(source))
        except ValueError as error:
            stats.setdefault("params", None)
            stats.update(flops=None, layer_flops=[], flops_note=str(error))
            return stats
        stats["flops"] = int(sum(row["flops"] for row in layers))
        stats["layer_flops"] = layers
        return stats

    def _graph_params(self, source):
        if source.kind == SAVED_MODEL:
            loaded, signature, _ = self.saved_model(source)
            variables = getattr(loaded, "variables", None) or signature.variables
            return int(sum(v.shape.num_elements() for v in variables))
        import onnx

        # Weights: float initializers, and the int8 ones of quantized graphs
        # (shape constants are int32 / int64).
        weights_types = {
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.BFLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.INT8,
            onnx.TensorProto.UINT8,
        }
        model = onnx.load(self.onnx_file(source), load_external_data=False)
        weights = [i for i in model.graph.initializer if i.data_type in weights_types]
        return int(sum(math.prod(i.dims) for i in weights))
