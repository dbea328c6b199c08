r"""tfmot's prune_low_magnitude on LeNet-5 in tf_keras: accuracy and (no) speedup.

TensorFlow Model Optimization (tfmot 0.8) only works with tf_keras (Keras 2); it
rejects Keras 3 models. This script therefore runs in its own process, sets
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, rebuilds the Caffe LeNet-5
of `keras_admm.models.lenet5` in tf_keras (same layers, same order, so the Keras 3
model's `get_weights()` load unchanged), and for each point of --points:

1. prunes the named layers with `prune_low_magnitude`: unstructured magnitude
   pruning on tfmot's PolynomialDecay schedule (sparsity 0 -> the layer's target
   over the phase-1 epochs, `frequency` steps between mask updates), or 2:4
   (`sparsity_m_by_n=(2, 4)`, ConstantSparsity from step 0);
2. trains phase 1 (`epochs - finetune_epochs` epochs, Adam at `learning_rate`)
   and phase 2 (`finetune_epochs`, a fresh Adam at `finetune_learning_rate`,
   masks held): the same budget and learning rates as tools/harness/methods.py;
3. strips the pruning wrappers (`strip_pruning`) and reports held-out accuracy,
   per-layer weight sparsity, the conv FLOPs and weights reductions (counted as
   keras_admm.sparsity_report counts them: non-zero kernel weights x output
   positions), and the median latency of the stripped model against the dense
   tf_keras model with the same weights, batch 1 and 32, timed interleaved in
   this process after a warm-up. Zeros in a dense kernel are still multiplied,
   so the speedup is about 1.0x.

Inputs are files written by tools/compare.py (which runs this script):

    TF_USE_LEGACY_KERAS=1 python tools/tfmot_baseline.py \
        --weights runs/compare/dense_weights.npz --data_file runs/compare/data.npz \
        --points runs/compare/tfmot_points.json --output_dir runs/compare

(the results go to <output_dir>/tfmot.json; without --output_dir they are printed).

--points is JSON: {"epochs": 12, "finetune_epochs": 4, "batch_size": 64,
"learning_rate": 1e-3, "finetune_learning_rate": 3e-4, "mask_updates": 16,
"seed": 0, "points": [{"name": "unstructured 8x", "kind": "unstructured",
"level": 8, "sparsity": {"conv1": 0.696, "conv2": 0.907, "fc1": 0.9}},
{"name": "2:4", "kind": "m_by_n", "layers": ["conv2", "fc1"]}]}.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import common_flags  # noqa: E402
from absl import app, flags  # noqa: E402

RESULTS_FILE = "tfmot.json"

_WEIGHTS = flags.DEFINE_string(
    "weights", None, "npz of the dense Keras 3 LeNet-5's get_weights().", required=True
)
_DATA_FILE = flags.DEFINE_string(
    "data_file",
    None,
    "npz with x_train (uint8 or float in [0, 1]), y_train, x_test, y_test.",
    required=True,
)
_POINTS = flags.DEFINE_string(
    "points", None, "JSON file (or text) with the budget and points.", required=True
)
_OUTPUT_DIR = common_flags.output_dir(
    None, f"Where to write the JSON results ({RESULTS_FILE}; unset: print them)."
)
_LATENCY_RUNS = flags.DEFINE_integer(
    "latency_runs", 200, "Timed calls per model and batch size.", lower_bound=1
)
_WARMUP = common_flags.warmup(20, "Untimed calls per model first.")
_THREADS = common_flags.threads(None, "Intra-op threads (default: TensorFlow's).")
_VERBOSE = flags.DEFINE_integer("verbose", 0, "Keras fit verbosity.")

_BUDGET_KEYS = {
    "epochs": 12,
    "finetune_epochs": 4,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "finetune_learning_rate": 3e-4,
    "mask_updates": 16,
    "seed": 0,
}


def lenet5_tf_keras(tf_keras):
    """The Caffe LeNet-5 of keras_admm.models.lenet5, in tf_keras (logits out)."""
    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1)),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(10, name="fc2"),
        ],
        name="lenet5",
    )


def load_points(text_or_path):
    """The budget and points from JSON text or a file, defaults filled in."""
    text = text_or_path
    if not text_or_path.lstrip().startswith("{"):
        with open(text_or_path) as f:
            text = f.read()
    config = json.loads(text)
    if not config.get("points"):
        raise ValueError(
            "--points needs a non-empty 'points' list, e.g. "
            '{"points": [{"name": "2:4", "kind": "m_by_n", "layers": ["conv2"]}]}.'
        )
    for key, default in _BUDGET_KEYS.items():
        config.setdefault(key, default)
    if not 0 <= config["finetune_epochs"] <= config["epochs"]:
        raise ValueError(
            f"finetune_epochs must be in [0, epochs], got {config['finetune_epochs']}"
            f" of {config['epochs']}."
        )
    for point in config["points"]:
        if point.get("kind") not in ("unstructured", "m_by_n"):
            raise ValueError(
                f"Point {point.get('name')!r} has kind {point.get('kind')!r}; use "
                "'unstructured' (with a 'sparsity' map) or 'm_by_n' (with 'layers')."
            )
    return config


def load_data(path):
    import numpy as np

    with np.load(path) as data:
        arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for key in ("x_train", "x_test"):
        if arrays[key].dtype == np.uint8:
            arrays[key] = arrays[key].astype("float32") / 255.0
    return arrays


def kernel_stats(model):
    """Per kernel layer: weights, non-zeros, FLOPs before / after (report's rule)."""
    import numpy as np

    rows = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        value = kernel.numpy()
        is_conv = len(value.shape) == 4
        positions = math.prod(layer.output_shape[1:-1]) if is_conv else 1
        rows.append(
            {
                "layer": layer.name,
                "op": "conv" if is_conv else "dense",
                "weights": int(value.size),
                "nonzero": int(np.count_nonzero(value)),
                "weight_sparsity": 1.0 - np.count_nonzero(value) / value.size,
                "flops_before": 2 * positions * int(value.size),
                "flops_after": 2 * positions * int(np.count_nonzero(value)),
            }
        )

    def reduction(selected, before, after):
        total_after = sum(r[after] for r in selected)
        return sum(r[before] for r in selected) / total_after if total_after else None

    conv = [r for r in rows if r["op"] == "conv"]
    return {
        "layers": rows,
        "conv_flops_reduction": reduction(conv, "flops_before", "flops_after"),
        "params_reduction": reduction(rows, "weights", "nonzero"),
    }


def time_interleaved(functions, inputs, runs, warmup):
    """Median ms per call of each function, timed round-robin (order rotated)."""
    import numpy as np

    names = list(functions)
    for name in names:
        for _ in range(warmup):
            functions[name](inputs).numpy()
    samples = {name: [] for name in names}
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            functions[name](inputs).numpy()
            samples[name].append(1000.0 * (time.perf_counter() - start))
    return {
        name: {
            "median_ms": float(np.median(values)),
            "p10_ms": float(np.percentile(values, 10)),
            "p90_ms": float(np.percentile(values, 90)),
            "runs": len(values),
        }
        for name, values in samples.items()
    }


def measure_latency(tf, dense, pruned, runs, warmup, seed):
    """{batch: {"dense": .., "pruned": .., "speedup": dense / pruned}}."""
    import numpy as np

    functions = {
        "dense": tf.function(lambda x: dense(x, training=False)),
        "pruned": tf.function(lambda x: pruned(x, training=False)),
    }
    result = {}
    rng = np.random.default_rng(seed)
    for batch in (1, 32):
        inputs = tf.constant(rng.random((batch, 28, 28, 1), dtype="float32"))
        timing = time_interleaved(functions, inputs, runs, warmup)
        timing["speedup"] = timing["dense"]["median_ms"] / timing["pruned"]["median_ms"]
        result[str(batch)] = timing
    return result


def run_point(point, config, weights, data, modules):
    """Prune, train and measure one point; returns its result dict."""
    tf, tf_keras, tfmot = modules
    sparsity = tfmot.sparsity.keras
    tf_keras.utils.set_random_seed(config["seed"])
    base = lenet5_tf_keras(tf_keras)
    base.set_weights(weights)
    steps_per_epoch = math.ceil(len(data["x_train"]) / config["batch_size"])
    phase1_steps = steps_per_epoch * (config["epochs"] - config["finetune_epochs"])
    frequency = max(1, phase1_steps // config["mask_updates"])
    # tfmot updates masks when (step - begin) % frequency == 0 and step <= end:
    # end on a multiple of frequency so the last update reaches the target.
    end_step = max(frequency, frequency * (phase1_steps // frequency))

    if point["kind"] == "unstructured":
        targets = dict(point["sparsity"])

        def wrap(layer):
            if layer.name not in targets:
                return layer
            schedule = sparsity.PolynomialDecay(
                initial_sparsity=0.0,
                final_sparsity=float(targets[layer.name]),
                begin_step=0,
                end_step=end_step,
                power=3,
                frequency=frequency,
            )
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)

        names = set(targets)
    else:
        names = set(point["layers"])

        def wrap(layer):
            if layer.name not in names:
                return layer
            return sparsity.prune_low_magnitude(
                layer,
                pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0),
                sparsity_m_by_n=(2, 4),
            )

    missing = names - {layer.name for layer in base.layers}
    if missing:
        raise ValueError(
            f"Point {point['name']!r} names layers {sorted(missing)} that LeNet-5 "
            "does not have; use conv1, conv2, fc1, fc2."
        )
    model = tf_keras.models.clone_model(base, clone_function=wrap)
    # clone_model re-initialises: copy the dense weights into the wrapped layers.
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        inner.set_weights(base.get_layer(inner.name).get_weights())

    def compile_with(learning_rate):
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    start = time.time()
    for epochs, learning_rate in (
        (config["epochs"] - config["finetune_epochs"], config["learning_rate"]),
        (config["finetune_epochs"], config["finetune_learning_rate"]),
    ):
        if not epochs:
            continue
        compile_with(learning_rate)
        model.fit(
            data["x_train"],
            data["y_train"],
            batch_size=config["batch_size"],
            epochs=epochs,
            verbose=_VERBOSE.value,
            callbacks=[sparsity.UpdatePruningStep()],
        )
    train_seconds = time.time() - start
    stripped = sparsity.strip_pruning(model)
    stripped.compile(
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    accuracy = stripped.evaluate(
        data["x_test"], data["y_test"], batch_size=1000, verbose=0
    )[1]
    stats = kernel_stats(stripped)
    latency = measure_latency(
        tf, base, stripped, _LATENCY_RUNS.value, _WARMUP.value, config["seed"]
    )
    return {
        "name": point["name"],
        "kind": point["kind"],
        "level": point.get("level"),
        "target_sparsity": point.get("sparsity"),
        "layers_pruned": sorted(names),
        "accuracy": float(accuracy),
        "train_seconds": round(train_seconds, 1),
        "schedule": {
            "frequency": frequency,
            "end_step": end_step,
            "phase1_steps": phase1_steps,
        },
        **stats,
        "latency_stripped_vs_dense": latency,
    }


def main(argv):
    del argv
    if _THREADS.value:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
    import numpy as np
    import tensorflow as tf
    import tf_keras

    try:
        import tensorflow_model_optimization as tfmot
    except ImportError:
        raise ImportError(
            "tensorflow-model-optimization is not installed. Install the tfmot "
            "extra: pip install 'keras-admm[tfmot]' (tensorflow-model-optimization "
            "and tf-keras)."
        ) from None

    config = load_points(_POINTS.value)
    data = load_data(_DATA_FILE.value)
    with np.load(_WEIGHTS.value) as stored:
        weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    dense = lenet5_tf_keras(tf_keras)
    try:
        dense.set_weights(weights)
    except ValueError as error:
        raise ValueError(
            f"--weights {_WEIGHTS.value} does not fit the tf_keras LeNet-5 ({error}). "
            "Save np.savez(path, *keras_admm.models.lenet5().get_weights())."
        ) from None
    dense.compile(
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    dense_accuracy = dense.evaluate(
        data["x_test"], data["y_test"], batch_size=1000, verbose=0
    )[1]
    points = []
    for point in config["points"]:
        result = run_point(point, config, weights, data, (tf, tf_keras, tfmot))
        print(
            f"{result['name']}: accuracy {result['accuracy']:.4f}, conv FLOPs "
            f"{result['conv_flops_reduction']:.2f}x, weights "
            f"{result['params_reduction']:.2f}x, speed batch 1 "
            f"{result['latency_stripped_vs_dense']['1']['speedup']:.2f}x, batch 32 "
            f"{result['latency_stripped_vs_dense']['32']['speedup']:.2f}x",
            flush=True,
        )
        points.append(result)
    output = {
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "tensorflow_model_optimization": tfmot.__version__,
        },
        "budget": {k: config[k] for k in _BUDGET_KEYS},
        "dense_accuracy_tf_keras": float(dense_accuracy),
        "latency_protocol": {
            "warmup": _WARMUP.value,
            "runs": _LATENCY_RUNS.value,
            "order": "interleaved round-robin (dense, stripped), start rotated",
            "call": "tf.function(model(x, training=False)), same process",
        },
        "points": points,
    }
    text = json.dumps(output, indent=2)
    if _OUTPUT_DIR.value:
        os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
        with open(os.path.join(_OUTPUT_DIR.value, RESULTS_FILE), "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    app.run(main)
