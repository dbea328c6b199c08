r"""ADMM against baseline pruning methods at equal budgets, along conv FLOPs levels.

One run trains LeNet-5 densely once on MNIST (cached in --output_dir), then for
every sparsity type (filter, shape, filter_shape, unstructured) and conv FLOPs
reduction level (2x, 4x, 8x, 16x) derives one pruning plan
(`keras_admm.plan_for_flops_reduction`) and prunes the same pretrained
weights with each method of `harness.methods` (ADMM, one-shot L2 / L1,
gradual polynomial, group lasso) within the same epoch budget, on the same data.
It records held-out accuracy, the conv FLOPs and weights reductions
(`keras_admm.sparsity_report`) and, when `keras_admm.compaction` exists, the
latency of the compacted model (TF and ONNX Runtime, batch 1 and 32, through
`keras_admm.profiling`); otherwise latency is marked "not measured". The two
highest levels run --seeds seeds (the training seed; the data and the pretrained
weights stay fixed). tfmot's prune_low_magnitude (unstructured and 2:4) runs in
its own process through tools/tfmot_baseline.py when tfmot is installed.

    python tools/compare.py                      # the full sweep (about 30 min)
    python tools/compare.py --quick              # a smoke run (about 3 min)
    python tools/compare.py --types filter_shape --levels 8,16 --seeds 3

Writes into --output_dir: points.jsonl (one line per run; a rerun with the same
settings skips the points it holds), comparison.json, comparison.md,
accuracy_vs_flops.png (and accuracy_vs_latency_*.png when latency was measured).
"""

from __future__ import annotations

import dataclasses
import os

import common_flags
from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OUTPUT_DIR = common_flags.output_dir(
    os.path.join(_REPO, "runs", "compare"), "Where to write."
)
_LEVELS = flags.DEFINE_list(
    "levels", ["2", "4", "8", "16"], "Conv FLOPs reduction levels (factors > 1)."
)
_TYPES = flags.DEFINE_list(
    "types",
    ["filter", "shape", "filter_shape", "unstructured"],
    "Sparsity types of the conv layers.",
)
_METHODS = flags.DEFINE_list(
    "methods",
    ["admm", "one_shot_l2", "one_shot_l1", "gradual", "group_lasso"],
    "Methods of tools/harness/methods.py.",
)
_SEEDS = flags.DEFINE_integer(
    "seeds", 3, "Seeds at the --seeded_levels highest levels.", lower_bound=1
)
_SEEDED_LEVELS = flags.DEFINE_integer(
    "seeded_levels",
    2,
    "How many of the highest levels run --seeds seeds.",
    lower_bound=0,
)
_PRETRAIN_EPOCHS = flags.DEFINE_integer(
    "pretrain_epochs", 12, "Dense epochs (once, cached).", lower_bound=1
)
_EPOCHS = flags.DEFINE_integer(
    "epochs", 9, "Total epochs per method after pretraining.", lower_bound=1
)
_FINETUNE_EPOCHS = flags.DEFINE_integer(
    "finetune_epochs", 3, "The last epochs: masked fine-tuning.", lower_bound=0
)
_BATCH_SIZE = common_flags.batch_size(64)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam lr, phase 1.")
_FINETUNE_LEARNING_RATE = flags.DEFINE_float(
    "finetune_learning_rate", 3e-4, "Adam lr, phase 2 (masked fine-tuning)."
)
_RHO = flags.DEFINE_float("rho", 0.3, "ADMM initial rho (again in every stage).")
_RHO_MULTIPLIER = flags.DEFINE_float("rho_multiplier", 1.3, "ADMM rho growth.")
_ADMM_STAGES = flags.DEFINE_integer(
    "admm_stages", 4, "Progressive ADMM stages (1: plain ADMM).", lower_bound=1
)
_ADMM_FRACTION = flags.DEFINE_float(
    "admm_fraction",
    2 / 3,
    "Share of phase 1 spent in ADMM; the rest is masked training.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_GRAPH = flags.DEFINE_bool(
    "graph", True, "Group-aware masks and projections for every method."
)
_GROUP_LASSO = flags.DEFINE_float(
    "group_lasso_strength", 1e-4, "Group-lasso lambda (per sqrt(group size))."
)
_FC1_SPARSITY = flags.DEFINE_string(
    "fc1_sparsity",
    "unstructured:0.9",
    "Sparsity of fc1 in every plan (the same at every level; 'none' keeps it dense).",
)
flags.register_validator(
    "levels",
    lambda v: common_flags.all_numbers(v, float) and all(float(x) > 1 for x in v),
    "--levels must be factors > 1; e.g. --levels 2,4,8",
)
flags.register_validator(
    "fc1_sparsity",
    lambda v: v is None or v.lower() == "none" or common_flags.is_sparsity_text(v),
    "--fc1_sparsity must be a sparsity text; e.g. unstructured:0.9, or none",
)
# Checked while flags parse, without importing Keras: the harness's METHODS and
# keras_admm's LEVEL_TYPES, spelled out (tests/tools/test_compare.py keeps them
# equal).
KNOWN_TYPES = ("filter", "shape", "filter_shape", "unstructured", "channel")
KNOWN_METHODS = ("admm", "one_shot_l2", "one_shot_l1", "gradual", "group_lasso")
flags.register_validator(
    "types",
    lambda v: bool(v) and all(t in KNOWN_TYPES for t in v),
    f"--types must be sparsity types; use {', '.join(KNOWN_TYPES)}",
)
flags.register_validator(
    "methods",
    lambda v: bool(v) and all(m in KNOWN_METHODS for m in v),
    f"--methods must be method names; use {', '.join(KNOWN_METHODS)}",
)
_DATA = common_flags.mnist_source()
_DATA_DIR = common_flags.mnist_data_dir()
_TRAIN_SIZE = common_flags.train_size(
    5000, "Use at most this many training digits (0: all)."
)
_TEST_SIZE = flags.DEFINE_integer(
    "test_size", 0, "Use at most this many test digits (0: all).", lower_bound=0
)
_TFMOT = flags.DEFINE_bool("tfmot", True, "Run the tfmot baseline (if installed).")
_LATENCY = flags.DEFINE_bool(
    "latency", True, "Measure compacted-model latency when compaction exists."
)
_QUICK = flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: levels 2,4; types filter_shape,unstructured; 2 epochs; 1,000 "
    "training and 2,000 test digits; 2 seeds at the highest level.",
)


def config_from_flags():
    """The ComparisonConfig of the flag values."""
    from harness.comparison import ComparisonConfig

    # --levels, --types and --methods were checked while the flags parsed.
    levels = tuple(float(v) for v in _LEVELS.value)
    if _FINETUNE_EPOCHS.value > _EPOCHS.value:
        raise app.UsageError(
            f"--finetune_epochs ({_FINETUNE_EPOCHS.value}) must be <= --epochs "
            f"({_EPOCHS.value})."
        )
    config = ComparisonConfig(
        output_dir=_OUTPUT_DIR.value,
        levels=levels,
        types=tuple(_TYPES.value),
        methods=tuple(_METHODS.value),
        seeds=_SEEDS.value,
        seeded_levels=_SEEDED_LEVELS.value,
        pretrain_epochs=_PRETRAIN_EPOCHS.value,
        epochs=_EPOCHS.value,
        finetune_epochs=_FINETUNE_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value,
        finetune_learning_rate=_FINETUNE_LEARNING_RATE.value,
        rho=_RHO.value,
        rho_multiplier=_RHO_MULTIPLIER.value,
        admm_stages=_ADMM_STAGES.value,
        admm_fraction=_ADMM_FRACTION.value,
        graph=_GRAPH.value,
        group_lasso_strength=_GROUP_LASSO.value,
        fc1_sparsity=_FC1_SPARSITY.value,
        tfmot=_TFMOT.value,
        latency=_LATENCY.value,
    )
    if _QUICK.value:
        config = dataclasses.replace(
            config,
            output_dir=os.path.join(config.output_dir, "quick")
            if not _OUTPUT_DIR.present
            else config.output_dir,
            levels=(2.0, 4.0),
            types=("filter_shape", "unstructured"),
            seeds=2,
            seeded_levels=1,
            pretrain_epochs=2,
            epochs=2,
            finetune_epochs=1,
            tfmot_latency_runs=30,
        )
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from harness.comparison import load_data, run_comparison
    from harness.report import markdown

    from keras_admm import models

    config = config_from_flags()
    train_size, test_size = _TRAIN_SIZE.value, _TEST_SIZE.value
    if _QUICK.value:
        train_size, test_size = min(train_size or 1000, 1000), test_size or 2000
    data = load_data(_DATA.value, _DATA_DIR.value, train_size, test_size)
    print(f"Data: {data.source}", flush=True)
    results = run_comparison(config, models.lenet5, data)
    print("\n" + markdown(results))
    print(f"Wrote {', '.join(str(p) for p in results['files'].values() if p)}")
    print(f"Total {results['seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main)
