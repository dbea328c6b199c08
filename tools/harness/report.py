"""The comparison's summary, verdict, Markdown page and plots.

`summarize` turns the run records into cells (type x level x method, seed
statistics) and ADMM's margins over the best baseline; `markdown` writes the
results page; `plot` and `plot_latency` draw accuracy against FLOPs and latency.
"""

from __future__ import annotations

import os

STRUCTURED_TYPES = ("filter", "shape", "filter_shape", "channel")


def _stats(values):
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return None
    array = np.asarray(values, dtype="float64")
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(len(array)),
    }


def summarize(records, config):
    """Per (type, level, method): accuracy mean / std / range over seeds, and
    per (type, level): the ADMM margin over the best baseline (in points)."""
    cells = []
    for kind in config.types:
        for level in sorted(config.levels):
            for method in config.methods:
                group = [
                    r
                    for r in records
                    if (r["type"], r["level"], r["method"]) == (kind, level, method)
                ]
                if not group:
                    continue
                cells.append(
                    {
                        "type": kind,
                        "level": level,
                        "method": method,
                        "accuracy": _stats([r["accuracy"] for r in group]),
                        "accuracy_seed0": next(
                            (r["accuracy"] for r in group if r["seed"] == 0), None
                        ),
                        "conv_flops_reduction": _stats(
                            [r["conv_flops_reduction"] for r in group]
                        ),
                        "params_reduction": _stats(
                            [r["params_reduction"] for r in group]
                        ),
                        "reached_target": all(r["reached_target"] for r in group),
                        "latency": next(
                            (r["latency"] for r in group if r["seed"] == 0), None
                        ),
                    }
                )
    margins = []
    for kind in config.types:
        for level in sorted(config.levels):
            here = {
                c["method"]: c
                for c in cells
                if (c["type"], c["level"]) == (kind, level) and c["accuracy"]
            }
            if "admm" not in here or len(here) < 2:
                continue
            best = max(
                (c for m, c in here.items() if m != "admm"),
                key=lambda c: c["accuracy"]["mean"],
            )
            margin = 100 * (here["admm"]["accuracy"]["mean"] - best["accuracy"]["mean"])
            margins.append(
                {
                    "type": kind,
                    "level": level,
                    "admm": here["admm"]["accuracy"]["mean"],
                    "best_baseline": best["method"],
                    "best_baseline_accuracy": best["accuracy"]["mean"],
                    "margin_points": margin,
                    "seeds": here["admm"]["accuracy"]["n"],
                }
            )
    return {"cells": cells, "margins": margins, "verdict": verdict(margins, config)}


def verdict(margins, config):
    """The issue's targets, checked on the seed means of the structured types."""
    structured = [m for m in margins if m["type"] in STRUCTURED_TYPES]
    top = set(sorted(config.levels)[-2:])
    worse = [m for m in structured if m["margin_points"] < 0]
    short = [m for m in structured if m["level"] in top and m["margin_points"] < 1.0]
    return {
        "no_worse_everywhere": not worse,
        "worse_points": [
            {k: m[k] for k in ("type", "level", "best_baseline", "margin_points")}
            for m in worse
        ],
        "one_point_better_at_top_levels": not short,
        "short_of_one_point": [
            {k: m[k] for k in ("type", "level", "best_baseline", "margin_points")}
            for m in short
        ],
    }


def _fmt_acc(stats):
    if stats is None:
        return "-"
    if stats["n"] > 1:
        return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f} (n={stats['n']})"
    return f"{100 * stats['mean']:.2f}"


def markdown(results):
    """The results as Markdown: one accuracy table per type, margins, tfmot."""
    config = results["config"]
    summary = results["summary"]
    methods = config["methods"]
    lines = [
        "## Setup",
        "",
        f"- Data: {results['data']}",
        f"- Dense LeNet-5: {100 * results['dense_accuracy']:.2f}% "
        f"({config['pretrain_epochs']} epochs, Adam {config['learning_rate']:g}, "
        f"batch {config['batch_size']})",
        f"- Budget per method: {config['epochs']} epochs = "
        f"{config['epochs'] - config['finetune_epochs']} (phase 1, Adam "
        f"{config['learning_rate']:g}) + {config['finetune_epochs']} (masked "
        f"fine-tuning, Adam {config['finetune_learning_rate']:g})",
        f"- fc1 in every plan: {config['fc1_sparsity'] or 'dense'}",
        "",
    ]
    lines += mapping_lines(results["points"])
    for kind in config["types"]:
        cells = [c for c in summary["cells"] if c["type"] == kind]
        if not cells:
            continue
        lines += [
            f"### {kind}",
            "",
            "| level | conv FLOPs red. | weights red. | "
            + " | ".join(methods)
            + " | ADMM − best baseline (points) |",
            "|---|---:|---:|" + "---:|" * len(methods) + "---:|",
        ]
        for level in sorted(config["levels"]):
            row = {c["method"]: c for c in cells if c["level"] == level}
            if not row:
                continue
            any_cell = next(iter(row.values()))
            flops = [c["conv_flops_reduction"]["min"] for c in row.values()]
            params = [c["params_reduction"]["mean"] for c in row.values()]
            margin = next(
                (
                    m
                    for m in summary["margins"]
                    if (m["type"], m["level"]) == (kind, level)
                ),
                None,
            )
            margin_text = (
                "-"
                if margin is None
                else f"{margin['margin_points']:+.2f} (vs {margin['best_baseline']})"
            )
            del any_cell
            lines.append(
                f"| {level:g}x | {min(flops):.2f}x | {min(params):.2f}x | "
                + " | ".join(
                    _fmt_acc(row[m]["accuracy"]) if m in row else "-" for m in methods
                )
                + f" | {margin_text} |"
            )
        lines.append("")
    v = summary["verdict"]
    lines += [
        "## Targets (structured types, seed means)",
        "",
        f"- ADMM no worse than every structured baseline at every level: "
        f"{'yes' if v['no_worse_everywhere'] else 'no'}",
    ]
    for m in v["worse_points"]:
        lines.append(
            f"  - {m['type']} {m['level']:g}x: {m['margin_points']:+.2f} points vs "
            f"{m['best_baseline']}"
        )
    lines.append(
        "- ADMM at least 1 point better than the best baseline at the two highest "
        f"levels: {'yes' if v['one_point_better_at_top_levels'] else 'no'}"
    )
    for m in v["short_of_one_point"]:
        lines.append(
            f"  - {m['type']} {m['level']:g}x: {m['margin_points']:+.2f} points vs "
            f"{m['best_baseline']}"
        )
    lines.append("")
    lines += latency_lines(summary["cells"])
    tfmot = results.get("tfmot", {})
    lines += ["## tfmot prune_low_magnitude (tf_keras, own process)", ""]
    if tfmot.get("status") == "ran":
        lines += [
            f"Dense accuracy in tf_keras with the same weights: "
            f"{100 * tfmot['dense_accuracy_tf_keras']:.2f}%",
            "",
            "| point | accuracy | conv FLOPs red. (nnz) | weights red. | "
            "stripped vs dense, batch 1 | batch 32 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for p in tfmot["points"]:
            lat = p["latency_stripped_vs_dense"]
            lines.append(
                f"| {p['name']} | {100 * p['accuracy']:.2f} | "
                f"{p['conv_flops_reduction']:.2f}x | {p['params_reduction']:.2f}x | "
                f"{lat['1']['speedup']:.2f}x ({lat['1']['pruned']['median_ms']:.3f} "
                f"vs {lat['1']['dense']['median_ms']:.3f} ms) | "
                f"{lat['32']['speedup']:.2f}x ({lat['32']['pruned']['median_ms']:.3f}"
                f" vs {lat['32']['dense']['median_ms']:.3f} ms) |"
            )
    else:
        lines.append(f"- {tfmot.get('status', 'not run')}")
    lines.append("")
    return "\n".join(lines)


def mapping_lines(records):
    """Markdown lines: the kept groups per conv layer behind each level."""
    plans = {}
    for record in records:
        plans.setdefault((record["type"], record["level"]), record["planned"])
    if not plans:
        return []
    layer_names = [layer["layer"] for layer in next(iter(plans.values()))["layers"]]
    lines = [
        "## Levels: kept groups per conv layer (plan_for_flops_reduction)",
        "",
        "| type | level | "
        + " | ".join(f"{name} kept / total" for name in layer_names)
        + " | conv FLOPs reduction |",
        "|---|---|" + "---|" * len(layer_names) + "---:|",
    ]
    for (kind, level), planned in plans.items():
        cells = []
        for layer in planned["layers"]:
            cells.append(
                ", ".join(
                    f"{layer['kept'][u]}/{layer['total'][u]}"
                    + ("" if u == "groups" else f" {u}")
                    for u in layer["kept"]
                )
            )
        lines.append(
            f"| {kind} | {level:g}x | "
            + " | ".join(cells)
            + f" | {planned['expected_conv_flops_reduction']:.2f}x |"
        )
    lines.append("")
    return lines


def latency_lines(cells):
    """Markdown lines: compacted-model speedup over the dense model (seed 0)."""
    lines = ["## Latency of the compacted models (seed 0)", ""]
    measured = [c for c in cells if (c["latency"] or {}).get("status") == "measured"]
    others = sorted(
        {(c["latency"] or {}).get("status", "-") for c in cells if c not in measured}
    )
    if measured:
        combos = sorted(
            {
                (r["engine"], r["batch_size"])
                for c in measured
                for r in c["latency"]["results"]
            }
        )
        first = measured[0]["latency"]["results"]
        dense = {
            (r["engine"], r["batch_size"]): r["median_ms"] * r["speedup"] for r in first
        }
        lines += [
            "Speedup of compact(pruned model) over the dense model, median "
            "latency, interleaved timing (keras_admm.profiling). Dense: "
            + ", ".join(f"{e} batch {b} {dense[(e, b)]:.3f} ms" for e, b in combos)
            + ".",
            "",
            "| type | level | method | "
            + " | ".join(f"{e} b{b}" for e, b in combos)
            + " |",
            "|---|---|---|" + "---:|" * len(combos),
        ]
        for c in measured:
            by = {(r["engine"], r["batch_size"]): r for r in c["latency"]["results"]}
            lines.append(
                f"| {c['type']} | {c['level']:g}x | {c['method']} | "
                + " | ".join(
                    f"{by[k]['speedup']:.2f}x" if k in by else "-" for k in combos
                )
                + " |"
            )
    lines += [f"- {s}" for s in others if not s.startswith("not measured (seed")]
    lines.append("")
    return lines


_STYLES = {
    "admm": ("tab:red", "o"),
    "one_shot_l2": ("tab:blue", "s"),
    "one_shot_l1": ("tab:cyan", "D"),
    "gradual": ("tab:green", "^"),
    "group_lasso": ("tab:purple", "v"),
}


def plot(results, path):
    """Accuracy vs conv FLOPs reduction: one panel per type, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    cells = results["summary"]["cells"]
    kinds = [k for k in config["types"] if any(c["type"] == k for c in cells)]
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(4.2 * len(kinds), 4.4), squeeze=False, sharey=True
    )
    tfmot = results.get("tfmot", {})
    for ax, kind in zip(axes[0], kinds):
        for method in config["methods"]:
            mine = sorted(
                (c for c in cells if c["type"] == kind and c["method"] == method),
                key=lambda c: c["level"],
            )
            if not mine:
                continue
            color, marker = _STYLES.get(method, ("black", "x"))
            ax.errorbar(
                [c["conv_flops_reduction"]["mean"] for c in mine],
                [100 * c["accuracy"]["mean"] for c in mine],
                yerr=[100 * c["accuracy"]["std"] for c in mine],
                label=method,
                color=color,
                marker=marker,
                capsize=3,
                linewidth=2 if method == "admm" else 1.2,
            )
        if kind == "unstructured" and tfmot.get("status") == "ran":
            mine = [p for p in tfmot["points"] if p["kind"] == "unstructured"]
            ax.plot(
                [p["conv_flops_reduction"] for p in mine],
                [100 * p["accuracy"] for p in mine],
                label="tfmot prune_low_magnitude",
                color="black",
                marker="x",
                linestyle="--",
            )
        if kind == "unstructured" and tfmot.get("status") == "ran":
            for p in tfmot["points"]:
                if p["kind"] == "m_by_n":
                    ax.scatter(
                        [p["conv_flops_reduction"]],
                        [100 * p["accuracy"]],
                        color="gray",
                        marker="*",
                        s=90,
                        label="tfmot 2:4 (conv2, fc1)",
                        zorder=5,
                    )
        ax.axhline(
            100 * results["dense_accuracy"], color="gray", linestyle=":", label="dense"
        )
        ax.set_xscale("log", base=2)
        ax.set_title(kind)
        ax.set_xlabel("conv FLOPs reduction (x)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("held-out top-1 accuracy (%)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)))
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(results, out_dir):
    """Accuracy vs measured latency of the compacted models (when measured).

    One PNG per sparsity type, one panel per engine and batch size, one line
    per method through its levels (seed-0 latency, seed-mean accuracy), and
    the dense model as a star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [
        c
        for c in results["summary"]["cells"]
        if (c["latency"] or {}).get("status") == "measured"
    ]
    paths = []
    if not cells:
        return paths
    combos = sorted(
        {(r["engine"], r["batch_size"]) for c in cells for r in c["latency"]["results"]}
    )
    for kind in results["config"]["types"]:
        mine = [c for c in cells if c["type"] == kind]
        if not mine:
            continue
        fig, axes = plt.subplots(
            1, len(combos), figsize=(4 * len(combos), 3.6), squeeze=False
        )
        for ax, (engine, batch) in zip(axes[0], combos):
            dense_ms = []
            for method in results["config"]["methods"]:
                points = []
                for c in sorted(mine, key=lambda c: c["level"]):
                    if c["method"] != method:
                        continue
                    for r in c["latency"]["results"]:
                        if (r["engine"], r["batch_size"]) == (engine, batch):
                            points.append((r["median_ms"], 100 * c["accuracy"]["mean"]))
                            dense_ms.append(r["median_ms"] * r["speedup"])
                if points:
                    color, marker = _STYLES.get(method, ("black", "x"))
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker=marker, color=color, label=method)
            if dense_ms:
                ax.scatter(
                    [float(sorted(dense_ms)[len(dense_ms) // 2])],
                    [100 * results["dense_accuracy"]],
                    marker="*",
                    s=120,
                    color="black",
                    label="dense",
                    zorder=5,
                )
            ax.set_title(f"{kind}: {engine}, batch {batch}")
            ax.set_xlabel("median latency (ms)")
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("held-out top-1 accuracy (%)")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"accuracy_vs_latency_{kind}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
