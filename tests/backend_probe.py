"""Runs the pipeline on one Keras backend and saves what it computed (an .npz).

    KERAS_BACKEND=jax python tests/backend_probe.py OUT.npz

tests/test_backends.py runs it once per installed backend, each in its own
process (Keras picks its backend at import), and compares the files: the
same model, weights and data must give the same projections, ADMM state,
masks and compact outputs on every backend, up to float tolerance.

The weights come from a NumPy generator, not from Keras' initializers (whose
random streams differ between backends), and nothing is shuffled.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_admm  # noqa: E402
from keras_admm import sparsity  # noqa: E402

SPARSITIES = (
    "unstructured:0.5",
    "filter:0.5",
    "channel:0.5",
    "shape:0.5",
    "filter_shape:0.5:0.5",
    "nm:2:4",
)


def build_model():
    """A small residual net: stem conv, two convs and an Add, BN, a Dense head."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    shortcut = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(shortcut)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras.layers.Add()([x, shortcut])
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.normal(0, 0.3, w.shape).astype("float32")
            if w.ndim > 1
            else (
                np.ones(w.shape) if "variance" in v.path else np.zeros(w.shape)
            ).astype("float32")
            for v, w in zip(model.weights, model.get_weights())
        ]
    )
    return model


def data():
    rng = np.random.default_rng(1)
    x = rng.random((32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    return x, y


def compile_with(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )


def compile_admm(model, plan, projection=None):
    """Compile with the probes' ADMM: SGD 0.05 + momentum, rho 0.05, Z/U every
    2 steps, the group projection of `plan`."""
    projection = projection or keras_admm.GroupProjection.from_plan(model, plan)
    optimizer = keras_admm.ADMMWrapper(
        keras.optimizers.SGD(0.05, momentum=0.9),
        plan,
        rho=0.05,
        admm_steps=2,
        projection=projection,
    )
    compile_with(model, optimizer)
    return optimizer


def admm_state(optimizer, prefix):
    out = {}
    for state in optimizer.admm_state():
        name = state["layer_name"]
        for key in ("weight", "z", "u", "rho"):
            out[f"{prefix}/{name}/{key}"] = keras.ops.convert_to_numpy(state[key])
    return out


def kernels(model, prefix):
    return {
        f"{prefix}/{layer.name}": keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
        if hasattr(layer, "kernel")
    }


def main(out_path):
    results = {}
    x, y = data()
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 8, 16)).astype("float32")
    for spec in SPARSITIES:
        projected = sparsity.parse(spec).project(kernel)
        results[f"project/{spec}"] = keras.ops.convert_to_numpy(projected)

    # ADMM with the joint (group) projection, saved and resumed mid-ADMM.
    model = build_model()
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    projection = keras_admm.GroupProjection.from_plan(model, plan)
    values = {t.weight_path: kernel_of(model, t) for t in plan.targets}
    for path, z in projection.project(values, plan.targets).items():
        results[f"group_project/{path}"] = keras.ops.convert_to_numpy(z)
    compile_admm(model, plan, projection)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    results.update(admm_state(model.optimizer, "admm"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "admm.keras")
        model.save(path)
        model = keras.saving.load_model(path)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    results.update(admm_state(model.optimizer, "admm_resumed"))

    # Hard prune (group-aware), masked retraining, compaction.
    masks = keras_admm.hard_prune(model, plan, graph=True)
    for path, mask in masks.items():
        results[f"mask/{path}"] = np.asarray(mask)
    compile_with(model, keras_admm.MaskedWrapper(keras.optimizers.SGD(0.05), masks))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    results.update(kernels(model, "masked"))
    results["masked/outputs"] = keras.ops.convert_to_numpy(model(x, training=False))
    small = keras_admm.compact(model)
    results.update(kernels(small, "compact"))
    results["compact/outputs"] = keras.ops.convert_to_numpy(small(x, training=False))

    # ADMMRegularizer: penalty and the Z/U/rho updates of a custom loop.
    model = build_model()
    regularizer = keras_admm.ADMMRegularizer(
        keras_admm.PruningPlan.uniform(model, "shape:0.5"), rho=0.1, admm_steps=1
    )
    regularizer.build(model)
    for layer in model.layers:  # a stand-in for an optimizer step
        if hasattr(layer, "kernel"):
            layer.kernel.assign(layer.kernel * 0.9)
    regularizer.step(model)
    results["regularizer/penalty"] = keras.ops.convert_to_numpy(
        regularizer.penalty(model)
    )
    results.update(admm_state(regularizer, "regularizer"))

    # Gradual magnitude pruning (a callback) and progressive ADMM.
    model = build_model()
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    compile_with(model, keras.optimizers.SGD(0.05))
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_admm.GradualPruning(plan, end_step=6, frequency=2)],
    )
    results.update(kernels(model, "gradual"))
    model = build_model()
    keras_admm.progressive_admm(
        model,
        keras_admm.PruningPlan.uniform(model, "filter:0.5"),
        x,
        y,
        optimizer=lambda: keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        stage_epochs=(1, 1),
        masked_epochs=1,
        batch_size=8,
        shuffle=False,
        verbose=0,
    )
    results.update(kernels(model, "progressive"))
    results["backend"] = np.array(keras.backend.backend())
    np.savez(out_path, **results)


def kernel_of(model, target):
    return keras.ops.convert_to_tensor(model.get_layer(target.layer_name).kernel)


if __name__ == "__main__":
    main(sys.argv[1])
