"""Shape-level timing of the aligned 2x plan: four branches out, then 64 -> 48.

The 30-epoch dense weights (no accuracy claimed) with the four branches that
`BLOCKS=4` takes out (blocks.json of the 60-epoch run) removed, alone and then
cut by docs/cifar10/plans/2x_inner48.json; beside them the two trained 2x models
(five branches out; four out + filters 15/30/60). BatchNorm folded, written to
/tmp/inner48, then timed side by side on an idle machine:

    .venv/bin/python docs/cifar10/inner48_shapes.py
    .venv/bin/python tools/profile_models.py --baseline /tmp/inner48/dense.keras \
        --models /tmp/inner48/out5.keras,/tmp/inner48/out4_filters.keras,\
/tmp/inner48/out4_only.keras,/tmp/inner48/out4_inner48.keras \
        --names dense,out5,out4_filters,out4_only,out4_inner48 \
        --engines tf,onnxruntime --batch_sizes 1,32 --min_repeats 30 \
        --min_time_s 3 --output_dir docs/cifar10/fold_2x/inner48_shapes
"""

import json
import os

import keras

import keras_admm
from keras_admm.compaction.zero_branches import remove_zero_branches

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
OUT = "/tmp/inner48"


def dense():
    return keras.saving.load_model(os.path.join(MODELS, "resnet20_dense.keras"))


def save(name, model):
    keras_admm.fold_batchnorm(model).save(os.path.join(OUT, f"{name}.keras"))
    print(
        f"{name}: {model.count_params()} params, "
        f"{dense_macs / macs(model):.2f}x fewer MACs"
    )


def macs(model):
    return keras_admm.count_flops(model) / 2


os.makedirs(OUT, exist_ok=True)
dense_macs = macs(dense())
save("dense", dense())
for name, file in (
    ("out5", "resnet20_depth60_2x_minus5blocks"),
    ("out4_filters", "resnet20_depth60_2x_minus4blocks"),
):
    save(name, keras.saving.load_model(os.path.join(MODELS, f"{file}.keras")))
blocks = os.path.join(
    HERE, "budget30", "depth_2x_minus4blocks_lr005_ep60", "blocks.json"
)
with open(blocks) as f:
    removed = json.load(f)["removed"]
model = dense()
keras_admm.zero_branches(model, removed)
out4, _ = remove_zero_branches(model)
save("out4_only", out4)
with open(os.path.join(HERE, "plans", "2x_inner48.json")) as f:
    plan = keras_admm.PruningPlan.from_json(f.read()).resolve(out4)
keras_admm.hard_prune(out4, plan, graph=True)
save("out4_inner48", keras_admm.compact(out4))
