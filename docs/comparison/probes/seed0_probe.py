"""Probe ADMM variants against the sweep's seed-0 setting (ad hoc, kept as a record).

Needs `make compare` to have written runs/compare/full (data.npz, dense.keras).
Run from the repository root:

    .venv/bin/python docs/comparison/probes/seed0_probe.py \
        '{"name": {"rho": 0.3, "admm_epochs": 4, "stages": 4, "dead": true}}' \
        '[["filter", 16], ["shape", 16]]'

Variant keys: rho, mult, rho_max, updates, restart (cosine LR restart per ADMM
period), stages (progressive stages), admm_epochs (ADMM epochs of the 6, the
rest masked), dead (fc1 ranks only the rows behind kept conv2 filters),
oneshot, reset_weights. The variants in docs/COMPARISON.md are listed there.
"""

import json
import math
import sys
import time

import keras
import numpy as np

from keras_admm import ADMMWrapper, MaskedWrapper, hard_prune, models
from keras_admm import plan_for_flops_reduction, schedules
from keras_admm.plan import PruningPlan

d = np.load("runs/compare/full/data.npz")
x_train, x_test = (d[k].astype("float32") / 255.0 for k in ("x_train", "x_test"))
y_train, y_test = d["y_train"], d["y_test"]
W = keras.saving.load_model("runs/compare/full/dense.keras").get_weights()


def level_plan(kind, level):
    return plan_for_flops_reduction(
        models.lenet5(), kind, level, extra_rules=[("fc1", "unstructured:0.9")]
    ).plan


def scaled_plan(plan, frac):
    """plan with every ratio multiplied... via scheduled_sparsity at progress frac."""
    rules = []
    for t in plan.targets:
        rules.append(
            (
                t.layer_name,
                schedules.scheduled_sparsity(
                    t.sparsity, frac, 1.0, power=V.get("power", 3.0)
                )
                if frac < 1
                else t.sparsity,
            )
        )
    return PruningPlan(rules)


from keras import ops

from keras_admm import sparsity as sl


def _rowmask_from_conv2(z_conv2, n_pos=16):
    norms = ops.sum(ops.square(ops.cast(z_conv2, "float32")), axis=(0, 1, 2))
    alive = ops.cast(norms > 0, "float32")
    return ops.tile(alive, (n_pos,))


class DeadAware:
    """Per-kernel projections, then fc1's unstructured top-k among live rows only."""

    def __init__(self, plan):
        self.plan = plan

    def project(self, values, targets):
        out = {
            t.weight_path: t.sparsity.project(values[t.weight_path], t.layout)
            for t in targets
        }
        by = {t.layer_name: t for t in targets}
        c2, f1 = by["conv2"], by["fc1"]
        if isinstance(c2.sparsity, (sl.Filter, sl.FilterShape)):
            rm = _rowmask_from_conv2(out[c2.weight_path])
            out[f1.weight_path] = f1.sparsity.project(
                values[f1.weight_path] * rm[:, None], f1.layout
            )
        return out


def dead_aware_prune(model, plan):
    by = {t.layer_name: t for t in plan.targets}
    fc1 = model.get_layer("fc1").kernel
    orig = ops.convert_to_numpy(fc1)
    masks = hard_prune(model, plan)
    c2 = by["conv2"]
    if isinstance(c2.sparsity, (sl.Filter, sl.FilterShape)):
        rm = ops.convert_to_numpy(_rowmask_from_conv2(model.get_layer("conv2").kernel))
        new = ops.convert_to_numpy(
            by["fc1"].sparsity.project(orig * rm[:, None], by["fc1"].layout)
        )
        fc1.assign(new)
        masks[fc1.path] = (new != 0).astype("float32")
    return masks


def compile_(model, opt):
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def acc(model):
    return float(
        model.evaluate(x_test, y_test, batch_size=1000, verbose=0, return_dict=True)[
            "accuracy"
        ]
    )


def run(V, kind, level, seed=0, epochs=6, ft=3):
    keras.utils.set_random_seed(seed)
    model = models.lenet5()
    model.set_weights(W)
    plan = level_plan(kind, level).resolve(model)
    spe = math.ceil(len(x_train) / 64)
    epochs_total = epochs
    epochs = V.get("admm_epochs", epochs)
    stages = V.get("stages", 1)
    stage_epochs = [
        epochs // stages + (1 if i < epochs % stages else 0) for i in range(stages)
    ]
    masks = None
    for i, ep in enumerate(stage_epochs):
        frac = (i + 1) / stages
        if ep == 0:
            continue
        p = (scaled_plan(plan, frac) if stages > 1 else plan).resolve(model)
        steps = spe * ep
        updates = V.get("updates", 16) // stages if stages > 1 else V.get("updates", 16)
        admm_steps = max(1, math.ceil(steps / updates))
        lr = V.get("lr", 1e-3)
        if V.get("restart"):
            lr = keras.optimizers.schedules.CosineDecayRestarts(
                lr, admm_steps, t_mul=1.0, m_mul=1.0, alpha=V.get("alpha", 0.0)
            )
        inner = keras.optimizers.Adam(lr)
        opt = ADMMWrapper(
            inner,
            p,
            rho=V.get("rho", 3e-3),
            rho_multiplier=V.get("mult", 1.3),
            rho_max=V.get("rho_max", 1.0),
            admm_steps=admm_steps,
            rescale_dual=V.get("rescale", False),
            projection=DeadAware(p) if V.get("dead") else None,
        )
        if masks is not None and V.get("keep_masks", True):
            # previous stage's zeros stay zero: wrap masked around? use MaskedWrapper(ADMMWrapper)
            opt = MaskedWrapper(opt, masks) if V.get("masked_stages") else opt
        compile_(model, opt)
        model.fit(x_train, y_train, batch_size=64, epochs=ep, verbose=0)
        if stages > 1 and V.get("prune_between"):
            masks = hard_prune(model, p)
    masks = dead_aware_prune(model, plan) if V.get("dead") else hard_prune(model, plan)
    if V.get("reset_weights"):
        model.set_weights(W)
        from keras_admm import apply_masks

        apply_masks(model, masks)
    if epochs_total > epochs:
        compile_(model, MaskedWrapper(keras.optimizers.Adam(V.get("lr", 1e-3)), masks))
        model.fit(
            x_train, y_train, batch_size=64, epochs=epochs_total - epochs, verbose=0
        )
    a1 = acc(model)
    compile_(model, MaskedWrapper(keras.optimizers.Adam(3e-4), masks))
    model.fit(x_train, y_train, batch_size=64, epochs=ft, verbose=0)
    return a1, acc(model)


if __name__ == "__main__":
    variants = json.loads(sys.argv[1])
    cells = json.loads(sys.argv[2]) if len(sys.argv) > 2 else [["filter", 16]]
    for name, V in variants.items():
        if V.get("oneshot"):
            V = dict(V, admm_epochs=0)
        for kind, level in cells:
            seeds = V.get("seeds", [0])
            for s in seeds:
                t = time.time()
                a1, a2 = run(V, kind, level, seed=s)
                print(
                    json.dumps(
                        {
                            "variant": name,
                            "kind": kind,
                            "level": level,
                            "seed": s,
                            "after_p1": round(a1, 4),
                            "acc": round(a2, 4),
                            "s": round(time.time() - t, 1),
                        }
                    ),
                    flush=True,
                )
