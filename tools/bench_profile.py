"""Benchmark: dense VGG-16-CIFAR and AlexNet against narrower forms, TF and ORT.

    python tools/bench_profile.py --out_dir docs/perf

Builds each dense model and forms keeping 50% and 35% of the channels of every
hidden conv / dense layer, unaligned and with counts rounded up to multiples of 8
and 16, saves them as .keras files, and times them with keras_admm.profiling on the
tf and onnxruntime engines at batch sizes 1 and 32, all models of one engine x
batch size interleaved round-robin. compact() does not exist yet, so these
hand-built narrower models (random weights) stand in for its output. Writes
<family>.json/.csv/.md and plots per family, plus summary.md, into --out_dir.
"""

import math
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    sys.path[0] = _REPO

import logging as std_logging  # noqa: E402

from absl import app, flags  # noqa: E402

_FAMILIES = ("vgg16_cifar", "alexnet")
_FAMILY = flags.DEFINE_list("families", list(_FAMILIES), "Model families to run.")
_KEEPS = flags.DEFINE_list("keeps", ["0.5", "0.35"], "Fractions of channels kept.")
_ALIGNS = flags.DEFINE_list("aligns", ["1", "8", "16"], "Channel multiples.")
_ENGINES = flags.DEFINE_list("engines", ["tf", "onnxruntime"], "Engines to time.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes.")
_THREADS = flags.DEFINE_integer("threads", None, "Intra-op threads (default: cores).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls per model.")
_MIN_REPEATS = flags.DEFINE_integer("min_repeats", 15, "Timed rounds, at least.")
_MIN_TIME = flags.DEFINE_float("min_time_s", 20.0, "Seconds per loop, at least.")
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/perf", "Where reports go.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", "runs/bench_profile", "Where the model files are written."
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


def build_family(family, work_dir, keeps, aligns):
    """Saves the dense model and its distinct narrower forms as .keras files.

    Returns:
        (paths, names, notes): model files (dense first), their labels, and a note
        for each form skipped because its channel counts equal an earlier one's.
    """
    import keras

    builder = {"vgg16_cifar": vgg16_cifar, "alexnet": alexnet}[family]
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


def _summary_lines(reports):
    """Markdown table: efficiency per family x model x engine x batch size."""
    lines = [
        "| model | form | engine | batch | dense ms | form ms | speedup "
        "| FLOP ratio | efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for family, report in reports.items():
        rows = report["results"]
        dense = {
            (r["engine"], r["batch_size"]): r["median_ms"]
            for r in rows
            if r["model"] == "dense"
        }
        for r in rows:
            if r["model"] == "dense":
                continue
            lines.append(
                f"| {family} | {r['model']} | {r['engine']} | {r['batch_size']} "
                f"| {dense[(r['engine'], r['batch_size'])]:.2f} "
                f"| {r['median_ms']:.2f} | {r['speedup']:.2f} "
                f"| {r['flop_ratio']:.2f} | {r['efficiency']:.2f} |"
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
    for family in _FAMILY.value:
        work_dir = os.path.join(_WORK_DIR.value, family)
        paths, names, skipped = build_family(family, work_dir, keeps, aligns)
        notes = [
            "compact() does not exist yet: the narrower models are built by hand "
            "(same architecture, fewer channels per hidden layer, random weights) "
            "and stand in for its output.",
            "Forms skipped as duplicates: " + ("; ".join(skipped) or "none") + ".",
            "All models of one engine x batch size are timed interleaved "
            "round-robin in one loop, on a 2-core CPU shared with other processes.",
            "Command: python " + " ".join(sys.argv),
        ]
        report = profiling.profile_models(
            paths[0],
            paths[1:],
            engines=_ENGINES.value,
            batch_sizes=[int(b) for b in _BATCH_SIZES.value],
            device="cpu",
            threads=threads,
            protocol=protocol,
            names=names,
            workdir=work_dir,
            notes=notes,
        )
        print(profiling.results_table(report))
        profiling.write_reports(report, _OUT_DIR.value, stem=family, title=family)
        reports[family] = report
    summary = os.path.join(_OUT_DIR.value, "summary.md")
    with open(summary, "w", encoding="utf-8") as f:
        f.write("\n".join(_summary_lines(reports)) + "\n")
    print("\n".join(_summary_lines(reports)))


if __name__ == "__main__":
    app.run(main)
