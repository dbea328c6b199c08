"""Shape-level probe (no accuracy claimed): which ResNet-20 widths run at 0.85
of their MAC cut on this CPU?

Issue 13 asks for a measured speedup of at least 0.85 of the MAC cut at batch
32. The uniform plans (11/22/44 and 9/18/36 channels) reach 0.35-0.62. This
script cuts the trained 60-epoch dense ResNet-20 to channel counts that are
multiples of 8, compacts each (exact), folds BatchNorm into the convs (a TF
deployment does; ONNX Runtime folds on its own), and times every form beside
the folded dense model in one interleaved run on TF and ONNX Runtime, batch 1
and 32. Run it on an idle machine, from the repository root:

    .venv/bin/python docs/cifar10/aligned_widths.py

Writes docs/cifar10/aligned_widths/{profile.json,profile.md,widths.md}.
A configuration names the kept filters of each stage: `streams` (the residual
stream: the stem, every block's second conv and the projection) and `inner`
(every block's first conv), for the stages of 16, 32 and 64 channels.
"""

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

import keras  # noqa: E402

import keras_admm  # noqa: E402
from keras_admm.profiling import TimingProtocol  # noqa: E402
from keras_admm.profiling import report as report_lib  # noqa: E402

DENSE = os.path.join(HERE, "models", "resnet20_dense60.keras")
OUT = os.path.join(HERE, "aligned_widths")
FULL = (16, 32, 64)
# name: (streams per stage, inner per stage)
CONFIGS = {
    "inner_half": (FULL, (8, 16, 32)),
    "inner_quarter": (FULL, (8, 8, 16)),
    "uniform_8_24_48": ((8, 24, 48), (8, 24, 48)),
    "uniform_8_16_40": ((8, 16, 40), (8, 16, 40)),
    "uniform_8_16_32": ((8, 16, 32), (8, 16, 32)),
    "streams_full_inner_8_16_16": (FULL, (8, 16, 16)),
    "stage1_dense_16_16_32": ((16, 16, 32), (16, 16, 32)),
}


def rules_for(streams, inner):
    rules = {}

    def cut(name, kept, total):
        if kept < total:
            rules[name] = f"filter:{1 - kept / total}"

    cut("conv1", streams[0], FULL[0])
    for stage, total in enumerate(FULL, start=1):
        for block in range(3):
            cut(f"s{stage}b{block}_conv1", inner[stage - 1], total)
            cut(f"s{stage}b{block}_conv2", streams[stage - 1], total)
        if stage > 1:
            cut(f"s{stage}b0_proj", streams[stage - 1], total)
    return rules


def widths_of(model):
    return {
        layer.name: layer.filters
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp(prefix="aligned_widths_")
    dense = keras.saving.load_model(DENSE, compile=False)
    paths, rows = [], []
    dense_path = os.path.join(work, "dense_fold.keras")
    keras_admm.fold_batchnorm(dense).save(dense_path)
    dense_macs = keras_admm.count_flops(dense)
    for name, (streams, inner) in CONFIGS.items():
        model = keras.saving.load_model(DENSE, compile=False)
        plan = keras_admm.PruningPlan(rules_for(streams, inner)).resolve(model)
        keras_admm.hard_prune(model, plan, graph=True)
        small = keras_admm.compact(model)
        widths = widths_of(small)
        for layer, filters in widths.items():  # the counts asked for, exactly
            stage = 0 if layer == "conv1" else int(layer[1]) - 1
            want = (
                inner[stage]
                if layer.endswith("_conv1") and layer != "conv1"
                else (streams[stage])
            )
            assert filters == want, (name, layer, filters, want)
        path = os.path.join(work, f"{name}_fold.keras")
        keras_admm.fold_batchnorm(small).save(path)
        paths.append(path)
        macs = keras_admm.count_flops(small)
        rows.append((name, streams, inner, dense_macs / macs))
        print(f"{name}: streams {streams}, inner {inner}, {dense_macs / macs:.2f}x")
    report = keras_admm.profile_models(
        dense_path,
        paths,
        engines=["tf", "onnxruntime"],
        batch_sizes=[1, 32],
        protocol=TimingProtocol(warmup=5, min_repeats=30, min_time_s=3.0),
        names=["dense_fold"] + list(CONFIGS),
        notes=[
            "docs/cifar10/aligned_widths.py: the 60-epoch dense ResNet-20 cut to the "
            "widths named, compacted and BatchNorm-folded; dense folded too.",
        ],
    )
    report_lib.write_json(report, os.path.join(OUT, "profile.json"))
    with open(os.path.join(OUT, "profile.md"), "w") as f:
        f.write(report_lib.markdown_report(report, title="ResNet-20 aligned widths"))
    print(report_lib.results_table(report))
    lines = [
        "| widths | streams | inner | MAC cut | "
        "TF b1 | TF b32 (/ MAC cut) | ORT b1 | ORT b32 (/ MAC cut) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    speed = {
        (r["model"], r["engine"], r["batch_size"]): r["speedup"]
        for r in report["results"]
    }
    for name, streams, inner, cut in rows:
        cells = []
        for engine in ("tf", "onnxruntime"):
            for batch in (1, 32):
                s = speed[(name, engine, batch)]
                cells.append(f"{s:.2f}x" + (f" ({s / cut:.2f})" if batch == 32 else ""))
        lines.append(
            f"| {name} | {'/'.join(map(str, streams))} | {'/'.join(map(str, inner))} "
            f"| {cut:.2f}x | " + " | ".join(cells) + " |"
        )
    with open(os.path.join(OUT, "widths.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    json.dump(
        {name: {"streams": s, "inner": i, "mac_cut": c} for name, s, i, c in rows},
        open(os.path.join(OUT, "widths.json"), "w"),
        indent=1,
    )


if __name__ == "__main__":
    main()
