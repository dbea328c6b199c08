"""`profile_models`: time a baseline and its smaller forms, engine by batch size.

For every engine and batch size the models are timed together, round-robin in one
loop, or one fresh runner at a time in rotated blocks (`TimingProtocol.order`, see
`timing`), and each gets its speedup over the baseline, its FLOP ratio (baseline
FLOPs / its FLOPs) and the efficiency = speedup / FLOP ratio: 1.0 means the FLOP
cut turned fully into speed. The speedup is the ratio of median latencies;
`paired_speedup`, the median of per-round ratios (per-block ratios of medians in
the "blocks" order), is reported beside it because it is steadier when other
processes share the machine.
"""

import functools
import logging
import os
import tempfile

from . import environment, timing
from .engines import DEVICES, create_engine
from .sources import ModelStore, open_source

_LOG = logging.getLogger("keras_admm.profiling")


def _as_list(value, what, example):
    """A list from a list or tuple; a clear error for a bare string or number
    (a string would be read letter by letter)."""
    if isinstance(value, (str, bytes, os.PathLike, int, float)):
        raise TypeError(f"{what} must be a list, got {value!r}; e.g. {example}.")
    return list(value)


def _check_batch_sizes(batch_sizes):
    sizes = _as_list(batch_sizes, "batch_sizes", "batch_sizes=[1, 32]")
    if not sizes:
        raise ValueError("batch_sizes is empty; pass at least one, e.g. [1, 32].")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(
                f"batch size {size!r} is not an int; pass integers such as 1 or 32."
            )
        if size <= 0:
            raise ValueError(
                f"batch size {size} must be > 0; pass positive sizes such as 1 or 32."
            )
    return sizes


def _check_names(sources):
    seen = {}
    for source in sources:
        if source.name in seen:
            raise ValueError(
                f"'{source.path}' and '{seen[source.name]}' share the report name "
                f"'{source.name}'; give each model its own name (names=...)."
            )
        seen[source.name] = source.path


_OWN_INPUTS_NOTE = "each model timed on a random batch of its own input shape"


def _check_input_shapes(store, sources, same_input):
    """{name: input shape}; unless `same_input` is False, all the baseline's.

    Raises ValueError when the input ranks differ, or when `same_input` and a
    model's input shape differs from the baseline's.
    """
    baseline = sources[0]
    expected = store.input_shape(baseline)
    shapes = {baseline.name: expected}
    for source in sources[1:]:
        shape = store.input_shape(source)
        if len(shape) != len(expected):
            raise ValueError(
                f"input ranks differ: '{source.path}' takes {shape} but the baseline "
                f"'{baseline.path}' takes {expected}; compare models whose inputs "
                "have the same rank and layout (e.g. both (height, width, channels))."
            )
        if same_input and shape != expected:
            raise ValueError(
                f"input shapes differ: '{source.path}' takes {shape} but the baseline "
                f"'{baseline.path}' takes {expected}; compare forms of the same model "
                "(same input size and layout, e.g. both channels_last), or pass "
                "same_input=False (--nosame_input) to time e.g. a single layer cut to "
                "fewer input channels against the dense layer."
            )
        shapes[source.name] = shape
    return shapes


_ORDER_TEXT = {
    "interleaved": "interleaved round-robin, start rotated every round",
    "blocks": (
        "{blocks} blocks, one model at a time, start rotated every block; a fresh "
        "runner per model and block (a new ONNX Runtime session, OpenVINO compiled "
        "model or LiteRT interpreter; a new tf.function over the loaded Keras "
        "model), warm-up and repeats per model and block"
    ),
}


def _time(factories, protocol):
    """(all latencies, the series paired across models) per model name."""
    if protocol.order == "blocks":
        blocks = timing.time_in_blocks(factories, protocol)
        samples = {name: [t for b in bs for t in b] for name, bs in blocks.items()}
        medians = {
            name: [timing.percentile(b, 50) for b in bs] for name, bs in blocks.items()
        }
        return samples, medians
    runners = {name: make() for name, make in factories.items()}
    samples = timing.time_interleaved(runners, protocol)
    return samples, samples


def _ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _result_rows(engine_name, device, batch_size, samples, paired, stats, baseline):
    """One result dict per model: latency summary, speedup, FLOP ratio, efficiency.

    `samples` holds every model's latencies; `paired` the series whose entries
    pair up across models (rounds, or block medians) for `paired_speedup`.
    """
    summaries = {n: timing.summarize(s, batch_size) for n, s in samples.items()}
    base_ms = summaries[baseline]["median_ms"]
    base_flops = stats[baseline]["flops"]
    rows = []
    for name, summary in summaries.items():
        speedup = base_ms / summary["median_ms"]
        flop_ratio = _ratio(base_flops, stats[name]["flops"])
        rows.append(
            {
                "model": name,
                "engine": engine_name,
                "device": device,
                "batch_size": batch_size,
                **summary,
                "speedup": speedup,
                "paired_speedup": timing.paired_speedup(paired[baseline], paired[name]),
                "flop_ratio": flop_ratio,
                "efficiency": _ratio(speedup, flop_ratio),
            }
        )
    return rows


def profile_models(
    baseline,
    models=(),
    engines=("onnxruntime",),
    batch_sizes=(1,),
    device="auto",
    threads=None,
    jit=False,
    protocol=None,
    names=None,
    workdir=None,
    notes=(),
    seed=0,
    same_input=True,
):
    """Times a baseline model and other forms of it; returns a JSON-ready report.

    Args:
        baseline: path of the reference model (.keras, SavedModel dir, .onnx or
            .tflite).
        models: paths of the models to compare against it.
        engines: engine names: "tf", "onnxruntime", "keras", "litert",
            "openvino" (see `engines.engine_names()`).
        batch_sizes: positive ints.
        device: "auto" (GPU when the engine sees one), "cpu" or "gpu".
        threads: intra-op threads per engine (None: the usable cores).
        jit: XLA compilation for the tf engine.
        protocol: a `timing.TimingProtocol` (None: its defaults). Its `order`
            "blocks" times one fresh runner (session) at a time, as a deployment
            runs it; ONNX Runtime then keeps its spinning threads on.
        names: report labels, one per model with the baseline first (None: the
            file names).
        workdir: where ONNX and .tflite conversions are written (None: a
            temporary directory).
        notes: free-text lines carried into every report (e.g. how the models
            were made).
        seed: seed of the random input batch.
        same_input: every model must take the baseline's input shape and gets
            the same batch (default). False: each model gets a random batch of
            its own input shape (of the same rank), e.g. one conv layer cut to
            fewer input channels timed against the dense layer.

    Returns:
        A dict with "environment", "protocol", "engines" (their settings),
        "models" (static figures, baseline first), "results" (one row per engine x
        batch size x model) and "notes".

    Raises:
        FileNotFoundError: if a model file is missing.
        ValueError: for a corrupt file, differing input shapes (unless
            same_input=False) or input ranks, an unknown engine or
            device, a batch size <= 0, or duplicate names.
        TypeError: for a batch size that is not an int.
        ImportError: if an engine's package is not installed.

    Example:
        >>> report = profile_models("dense.keras", ["small.keras"],
        ...                         engines=["tf", "onnxruntime"], batch_sizes=[1, 32])
        >>> print(results_table(report))
    """
    import numpy as np

    protocol = protocol or timing.TimingProtocol()
    sizes = _check_batch_sizes(batch_sizes)
    if device not in DEVICES:
        raise ValueError(f"unknown device '{device}'; use one of {', '.join(DEVICES)}.")
    models = _as_list(models, "models", "models=['small.keras']")
    engines = _as_list(engines, "engines", "engines=['onnxruntime']")
    if not engines:
        raise ValueError("engines is empty; pass at least one, e.g. ['onnxruntime'].")
    paths = [baseline, *models]
    names = list(names) if names is not None else [None] * len(paths)
    if len(names) != len(paths):
        raise ValueError(
            f"got {len(names)} names for {len(paths)} models (baseline included); "
            "pass one name per model or none."
        )
    sources = [open_source(p, n) for p, n in zip(paths, names)]
    _check_names(sources)
    workdir = workdir or tempfile.mkdtemp(prefix="keras_admm_profile_")
    store = ModelStore(os.path.join(workdir, "onnx"))
    # Engines first: TensorFlow threads can only be set before it initialises.
    one_at_a_time = protocol.order == "blocks"
    engine_objects = [
        create_engine(e, store, threads, jit, one_at_a_time=one_at_a_time)
        for e in engines
    ]
    input_shapes = _check_input_shapes(store, sources, same_input)
    stats = {s.name: store.stats(s) for s in sources}
    rng = np.random.default_rng(seed)
    results, engine_settings = [], {}
    for engine in engine_objects:
        engine_device = engine.resolve_device(device)
        for batch_size in sizes:
            batches = {}
            for shape in dict.fromkeys(input_shapes.values()):
                batches[shape] = rng.standard_normal((batch_size, *shape), "float32")
            factories = {
                s.name: functools.partial(
                    engine.runner,
                    s,
                    batch_size,
                    engine_device,
                    batches[input_shapes[s.name]],
                )
                for s in sources
            }
            _LOG.info(
                "timing %s batch %d on %s (%s)",
                engine.name,
                batch_size,
                engine_device,
                protocol.order,
            )
            samples, paired = _time(factories, protocol)
            results += _result_rows(
                engine.name,
                engine_device,
                batch_size,
                samples,
                paired,
                stats,
                sources[0].name,
            )
        engine_settings[engine.name] = {"device": engine_device, **engine.settings()}
    return {
        "environment": environment.environment_info(),
        "protocol": {
            "warmup": protocol.warmup,
            "min_repeats": protocol.min_repeats,
            "min_time_s": protocol.min_time_s,
            "max_time_s": protocol.max_time_s,
            "order": _ORDER_TEXT[protocol.order].format(blocks=protocol.blocks),
            "blocks": protocol.blocks if protocol.order == "blocks" else None,
        },
        "engines": engine_settings,
        "baseline": sources[0].name,
        "models": [stats[s.name] for s in sources],
        "results": results,
        "notes": list(notes) + ([] if same_input else [_OWN_INPUTS_NOTE]),
    }
