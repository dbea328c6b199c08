r"""Benchmark: the paper's AlexNet speed headline, at shape level (issue 15).

StructADMM reports AlexNet's conv layers compressed 15.0x running 11.93x faster
on CPU. Here: AlexNet (224x224x3, torchvision layout, random weights: the
timing does not depend on them, so nothing is trained and no accuracy is
claimed) is pruned to --keep of every conv layer's filters (--layer_keep sets
single layers), group-aware, and compacted. Timed, dense against compact
interleaved on every engine at each batch size, one profile_models.py process
per engine and part: the conv trunk (input to pool3), the whole network, and
each conv layer alone at its input shape (the paper's figure counts the conv
layers; their sums over conv1-5 and conv2-5 get their own table).

    python tools/bench_alexnet.py --output_dir docs/deployment/alexnet  # idle!
    python tools/bench_alexnet.py --layer_keep conv1=1.0 --keep 0.2 ...

Conv compression = dense conv kernel weights / compact ones (a layer loses
filters and, from the layer before, input channels: keep 0.25 gives about
15.6x).
"""

import json
import os
import sys

import common_flags
from absl import app, flags
from alexnet_parts import CONVS, layer_alone, layer_keeps, layer_sums
from profile_process import profile_in_process

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KEEP = flags.DEFINE_float("keep", 0.25, "Kept share of every conv's filters.")
_LAYER_KEEP = flags.DEFINE_list(
    "layer_keep",
    [],
    "Per-layer kept shares overriding --keep, e.g. conv1=1.0,conv2=0.2 "
    "(1.0: the layer keeps every filter).",
)
_ENGINES = common_flags.engines(["onnxruntime", "tf", "litert", "openvino"])
_BATCH_SIZES = common_flags.batch_sizes([1, 32], "Timed batch sizes.")
_MIN_TIME = common_flags.min_time_s(3.0)
_MIN_REPEATS = common_flags.min_repeats(15)
_WORK_DIR = common_flags.work_dir(
    os.path.join(_REPO, "runs", "alexnet"), "Model files (large, not results)."
)
_OUTPUT_DIR = common_flags.output_dir(
    os.path.join(_REPO, "docs", "deployment", "alexnet"), "Reports."
)
flags.register_validator("keep", lambda v: 0 < v < 1, "--keep must be in (0, 1)")

PARTS = ("trunk", "full", *CONVS)


def _conv_weights(model, names=CONVS):
    return sum(int(model.get_layer(n).kernel.numpy().size) for n in names)


def build(work, keeps):
    """Saves dense and compact AlexNet (kept shares `keeps`): the full model, the
    conv trunk and each conv alone; returns their paths and statics."""
    import keras

    import keras_admm
    from keras_admm import models

    keras.utils.set_random_seed(0)
    dense = models.alexnet()
    pruned = keras.models.clone_model(dense)
    pruned.set_weights(dense.get_weights())
    plan = keras_admm.PruningPlan(
        {n: f"filter:{1.0 - k!r}" for n, k in keeps.items() if k < 1.0}
    )
    keras_admm.hard_prune(pruned, plan, graph=True)
    small = keras_admm.compact(pruned)
    x = keras.random.normal((2, 224, 224, 3), seed=1)
    difference = float(
        keras.ops.max(keras.ops.abs(small(x) - pruned(x)))
        / keras.ops.max(keras.ops.abs(pruned(x)))
    )
    if difference > 1e-4:
        raise RuntimeError(f"compact differs from the pruned model by {difference}")
    os.makedirs(work, exist_ok=True)
    paths, statics = {}, {}
    for form, model in (("dense", dense), ("compact", small)):
        parts = {
            "full": model,
            "trunk": keras.Model(model.input, model.get_layer("pool3").output),
            **{name: layer_alone(model.get_layer(name)) for name in CONVS},
        }
        for part, m in parts.items():
            path = os.path.join(work, f"alexnet_{part}_{form}.keras")
            m.save(path)
            paths[(part, form)] = path
            statics[f"{part}_{form}"] = {
                "params": int(m.count_params()),
                "flops": int(keras_admm.count_flops(m)),
            }
        statics[f"conv_weights_{form}"] = _conv_weights(model)
        statics[f"conv2_5_weights_{form}"] = _conv_weights(model, CONVS[1:])
        statics[f"widths_{form}"] = {n: int(model.get_layer(n).filters) for n in CONVS}
    statics["conv_compression"] = (
        statics["conv_weights_dense"] / statics["conv_weights_compact"]
    )
    statics["conv2_5_compression"] = (
        statics["conv2_5_weights_dense"] / statics["conv2_5_weights_compact"]
    )
    statics["keeps"] = keeps
    for part in PARTS:
        statics[f"{part}_flop_cut"] = (
            statics[f"{part}_dense"]["flops"] / statics[f"{part}_compact"]["flops"]
        )
    statics["max_relative_difference_compact_vs_pruned"] = difference
    return paths, statics


def time_engines(paths, out):
    rows = []
    for engine in _ENGINES.value:
        for part in PARTS:
            report = profile_in_process(
                paths[(part, "dense")],
                [paths[(part, "compact")]],
                ["dense", "compact"],
                engine,
                _BATCH_SIZES.value,
                os.path.join(out, f"profile_{part}_{engine}"),
                extra_flags=[
                    f"--min_time_s={_MIN_TIME.value}",
                    f"--min_repeats={_MIN_REPEATS.value}",
                    # a compact layer reads fewer channels than the dense one
                    *(["--nosame_input"] if part in CONVS else []),
                ],
                echo="::",
            )
            for r in report["results"]:
                rows.append({"part": part, **r})
    return rows


def _speedup_rows(report):
    s = report["statics"]
    rows = []
    for r in report["results"]:
        if r["model"] == "dense":
            continue
        dense = [
            d
            for d in report["results"]
            if d["model"] == "dense"
            and (d["part"], d["engine"], d["batch_size"])
            == (r["part"], r["engine"], r["batch_size"])
        ][0]
        cut = s[f"{r['part']}_flop_cut"]
        # the conv compression is the trunk's; one layer alone has its own
        per_compression = (
            f"{r['speedup'] / s['conv_compression']:.2f}"
            if r["part"] == "trunk"
            else "-"
        )
        rows.append(
            f"| {r['part']} | {r['engine']} | {r['batch_size']} | "
            f"{dense['median_ms']:.3f} | {r['median_ms']:.3f} | {r['speedup']:.2f}x | "
            f"{r.get('paired_speedup', float('nan')):.2f}x | {per_compression} | "
            f"{r['speedup'] / cut:.2f} |"
        )
    return rows


def markdown(report):
    s = report["statics"]
    keeps = ", ".join(f"{n} {100 * k:.0f}%" for n, k in s["keeps"].items())
    lines = [
        f"# AlexNet, conv layers compressed {s['conv_compression']:.2f}x (shape level)",
        "",
        f"Random weights (timing only; no accuracy). Kept filters: {keeps}; "
        f"widths {s['widths_compact']} (dense {s['widths_dense']}).",
        "",
        f"Conv kernel weights: {s['conv_weights_dense']:,} -> "
        f"{s['conv_weights_compact']:,} ({s['conv_compression']:.2f}x; conv2-5 "
        f"{s['conv2_5_compression']:.2f}x). FLOP cut: conv trunk "
        f"{s['trunk_flop_cut']:.2f}x, whole network {s['full_flop_cut']:.2f}x.",
        "",
        "## Each part timed (dense and compact interleaved in one run)",
        "",
        "| part | engine | batch | dense ms | compact ms | speedup | paired | "
        "speedup / conv compression | speedup / FLOP cut |",
        "|---|---|---|---|---|---|---|---|---|",
        *_speedup_rows(report),
        "",
        "## Conv layers alone, summed",
        "",
        "Each layer's dense and compact forms timed in one run (above); the sums "
        "add medians of different runs. Compression = the layers' kernel weights "
        "dense / compact.",
        "",
        "| layers | engine | batch | dense ms | compact ms | speedup | "
        "compression | FLOP cut | speedup / compression |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, names, compression in (
        ("conv1-5", CONVS, s["conv_compression"]),
        ("conv2-5", CONVS[1:], s["conv2_5_compression"]),
    ):
        flop_cut = sum(s[f"{n}_dense"]["flops"] for n in names) / sum(
            s[f"{n}_compact"]["flops"] for n in names
        )
        for row in layer_sums(report["results"], names):
            lines.append(
                f"| {label} | {row['engine']} | {row['batch_size']} | "
                f"{row['dense_ms']:.3f} | {row['compact_ms']:.3f} | "
                f"{row['speedup']:.2f}x | {compression:.2f}x | {flop_cut:.2f}x | "
                f"{row['speedup'] / compression:.2f} |"
            )
    lines += ["", "Command:", "", f"    {report['command']}", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    import keras_admm  # noqa: F401

    try:
        keeps = layer_keeps(_KEEP.value, _LAYER_KEEP.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    out = _OUTPUT_DIR.value
    os.makedirs(out, exist_ok=True)
    paths, statics = build(_WORK_DIR.value, keeps)
    print(json.dumps(statics, indent=1), flush=True)
    rows = time_engines(paths, out)
    report = {
        "default_keep": _KEEP.value,
        "statics": statics,
        "results": rows,
        "command": " ".join(["python"] + sys.argv),
        "note": "shape level: random weights, timing only",
    }
    with open(os.path.join(out, "alexnet.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "alexnet.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    app.run(main)
