"""Reports of a profile: terminal table, JSON, CSV, Markdown and PNG plots.

All functions take the dict returned by `profile_models`. Plots use matplotlib's
Agg backend, so they need no display.
"""

import csv
import json
import os

RESULT_COLUMNS = (
    "model",
    "engine",
    "device",
    "batch_size",
    "median_ms",
    "p90_ms",
    "throughput",
    "count",
    "speedup",
    "paired_speedup",
    "flop_ratio",
    "efficiency",
)
_HEADERS = (
    "model",
    "engine",
    "device",
    "batch",
    "median ms",
    "p90 ms",
    "samples/s",
    "runs",
    "speedup",
    "paired speedup",
    "FLOP ratio",
    "efficiency",
)


def _cell(value):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _rows(report):
    return [[_cell(row[c]) for c in RESULT_COLUMNS] for row in report["results"]]


def results_table(report):
    """The results as an aligned plain-text table for the terminal.

    Args:
        report: the dict returned by `profile_models`.

    Returns:
        The table as one string.
    """
    rows = [list(_HEADERS), *_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(report, path):
    """Writes the whole report (environment and per-layer FLOPs included) as JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def write_csv(report, path):
    """Writes one CSV row per engine x batch size x model."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["results"])


def _markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _model_rows(report):
    rows = []
    for stats in report["models"]:
        flops = stats.get("flops")
        rows.append(
            [
                stats["name"],
                stats["kind"],
                _cell(stats.get("params")),
                "n/a" if flops is None else f"{flops / 1e6:.1f}",
                f"{stats['file_bytes'] / 1e6:.2f}",
            ]
        )
    return rows


def markdown_report(report, title="Profile"):
    """The report as Markdown: notes, environment, models, results.

    Args:
        report: the dict returned by `profile_models`.
        title: the top heading.

    Returns:
        The Markdown text.
    """
    env = report["environment"]
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in report["notes"]]
    lines += [
        f"- Machine: {env['cpu']}, {env['usable_cores']} usable cores, GPUs: "
        f"{', '.join(env['gpus']) or 'none'}; load average {env['load_average']}.",
        f"- Libraries: {', '.join(f'{k} {v}' for k, v in env['libraries'].items())}.",
        f"- Timing: {report['protocol']}.",
        f"- Engines: {json.dumps(report['engines'])}.",
        "",
        "## Models (FLOPs = 2 x MACs per sample)",
        "",
    ]
    lines += _markdown_table(
        ["model", "format", "params", "MFLOPs", "file MB"], _model_rows(report)
    )
    lines += ["", "## Results", ""]
    lines += _markdown_table(list(_HEADERS), _rows(report))
    return "\n".join(lines) + "\n"


def write_markdown(report, path, title="Profile"):
    """Writes `markdown_report(report, title)` to `path`."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_report(report, title))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(report, path):
    """Median latency against batch size, one panel per engine, one line per model."""
    plt = _pyplot()
    engines = sorted({row["engine"] for row in report["results"]})
    fig, axes = plt.subplots(1, len(engines), figsize=(5 * len(engines), 4))
    axes = axes if len(engines) > 1 else [axes]
    for ax, engine in zip(axes, engines):
        rows = [r for r in report["results"] if r["engine"] == engine]
        for model in dict.fromkeys(r["model"] for r in rows):
            points = sorted(
                (r["batch_size"], r["median_ms"]) for r in rows if r["model"] == model
            )
            ax.plot(*zip(*points), marker="o", label=model)
        sizes = sorted({r["batch_size"] for r in rows})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set(xlabel="batch size", ylabel="median latency (ms)")
        ax.set_title(f"{engine} ({rows[0]['device']})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speedup(report, path):
    """Measured speedup against FLOP ratio, per engine and batch size, with y = x."""
    plt = _pyplot()
    rows = [r for r in report["results"] if r["flop_ratio"] is not None]
    fig, ax = plt.subplots(figsize=(6, 5))
    groups = dict.fromkeys((r["engine"], r["batch_size"]) for r in rows)
    for engine, batch_size in groups:
        group = [
            r for r in rows if (r["engine"], r["batch_size"]) == (engine, batch_size)
        ]
        ax.scatter(
            [r["flop_ratio"] for r in group],
            [r["speedup"] for r in group],
            label=f"{engine}, batch {batch_size}",
        )
        for r in group:
            if r["model"] != report["baseline"]:
                ax.annotate(r["model"], (r["flop_ratio"], r["speedup"]), fontsize=6)
    top = max([r["flop_ratio"] for r in rows] + [r["speedup"] for r in rows] + [1.0])
    ax.plot([1, top], [1, top], "k--", label="ideal (speedup = FLOP ratio)")
    ax.set(xlabel="FLOP ratio (baseline / model)", ylabel="measured speedup")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(report, out_dir, stem="profile", title="Profile"):
    """Writes JSON, CSV, Markdown and the two PNG plots of a report.

    Args:
        report: the dict returned by `profile_models`.
        out_dir: the folder (created if missing).
        stem: the file name prefix.
        title: the Markdown heading.

    Returns:
        A dict kind -> path, kinds "json", "csv", "markdown", "latency_plot",
        "speedup_plot".

    Example:
        >>> paths = write_reports(report, "docs/perf", stem="vgg16")
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, f"{stem}.json"),
        "csv": os.path.join(out_dir, f"{stem}.csv"),
        "markdown": os.path.join(out_dir, f"{stem}.md"),
        "latency_plot": os.path.join(out_dir, f"{stem}_latency.png"),
        "speedup_plot": os.path.join(out_dir, f"{stem}_speedup.png"),
    }
    write_json(report, paths["json"])
    write_csv(report, paths["csv"])
    write_markdown(report, paths["markdown"], title)
    plot_latency(report, paths["latency_plot"])
    plot_speedup(report, paths["speedup_plot"])
    return paths
