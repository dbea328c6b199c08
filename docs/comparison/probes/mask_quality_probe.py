"""Mask quality: ADMM's and gradual pruning's final masks, each retrained alone.

For shape 16x and 8x (seeds 0 and 1, validation split of validation_probe.py,
which must have run once to leave runs/probes/dense_val.weights.h5): runs both
methods, reports the share of gradual's kept weights that ADMM keeps too, then
trains the pretrained model with each method's final masks (6 epochs at 1e-3,
3 at 3e-4). Run from the repo root:

    .venv/bin/python docs/comparison/probes/mask_quality_probe.py
"""

import json

import keras
import numpy as np

import sys

sys.path.insert(0, "tools")
from harness import methods  # noqa: E402

from keras_admm import MaskedWrapper, models, plan_for_flops_reduction  # noqa: E402

d = np.load("runs/compare/full/data.npz")
x = d["x_train"].astype("float32") / 255.0
y = d["y_train"]
perm = np.random.RandomState(123).permutation(len(x))
tr, va = perm[:4000], perm[4000:]
data = (x[tr], y[tr], x[va], y[va])
keras.utils.set_random_seed(0)
m = models.lenet5()
m.load_weights("runs/probes/dense_val.weights.h5")
W = m.get_weights()
for kind, level in [("shape", 16), ("shape", 8)]:
    lp = plan_for_flops_reduction(
        models.lenet5(), kind, float(level), extra_rules=[("fc1", "unstructured:0.9")]
    )
    for s in (0, 1):
        res = {}
        for method in ("admm", "gradual"):
            r = methods.run_method(
                method,
                models.lenet5,
                W,
                data,
                lp.plan,
                methods.TrainingBudget(epochs=9, finetune_epochs=3),
                seed=s,
            )
            res[method] = r
        out = {
            "kind": kind,
            "level": level,
            "seed": s,
            **{k: round(v.accuracy * 100, 2) for k, v in res.items()},
        }
        for path in res["admm"].masks:
            a, g = (
                res["admm"].masks[path].astype(bool),
                res["gradual"].masks[path].astype(bool),
            )
            out["overlap_" + path.split("/")[-2]] = round(
                float((a & g).sum() / max(1, g.sum())), 3
            )
        for method in ("admm", "gradual"):
            keras.utils.set_random_seed(s)
            model = models.lenet5()
            model.set_weights(W)
            masks = res[method].masks
            for v in model.variables:
                if v.path in masks:
                    v.assign(np.asarray(v) * masks[v.path])
            model.compile(
                MaskedWrapper(keras.optimizers.Adam(1e-3), masks),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            model.fit(data[0], data[1], batch_size=64, epochs=6, verbose=0)
            model.compile(
                MaskedWrapper(keras.optimizers.Adam(3e-4), masks),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            model.fit(data[0], data[1], batch_size=64, epochs=3, verbose=0)
            out["retrain_" + method + "_masks"] = round(
                model.evaluate(data[2], data[3], verbose=0, return_dict=True)[
                    "accuracy"
                ]
                * 100,
                2,
            )
        print(json.dumps(out), flush=True)
