"""Plots the ResNet-20 rows of docs/CIFAR10.md: test accuracy against MACs and
against the speedup over the dense model measured on ONNX Runtime and TF
(batch 32).

Reads only committed results: the run folders docs/cifar10/resnet20_*/ and
docs/cifar10/budget30/*/ (report.json: accuracy, MACs of the compact model,
epochs; blocks.json marks a depth-pruned run), and the profile.json of eight
pairs of interleaved timing runs of BatchNorm-folded models with nothing else
running: docs/cifar10/depth_fold25/run{1,2} (session 25),
docs/cifar10/fold_2x/run{3,4} (session 30), docs/cifar10/fold_2x/seed1_run{1,2},
docs/cifar10/fold_3x/run{1,2} (session 31, a slower, noisier machine),
docs/cifar10/fold_s1out/run{1,2} (session 32), run{3,4} and
docs/cifar10/fold_2x/s1out_run{1,2} (session 33), and
docs/cifar10/fold_2x/s1out_seed1_run{1,2} (session 34).
Latency is plotted as the speedup over the folded dense model of the same run,
so that runs of different sessions share one axis. Writes
accuracy_vs_macs.png and accuracy_vs_latency.png here.

    .venv/bin/python docs/cifar10/plot_accuracy.py
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MARKERS = {
    "admm": "o",
    "gradual": "s",
    "one_shot_l1": "^",
    "depth": "P",
    "depth + channels": "X",
    "depth, from random weights (control)": "v",
    "planned for speed": "D",
    "dense": "*",
}
COLORS = {
    "admm": "tab:blue",
    "gradual": "tab:orange",
    "one_shot_l1": "tab:green",
    "depth": "tab:purple",
    "depth + channels": "tab:brown",
    "depth, from random weights (control)": "tab:gray",
    "planned for speed": "tab:red",
    "dense": "black",
}
# Pairs of timing runs, and in each, models -> the run folders whose accuracy
# they carry (the 12- and 30-epoch channel-pruned models have the same widths,
# so one timing serves both budgets). Each folder is drawn from one pair.
TIMINGS = [
    (
        ("depth_fold25/run1", "depth_fold25/run2"),
        {
            "dense": ["resnet20_dense"],
            "gradual_2x": ["resnet20_gradual_2x", "budget30/gradual_2x"],
            "gradual_3x": ["resnet20_gradual_3x", "budget30/gradual_3x"],
            "depth_2x": ["resnet20_gradual_2x_minus5blocks"],
            "depth_3x": ["resnet20_gradual_3x_minus6blocks"],
            "depth_2x_30ep": ["budget30/depth_2x_minus5blocks_lr005"],
            "mix_3x_30ep": ["budget30/mix_3x_minus5blocks_lr005"],
        },
    ),
    (
        ("fold_2x/run3", "fold_2x/run4"),
        {
            "out5_60ep": ["budget30/depth_2x_minus5blocks_lr005_ep60"],
            "out4_filters_30ep": ["budget30/depth_2x_minus4blocks_lr005"],
            "out4_filters_60ep": ["budget30/depth_2x_minus4blocks_lr005_ep60"],
            "out4_inner48_60ep": ["budget30/depth_2x_inner48_minus4blocks_lr005_ep60"],
        },
    ),
    (
        ("fold_2x/seed1_run1", "fold_2x/seed1_run2"),
        {
            "inner48_seed1": [
                "budget30/depth_2x_inner48_minus4blocks_lr005_ep60_seed1"
            ],
        },
    ),
    (
        ("fold_3x/run1", "fold_3x/run2"),
        {
            "mix3x_60ep": ["budget30/mix_3x_minus5blocks_lr005_ep60"],
            "inner16_32_3x": ["budget30/depth_3x_inner16_32_minus4blocks_lr005_ep60"],
        },
    ),
    (
        ("fold_s1out/run1", "fold_s1out/run2"),
        {
            "inner16_32_seed1": [
                "budget30/depth_3x_inner16_32_minus4blocks_lr005_ep60_seed1"
            ],
            "s1out_s3in32": ["budget30/depth_3x_s1out_s3in32_lr005_ep60"],
        },
    ),
    (
        ("fold_s1out/run3", "fold_s1out/run4"),
        {
            "s1out_seed1": ["budget30/depth_3x_s1out_s3in32_lr005_ep60_seed1"],
        },
    ),
    (
        ("fold_2x/s1out_run1", "fold_2x/s1out_run2"),
        {
            "s1out_2x": ["budget30/depth_2x_s1out_s3b0in32_lr005_ep60"],
        },
    ),
    (
        ("fold_2x/s1out_seed1_run1", "fold_2x/s1out_seed1_run2"),
        {
            "s1out_2x_seed1": ["budget30/depth_2x_s1out_s3b0in32_lr005_ep60_seed1"],
        },
    ),
]


def _load(folder):
    with open(os.path.join(HERE, folder, "report.json")) as f:
        return json.load(f)


def _test_accuracy(report):
    if "retrain" in report:
        return 100 * report["retrain"]["accuracy"]["test"]
    return 100 * report["accuracy"]["test"]


def _epochs(report):
    return report["prune"]["epochs"] + report["retrain"]["epochs"]


def _cuts_channels(folder):
    """Whether the run's plan removes a channel anywhere (ResNet-20's narrowest
    layers have 16 channels; the bisected ratio of a depth-only run is ~0.0002)."""
    with open(os.path.join(HERE, folder, "plan.json")) as f:
        rules = json.load(f)["rules"]
    ratios = [float(r["sparsity"].split(":")[1]) for r in rules]
    return max(ratios) * 16 >= 1


def _kind(folder):
    """The legend entry of one run folder."""
    name = os.path.basename(folder)
    if "speed" in name:
        return "planned for speed"
    if _load(folder).get("retrain", {}).get("from_scratch"):
        return "depth, from random weights (control)"
    if os.path.exists(os.path.join(HERE, folder, "blocks.json")):
        return "depth + channels" if _cuts_channels(folder) else "depth"
    for method in ("admm", "gradual", "one_shot_l1"):
        if name.startswith((f"resnet20_{method}_", f"{method}_")):
            return method
    raise ValueError(f"{folder}: no method in its name")


def runs():
    """[(folder, kind, epochs, MACs in millions, test accuracy)] of every row."""
    folders = [f for f in sorted(os.listdir(HERE)) if f.startswith("resnet20_")]
    folders += [
        os.path.join("budget30", f)
        for f in sorted(os.listdir(os.path.join(HERE, "budget30")))
    ]
    rows = []
    dense_macs = None
    for folder in folders:
        if "align" in folder or not os.path.exists(
            os.path.join(HERE, folder, "report.json")
        ):
            continue  # _align8: the same weights as another row, more MACs
        report = _load(folder)
        if "compact" not in report:
            continue
        dense_macs = report["dense"]["flops"] / 2e6
        macs = report["compact"]["flops"] / 2e6
        rows.append(
            (folder, _kind(folder), _epochs(report), macs, _test_accuracy(report))
        )
    rows.append(
        (
            "resnet20_dense",
            "dense",
            0,
            dense_macs,
            _test_accuracy(_load("resnet20_dense")),
        )
    )
    return rows


def _scatter(ax, x, y, kind, epochs, **kwargs):
    """Hollow markers: 12-epoch budgets; filled: 30 epochs and the dense model;
    large with a black edge: more than 30 epochs."""
    filled = epochs != 12
    long = epochs > 30
    ax.scatter(
        x,
        y,
        marker=MARKERS[kind],
        s=130 if long else 60,
        facecolors=COLORS[kind] if filled else "none",
        edgecolors="black" if long else COLORS[kind],
        label=kind if kind == "dense" else f"{kind}, {epochs} epochs",
        **kwargs,
    )


def _legend(ax):
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7)


def plot_macs(rows, path):
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for _, kind, epochs, macs, accuracy in rows:
        _scatter(ax, macs, accuracy, kind, epochs)
    _legend(ax)
    ax.set_xlabel("multiply-accumulates of the compact model (M)")
    ax.set_ylabel("test accuracy, 10,000 images (%)")
    ax.set_title("ResNet-20, CIFAR-10 (JPEG-decoded), pruning budgets of 12-60 epochs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _speedups(runs, engine):
    """{model: [speedup over the dense model of each timing run]} at batch 32."""
    found = {}
    for run in runs:
        with open(os.path.join(HERE, run, "profile.json")) as f:
            for r in json.load(f)["results"]:
                if r["batch_size"] == 32 and r["engine"] == engine:
                    found.setdefault(r["model"], []).append(r["speedup"])
    return found


def plot_latency(rows, path):
    by_folder = {
        folder: (kind, epochs, accuracy) for folder, kind, epochs, _, accuracy in rows
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, engine in zip(axes, ("onnxruntime", "tf")):
        for runs, timed in TIMINGS:
            speedups = _speedups(runs, engine)
            for model, folders in timed.items():
                low, high = min(speedups[model]), max(speedups[model])
                for folder in folders:
                    kind, epochs, accuracy = by_folder[folder]
                    # A bar from the slower to the faster of the two timing runs.
                    ax.plot([low, high], [accuracy, accuracy], color=COLORS[kind], lw=1)
                    _scatter(ax, (low + high) / 2, accuracy, kind, epochs)
        ax.set_xlabel(
            f"speedup over the dense model, {engine}, batch 32, BatchNorm folded"
        )
        ax.grid(alpha=0.3)
    _legend(axes[1])
    axes[0].set_ylabel("test accuracy, 10,000 images (%)")
    fig.suptitle(
        "ResNet-20: accuracy against measured speedup (2-core CPU, nothing else "
        "running; bars span two timing runs of one session)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    rows = runs()
    for folder, kind, epochs, macs, accuracy in rows:
        print(f"{folder:45s} {kind:18s} {epochs:3d} ep {macs:7.2f} M  {accuracy:.2f}%")
    plot_macs(rows, os.path.join(HERE, "accuracy_vs_macs.png"))
    plot_latency(rows, os.path.join(HERE, "accuracy_vs_latency.png"))


if __name__ == "__main__":
    main()
