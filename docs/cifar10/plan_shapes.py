"""Shape-level timing of a plan after depth pruning, before training it.

The 30-epoch dense weights (no accuracy claimed) with the branches of a run's
blocks.json removed, alone and then cut by a plan JSON; beside them trained
models to compare. BatchNorm folded, written to OUT, then timed side by side on
an idle machine. The 2x plan of docs/CIFAR10.md:

    .venv/bin/python docs/cifar10/plan_shapes.py /tmp/inner48 \\
        docs/cifar10/plans/2x_inner48.json \\
        docs/cifar10/budget30/depth_2x_minus4blocks_lr005_ep60/blocks.json \\
        out5:resnet20_depth60_2x_minus5blocks \\
        out4_filters:resnet20_depth60_2x_minus4blocks
    .venv/bin/python tools/profile_models.py --baseline /tmp/inner48/dense.keras \\
        --models /tmp/inner48/out5.keras,/tmp/inner48/out4_filters.keras,\\
/tmp/inner48/branches_only.keras,/tmp/inner48/plan.keras \\
        --names dense,out5,out4_filters,out4_only,out4_inner48 \\
        --engines tf,onnxruntime --batch_sizes 1,32 --min_repeats 30 \\
        --min_time_s 3 --output_dir docs/cifar10/fold_2x/inner48_shapes/run1

Arguments: OUT PLAN BLOCKS_JSON [NAME:MODEL ...], where MODEL is a file name in
docs/cifar10/models without ".keras". It writes OUT/dense.keras,
OUT/NAME.keras, OUT/branches_only.keras and OUT/plan.keras. The 3x plan:

    .venv/bin/python docs/cifar10/plan_shapes.py /tmp/inner40 \\
        docs/cifar10/plans/3x_inner40.json \\
        docs/cifar10/budget30/mix_3x_minus5blocks_lr005/blocks.json \\
        mix3x:resnet20_mix30_3x_minus5blocks
    .venv/bin/python tools/profile_models.py --baseline /tmp/inner40/dense.keras \\
        --models /tmp/inner40/branches_only.keras,/tmp/inner40/mix3x.keras,\\
/tmp/inner40/plan.keras --names dense,out5_only,mix3x,out5_inner40 \\
        --engines tf,onnxruntime --batch_sizes 1,32 --min_repeats 30 \\
        --min_time_s 3 --output_dir docs/cifar10/inner40_shapes
"""

import json
import os
import sys

import keras

import keras_admm
from keras_admm.compaction.zero_branches import remove_zero_branches

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def dense():
    return keras.saving.load_model(os.path.join(MODELS, "resnet20_dense.keras"))


def macs(model):
    return keras_admm.count_flops(model) / 2


def main(out, plan_path, blocks_path, *compare):
    os.makedirs(out, exist_ok=True)
    dense_macs = macs(dense())

    def save(name, model):
        keras_admm.fold_batchnorm(model).save(os.path.join(out, f"{name}.keras"))
        print(
            f"{name}: {model.count_params()} params, "
            f"{dense_macs / macs(model):.2f}x fewer MACs"
        )

    save("dense", dense())
    for pair in compare:
        name, file = pair.split(":")
        save(name, keras.saving.load_model(os.path.join(MODELS, f"{file}.keras")))
    with open(blocks_path) as f:
        removed = json.load(f)["removed"]
    model = dense()
    keras_admm.zero_branches(model, removed)
    smaller, _ = remove_zero_branches(model)
    save("branches_only", smaller)
    with open(plan_path) as f:
        plan = keras_admm.PruningPlan.from_json(f.read()).resolve(smaller)
    keras_admm.hard_prune(smaller, plan, graph=True)
    small = keras_admm.compact(smaller)
    save("plan", small)
    widths = {
        la.name: la.kernel.shape[-1] for la in small.layers if hasattr(la, "kernel")
    }
    print("widths:", widths)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
