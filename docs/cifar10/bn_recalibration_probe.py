"""Probe (validation only): how much of the accuracy lost at the hard prune is
stale BatchNorm statistics?

Every BatchNorm's moving mean and variance is recomputed from 2,000 training
images in one training-mode batch (`keras_admm.recalibrate_batchnorm`, no
weight changes), then the validation split is scored again. Each run's result is added to
docs/cifar10/bn_recalibration_probe.json (earlier runs stay). From the repository root:

    .venv/bin/python docs/cifar10/bn_recalibration_probe.py \
        runs/cifar10/resnet20_admm_3x runs/cifar10/resnet20_gradual_3x

Each run folder holds the pruned.keras that examples/cifar10.py writes (the
model right after the hard prune, before masked retraining). Results go to
docs/cifar10/bn_recalibration_probe.json.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]

import keras  # noqa: E402
import numpy as np  # noqa: E402
from cifar10_data import load_cifar10  # noqa: E402

import keras_admm  # noqa: E402 - also registers the wrappers for loading

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10")
CALIBRATION_IMAGES = 2000


def validation_accuracy(model, data):
    logits = model.predict(data.x_val.astype("float32"), batch_size=500, verbose=0)
    return float((logits.argmax(-1) == data.y_val).mean())


def main(run_dirs):
    data = load_cifar10(DATA, validation_size=5000)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(data.x_train), CALIBRATION_IMAGES, replace=False)
    calibration = data.x_train[rows].astype("float32")
    results = {}
    for run in run_dirs:
        model = keras.saving.load_model(f"{run}/pruned.keras", compile=False)
        before = validation_accuracy(model, data)
        keras_admm.recalibrate_batchnorm(
            model, calibration, batch_size=len(calibration)
        )
        after = validation_accuracy(model, data)
        results[run] = {"before": before, "after_recalibration": after}
        print(f"{run}: validation {100 * before:.2f}% -> {100 * after:.2f}%")
    path = os.path.join(ROOT, "docs/cifar10/bn_recalibration_probe.json")
    if os.path.exists(path):  # runs probed before stay in the file
        with open(path) as f:
            results = {**json.load(f), **results}
    with open(path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
