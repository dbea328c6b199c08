"""Model files to profile: format detection, validation, loading and conversion.

Three formats are read: Keras `.keras` archives, SavedModel directories and `.onnx`
files. `ModelStore` loads each file once, exports it to ONNX on demand (for the
onnxruntime engine), and computes its static figures. Each framework is imported
only when a file needs it, so an ONNX-only run never imports TensorFlow.
"""

import dataclasses
import math
import os
import zipfile

KERAS, SAVED_MODEL, ONNX = "keras", "savedmodel", "onnx"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model file to profile.

    Attributes:
        path: the file (or SavedModel directory).
        kind: "keras", "savedmodel" or "onnx".
        name: the label used in reports.
    """

    path: str
    kind: str
    name: str


def _default_name(path):
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".keras", ".onnx"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def open_source(path, name=None):
    """Checks that `path` is a readable model file and tells its format.

    This is a cheap check (no framework import): the file exists, a .keras file is
    a zip archive, a directory holds saved_model.pb, an .onnx file parses.

    Args:
        path: a .keras file, a SavedModel directory or an .onnx file.
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
    if path.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"'{path}' is a legacy HDF5 model; load it and save it again as "
            "'.keras' with model.save('model.keras')."
        )
    raise ValueError(
        f"'{path}' has an unknown model format; pass a .keras file, a SavedModel "
        "directory or an .onnx file."
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
    """Loads model files once, converts them to ONNX on demand, reports statics.

    Args:
        workdir: where ONNX exports of .keras / SavedModel inputs are written.

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
            os.makedirs(self.workdir, exist_ok=True)
            target = os.path.join(self.workdir, f"{_default_name(source.path)}.onnx")
            if source.kind == KERAS:
                self._export_keras(source, target)
            else:
                self._export_saved_model(source, target)
            self._onnx[source.path] = target
        return self._onnx[source.path]

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
        SavedModels and ONNX files from their ONNX graph. FLOPs are None, with a
        "flops_note", when they cannot be counted.
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

        floats = {
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.BFLOAT16,
            onnx.TensorProto.DOUBLE,
        }
        model = onnx.load(source.path, load_external_data=False)
        weights = [i for i in model.graph.initializer if i.data_type in floats]
        return int(sum(math.prod(i.dims) for i in weights))
