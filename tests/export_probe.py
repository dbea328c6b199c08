"""Pruned on one backend, compacted and exported: what each format gave.

    KERAS_BACKEND=jax python tests/export_probe.py OUT_DIR

Trains the probe model of tests/backend_probe.py with ADMMWrapper, hard
prunes, compacts, then exports each format on its own and writes
OUT_DIR/result.json: per format "verified" or the ExportError's message; the
compact model's outputs on the probe data go to OUT_DIR/outputs.npy.
tests/test_backends.py runs it on jax and torch and loads the .keras file
under TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import backend_probe  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_admm  # noqa: E402

FORMATS = ("keras", "saved_model", "onnx", "tflite")


def main(out_dir):
    x, y = backend_probe.data()
    model = backend_probe.build_model()
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    backend_probe.compile_with(
        model, keras_admm.ADMMWrapper(keras.optimizers.SGD(0.05), plan, admm_steps=2)
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    keras_admm.hard_prune(model, plan, graph=True)
    small = keras_admm.compact(model)
    np.save(os.path.join(out_dir, "outputs.npy"), keras.ops.convert_to_numpy(small(x)))
    result = {"backend": keras.backend.backend()}
    for name in FORMATS:
        try:
            exported = keras_admm.export(
                small,
                os.path.join(out_dir, name),
                formats=[name],
                sample=x[:4],
                reference=model,
            )
            result[name] = "verified" if exported.verified else "unverified"
        except keras_admm.ExportError as error:
            result[name] = f"ExportError: {error}"
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
