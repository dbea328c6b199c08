r"""Benchmark: how long compact() takes on a ResNet50-sized model.

Builds keras.applications.ResNet50(weights=None) (25.6M parameters), gives it
random BN statistics and biases, hard-prunes it with a group-aware Filter plan,
and times DependencyGraph construction plus compact() (the median of --repeats
runs), then checks the compact model's outputs against the pruned model's.

    python tools/bench_compact.py                      # filter:0.5, 3 repeats
    python tools/bench_compact.py --sparsity filter:0.7 --align 8
    python tools/bench_compact.py --output_dir runs/bench  # also bench_compact.json
"""

import json
import os
import time

import common_flags
from absl import app, flags

RESULTS_FILE = "bench_compact.json"

_SPARSITY = common_flags.sparsity("filter:0.5", "Group-aware plan type.")
_ALIGN = common_flags.align(1, "compact(align=...).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed compact() runs.")
_OUTPUT_DIR = common_flags.output_dir(
    None, f"Optional directory for the results ({RESULTS_FILE})."
)

flags.register_validator("repeats", lambda v: v > 0, "--repeats must be > 0")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    import keras_admm
    from keras_admm.compaction import compact
    from keras_admm.testing import fuzz

    model = keras.applications.ResNet50(weights=None)
    fuzz.randomize_weights(model, 0)
    plan = keras_admm.PruningPlan.uniform(model, _SPARSITY.value)
    start = time.perf_counter()
    keras_admm.hard_prune(model, plan, graph=True)
    prune_s = time.perf_counter() - start
    times = []
    for _ in range(_REPEATS.value):
        keras.backend.clear_session()
        start = time.perf_counter()
        small, summary = compact(model, align=_ALIGN.value, return_summary=True)
        times.append(time.perf_counter() - start)
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype("float32")
    error = fuzz.max_relative_error(model(x), small(x))
    result = {
        "model": "ResNet50",
        "sparsity": _SPARSITY.value,
        "align": _ALIGN.value,
        "cpu_count": os.cpu_count(),
        "group_aware_hard_prune_s": prune_s,
        "compact_s": times,
        "compact_median_s": float(np.median(times)),
        "params_before": int(model.count_params()),
        "params_after": int(small.count_params()),
        "flops_before": summary.totals["flops_before"],
        "flops_after": summary.totals["flops_after"],
        "max_relative_error": error,
    }
    print(
        f"ResNet50, {_SPARSITY.value} group-aware, align={_ALIGN.value}: "
        f"compact() median {result['compact_median_s']:.1f} s over "
        f"{_REPEATS.value} runs (each: {', '.join(f'{t:.1f}' for t in times)} s; "
        f"group-aware hard_prune {prune_s:.1f} s); params "
        f"{result['params_before'] / 1e6:.1f}M -> {result['params_after'] / 1e6:.1f}M, "
        f"FLOPs {summary.totals['flops_before'] / 1e9:.2f}G -> "
        f"{summary.totals['flops_after'] / 1e9:.2f}G; max relative error {error:.1e}"
    )
    if _OUTPUT_DIR.value:
        os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
        with open(os.path.join(_OUTPUT_DIR.value, RESULTS_FILE), "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(main)
