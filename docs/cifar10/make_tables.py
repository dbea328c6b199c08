"""Copies each run's report, compact model and plan into docs/cifar10/ and prints
the rows of docs/CIFAR10.md from them.

    .venv/bin/python docs/cifar10/make_tables.py runs/cifar10
"""

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def pct(acc, key):
    return f"{100 * acc[key]:.2f}" if key in acc else "-"


def main(runs):
    dense = json.load(open(os.path.join(runs, "resnet20_dense", "report.json")))
    rows = [
        "| model | MACs (M) | MAC cut | params | test (10,000) | test lossless (1,000) "
        "| validation | after hard prune (test) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    acc = dense["accuracy"]
    dense_flops = None
    timing = []
    for name in sorted(os.listdir(runs)):
        path = os.path.join(runs, name, "report.json")
        if name == "resnet20_dense" or not os.path.exists(path):
            continue
        report = json.load(open(path))
        if "compact" not in report:
            rows.append(f"| {name} | (run did not finish: {sorted(report)}) |")
            continue
        dense_flops = report["dense"]["flops"]
        c, p = report["compact"], report["prune"]
        rows.append(
            f"| {name} | {c['flops'] / 2e6:.2f} | {c['mac_reduction']:.2f}x | "
            f"{c['params']:,} | {pct(c['accuracy'], 'test')} | "
            f"{pct(c['accuracy'], 'test_lossless_1000')} | "
            f"{pct(c['accuracy'], 'validation')} | "
            f"{pct(p['accuracy_after_hard_prune'], 'test')} |"
        )
        for r in report.get("profile", []):
            timing.append(
                f"| {name} | {r['engine']} | {r['batch_size']} | {r['median_ms']:.3f} "
                f"| {r['speedup']:.2f}x | {r['speedup'] / c['mac_reduction']:.2f} |"
            )
        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        for f in ("report.json", "report.md", "plan.json", "compaction.json"):
            if os.path.exists(os.path.join(runs, name, f)):
                shutil.copy(os.path.join(runs, name, f), out)
        for f in os.listdir(os.path.join(runs, name)):
            if f.startswith("profile.") or f.startswith("profile_"):
                src = os.path.join(runs, name, f)
                if os.path.isfile(src):
                    shutil.copy(src, out)
        model = c["model"]  # the compact model the run wrote
        shutil.copy(model, os.path.join(HERE, "models", f"{name}.keras"))
    rows.insert(
        2,
        f"| resnet20_dense | {dense_flops / 2e6 if dense_flops else float('nan'):.2f} "
        f"| 1.00x | 274,042 | {pct(acc, 'test')} | {pct(acc, 'test_lossless_1000')} | "
        f"{pct(acc, 'validation')} | - |",
    )
    print("\n".join(rows))
    if timing:
        print()
        print("| model | engine | batch | compact ms | speedup | speedup / MAC cut |")
        print("|---|---|---|---|---|---|")
        print("\n".join(timing))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/cifar10")
