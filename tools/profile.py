"""Times a dense model against its compact forms: latency, speedup, efficiency.

    python tools/profile.py --baseline dense.keras \
        --models compact.keras,compact_a8.keras \
        --engines tf,onnxruntime --batch_sizes 1,32 --out_dir runs/profile

Prints a table and writes JSON, CSV, Markdown and PNG plots into --out_dir. Inputs
may be .keras files, SavedModel directories or .onnx files; Keras models are exported
to ONNX on the fly for the onnxruntime engine. The logic lives in
keras_admm.profiling; this script only wires flags to it.
"""

import os
import sys

# This file is named like the standard library's `profile` module: drop its folder
# from the import path (so `import profile` elsewhere still finds the stdlib one)
# and put the repository root there, so keras_admm imports without installation.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    sys.path[0] = _REPO
# Load keras_admm names on first use: ONNX-only runs then never import TensorFlow.
os.environ.setdefault("KERAS_ADMM_LAZY", "1")

import logging as std_logging  # noqa: E402

from absl import app, flags  # noqa: E402

_BASELINE = flags.DEFINE_string(
    "baseline", None, "Reference model: .keras, SavedModel dir or .onnx.", required=True
)
_MODELS = flags.DEFINE_list("models", [], "Models to compare with the baseline.")
_NAMES = flags.DEFINE_list(
    "names", None, "Report labels, baseline first (default: file names)."
)
_ENGINES = flags.DEFINE_list(
    "engines", ["onnxruntime"], "Engines: tf, onnxruntime, keras."
)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1"], "Batch sizes, e.g. 1,32.")
_DEVICE = flags.DEFINE_enum("device", "auto", ["auto", "cpu", "gpu"], "Device.")
_THREADS = flags.DEFINE_integer(
    "threads", None, "Intra-op threads (default: usable cores).", lower_bound=1
)
_JIT = flags.DEFINE_bool("jit", False, "XLA-compile the tf engine.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls per model.", lower_bound=0)
_MIN_REPEATS = flags.DEFINE_integer(
    "min_repeats", 10, "Timed calls per model, at least.", lower_bound=1
)
_MIN_TIME = flags.DEFINE_float(
    "min_time_s",
    1.0,
    "Seconds of timing per engine x batch size, at least.",
    lower_bound=0.0,
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Write reports here (optional).")
_STEM = flags.DEFINE_string("stem", "profile", "File name prefix of the reports.")


def _batch_sizes(values):
    try:
        return [int(v) for v in values]
    except ValueError as error:
        raise app.UsageError(
            f"--batch_sizes must be integers, got {values}; e.g. --batch_sizes 1,32."
        ) from error


def main(argv):
    del argv
    from keras_admm import profiling

    # Progress of the profiler only; TensorFlow and tf2onnx stay at warnings.
    std_logging.getLogger("keras_admm.profiling").setLevel(std_logging.INFO)
    try:
        report = _profile(profiling)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        sys.exit(f"error: {error}")
    print(profiling.results_table(report))
    if _OUT_DIR.value:
        paths = profiling.write_reports(report, _OUT_DIR.value, stem=_STEM.value)
        for kind, path in paths.items():
            print(f"{kind}: {path}")


def _profile(profiling):
    """Runs `profiling.profile_models` with the flag values."""
    return profiling.profile_models(
        _BASELINE.value,
        _MODELS.value,
        engines=_ENGINES.value,
        batch_sizes=_batch_sizes(_BATCH_SIZES.value),
        device=_DEVICE.value,
        threads=_THREADS.value,
        jit=_JIT.value,
        protocol=profiling.TimingProtocol(
            warmup=_WARMUP.value,
            min_repeats=_MIN_REPEATS.value,
            min_time_s=_MIN_TIME.value,
        ),
        names=_NAMES.value,
    )


if __name__ == "__main__":
    app.run(main)
