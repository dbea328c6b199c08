"""Inference engines the profiler times: TensorFlow, ONNX Runtime, Keras, LiteRT
and OpenVINO.

An engine turns a model file into a zero-argument runner that performs one
inference on a fixed batch and blocks until the result is ready. Engines live in a
registry keyed by name; each imports its framework only when it is created.

    engine = create_engine("onnxruntime", store, threads=2)
    run = engine.runner(source, batch_size=32, device="cpu", inputs=x)

Which engine runs which source (others are converted by the `ModelStore`, once):

    engine        .keras          SavedModel      .onnx    .tflite
    tf            yes             yes             no       no
    onnxruntime   via ONNX        via ONNX        yes      via ONNX (tf2onnx)
    keras         yes             no              no       no
    litert        via .tflite     via .tflite     no       yes
    openvino      via ONNX        via ONNX        yes      yes (its TFLite reader)
"""

import contextlib
import importlib.util

from . import environment
from .sources import KERAS, ONNX, SAVED_MODEL, TFLITE, tflite_interpreter

DEVICES = ("auto", "cpu", "gpu")
_ENGINES = {}


def register_engine(cls):
    """Class decorator: makes an `Engine` subclass available by its `name`."""
    _ENGINES[cls.name] = cls
    return cls


def engine_names():
    """Names of all registered engines, installed or not."""
    return sorted(_ENGINES)


class Engine:
    """Base class: one inference framework.

    Subclasses set `name`, `package` (the module that must be importable) and
    `install_hint`, and implement `detect_gpu`, `runner` and `settings`.

    Args:
        store: the `ModelStore` that loads and converts model files.
        threads: intra-op threads (None: the number of usable cores).
        jit: compile with XLA where the engine supports it (tf only).

    Attributes:
        one_at_a_time: True when only one runner of this engine exists at a
            time (the "blocks" timing order; set by `create_engine`), so thread
            pools may keep busy-waiting between calls as they do by default
            (ONNX Runtime's spinning threads).
    """

    name = ""
    package = ""
    install_hint = ""
    one_at_a_time = False

    def __init__(self, store, threads=None, jit=False):
        self.store = store
        self.threads = threads or environment.usable_cores()
        self.jit = jit

    @classmethod
    def is_installed(cls):
        """Whether the engine's package can be imported (without importing it)."""
        return importlib.util.find_spec(cls.package) is not None

    def detect_gpu(self):
        """Whether this engine can run on a GPU here."""
        raise NotImplementedError

    def resolve_device(self, requested):
        """Maps "auto" / "cpu" / "gpu" to the device this engine will use.

        Raises:
            ValueError: if the device is unknown, or "gpu" is asked for and this
                engine sees no GPU.
        """
        if requested not in DEVICES:
            raise ValueError(
                f"unknown device '{requested}'; use one of {', '.join(DEVICES)}."
            )
        if requested == "auto":
            return "gpu" if self.detect_gpu() else "cpu"
        if requested == "gpu" and not self.detect_gpu():
            raise ValueError(
                f"device 'gpu' was requested but engine '{self.name}' sees no GPU; "
                f"install the GPU build ({self.install_hint}) or use --device cpu."
            )
        return requested

    def runner(self, source, batch_size, device, inputs):
        """A zero-argument callable that runs one inference on `inputs`."""
        raise NotImplementedError

    def settings(self):
        """A JSON-ready dict of the threads and options this engine runs with."""
        raise NotImplementedError


def create_engine(name, store, threads=None, jit=False, one_at_a_time=False):
    """Creates the engine called `name`.

    Args:
        name: "tf", "onnxruntime", "keras", "litert" or "openvino" (see
            `engine_names()`).
        store: the `ModelStore` shared by all engines of a run.
        threads: intra-op threads (None: the number of usable cores).
        jit: XLA compilation for the tf engine.
        one_at_a_time: only one of its runners will exist at a time (the
            "blocks" timing order): ONNX Runtime then keeps its spinning threads.

    Returns:
        An `Engine`.

    Raises:
        ValueError: if the engine name is unknown.
        ImportError: if the engine's package is not installed.

    Example:
        >>> engine = create_engine("onnxruntime", ModelStore("/tmp/p"), threads=2)
    """
    if name not in _ENGINES:
        raise ValueError(
            f"unknown engine '{name}'; use one of {', '.join(engine_names())}."
        )
    cls = _ENGINES[name]
    if not cls.is_installed():
        raise ImportError(
            f"engine '{name}' needs the '{cls.package}' package, which is not "
            f"installed; install it ({cls.install_hint}) or drop '{name}' from "
            "the engines."
        )
    engine = cls(store, threads=threads, jit=jit)
    engine.one_at_a_time = one_at_a_time  # read when runners are made
    return engine


@register_engine
class TensorFlowEngine(Engine):
    """tf.function over a Keras model or a SavedModel signature, optional XLA."""

    name = "tf"
    package = "tensorflow"
    install_hint = "pip install tensorflow"

    def __init__(self, store, threads=None, jit=False):
        super().__init__(store, threads=threads, jit=jit)
        import tensorflow as tf

        self._tf = tf
        self._threads_note = "set"
        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.threads)
            tf.config.threading.set_inter_op_parallelism_threads(self.threads)
        except RuntimeError:
            # TensorFlow was initialised earlier in this process: keep its threads.
            self._threads_note = "TensorFlow already initialised; its threads kept"

    def detect_gpu(self):
        return bool(self._tf.config.list_physical_devices("GPU"))

    def _model_call(self, source):
        if source.kind == KERAS:
            import keras

            if keras.backend.backend() != "tensorflow":
                raise ValueError(
                    f"engine 'tf' runs '{source.path}' through Keras, which uses the "
                    f"'{keras.backend.backend()}' backend; set "
                    "KERAS_BACKEND=tensorflow or use --engines keras."
                )
            model = self.store.keras_model(source)
            return lambda x: model(x, training=False)
        if source.kind == SAVED_MODEL:
            _, signature, input_name = self.store.saved_model(source)
            return lambda x: signature(**{input_name: x})
        if source.kind == TFLITE:
            raise ValueError(
                f"engine 'tf' cannot run the .tflite file '{source.path}'; use "
                "--engines litert (or onnxruntime, openvino), or pass the .keras / "
                "SavedModel form of the model."
            )
        raise ValueError(
            f"engine 'tf' cannot run the ONNX file '{source.path}'; use --engines "
            "onnxruntime, or pass the .keras / SavedModel form of the model."
        )

    def runner(self, source, batch_size, device, inputs):
        tf = self._tf
        tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
        function = tf.function(self._model_call(source), jit_compile=self.jit)
        with tf.device(tf_device):
            x = tf.constant(inputs)

        def run():
            with tf.device(tf_device):
                outputs = function(x)
            for output in tf.nest.flatten(outputs):
                output.numpy()  # Blocks until the (possibly GPU) result is ready.

        return run

    def settings(self):
        threading = self._tf.config.threading
        return {
            "intra_op_threads": threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": threading.get_inter_op_parallelism_threads(),
            "threads_note": self._threads_note,
            "xla_jit": self.jit,
            "denormals": "flushed to zero by TensorFlow's own op threads",
        }


@register_engine
class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session: CPU provider, or TensorRT / CUDA when installed."""

    name = "onnxruntime"
    package = "onnxruntime"
    install_hint = "pip install onnxruntime, or onnxruntime-gpu for CUDA"
    _GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def __init__(self, store, threads=None, jit=False):
        super().__init__(store, threads=threads, jit=jit)
        import onnxruntime

        self._ort = onnxruntime
        self._providers_used = []

    def detect_gpu(self):
        available = self._ort.get_available_providers()
        return any(p in available for p in self._GPU_PROVIDERS)

    def _providers(self, device):
        if device == "cpu":
            return ["CPUExecutionProvider"]
        available = self._ort.get_available_providers()
        gpu = [p for p in self._GPU_PROVIDERS if p in available]
        return gpu + ["CPUExecutionProvider"]

    def _session_options(self):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = (
            self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        # Each session owns a thread pool whose idle threads spin by default. With
        # several sessions timed round-robin, the spinning threads of the models
        # not running steal the cores of the one that is (measured: VGG-16 dense
        # at batch 1 went from 4.9 ms to 25 ms on 2 cores), so spinning is off,
        # unless only one session exists at a time (the "blocks" order).
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", self._spinning()
        )
        return options

    def _spinning(self):
        return "1" if self.one_at_a_time else "0"

    def runner(self, source, batch_size, device, inputs):
        path = self.store.onnx_file(source)
        session = self._ort.InferenceSession(
            path, self._session_options(), providers=self._providers(device)
        )
        self._providers_used = session.get_providers()
        graph_input = session.get_inputs()[0]
        batch_dim = graph_input.shape[0]
        if isinstance(batch_dim, int) and batch_dim != batch_size:
            raise ValueError(
                f"'{path}' has a fixed batch size of {batch_dim}, so it cannot run "
                f"batch {batch_size}; export it with a dynamic batch dimension "
                "(keras.Input without batch_size) or profile batch size "
                f"{batch_dim} only."
            )
        feed = {graph_input.name: inputs}
        return lambda: session.run(None, feed)

    def settings(self):
        return {
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization": "all",
            "providers": self._providers_used,
            "denormals": "session.set_denormal_as_zero=1",
            "allow_spinning": int(self._spinning()),
            "sessions": (
                "one at a time, a fresh one per block"
                if self.one_at_a_time
                else "all open at once"
            ),
        }


@register_engine
class KerasEngine(Engine):
    """`model.predict_on_batch` on whichever KERAS_BACKEND is active (JAX, torch...)."""

    name = "keras"
    package = "keras"
    install_hint = "pip install keras plus a backend (jax, torch or tensorflow)"

    def __init__(self, store, threads=None, jit=False):
        super().__init__(store, threads=threads, jit=jit)
        import keras

        self._backend = keras.backend.backend()
        self._denormals = "backend default"
        if self._backend == "torch":
            import torch

            torch.set_flush_denormal(True)
            self._denormals = "torch.set_flush_denormal(True)"

    def detect_gpu(self):
        if self._backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if self._backend == "torch":
            import torch

            return torch.cuda.is_available()
        if self._backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        return False

    def _device_scope(self, device):
        """A context that places computation on `device`, where the backend can."""
        if self._backend == "jax":
            import jax

            return jax.default_device(jax.devices(device)[0])
        if self._backend == "tensorflow":
            import tensorflow as tf

            return tf.device("/GPU:0" if device == "gpu" else "/CPU:0")
        return contextlib.nullcontext()

    def runner(self, source, batch_size, device, inputs):
        if source.kind != KERAS:
            raise ValueError(
                f"engine 'keras' needs a .keras file, got '{source.path}' "
                f"({source.kind}); use --engines tf, onnxruntime, litert or "
                "openvino for it."
            )
        model = self.store.keras_model(source)

        def run():
            with self._device_scope(device):
                model.predict_on_batch(inputs)  # Returns NumPy: blocks.

        return run

    def settings(self):
        return {
            "backend": self._backend,
            "call": "model.predict_on_batch",
            "denormals": self._denormals,
        }


def _fixed_batch_error(path, batch_dim, batch_size):
    return ValueError(
        f"'{path}' has a fixed batch size of {batch_dim}, so it cannot run batch "
        f"{batch_size}; export it with a dynamic batch dimension (keras.Input "
        f"without batch_size) or profile batch size {batch_dim} only."
    )


@register_engine
class LiteRTEngine(Engine):
    """The LiteRT (TFLite) interpreter on the CPU, XNNPACK delegate, num_threads.

    Runs .tflite files; .keras and SavedModel sources are converted to a float
    .tflite once (`ModelStore.tflite_file`). Uses ai-edge-litert's `Interpreter`
    when installed, else TensorFlow's `tf.lite.Interpreter`. Each run sets the
    input, invokes and copies the outputs out; full-integer files get their float
    inputs quantized once, beforehand, and return their raw int8 outputs.

    Example:
        >>> engine = create_engine("litert", ModelStore("/tmp/p"), threads=2)
        >>> run = engine.runner(open_source("model.tflite"), 8, "cpu", images)
    """

    name = "litert"
    package = "ai_edge_litert"
    install_hint = (
        "pip install ai-edge-litert, or keras-admm[litert]; with TensorFlow "
        "installed, tf.lite.Interpreter is used instead"
    )

    def __init__(self, store, threads=None, jit=False):
        super().__init__(store, threads=threads, jit=jit)
        self._interpreter = None
        self._converted = []

    @classmethod
    def is_installed(cls):
        """ai-edge-litert, or TensorFlow (whose tf.lite.Interpreter is the fallback)."""
        return any(
            importlib.util.find_spec(name) is not None
            for name in (cls.package, "tensorflow")
        )

    def detect_gpu(self):
        return False  # The GPU delegate is not part of the Python packages.

    def resolve_device(self, requested):
        if requested == "gpu":
            raise ValueError(
                "device 'gpu' was requested but engine 'litert' runs on the CPU only "
                "(its Python package has no GPU delegate); use --device cpu or auto."
            )
        return super().resolve_device(requested)

    def runner(self, source, batch_size, device, inputs):
        import numpy as np

        if source.kind == ONNX:
            raise ValueError(
                f"engine 'litert' cannot run the ONNX file '{source.path}' (there is "
                "no ONNX to LiteRT converter here); use --engines onnxruntime or "
                "openvino, or pass the .keras, SavedModel or .tflite form."
            )
        path = self.store.tflite_file(source)
        if path != source.path:
            self._converted.append(source.name)
        interpreter, self._interpreter = tflite_interpreter(path, self.threads)
        details = interpreter.get_input_details()
        if len(details) != 1:
            raise ValueError(
                f"'{path}' has {len(details)} inputs; the profiler times "
                "single-input models only."
            )
        detail = details[0]
        signature = detail.get("shape_signature", detail["shape"])
        if signature[0] < 0:
            interpreter.resize_tensor_input(
                detail["index"], [batch_size, *inputs.shape[1:]], strict=True
            )
        elif signature[0] != batch_size:
            raise _fixed_batch_error(path, int(signature[0]), batch_size)
        interpreter.allocate_tensors()
        x = np.asarray(inputs)
        dtype = np.dtype(detail["dtype"])
        scale, zero = detail["quantization"]
        if dtype.kind in "iu" and scale > 0:  # full-integer: quantize it once.
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        x = x.astype(dtype)
        index = detail["index"]
        outputs = [d["index"] for d in interpreter.get_output_details()]

        def run():
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            return [interpreter.get_tensor(i) for i in outputs]

        return run

    def settings(self):
        return {
            "interpreter": self._interpreter,
            "num_threads": self.threads,
            "delegate": "XNNPACK (the interpreter's default CPU delegate)",
            "converted_to_tflite": list(dict.fromkeys(self._converted)),
        }


def _json_value(value):
    """An OpenVINO property as JSON: numbers and strings as they are, types by name."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    return str(value)


@register_engine
class OpenVINOEngine(Engine):
    """An OpenVINO compiled model: CPU plugin (or GPU), f32, latency hint.

    Runs .onnx and .tflite files as they are; .keras and SavedModel sources go
    through their ONNX export (`ModelStore.onnx_file`). Each model is reshaped to
    the static batch size, compiled with INFERENCE_NUM_THREADS = threads,
    INFERENCE_PRECISION_HINT = f32 (no silent bf16 / f16 on CPUs or GPUs that
    have it, so outputs match the other engines) and PERFORMANCE_HINT = LATENCY,
    and run with one synchronous infer request.

    Example:
        >>> engine = create_engine("openvino", ModelStore("/tmp/p"), threads=2)
        >>> run = engine.runner(open_source("model.onnx"), 8, "cpu", images)
    """

    name = "openvino"
    package = "openvino"
    install_hint = "pip install openvino, or keras-admm[openvino]"

    def __init__(self, store, threads=None, jit=False):
        super().__init__(store, threads=threads, jit=jit)
        import openvino

        self._ov = openvino
        self._core = openvino.Core()
        self._properties = {}  # the last compiled model's, for settings()

    def detect_gpu(self):
        return any(d.startswith("GPU") for d in self._core.available_devices)

    def _config(self, device):
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.threads
            supported = self._core.get_property("CPU", "SUPPORTED_PROPERTIES")
            if "CPU_DENORMALS_OPTIMIZATION" in supported:
                config["CPU_DENORMALS_OPTIMIZATION"] = True  # flush to zero
        return config

    def runner(self, source, batch_size, device, inputs):
        path = source.path if source.kind == TFLITE else self.store.onnx_file(source)
        try:
            model = self._core.read_model(path)
        except Exception as error:  # OpenVINO raises RuntimeError subclasses.
            raise ValueError(
                f"OpenVINO could not read '{path}' ({type(error).__name__}: "
                f"{error}); export the model again, or use --engines onnxruntime."
            ) from error
        if len(model.inputs) != 1:
            raise ValueError(
                f"'{path}' has {len(model.inputs)} inputs; the profiler times "
                "single-input models only."
            )
        batch_dim = model.inputs[0].get_partial_shape()[0]
        if batch_dim.is_static and batch_dim.get_length() != batch_size:
            raise _fixed_batch_error(path, batch_dim.get_length(), batch_size)
        ov_device = "GPU" if device == "gpu" else "CPU"
        try:
            model.reshape([batch_size, *inputs.shape[1:]])  # static shapes: faster
            compiled = self._core.compile_model(
                model, ov_device, self._config(ov_device)
            )
        except RuntimeError as error:
            raise ValueError(
                f"OpenVINO could not compile '{path}' for batch {batch_size} on "
                f"{ov_device} ({error}); check that the model has a dynamic batch "
                "dimension, or use --engines onnxruntime."
            ) from error
        self._properties = self._read_properties(compiled)
        request = compiled.create_infer_request()

        def run():
            return request.infer({0: inputs})  # Synchronous: returns the outputs.

        return run

    def _read_properties(self, compiled):
        """The properties `settings()` reports, read once after compiling (so no
        compiled model, and its threads, outlives its runner)."""
        properties = {}
        for name in (
            "INFERENCE_NUM_THREADS",
            "INFERENCE_PRECISION_HINT",
            "PERFORMANCE_HINT",
            "NUM_STREAMS",
            "CPU_DENORMALS_OPTIMIZATION",
            "EXECUTION_DEVICES",
        ):
            try:
                value = compiled.get_property(name)
            except RuntimeError:  # not a property of this device's plugin
                continue
            properties[name.lower()] = _json_value(value)
        return properties

    def settings(self):
        """The version and the properties the last compiled model reports."""
        settings = {"version": self._ov.get_version(), **self._properties}
        settings["infer"] = "one synchronous InferRequest, inputs copied"
        return settings


__all__ = [
    "DEVICES",
    "Engine",
    "KerasEngine",
    "LiteRTEngine",
    "OnnxRuntimeEngine",
    "OpenVINOEngine",
    "TensorFlowEngine",
    "create_engine",
    "engine_names",
    "register_engine",
]
