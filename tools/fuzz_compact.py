r"""Fuzz compact(): random architectures, group-aware pruning, equal outputs.

Each graph is a seeded random functional model (convolutions, depthwise,
separable, transpose, BN, activations, pooling, padding, merges, Concatenate,
a layer called twice, Flatten -> Dense) with random biases and BN statistics,
hard-pruned with a random group-aware Filter / Channel plan at high ratios
plus stray zero filters; compact() must reproduce its outputs within
--tolerance (relative). Prints each mismatch and the number that matched.

    python tools/fuzz_compact.py --num_graphs 200 --seed 0
"""

import os
import time

import common_flags
from absl import app, flags

_NUM_GRAPHS = flags.DEFINE_integer("num_graphs", 200, "Random graphs to check.")
_SEED = common_flags.seed(0, "Seed of the first graph.")
_TOLERANCE = flags.DEFINE_float("tolerance", 1e-4, "Largest relative error.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print every graph, not only failures.")

flags.register_validator("num_graphs", lambda v: v > 0, "--num_graphs must be > 0")
flags.register_validator("tolerance", lambda v: v > 0, "--tolerance must be > 0")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_admm.testing import fuzz

    def report(result):
        if _VERBOSE.value or not result.matched:
            print(result, flush=True)

    start = time.perf_counter()
    results = fuzz.run(
        _NUM_GRAPHS.value, _SEED.value, _TOLERANCE.value, on_result=report
    )
    matched = sum(r.matched for r in results)
    shrunk = sum(r.params_after < r.params_before for r in results if r.matched)
    worst = max(r.error for r in results)
    print(
        f"matched {matched}/{len(results)} graphs (seeds {_SEED.value}.."
        f"{_SEED.value + len(results) - 1}); {shrunk} of them got smaller; "
        f"worst relative error {worst:.2e}; {time.perf_counter() - start:.0f} s"
    )
    return 0 if matched == len(results) else 1


if __name__ == "__main__":
    app.run(main)
