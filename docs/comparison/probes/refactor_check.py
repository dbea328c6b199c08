"""Rerun two sweep points through run_method to check a refactor changed nothing.

Needs runs/compare/full (data.npz, dense_weights.npz) from `make compare`; the
sweep reported 0.9674 (filter 8x, seed 1) and 0.9642 (shape 16x, seed 1) for
admm. Run from the repo root:

    .venv/bin/python docs/comparison/probes/refactor_check.py
"""

import numpy as np

import sys

sys.path.insert(0, "tools")
from harness import methods  # noqa: E402

from keras_admm import models, plan_for_flops_reduction  # noqa: E402

d = np.load("runs/compare/full/data.npz")
data = tuple(
    d[k].astype("float32") / 255.0 if k.startswith("x") else d[k]
    for k in ("x_train", "y_train", "x_test", "y_test")
)
with np.load("runs/compare/full/dense_weights.npz") as s:
    W = [s[f"arr_{i}"] for i in range(len(s.files))]
for kind, level, seed in [("filter", 8, 1), ("shape", 16, 1)]:
    lp = plan_for_flops_reduction(
        models.lenet5(), kind, float(level), extra_rules=[("fc1", "unstructured:0.9")]
    )
    r = methods.run_method(
        "admm",
        models.lenet5,
        W,
        data,
        lp.plan,
        methods.TrainingBudget(epochs=9, finetune_epochs=3),
        methods.MethodOptions(),
        seed=seed,
    )
    print("RESULT", kind, level, seed, repr(r.accuracy), r.phases[0], flush=True)
