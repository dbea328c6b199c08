r"""Benchmark: the paper's AlexNet speed headline, at shape level (issue 15).

StructADMM reports AlexNet's conv layers compressed 15.0x running 11.93x faster
on CPU. Here: AlexNet (224x224x3, torchvision layout, random weights: the
timing does not depend on them, so nothing is trained and no accuracy is
claimed) is pruned to --keep of every conv layer's filters, group-aware, and
compacted; the conv trunk (input to pool3) and the whole network, dense and
compact, are timed interleaved on every engine at each batch size, one
profile_models.py process per engine.

    python tools/bench_alexnet.py --output_dir docs/deployment/alexnet  # idle!

Conv compression = dense conv kernel weights / compact ones (a layer loses
filters and, from the layer before, input channels: keep 0.25 gives about
15.6x).
"""

import json
import os
import sys

import common_flags
from absl import app, flags
from profile_process import profile_in_process

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KEEP = flags.DEFINE_float("keep", 0.25, "Kept share of every conv's filters.")
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

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _conv_weights(model):
    return sum(int(model.get_layer(n).kernel.numpy().size) for n in CONVS)


def build(work):
    """Saves dense / compact, full / trunk AlexNet; returns paths and statics."""
    import keras

    import keras_admm
    from keras_admm import models

    keras.utils.set_random_seed(0)
    dense = models.alexnet()
    pruned = keras.models.clone_model(dense)
    pruned.set_weights(dense.get_weights())
    ratio = 1.0 - _KEEP.value
    plan = keras_admm.PruningPlan({n: f"filter:{ratio!r}" for n in CONVS})
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
        trunk = keras.Model(model.input, model.get_layer("pool3").output)
        for part, m in (("full", model), ("trunk", trunk)):
            path = os.path.join(work, f"alexnet_{part}_{form}.keras")
            m.save(path)
            paths[(part, form)] = path
            statics[f"{part}_{form}"] = {
                "params": int(m.count_params()),
                "flops": int(keras_admm.count_flops(m)),
            }
        statics[f"conv_weights_{form}"] = _conv_weights(model)
        statics[f"widths_{form}"] = {n: int(model.get_layer(n).filters) for n in CONVS}
    statics["conv_compression"] = (
        statics["conv_weights_dense"] / statics["conv_weights_compact"]
    )
    for part in ("full", "trunk"):
        statics[f"{part}_flop_cut"] = (
            statics[f"{part}_dense"]["flops"] / statics[f"{part}_compact"]["flops"]
        )
    statics["max_relative_difference_compact_vs_pruned"] = difference
    return paths, statics


def time_engines(paths, out):
    rows = []
    for engine in _ENGINES.value:
        for part in ("trunk", "full"):
            report = profile_in_process(
                paths[(part, "dense")],
                [paths[(part, "compact")]],
                ["dense", f"compact_keep{round(_KEEP.value * 100)}"],
                engine,
                _BATCH_SIZES.value,
                os.path.join(out, f"profile_{part}_{engine}"),
                extra_flags=[
                    f"--min_time_s={_MIN_TIME.value}",
                    f"--min_repeats={_MIN_REPEATS.value}",
                ],
                echo="::",
            )
            for r in report["results"]:
                rows.append({"part": part, **r})
    return rows


def markdown(report):
    s = report["statics"]
    lines = [
        "# AlexNet at the paper's conv compression (shape level)",
        "",
        "Random weights (timing only; no accuracy). Every conv keeps "
        f"{100 * report['keep']:.0f}% of its filters: widths "
        f"{s['widths_compact']} (dense {s['widths_dense']}).",
        "",
        f"Conv kernel weights: {s['conv_weights_dense']:,} -> "
        f"{s['conv_weights_compact']:,} ({s['conv_compression']:.2f}x). "
        f"FLOP cut: conv trunk {s['trunk_flop_cut']:.2f}x, whole network "
        f"{s['full_flop_cut']:.2f}x.",
        "",
        "| part | engine | batch | dense ms | compact ms | speedup | paired | "
        "speedup / conv compression | speedup / FLOP cut |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
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
        lines.append(
            f"| {r['part']} | {r['engine']} | {r['batch_size']} | "
            f"{dense['median_ms']:.2f} | {r['median_ms']:.2f} | {r['speedup']:.2f}x | "
            f"{r.get('paired_speedup', float('nan')):.2f}x | "
            f"{r['speedup'] / s['conv_compression']:.2f} | {r['speedup'] / cut:.2f} |"
        )
    lines += ["", "Command:", "", f"    {report['command']}", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    import keras_admm  # noqa: F401

    out = _OUTPUT_DIR.value
    os.makedirs(out, exist_ok=True)
    paths, statics = build(_WORK_DIR.value)
    print(json.dumps(statics, indent=1), flush=True)
    rows = time_engines(paths, out)
    report = {
        "keep": _KEEP.value,
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
