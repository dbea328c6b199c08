"""ADMM against baseline pruning methods at equal budgets, along conv FLOPs levels.

The logic of tools/compare.py (which only wires flags to it): for every sparsity
type and conv FLOPs reduction level, one plan
(`keras_admm.plan_for_flops_reduction`), the same pretrained weights
pruned by each method of `harness.methods` within the same epoch budget,
held-out accuracy, conv FLOPs and weights reductions, and the latency of the
compacted model (TF and ONNX Runtime, batch 1 and 32, through
`keras_admm.profiling`). tfmot's prune_low_magnitude runs in its own process
through tools/tfmot_baseline.py (in a source checkout) when tfmot is installed.

Example:

    config = ComparisonConfig(output_dir="runs/compare", levels=(2.0, 4.0))
    results = run_comparison(config, models.lenet5, load_data("auto", None, 0, 0))
    print(markdown(results))
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time

from harness import methods
from harness.report import markdown, plot, plot_latency, summarize

_TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TFMOT_SCRIPT = os.path.join(_TOOLS, "tfmot_baseline.py")


# ------------------------------------------------------------------ config
@dataclasses.dataclass
class ComparisonConfig:
    """Everything a comparison run depends on (flags map onto it one to one)."""

    output_dir: str
    levels: tuple = (2.0, 4.0, 8.0, 16.0)
    types: tuple = ("filter", "shape", "filter_shape", "unstructured")
    methods: tuple = ("admm", "one_shot_l2", "one_shot_l1", "gradual", "group_lasso")
    seeds: int = 3
    seeded_levels: int = 2
    pretrain_epochs: int = 12
    epochs: int = 9
    finetune_epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 3e-4
    rho: float = 0.3
    rho_multiplier: float = 1.3
    admm_stages: int = 4
    admm_fraction: float = 2 / 3
    graph: bool = True
    group_lasso_strength: float = 1e-4
    fc1_sparsity: str | None = "unstructured:0.9"
    tfmot: bool = True
    latency: bool = True
    tfmot_latency_runs: int = 200

    def budget(self):
        return methods.TrainingBudget(
            epochs=self.epochs,
            finetune_epochs=self.finetune_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            finetune_learning_rate=self.finetune_learning_rate,
        )

    def options(self):
        return methods.MethodOptions(
            rho=self.rho,
            rho_multiplier=self.rho_multiplier,
            admm_stages=self.admm_stages,
            admm_fraction=self.admm_fraction,
            graph=self.graph,
            group_lasso_strength=self.group_lasso_strength,
        )

    def run_key(self) -> str:
        """What a stored point must match to be reused (training settings)."""
        keys = (
            "pretrain_epochs epochs finetune_epochs batch_size learning_rate "
            "finetune_learning_rate rho rho_multiplier admm_stages admm_fraction "
            "graph group_lasso_strength "
            "fc1_sparsity"
        ).split()
        return json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)


def sweep_points(config) -> list[tuple]:
    """(type, level, method, seed) of every run, seed 0 first.

    Every level runs seed 0; the `seeded_levels` highest levels also run seeds
    1 .. seeds-1. one_shot_l1 is skipped for unstructured sparsity, where the L1
    and L2 norms of a single weight rank alike (it would repeat one_shot_l2).
    """
    levels = sorted(config.levels)
    seeded = set(levels[len(levels) - config.seeded_levels :])
    points = []
    for seed in range(config.seeds):
        for kind in config.types:
            for level in levels:
                if seed and level not in seeded:
                    continue
                for method in config.methods:
                    if method == "one_shot_l1" and kind == "unstructured":
                        continue
                    points.append((kind, level, method, seed))
    return points


# -------------------------------------------------------------------- data
def load_data(source, test_dir, train_size, test_size, seed=0):
    """MNIST via keras_admm.datasets, subsampled with a fixed seed."""
    import numpy as np

    from keras_admm.datasets import load_mnist

    data = load_mnist(source, test_dir=test_dir, seed=seed)
    for split, size in (("train", train_size), ("test", test_size)):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if size and len(x) > size:
            keep = np.sort(np.random.RandomState(seed).permutation(len(x))[:size])
            setattr(data, f"x_{split}", x[keep])
            setattr(data, f"y_{split}", y[keep])
            data.source += f"; {size} random {split} digits used"
    return data


def save_data_npz(data, path):
    """The exact arrays, for the tfmot process (images as uint8: lossless here)."""
    import numpy as np

    def as_uint8(x):
        u8 = np.round(x * 255.0).astype("uint8")
        if not np.array_equal(u8.astype("float32") / 255.0, x):
            return x  # not 8-bit images: store the floats
        return u8

    np.savez(
        path,
        x_train=as_uint8(data.x_train),
        y_train=data.y_train,
        x_test=as_uint8(data.x_test),
        y_test=data.y_test,
    )


def pretrain(model_fn, data, config, seed=0):
    """Dense weights and accuracy, trained once and cached in output_dir."""
    import keras
    import numpy as np

    weights_path = os.path.join(config.output_dir, "dense_weights.npz")
    meta_path = os.path.join(config.output_dir, "dense.json")
    meta = {
        "pretrain_epochs": config.pretrain_epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": seed,
        "data": data.source,
        "train": int(len(data.x_train)),
    }
    if os.path.exists(weights_path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            cached = json.load(f)
        if cached.get("settings") == meta:
            with np.load(weights_path) as stored:
                weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
            print(
                f"Dense model: cached ({weights_path}), accuracy "
                f"{cached['accuracy']:.4f}",
                flush=True,
            )
            return weights, cached["accuracy"]
    keras.utils.set_random_seed(seed)
    model = model_fn()
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.time()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=config.batch_size,
        epochs=config.pretrain_epochs,
        verbose=0,
    )
    accuracy = float(
        model.evaluate(
            data.x_test, data.y_test, batch_size=1000, verbose=0, return_dict=True
        )["accuracy"]
    )
    weights = model.get_weights()
    np.savez(weights_path, *weights)
    model.save(os.path.join(config.output_dir, "dense.keras"))
    with open(meta_path, "w") as f:
        json.dump(
            {"settings": meta, "accuracy": accuracy, "seconds": time.time() - start},
            f,
            indent=2,
        )
    print(
        f"Dense model: trained {config.pretrain_epochs} epochs, accuracy "
        f"{accuracy:.4f}",
        flush=True,
    )
    return weights, accuracy


# ----------------------------------------------------------------- latency
def measure_compact_latency(model, dense_path, workdir, name):
    """Latency of compact(model) against the dense model, or why not measured.

    Returns {"status": "measured", "results": [...]} with median ms and speedup
    per engine (tf, onnxruntime) and batch size (1, 32), or {"status": "not
    measured (...)"}.
    """
    try:
        from keras_admm import compaction, profiling

        small = compaction.compact(model)
        path = os.path.join(workdir, f"{name}.keras")
        small.save(path)
        report = profiling.profile_models(
            dense_path,
            [path],
            engines=["tf", "onnxruntime"],
            batch_sizes=[1, 32],
            names=["dense", name],
            protocol=profiling.TimingProtocol(warmup=3, min_repeats=10, min_time_s=0.5),
        )
    except Exception as error:  # report it, never invent a number
        return {"status": f"not measured (error: {type(error).__name__}: {error})"}
    rows = [
        {
            "engine": r["engine"],
            "batch_size": r["batch_size"],
            "median_ms": r["median_ms"],
            "speedup": r["speedup"],
        }
        for r in report["results"]
        if r["model"] == name
    ]
    return {"status": "measured", "results": rows}


# -------------------------------------------------------------------- runs
def _kept_groups(report_rows):
    return {
        row["layer"]: {g["unit"]: g["kept"] for g in row["groups"]}
        for row in report_rows
    }


def _reached(level_plan, report):
    """Whether every conv layer kept at most the planned groups and the level."""
    kept = _kept_groups(report.rows)
    names = {"groups": None, "filters": "filters", "columns": "columns"}
    for layer in level_plan.layers:
        actual = kept[layer["layer"]]
        for unit, planned in layer["kept"].items():
            key = names[unit] or next(iter(actual))
            if actual.get(key, 0) > planned:
                return False
    reduction = report.totals["conv_flops_reduction"] or 0.0
    return reduction >= level_plan.level * (1 - 1e-9)


def run_point(
    kind, level, method, seed, model_fn, weights, data, config, extra, latency
):
    """One (type, level, method, seed) run: its result dict.

    `latency`: measure the compacted model's latency (seed 0 only).
    """
    from keras_admm import plan_for_flops_reduction, sparsity_report

    template = model_fn()
    level_plan = plan_for_flops_reduction(template, kind, level, extra_rules=extra)
    result = methods.run_method(
        method,
        model_fn,
        weights,
        data,
        level_plan.plan,
        config.budget(),
        config.options(),
        seed=seed,
    )
    report = sparsity_report(result.model, result.plan)
    record = {
        "type": kind,
        "level": level,
        "method": method,
        "seed": seed,
        "accuracy": result.accuracy,
        "conv_flops_reduction": report.totals["conv_flops_reduction"],
        "params_reduction": report.totals["params_reduction"],
        "expected_conv_flops_reduction": level_plan.expected_conv_flops_reduction,
        "reached_target": _reached(level_plan, report),
        "kept": _kept_groups(report.rows),
        "planned": level_plan.to_dict(),
        "phases": result.phases,
        "seconds": result.seconds,
        "run_key": config.run_key(),
    }
    if not latency:
        record["latency"] = {"status": "not asked (--nolatency)"}
    elif seed == 0:
        record["latency"] = measure_compact_latency(
            result.model,
            os.path.join(config.output_dir, "dense.keras"),
            config.output_dir,
            f"{kind}_{level:g}x_{method}",
        )
    else:
        record["latency"] = {"status": "not measured (seed > 0)"}
    return record


def _load_points(path, run_key):
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    if record.get("run_key") == run_key:
                        key = (
                            record["type"],
                            record["level"],
                            record["method"],
                            record["seed"],
                        )
                        done[key] = record
    return done


# ------------------------------------------------------------------- tfmot
def tfmot_available() -> bool:
    return importlib.util.find_spec("tensorflow_model_optimization") is not None


def tfmot_points(model_fn, config, extra):
    """The tfmot points: unstructured at each level (the same per-layer targets
    as the unstructured plans), and 2:4 on every layer it fits."""
    from keras_admm import plan_for_flops_reduction

    template = model_fn()
    points = []
    for level in sorted(config.levels):
        plan = plan_for_flops_reduction(
            template, "unstructured", level, extra_rules=extra
        ).plan
        points.append(
            {
                "name": f"unstructured {level:g}x",
                "kind": "unstructured",
                "level": level,
                "sparsity": {t.layer_name: t.sparsity.ratio for t in plan.targets},
            }
        )
    points.append({"name": "2:4", "kind": "m_by_n", "layers": ["conv2", "fc1"]})
    return points


def run_tfmot(model_fn, config, extra, timeout=3600):
    """Run tools/tfmot_baseline.py in its own process; its JSON, or why not."""
    if not tfmot_available():
        return {
            "status": "not run: tensorflow-model-optimization is not installed "
            "(pip install 'keras-admm[tfmot]')"
        }
    spec = {
        "epochs": config.epochs,
        "finetune_epochs": config.finetune_epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "finetune_learning_rate": config.finetune_learning_rate,
        "mask_updates": 16,
        "seed": 0,
        "points": tfmot_points(model_fn, config, extra),
    }
    points_path = os.path.join(config.output_dir, "tfmot_points.json")
    output_path = os.path.join(config.output_dir, "tfmot.json")
    with open(points_path, "w") as f:
        json.dump(spec, f, indent=2)
    command = [
        sys.executable,
        _TFMOT_SCRIPT,
        "--weights",
        os.path.join(config.output_dir, "dense_weights.npz"),
        "--data_file",
        os.path.join(config.output_dir, "data.npz"),
        "--points",
        points_path,
        "--output_dir",
        config.output_dir,
        "--latency_runs",
        str(config.tfmot_latency_runs),
    ]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        return {
            "status": f"failed (exit {done.returncode})",
            "stderr_tail": done.stderr[-3000:],
            "command": " ".join(command),
        }
    with open(output_path) as f:
        result = json.load(f)
    result["status"] = "ran"
    result["seconds"] = round(time.time() - start, 1)
    result["command"] = "TF_USE_LEGACY_KERAS=1 " + " ".join(command)
    print(done.stdout.strip(), flush=True)
    return result


# -------------------------------------------------------------------- main
def run_comparison(config, model_fn, data, model_name="lenet5", log=print):
    """The whole comparison; writes the outputs and returns the results dict.

    Args:
        config: a ComparisonConfig.
        model_fn: builds a fresh model (no arguments), e.g. models.lenet5.
        data: MnistData-like (x_train, y_train, x_test, y_test, source).
        model_name: "lenet5" enables the tfmot baseline (its tf_keras twin).
        log: where progress lines go.

    Returns:
        {"config", "data", "dense_accuracy", "points", "summary", "tfmot",
        "files"}.

    Raises:
        ValueError: a level no plan of a type reaches (from
            plan_for_flops_reduction), or a bad budget.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    start = time.time()
    extra = []
    if config.fc1_sparsity and config.fc1_sparsity.lower() != "none":
        extra = [("fc1", config.fc1_sparsity)]
    weights, dense_accuracy = pretrain(model_fn, data, config)
    points_path = os.path.join(config.output_dir, "points.jsonl")
    done = _load_points(points_path, config.run_key())
    todo = sweep_points(config)
    # Decided once, so every point of a run is measured alike.
    latency = config.latency
    log(f"{len(todo)} runs ({len(done)} cached) of {config.epochs} epochs each")
    records = []
    for i, (kind, level, method, seed) in enumerate(todo):
        key = (kind, level, method, seed)
        if key in done:
            records.append(done[key])
            continue
        record = run_point(
            kind, level, method, seed, model_fn, weights, data, config, extra, latency
        )
        records.append(record)
        with open(points_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        log(
            f"[{i + 1}/{len(todo)}] {kind} {level:g}x {method} seed {seed}: "
            f"accuracy {record['accuracy']:.4f}, conv FLOPs "
            f"{record['conv_flops_reduction']:.2f}x, weights "
            f"{record['params_reduction']:.2f}x, {record['seconds']:.0f} s "
            f"(total {time.time() - start:.0f} s)"
        )
    tfmot = {"status": "not asked (--notfmot)"}
    if config.tfmot and model_name == "lenet5":
        save_data_npz(data, os.path.join(config.output_dir, "data.npz"))
        log("tfmot baseline (own process) ...")
        tfmot = run_tfmot(model_fn, config, extra)
    elif config.tfmot:
        tfmot = {"status": f"not run: tfmot twin exists for lenet5, not {model_name}"}
    results = {
        "config": dataclasses.asdict(config),
        "data": data.source,
        "dense_accuracy": dense_accuracy,
        "latency_available": latency,
        "points": records,
        "summary": summarize(records, config),
        "tfmot": tfmot,
        "seconds": round(time.time() - start, 1),
    }
    files = {
        "json": os.path.join(config.output_dir, "comparison.json"),
        "markdown": os.path.join(config.output_dir, "comparison.md"),
        "plot": os.path.join(config.output_dir, "accuracy_vs_flops.png"),
    }
    plot(results, files["plot"])
    files["latency_plots"] = plot_latency(results, config.output_dir)
    results["files"] = files
    with open(files["json"], "w") as f:
        json.dump(results, f, indent=2)
    with open(files["markdown"], "w") as f:
        f.write(markdown(results))
    return results
