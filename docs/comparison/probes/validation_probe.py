"""Validation-split probes: train on 4000 of the 5000 digits, score on 1000.

Needs runs/compare/full/data.npz from `make compare`. Run from the repo root:

    .venv/bin/python docs/comparison/probes/validation_probe.py \
        '{"gradual": {"method": "gradual"}, "admm_rho1": {"rho": 1.0}}' \
        '[["shape", 16], ["shape", 8]]' '[0, 1]'

Each variant is methods.MethodOptions keyword arguments (plus "method").
"""

import json
import os
import sys
import time

import keras
import numpy as np

import sys

sys.path.insert(0, "tools")
from harness import methods  # noqa: E402

from keras_admm import models, plan_for_flops_reduction  # noqa: E402

d = np.load("runs/compare/full/data.npz")
x = d["x_train"].astype("float32") / 255.0
y = d["y_train"]
perm = np.random.RandomState(123).permutation(len(x))
tr, va = perm[:4000], perm[4000:]
data = (x[tr], y[tr], x[va], y[va])
wpath = "runs/probes/dense_val.weights.h5"
os.makedirs(os.path.dirname(wpath), exist_ok=True)
keras.utils.set_random_seed(0)  # before the model: its initial weights too
model = models.lenet5()
if os.path.exists(wpath):
    model.load_weights(wpath)
else:
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data[0], data[1], batch_size=64, epochs=12, verbose=0)
    model.save_weights(wpath)
W = model.get_weights()
variants = json.loads(sys.argv[1])
cells = json.loads(sys.argv[2])
seeds = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [0]
for name, V in variants.items():
    method = V.pop("method", "admm")
    opts = methods.MethodOptions(**V)
    for kind, level in cells:
        lp = plan_for_flops_reduction(
            models.lenet5(),
            kind,
            float(level),
            extra_rules=[("fc1", "unstructured:0.9")],
        )
        for s in seeds:
            t = time.time()
            r = methods.run_method(
                method,
                models.lenet5,
                W,
                data,
                lp.plan,
                methods.TrainingBudget(epochs=9, finetune_epochs=3),
                opts,
                seed=s,
            )
            print(
                json.dumps(
                    {
                        "v": name,
                        "kind": kind,
                        "level": level,
                        "seed": s,
                        "acc": round(r.accuracy * 100, 2),
                        "p1": round(r.phases[0]["accuracy_at_end"] * 100, 2),
                        "s": round(time.time() - t),
                    }
                ),
                flush=True,
            )
