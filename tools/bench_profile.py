"""Benchmark: dense VGG-16-CIFAR and AlexNet against their pruned forms, TF and ORT.

    python tools/bench_profile.py --output_dir docs/perf

Builds each dense model (random weights, non-zero biases and BN statistics,
fixed seed) and, by default (--forms=compact), makes its pruned forms the real
way: a group-aware Filter plan (`PruningPlan.uniform(model, "filter:<1 - keep>",
skip_first=False, skip_last=True)`, i.e. every hidden conv / Dense layer, the
classifier output kept) is applied with `keras_admm.hard_prune(model, plan,
graph=True)`, then `keras_admm.compact(model, align=a)` is called for every
--aligns value. Each compact model's output is checked against the pruned
model's on a random batch (max relative difference <= --max_rel_diff, else the
run stops), and the kept channel counts of every conv / Dense layer are
recorded in <family>_forms.json.
With --forms=hand the narrower models are built by hand instead (the same
architecture with round(channels x keep) channels rounded up to the multiple),
as before compact() existed; keep it for comparison.

Forms whose channel counts equal an earlier form's are timed once. All models
of one engine x batch size are timed interleaved round-robin with
keras_admm.profiling on the tf and onnxruntime engines at batch sizes 1 and 32.
Writes <family>.json/.csv/.md, plots and <family>_forms.json per family, plus
summary.md, into --output_dir.
"""

import json
import math
import os
import sys

# Like tools/profile_models.py: the repository root first (keras_admm without
# installation), this folder last (common_flags).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TOOLS = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _TOOLS:
    sys.path[0] = _REPO
if _TOOLS not in sys.path:
    sys.path.append(_TOOLS)

import logging as std_logging  # noqa: E402

import common_flags  # noqa: E402
from absl import app, flags  # noqa: E402

_FAMILIES = ("vgg16_cifar", "alexnet")
_FAMILY = flags.DEFINE_list("families", list(_FAMILIES), "Model families to run.")
_FORMS = flags.DEFINE_enum(
    "forms",
    "compact",
    ["compact", "hand"],
    "compact: hard_prune(graph=True) + compact(align=a); hand: narrower models "
    "built by hand (the stand-in used before compact() existed).",
)
_KEEPS = flags.DEFINE_list("keeps", ["0.5", "0.35"], "Fractions of channels kept.")
_ALIGNS = flags.DEFINE_list("aligns", ["1", "8", "16"], "Channel multiples.")
flags.register_validator(
    "families",
    lambda v: bool(v) and all(f in _FAMILIES for f in v),
    f"--families must be model families; use {', '.join(_FAMILIES)}",
)
flags.register_validator(
    "keeps",
    lambda v: common_flags.all_numbers(v, float, low=1e-9, high=1.0),
    "--keeps must be fractions in (0, 1]; e.g. --keeps 0.5,0.35",
)
flags.register_validator(
    "aligns",
    lambda v: common_flags.all_numbers(v, int, low=1),
    "--aligns must be integers >= 1; e.g. --aligns 1,8,16",
)
_ENGINES = common_flags.engines(["tf", "onnxruntime"])
_BATCH_SIZES = common_flags.batch_sizes([1, 32])
_THREADS = common_flags.threads()
_JIT = common_flags.jit()
_WARMUP = common_flags.warmup(3)
_MIN_REPEATS = common_flags.min_repeats(15, "Timed rounds, at least.")
_MIN_TIME = common_flags.min_time_s(20.0, "Seconds per loop, at least.")
_MAX_REL_DIFF = flags.DEFINE_float(
    "max_rel_diff",
    1e-4,
    "Largest relative output difference accepted: compact vs pruned (--forms=compact) "
    "and folded vs unfolded (--batchnorm fold or both).",
)
_BATCHNORM = flags.DEFINE_enum(
    "batchnorm",
    "keep",
    ["keep", "fold", "both"],
    "keep: time the models as built; fold: fold every model's BatchNorms into "
    "its convs first (keras_admm.fold_batchnorm; the dense baseline too); both: "
    "time each model and its folded form (<name>_fold) side by side.",
)
_OUTPUT_DIR = common_flags.output_dir("docs/perf", "Where reports go.")
_WORK_DIR = common_flags.work_dir(
    "runs/bench_profile", "Where the model files are written."
)

_VGG16_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
_VGG16_WIDTHS += (512, 512, 512, "M", 512, 512, 512, "M")


def kept_channels(channels, keep, align):
    """Channels kept of `channels` at fraction `keep`, rounded up to `align`."""
    kept = max(1, round(channels * keep))
    return min(channels, math.ceil(kept / align) * align)


def vgg16_cifar(width):
    """VGG-16 for 32x32x3 (conv-BN-ReLU, a 512-unit hidden Dense, 10 classes).

    Args:
        width: maps a dense channel count to the kept count.
    """
    import keras
    from keras import layers

    x = inputs = keras.Input((32, 32, 3))
    for item in _VGG16_WIDTHS:
        if item == "M":
            x = layers.MaxPooling2D()(x)
            continue
        x = layers.Conv2D(width(item), 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(width(512), activation="relu")(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="vgg16_cifar")


def alexnet(width):
    """AlexNet for 224x224x3 (torchvision layout: 64-192-384-256-256, 4096, 1000).

    Args:
        width: maps a dense channel count to the kept count.
    """
    import keras
    from keras import layers

    x = inputs = keras.Input((224, 224, 3))
    x = layers.ZeroPadding2D(2)(x)
    x = layers.Conv2D(width(64), 11, strides=4, activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.Conv2D(width(192), 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    for channels in (384, 256, 256):
        x = layers.Conv2D(width(channels), 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(width(4096), activation="relu")(x)
    x = layers.Dense(width(4096), activation="relu")(x)
    return keras.Model(inputs, layers.Dense(1000)(x), name="alexnet")


_HIDDEN_WIDTHS = {
    "vgg16_cifar": tuple(w for w in _VGG16_WIDTHS if w != "M") + (512,),
    "alexnet": (64, 192, 384, 256, 256, 4096, 4096),
}


def _variants(keeps, aligns):
    """(name, keep, align) of the dense model and every distinct narrower form."""
    variants = [("dense", 1.0, 1)]
    for keep in keeps:
        for align in aligns:
            suffix = "" if align == 1 else f"_a{align}"
            variants.append((f"keep{round(keep * 100)}{suffix}", keep, align))
    return variants


def _channel_signature(family, keep, align):
    """The kept-channel counts of one form, to spot forms that are identical."""
    return tuple(kept_channels(c, keep, align) for c in _HIDDEN_WIDTHS[family])


def build_hand_family(family, work_dir, keeps, aligns):
    """Saves the dense model and its distinct hand-built narrower forms (.keras).

    Returns:
        (paths, names, notes): model files (dense first), their labels, and a note
        for each form skipped because its channel counts equal an earlier one's.
    """
    import keras

    builder = _BUILDERS[family]
    os.makedirs(work_dir, exist_ok=True)
    paths, names, notes, seen = [], [], [], {}
    for name, keep, align in _variants(keeps, aligns):
        signature = _channel_signature(family, keep, align)
        if signature in seen:
            notes.append(f"{name} has the same channel counts as {seen[signature]}")
            continue
        seen[signature] = name
        keras.utils.set_random_seed(0)
        model = builder(lambda c, k=keep, a=align: kept_channels(c, k, a))
        path = os.path.join(work_dir, f"{family}_{name}.keras")
        model.save(path)
        paths.append(path)
        names.append(name)
        keras.backend.clear_session()
    return paths, names, notes


_BUILDERS = {"vgg16_cifar": vgg16_cifar, "alexnet": alexnet}


def _layer_widths(model):
    """{layer name: filters / units} of every Conv2D / Dense layer, in order."""
    from keras import layers

    widths = {}
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            widths[layer.name] = int(layer.filters)
        elif isinstance(layer, layers.Dense):
            widths[layer.name] = int(layer.units)
    return widths


def prune_plan(model, keep):
    """Group-aware Filter plan keeping `keep` of every hidden conv / Dense layer."""
    import keras_admm

    ratio = round(1.0 - keep, 6)
    return keras_admm.PruningPlan.uniform(
        model, f"filter:{ratio}", skip_first=False, skip_last=True
    )


def build_compact_family(family, work_dir, keeps, aligns, max_rel_diff, seed=0):
    """Dense model, hard_prune(graph=True) per keep, compact(align=a) per align.

    Every compact model's output on a random batch of 2 is compared with the
    pruned model's; a max relative difference above `max_rel_diff` stops the run.

    Returns:
        (paths, names, notes, forms): model files (dense first), their labels, a
        note per form skipped because its channel counts equal an earlier one's,
        and one dict per form (kept channels per layer, checks, totals).
    """
    import keras
    import numpy as np

    import keras_admm
    from keras_admm.testing import fuzz

    os.makedirs(work_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    dense = _BUILDERS[family](lambda c: c)
    fuzz.randomize_weights(dense, seed)  # non-zero biases and BN statistics
    dense_path = os.path.join(work_dir, f"{family}_dense.keras")
    dense.save(dense_path)
    shape = (2, *dense.input_shape[1:])
    x = np.random.default_rng(seed).normal(size=shape).astype("float32")
    dense_widths = _layer_widths(dense)
    paths, names, notes = [dense_path], ["dense"], []
    forms = [
        {
            "name": "dense",
            "keep": 1.0,
            "align": 1,
            "kept_channels": dense_widths,
            "params": int(dense.count_params()),
        }
    ]
    seen = {tuple(dense_widths.values()): "dense"}
    del dense
    keras.backend.clear_session()
    for keep in keeps:
        pruned = keras.saving.load_model(dense_path)
        plan = prune_plan(pruned, keep)
        keras_admm.hard_prune(pruned, plan, graph=True)
        expected = keras.ops.convert_to_numpy(pruned(x))
        for align in aligns:
            name = f"keep{round(keep * 100)}" + ("" if align == 1 else f"_a{align}")
            small, summary = keras_admm.compact(
                pruned, align=align, return_summary=True
            )
            error = fuzz.max_relative_error(expected, small(x))
            if not error <= max_rel_diff:
                raise RuntimeError(
                    f"{family} {name}: compact() output differs from the pruned "
                    f"model's by {error:.3g} (max relative), above --max_rel_diff="
                    f"{max_rel_diff:g}. compact() is wrong for this model; do not "
                    "time it."
                )
            widths = _layer_widths(small)
            signature = tuple(widths.values())
            totals = summary.totals
            form = {
                "name": name,
                "keep": keep,
                "align": align,
                "plan": str(plan.rules[0][-1]),
                "kept_channels": widths,
                "max_rel_diff": error,
                "params": int(small.count_params()),
                "compact_flops_before": totals["flops_before"],
                "compact_flops_after": totals["flops_after"],
                "classes": sorted({type(layer).__name__ for layer in small.layers}),
            }
            print(f"{family} {name}: max rel diff {error:.2e}, kept {widths}")
            if signature in seen:
                form["same_as"] = seen[signature]
                notes.append(f"{name} has the same channel counts as {seen[signature]}")
            else:
                seen[signature] = name
                path = os.path.join(work_dir, f"{family}_{name}.keras")
                small.save(path)
                paths.append(path)
                names.append(name)
            forms.append(form)
            del small
        del pruned
        keras.backend.clear_session()
    return paths, names, notes, forms


def fold_forms(paths, names, mode, max_rel_diff, seed=0):
    """The models to time after BatchNorm folding (`mode`: keep, fold or both).

    Each folded model is checked against its source on a random batch of 2 in
    inference mode (max relative difference <= `max_rel_diff`, else the run
    stops) and saved beside it as <stem>_fold.keras.

    Returns:
        (paths, names, notes): "fold" replaces every model by its folded form
        (same names); "both" puts each folded form (<name>_fold) right after
        its source; notes say how many BatchNorms each fold removed.
    """
    if mode == "keep":
        return list(paths), list(names), []
    import keras
    import numpy as np

    import keras_admm
    from keras_admm.testing import fuzz

    out_paths, out_names, notes = [], [], []
    for path, name in zip(paths, names):
        model = keras.saving.load_model(path)
        folded, folds, skipped = keras_admm.fold_batchnorm(model, return_folds=True)
        shape = (2, *model.inputs[0].shape[1:])
        x = np.random.default_rng(seed).normal(size=shape).astype("float32")
        error = fuzz.max_relative_error(model(x, training=False), folded(x))
        if not error <= max_rel_diff:
            raise RuntimeError(
                f"{name}: fold_batchnorm() output differs from the model's by "
                f"{error:.3g} (max relative), above --max_rel_diff={max_rel_diff:g}; "
                "do not time it."
            )
        fold_path = os.path.splitext(path)[0] + "_fold.keras"
        folded.save(fold_path)
        notes.append(
            f"{name}: {len(folds)} BatchNorms folded, {len(skipped)} left "
            f"(max rel diff {error:.2e})."
        )
        if mode == "both":
            out_paths += [path, fold_path]
            out_names += [name, f"{name}_fold"]
        else:
            out_paths.append(fold_path)
            out_names.append(name)
        keras.backend.clear_session()
    return out_paths, out_names, notes


def _forms_lines(forms):
    """One note per form: its kept channel counts (conv / Dense, in order)."""
    lines = []
    for form in forms[1:]:
        counts = "/".join(str(c) for c in form["kept_channels"].values())
        same = f" (same as {form['same_as']})" if "same_as" in form else ""
        lines.append(
            f"{form['name']}{same}: kept channels per conv/Dense layer {counts}; "
            f"max rel diff compact vs pruned {form['max_rel_diff']:.2e}."
        )
    return lines


def _summary_lines(reports):
    """Markdown table: efficiency per family x model x engine x batch size.

    A folded form (<name>_fold) is compared with the folded dense model
    (dense_fold) when the run has one, else with the dense model.
    """
    lines = [
        "| model | form | engine | batch | dense ms | form ms | speedup "
        "| FLOP ratio | efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for family, report in reports.items():
        rows = report["results"]
        dense = {
            (r["model"], r["engine"], r["batch_size"]): r["median_ms"]
            for r in rows
            if r["model"] in ("dense", "dense_fold")
        }
        for r in rows:
            if r["model"] in ("dense", "dense_fold"):
                continue
            key = (r["engine"], r["batch_size"])
            base = "dense_fold" if r["model"].endswith("_fold") else "dense"
            dense_ms = dense.get((base, *key), dense[("dense", *key)])
            speedup = dense_ms / r["median_ms"]
            lines.append(
                f"| {family} | {r['model']} | {r['engine']} | {r['batch_size']} "
                f"| {dense_ms:.2f} | {r['median_ms']:.2f} | {speedup:.2f} "
                f"| {r['flop_ratio']:.2f} | {speedup / r['flop_ratio']:.2f} |"
            )
    return lines


def main(argv):
    del argv
    std_logging.getLogger("keras_admm.profiling").setLevel(std_logging.INFO)
    from keras_admm import profiling

    threads = _THREADS.value or profiling.environment.usable_cores()
    import tensorflow as tf

    # Before any model is built: TensorFlow fixes its threads when it initialises.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keeps = [float(k) for k in _KEEPS.value]
    aligns = [int(a) for a in _ALIGNS.value]
    protocol = profiling.TimingProtocol(
        warmup=_WARMUP.value,
        min_repeats=_MIN_REPEATS.value,
        min_time_s=_MIN_TIME.value,
    )
    reports = {}
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    for family in _FAMILY.value:
        work_dir = os.path.join(_WORK_DIR.value, family)
        if _FORMS.value == "compact":
            paths, names, skipped, forms = build_compact_family(
                family, work_dir, keeps, aligns, _MAX_REL_DIFF.value
            )
            forms_path = os.path.join(_OUTPUT_DIR.value, f"{family}_forms.json")
            with open(forms_path, "w", encoding="utf-8") as f:
                json.dump(forms, f, indent=2)
                f.write("\n")
            made = [
                "The pruned forms come from compact(): the dense model (random "
                "weights, biases and BN statistics, seed 0) is hard-pruned with a "
                "group-aware Filter plan (PruningPlan.uniform(model, "
                "'filter:<1 - keep>', skip_first=False, skip_last=True); "
                "hard_prune(model, plan, graph=True)), then compact(model, "
                "align=a); each compact model matches the pruned model's output "
                f"(max relative difference <= {_MAX_REL_DIFF.value:g}).",
                *_forms_lines(forms),
            ]
        else:
            paths, names, skipped = build_hand_family(family, work_dir, keeps, aligns)
            made = [
                "--forms=hand: the narrower models are built by hand (same "
                "architecture, round(channels x keep) channels per hidden layer "
                "rounded up to the multiple, random weights), not by compact()."
            ]
        paths, names, fold_notes = fold_forms(
            paths, names, _BATCHNORM.value, _MAX_REL_DIFF.value
        )
        notes = [
            *made,
            f"--batchnorm={_BATCHNORM.value}.",
            *fold_notes,
            "Forms skipped as duplicates: " + ("; ".join(skipped) or "none") + ".",
            "All models of one engine x batch size are timed interleaved "
            "round-robin in one loop, on a 2-core CPU shared with other processes.",
            f"tf engine XLA jit_compile: {_JIT.value}.",
            "Command: python " + " ".join(sys.argv),
        ]
        report = profiling.profile_models(
            paths[0],
            paths[1:],
            engines=_ENGINES.value,
            batch_sizes=_BATCH_SIZES.value,
            device="cpu",
            threads=threads,
            jit=_JIT.value,
            protocol=protocol,
            names=names,
            workdir=work_dir,
            notes=notes,
        )
        print(profiling.results_table(report))
        profiling.write_reports(report, _OUTPUT_DIR.value, stem=family, title=family)
        reports[family] = report
    summary = os.path.join(_OUTPUT_DIR.value, "summary.md")
    with open(summary, "w", encoding="utf-8") as f:
        f.write("\n".join(_summary_lines(reports)) + "\n")
    print("\n".join(_summary_lines(reports)))


if __name__ == "__main__":
    app.run(main)
