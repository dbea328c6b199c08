"""Plots the ResNet-20 rows of docs/CIFAR10.md: test accuracy against MACs and
against latency measured on ONNX Runtime and TF (batch 32).

Reads only committed results: docs/cifar10/<run>/report.json (accuracy, MACs of
the compact model) and docs/cifar10/target/profile_<engine>/profile.json (one
interleaved timing run of the dense, uniform gradual and planned models on an
idle machine). Writes accuracy_vs_macs.png and accuracy_vs_latency.png here.

    .venv/bin/python docs/cifar10/plot_accuracy.py
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = {"admm": "o", "gradual": "s", "one_shot_l1": "^"}
COLORS = {
    "admm": "tab:blue",
    "gradual": "tab:orange",
    "one_shot_l1": "tab:green",
    "planned": "tab:red",
    "dense": "black",
}
# Report names in the timing run -> the run folders holding their accuracy.
KIND = {"dense": "dense", "uniform_2x": "gradual", "uniform_3x": "gradual"}
TIMED = {
    "dense": "resnet20_dense",
    "uniform_2x": "resnet20_gradual_2x",
    "uniform_3x": "resnet20_gradual_3x",
    "target_speed_of_uniform3x": "resnet20_gradual_speed_of_uniform3x",
    "target_speed1.5x": "resnet20_gradual_speed1.5x",
}


def _load(folder):
    with open(os.path.join(HERE, folder, "report.json")) as f:
        return json.load(f)


def _test_accuracy(report):
    if "retrain" in report:
        return 100 * report["retrain"]["accuracy"]["test"]
    return 100 * report["accuracy"]["test"]


def runs():
    """[(folder, method, MACs in millions, test accuracy)] of the 12-epoch rows."""
    rows = []
    dense = _load("resnet20_dense")
    dense_macs = None
    for folder in sorted(os.listdir(HERE)):
        if not folder.startswith("resnet20_") or "align" in folder:
            continue
        if not os.path.exists(os.path.join(HERE, folder, "report.json")):
            continue
        report = _load(folder)
        if "compact" not in report:
            continue
        if report["prune"]["epochs"] + report["retrain"]["epochs"] != 12:
            continue  # another budget: not comparable in this plot
        dense_macs = report["dense"]["flops"] / 2e6
        method = next((m for m in METHODS if folder.startswith(f"resnet20_{m}_")), None)
        macs = report["compact"]["flops"] / 2e6
        rows.append((folder, method, macs, _test_accuracy(report)))
    rows.append(("resnet20_dense", "dense", dense_macs, _test_accuracy(dense)))
    return rows


def plot_macs(rows, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for folder, method, macs, accuracy in rows:
        planned = "speed" in folder
        kind = "planned" if planned else method
        marker = {"dense": "*", "planned": "D"}.get(kind) or METHODS[method]
        label = "planned for speed (gradual)" if planned else method
        ax.scatter(macs, accuracy, marker=marker, color=COLORS[kind], s=60, label=label)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xlabel("multiply-accumulates of the compact model (M)")
    ax.set_ylabel("test accuracy, 10,000 images (%)")
    ax.set_title("ResNet-20, CIFAR-10 (JPEG-decoded), 12-epoch pruning budgets")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, engine in zip(axes, ("onnxruntime", "tf")):
        profile_path = os.path.join(HERE, "target", f"profile_{engine}", "profile.json")
        with open(profile_path) as f:
            results = json.load(f)["results"]
        for r in results:
            if r["batch_size"] != 32 or r["model"] not in TIMED:
                continue
            accuracy = _test_accuracy(_load(TIMED[r["model"]]))
            color = COLORS[KIND.get(r["model"], "planned")]
            ax.scatter(r["median_ms"], accuracy, s=60, color=color)
            ax.annotate(
                r["model"],
                (r["median_ms"], accuracy),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_xlabel(f"median latency, {engine}, batch 32 (ms)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy, 10,000 images (%)")
    fig.suptitle("ResNet-20: accuracy against measured latency (2-core CPU, idle)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    rows = runs()
    for folder, method, macs, accuracy in rows:
        print(f"{folder:45s} {method:12s} {macs:7.2f} M  {accuracy:.2f}%")
    plot_macs(rows, os.path.join(HERE, "accuracy_vs_macs.png"))
    plot_latency(os.path.join(HERE, "accuracy_vs_latency.png"))


if __name__ == "__main__":
    main()
