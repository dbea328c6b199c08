r"""Benchmark: cost of a training step with ADMMWrapper(Adam) against Adam alone.

For each model, two identical copies are compiled, one with Adam and one with
ADMMWrapper(Adam, plan). After warm-up, single train steps of the two are timed
in alternating blocks (so load from other processes hits both alike), and the
median step time of each is reported with their ratio. The ADMM Z/U update runs
every --admm_steps steps and is included in the timed steps (amortised), as in
real training.

    python tools/bench_overhead.py                       # LeNet-5 and ResNet-20
    python tools/bench_overhead.py --models resnet20 --steps 300 \
        --output_dir docs/bench                        # writes overhead.json
    python tools/bench_overhead.py --backend jax --output_dir docs/bench
                                                       # overhead_jax.json

Keras picks its backend when it is first imported, so --backend is applied
before that (it overrides KERAS_BACKEND).
"""

import json
import os
import time

import common_flags
from absl import app, flags

RESULTS_FILE = "overhead.json"  # overhead_<backend>.json on other backends
BACKENDS = ("tensorflow", "jax", "torch")

_BACKEND = flags.DEFINE_enum(
    "backend",
    os.environ.get("KERAS_BACKEND", "tensorflow"),
    BACKENDS,
    "Keras backend to time (default: $KERAS_BACKEND, else tensorflow).",
)
_MODELS = flags.DEFINE_list("models", ["lenet5", "resnet20"], "lenet5, resnet20.")
_BATCH_SIZE = common_flags.batch_size(64)
_STEPS = flags.DEFINE_integer("steps", 200, "Timed steps per optimizer.")
_WARMUP = common_flags.warmup(20, "Untimed steps per optimizer first.")
_BLOCK = flags.DEFINE_integer("block", 10, "Steps per alternating block.")
_ADMM_STEPS = flags.DEFINE_integer("admm_steps", 100, "Steps between Z/U updates.")
_SPARSITY = common_flags.sparsity("filter_shape:0.5:0.5", "Planned type.")
flags.register_validator(
    "sparsity",
    common_flags.is_sparsity_text,
    "--sparsity must be a sparsity text; e.g. filter:0.5 or filter_shape:0.5:0.5",
)
_OUTPUT_DIR = common_flags.output_dir(
    None, f"Optional directory for the results ({RESULTS_FILE})."
)

flags.register_validator("steps", lambda v: v > 0, "--steps must be > 0")
flags.register_validator("block", lambda v: v > 0, "--block must be > 0")


def _build(name):
    from keras_admm import models

    if name == "lenet5":
        return models.lenet5(), (28, 28, 1)
    if name == "resnet20":
        return models.resnet_cifar(20), (32, 32, 3)
    raise app.UsageError(f"Unknown model {name!r}: use lenet5 or resnet20.")


def _compiled_pair(name):
    import keras

    import keras_admm

    pair = {}
    for kind in ("adam", "admm"):
        keras.utils.set_random_seed(0)
        model, input_shape = _build(name)
        optimizer = keras.optimizers.Adam(1e-3)
        if kind == "admm":
            plan = keras_admm.PruningPlan.uniform(model, _SPARSITY.value)
            optimizer = keras_admm.ADMMWrapper(
                optimizer, plan, admm_steps=_ADMM_STEPS.value
            )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        pair[kind] = model
    return pair, input_shape


def _time_model(name):
    import numpy as np

    pair, input_shape = _compiled_pair(name)
    rng = np.random.RandomState(0)
    x = rng.rand(_BATCH_SIZE.value, *input_shape).astype("float32")
    y = rng.randint(0, 10, _BATCH_SIZE.value)
    for model in pair.values():
        for _ in range(_WARMUP.value):
            model.train_on_batch(x, y)
    times = {kind: [] for kind in pair}
    while min(len(t) for t in times.values()) < _STEPS.value:
        for kind, model in pair.items():
            for _ in range(_BLOCK.value):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[kind].append(time.perf_counter() - start)
    medians = {kind: float(np.median(t[: _STEPS.value])) for kind, t in times.items()}
    means = {kind: float(np.mean(t[: _STEPS.value])) for kind, t in times.items()}
    planned = len(pair["admm"].optimizer.plan.targets)
    return {
        "model": name,
        "planned_layers": planned,
        "params": int(pair["adam"].count_params()),
        "median_step_ms": {k: 1e3 * v for k, v in medians.items()},
        "mean_step_ms": {k: 1e3 * v for k, v in means.items()},
        "ratio_median": medians["admm"] / medians["adam"],
        "ratio_mean": means["admm"] / means["adam"],
    }


def _backend_version(backend):
    import importlib

    return importlib.import_module(backend).__version__


def main(argv):
    del argv
    import platform
    import sys

    if "keras" in sys.modules and (
        sys.modules["keras"].backend.backend() != _BACKEND.value
    ):
        raise app.UsageError(
            f"Keras was imported with another backend before --backend "
            f"{_BACKEND.value} could apply; run this script as a program."
        )
    os.environ["KERAS_BACKEND"] = _BACKEND.value
    import keras

    results = []
    for name in _MODELS.value:
        result = _time_model(name)
        results.append(result)
        print(
            f"{name:10s} Adam {result['median_step_ms']['adam']:7.2f} ms  "
            f"ADMM {result['median_step_ms']['admm']:7.2f} ms  "
            f"ratio {result['ratio_median']:.3f} (median), "
            f"{result['ratio_mean']:.3f} (mean, includes Z/U updates)"
        )
    report = {
        "what": "train step time, ADMMWrapper(Adam) vs Adam, same model and data",
        "backend": keras.backend.backend(),
        "backend_version": _backend_version(keras.backend.backend()),
        "batch_size": _BATCH_SIZE.value,
        "steps": _STEPS.value,
        "admm_steps": _ADMM_STEPS.value,
        "sparsity": _SPARSITY.value,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "keras": keras.__version__,
        "results": results,
    }
    if _OUTPUT_DIR.value:
        os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
        name = RESULTS_FILE
        if _BACKEND.value != "tensorflow":
            name = RESULTS_FILE.replace(".json", f"_{_BACKEND.value}.json")
        path = os.path.join(_OUTPUT_DIR.value, name)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
