"""LatencyTable: measured latency of one layer at reduced channel counts.

A pruned conv layer runs with fewer input channels (its producers lost filters)
and fewer output channels (it lost filters). `LatencyTable.latency_ms(layer,
cin, cout)` times that layer alone at those counts, on one profiler engine and
batch size, and remembers the answer in a JSON file keyed by engine, batch
size, threads and machine, so that the next plan on this machine reuses it.
Conv layers (groups=1, channels last) and Dense layers are modelled;
`supports(layer)` says which.

The layer alone is built as the engine runs it inside a whole model: for the
ONNX engines (onnxruntime, openvino) an ONNX Conv / Gemm in NCHW, as the
converted model has it (a Keras layer converted alone would carry layout
transposes at its input and output that the whole model does not run, and
would dominate small layers); for the others the Keras layer from its config.

Example:

    table = LatencyTable("onnxruntime", batch_size=32)
    table.measure([(layer, 16, 32), (layer, 8, 32)])    # times what is missing
    table.latency_ms(layer, 8, 32)                      # 0.21 (ms, cached)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import weakref

from keras_admm.profiling import environment, timing
from keras_admm.profiling.engines import create_engine
from keras_admm.profiling.sources import ModelStore, open_source

__all__ = ["LatencyTable", "default_cache_dir"]

_LOG = logging.getLogger(__name__)
_CONV_CLASSES = ("Conv1D", "Conv2D", "Conv3D")
_DROPPED_CONFIG = ("name", "filters", "units", "trainable", "dtype")
_TABLE_FORMAT = 2  # bump when the way layers are timed changes: new cache files
_ONNX_ENGINES = ("onnxruntime", "openvino")
_ENGINE_LIBRARIES = {
    "tf": ("tensorflow", "tensorflow-cpu", "keras"),
    "keras": ("keras", "jax", "jaxlib", "torch", "tensorflow"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "tf2onnx"),
    "litert": ("ai-edge-litert", "tensorflow"),
    "openvino": ("openvino", "tf2onnx"),
}


def default_cache_dir() -> str:
    """$KERAS_ADMM_CACHE/latency, else ~/.cache/keras_admm/latency."""
    root = os.environ.get("KERAS_ADMM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_admm"
    )
    return os.path.join(root, "latency")


def _channels_last_input(layer):
    shape = tuple(layer.input.shape)
    return shape[1:-1]


def _unit_kind(layer):
    name = type(layer).__name__
    config = layer.get_config()
    if name in _CONV_CLASSES:
        if config.get("groups", 1) != 1:
            return None, "grouped convolution"
        if config.get("data_format", "channels_last") != "channels_last":
            return None, "channels_first data format"
        return "filters", None
    if name == "Dense":
        return "units", None
    return None, f"{name} layers are not timed alone"


class LatencyTable:
    """Per-layer latencies at reduced channel counts, measured and cached.

    Args:
        engine: a profiler engine name ("onnxruntime", "tf", "litert",
            "openvino", "keras").
        batch_size: the batch size the layers are timed at.
        threads: intra-op threads (None: the usable cores).
        device: "cpu" or "gpu" (as the profiler).
        cache_dir: where the table's JSON file lives (None:
            `default_cache_dir()`); "" keeps it in memory only.
        protocol: the `TimingProtocol` of each layer (None: 3 warm-up calls,
            then at least 15 calls and 0.1 s).

    Raises:
        ValueError / ImportError: an unknown or missing engine, as the profiler.
    """

    def __init__(
        self,
        engine="onnxruntime",
        batch_size=1,
        threads=None,
        device="cpu",
        cache_dir=None,
        protocol=None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.engine_name = engine
        self.batch_size = batch_size
        self.threads = threads or environment.usable_cores()
        self.device = device
        self.protocol = protocol or timing.TimingProtocol(
            warmup=3, min_repeats=15, min_time_s=0.1
        )
        if self.protocol.order != "interleaved":
            raise ValueError(
                f"LatencyTable times units interleaved only, got a protocol with "
                f"order={self.protocol.order!r}; pass TimingProtocol(order="
                "'interleaved') (the default)."
            )
        self._workdir = tempfile.mkdtemp(prefix="keras_admm_latency_")
        # Units and whole-model conversions live there; gone with the table.
        weakref.finalize(self, shutil.rmtree, self._workdir, True)
        self._store = ModelStore(os.path.join(self._workdir, "converted"))
        self._engine = create_engine(engine, self._store, threads=self.threads)
        self.machine = self._machine()
        cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        self.path = (
            os.path.join(
                cache_dir,
                f"{engine}-b{batch_size}-t{self.threads}-{device}-"
                f"{self.machine['key']}.json",
            )
            if cache_dir
            else None
        )
        self.entries = self._load()
        self.measured = 0
        self._signatures = {}

    # ------------------------------------------------------------------ cache
    def _machine(self):
        libraries = environment.library_versions()
        wanted = _ENGINE_LIBRARIES.get(self.engine_name, ())
        facts = {
            "format": _TABLE_FORMAT,
            "cpu": environment.cpu_model(),
            "usable_cores": environment.usable_cores(),
            "threads": self.threads,
            "device": self.device,
            "libraries": {k: libraries.get(k) for k in wanted if libraries.get(k)},
        }
        digest = hashlib.sha1(json.dumps(facts, sort_keys=True).encode()).hexdigest()
        return {**facts, "key": digest[:12]}

    def _load(self):
        if not self.path or not os.path.exists(self.path):
            return {}
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return {str(k): float(v) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            _LOG.warning(
                "ignoring unreadable latency cache %s (%s); it will be rewritten",
                self.path,
                error,
            )
            return {}

    def _save(self):
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        data = {
            "engine": self.engine_name,
            "batch_size": self.batch_size,
            "machine": self.machine,
            "unit": "ms, median",
            "entries": dict(sorted(self.entries.items())),
        }
        partial = f"{self.path}.{os.getpid()}.partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(partial, self.path)

    # ------------------------------------------------------------------ layers
    @staticmethod
    def supports(layer):
        """(True, None) if the layer can be timed alone, else (False, why)."""
        kind, why = _unit_kind(layer)
        return kind is not None, why

    def key(self, layer, cin, cout) -> str:
        """The cache key of `layer` at `cin` input and `cout` output channels."""
        if layer not in self._signatures:  # layers hash by identity
            self._signatures[layer] = self._signature(layer)
        return f"{self._signatures[layer]}:{int(cin)}:{int(cout)}"

    @staticmethod
    def _signature(layer) -> str:
        """Class and config hash: layers that differ only in name share it."""
        kind, why = _unit_kind(layer)
        if kind is None:
            raise ValueError(
                f"Layer '{layer.name}' cannot be timed alone ({why}); only Conv "
                "(groups=1, channels last) and Dense layers have latency tables."
            )
        config = {
            k: v for k, v in layer.get_config().items() if k not in _DROPPED_CONFIG
        }
        spatial = _channels_last_input(layer)
        text = json.dumps(
            [type(layer).__name__, config, list(spatial)], sort_keys=True, default=str
        )
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]
        return f"{type(layer).__name__}:{digest}"

    def _write_unit(self, layer, cin, cout):
        """Writes the layer alone at (cin, cout); returns (path, sample shape)."""
        base = os.path.join(self._workdir, f"unit_{len(self.entries)}")
        if self.engine_name in _ONNX_ENGINES:
            unit = _onnx_unit(layer, cin, cout)
            if unit is not None:
                import onnx

                model, shape = unit
                onnx.save(model, base + ".onnx")
                return base + ".onnx", shape
        import keras

        kind, _ = _unit_kind(layer)
        config = dict(layer.get_config())
        config[kind] = int(cout)
        config["name"] = "unit"
        spatial = _channels_last_input(layer)
        inputs = keras.Input((*spatial, int(cin)))
        keras.Model(inputs, type(layer).from_config(config)(inputs)).save(
            base + ".keras"
        )
        return base + ".keras", (*spatial, int(cin))

    def latency_ms(self, layer, cin, cout) -> float:
        """The layer's median latency (ms) at these counts, timing it if new."""
        key = self.key(layer, cin, cout)
        if key not in self.entries:
            self.measure([(layer, cin, cout)])
        return self.entries[key]

    def measure(self, items, verbose=0) -> int:
        """Times every (layer, cin, cout) not in the table yet; returns how many.

        The table file is rewritten after every 16 new entries, so an
        interrupted sweep keeps what it measured.
        """
        import keras
        import numpy as np

        todo, seen = [], set()
        for layer, cin, cout in items:
            key = self.key(layer, cin, cout)
            if key not in self.entries and key not in seen:
                seen.add(key)
                todo.append((key, layer, int(cin), int(cout)))
        if not todo:
            return 0
        device = self._engine.resolve_device(self.device)
        rng = np.random.default_rng(0)
        bar = (
            keras.utils.Progbar(len(todo), unit_name="layer", interval=10.0)
            if verbose
            else None
        )
        for i, (key, layer, cin, cout) in enumerate(todo):
            path, shape = self._write_unit(layer, cin, cout)
            source = open_source(path)
            inputs = rng.standard_normal((self.batch_size, *shape)).astype("float32")
            runner = self._engine.runner(source, self.batch_size, device, inputs)
            samples = timing.time_interleaved({"unit": runner}, self.protocol)
            self.entries[key] = timing.percentile(samples["unit"], 50) * 1e3
            self.measured += 1
            del runner
            self._store.forget(source)
            os.remove(path)
            if (i + 1) % 16 == 0:
                self._save()
            if bar is not None:
                bar.update(i + 1)
        self._save()
        return len(todo)

    def time_models(self, paths, names=None):
        """Median ms of whole models on this table's engine, timed interleaved.

        Args:
            paths: model files (.keras, .onnx, ...), timed round-robin in one loop.
            names: labels (default: the paths).

        Returns:
            ({name: median ms}, {name: per-round latencies in s}).
        """
        import numpy as np

        names = list(names) if names is not None else [os.fspath(p) for p in paths]
        sources = [open_source(p, n) for p, n in zip(paths, names)]
        device = self._engine.resolve_device(self.device)
        shape = (self.batch_size, *self._store.input_shape(sources[0]))
        inputs = np.random.default_rng(0).standard_normal(shape).astype("float32")
        runners = {
            s.name: self._engine.runner(s, self.batch_size, device, inputs)
            for s in sources
        }
        protocol = timing.TimingProtocol(
            warmup=max(3, self.protocol.warmup), min_repeats=30, min_time_s=2.0
        )
        samples = timing.time_interleaved(runners, protocol)
        return {k: timing.percentile(v, 50) * 1e3 for k, v in samples.items()}, samples


def _same_pads(sizes, kernel, strides, dilations):
    """TensorFlow's "same" padding as ONNX begin and end pads."""
    begins, ends = [], []
    for size, k, stride, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // stride)
        total = max((out - 1) * stride + (k - 1) * d + 1 - size, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def _onnx_unit(layer, cin, cout):
    """(ONNX model, sample shape) of the layer alone in NCHW, or None if the
    layer has no such form here (e.g. causal padding, Dense on rank > 2)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    config = layer.get_config()
    name = type(layer).__name__
    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    if name == "Dense" and len(layer.input.shape) == 2:
        shape = (int(cin),)
        weight = rng.standard_normal((int(cin), int(cout))).astype("float32")
        initializers.append(numpy_helper.from_array(weight, "W"))
        inputs = ["x", "W"]
        if config.get("use_bias", True):
            bias = np.zeros(int(cout), "float32")
            initializers.append(numpy_helper.from_array(bias, "B"))
            inputs.append("B")
        nodes.append(helper.make_node("Gemm", inputs, ["y"]))
        out_dims = ["batch", int(cout)]
    elif name in _CONV_CLASSES and config.get("padding") in ("same", "valid"):
        spatial = [int(d) for d in _channels_last_input(layer)]
        kernel = [int(k) for k in config["kernel_size"]]
        strides = [int(v) for v in config["strides"]]
        dilations = [int(v) for v in config["dilation_rate"]]
        if config["padding"] == "same":
            pads = _same_pads(spatial, kernel, strides, dilations)
        else:
            pads = [0] * (2 * len(spatial))
        shape = (int(cin), *spatial)
        weight = rng.standard_normal((int(cout), int(cin), *kernel)).astype("float32")
        bias = np.zeros(int(cout), "float32")
        initializers += [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(bias, "B"),
        ]
        activation = config.get("activation")
        conv_out = "y" if activation in (None, "linear") else "conv"
        nodes.append(
            helper.make_node(
                "Conv",
                ["x", "W", "B"],
                [conv_out],
                kernel_shape=kernel,
                strides=strides,
                dilations=dilations,
                pads=pads,
            )
        )
        if activation == "relu":
            nodes.append(helper.make_node("Relu", ["conv"], ["y"]))
        elif conv_out != "y":
            return None
        out_dims = ["batch", int(cout)] + [None] * len(spatial)
    else:
        return None
    graph = helper.make_graph(
        nodes,
        "unit",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = min(model.ir_version, 8)
    return model, shape
