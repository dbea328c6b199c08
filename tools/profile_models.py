"""Times a dense model against its compact forms: latency, speedup, efficiency.

    python tools/profile_models.py --baseline dense.keras \
        --models compact.keras,compact_a8.keras \
        --engines tf,onnxruntime --batch_sizes 1,32 --output_dir runs/profile

Prints a table and writes JSON, CSV, Markdown and PNG plots into --output_dir.
By default all models stay loaded and are timed round-robin; `--order blocks`
times them one fresh session at a time, as a deployed model runs (ONNX Runtime
keeps its spinning threads on), e.g.

    python tools/profile_models.py --baseline dense.onnx --models small.onnx \
        --batch_sizes 32 --order blocks --blocks 8 --warmup 20 --min_repeats 50 \
        --min_time_s 0

Inputs may be .keras files, SavedModel directories or .onnx files; Keras models are
exported to ONNX on the fly for the onnxruntime engine. The logic lives in
keras_admm.profiling; this script only wires flags to it.
"""

import os
import sys

# This file is named like the standard library's `profile` module: drop its folder
# from the front of the import path (so `import profile` elsewhere still finds the
# stdlib one) and put the repository root there, so keras_admm imports without
# installation; the folder goes to the end, for common_flags.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TOOLS = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _TOOLS:
    sys.path[0] = _REPO
if _TOOLS not in sys.path:
    sys.path.append(_TOOLS)
# Load keras_admm names on first use: ONNX-only runs then never import TensorFlow.
os.environ.setdefault("KERAS_ADMM_LAZY", "1")

import logging as std_logging  # noqa: E402

import common_flags  # noqa: E402
from absl import app, flags  # noqa: E402

_BASELINE = flags.DEFINE_string(
    "baseline", None, "Reference model: .keras, SavedModel dir or .onnx.", required=True
)
_MODELS = flags.DEFINE_list("models", [], "Models to compare with the baseline.")
_NAMES = flags.DEFINE_list(
    "names", None, "Report labels, baseline first (default: file names)."
)
_ENGINES = common_flags.engines(["onnxruntime"])
_BATCH_SIZES = common_flags.batch_sizes([1])
_DEVICE = flags.DEFINE_enum("device", "auto", ["auto", "cpu", "gpu"], "Device.")
_THREADS = common_flags.threads()
_JIT = common_flags.jit()
_WARMUP = common_flags.warmup(3)
_MIN_REPEATS = common_flags.min_repeats(10)
_MIN_TIME = common_flags.min_time_s(1.0)
_OUTPUT_DIR = common_flags.output_dir(None, "Write reports here (optional).")
_SAME_INPUT = flags.DEFINE_bool(
    "same_input",
    True,
    "Every model takes the baseline's input shape (--nosame_input: each gets a "
    "batch of its own shape, e.g. a single layer cut to fewer input channels).",
)
_ORDER = flags.DEFINE_enum(
    "order",
    "interleaved",
    ["interleaved", "blocks"],
    "interleaved: all models loaded, one call each per round (ONNX Runtime's "
    "spinning threads off); blocks: one fresh session at a time, as a deployed "
    "model runs; --warmup, --min_repeats and --min_time_s then apply per model "
    "and block.",
)
_BLOCKS = flags.DEFINE_integer(
    "blocks",
    8,
    "Blocks of --order blocks (each model once per block; a multiple of the "
    "number of models lets each go first equally often).",
    lower_bound=1,
)
_STEM = flags.DEFINE_string("stem", "profile", "File name prefix of the reports.")


def main(argv):
    del argv
    from keras_admm import profiling

    # Progress of the profiler only; TensorFlow and tf2onnx stay at warnings.
    std_logging.getLogger("keras_admm.profiling").setLevel(std_logging.INFO)
    if flags.FLAGS["blocks"].present and _ORDER.value != "blocks":
        sys.exit(
            f"error: --blocks {_BLOCKS.value} only applies to --order blocks; add "
            "--order blocks or drop --blocks."
        )
    try:
        report = _profile(profiling)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        sys.exit(f"error: {error}")
    print(profiling.results_table(report))
    if _OUTPUT_DIR.value:
        paths = profiling.write_reports(report, _OUTPUT_DIR.value, stem=_STEM.value)
        for kind, path in paths.items():
            print(f"{kind}: {path}")


def _profile(profiling):
    """Runs `profiling.profile_models` with the flag values."""
    return profiling.profile_models(
        _BASELINE.value,
        _MODELS.value,
        engines=_ENGINES.value,
        batch_sizes=_BATCH_SIZES.value,
        device=_DEVICE.value,
        threads=_THREADS.value,
        jit=_JIT.value,
        protocol=profiling.TimingProtocol(
            warmup=_WARMUP.value,
            min_repeats=_MIN_REPEATS.value,
            min_time_s=_MIN_TIME.value,
            order=_ORDER.value,
            blocks=_BLOCKS.value,
        ),
        names=_NAMES.value,
        same_input=_SAME_INPUT.value,
    )


if __name__ == "__main__":
    app.run(main)
