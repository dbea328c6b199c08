"""ADMM and masked training under keras.distribution.DataParallel on JAX.

    python tests/data_parallel_probe.py OUT.npz

Forces two CPU devices (XLA_FLAGS), trains the probe model of
tests/backend_probe.py with ADMMWrapper, then MaskedWrapper, once on one
device and once data-parallel on both, and saves both results, whether every
replica holds the same Z, U and rho, and how the batch was laid out.
tests/training/test_distribution.py runs it.
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import backend_probe  # noqa: E402
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_admm  # noqa: E402


def run(distribution):
    keras.distribution.set_distribution(distribution)
    x, y = backend_probe.data()
    model = backend_probe.build_model()
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    backend_probe.compile_admm(model, plan)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    out = backend_probe.admm_state(model.optimizer, "admm")
    replicas_agree = all(
        all(np.array_equal(shards[0], s) for s in shards)
        for state in model.optimizer.admm_state()
        for key in ("z", "u", "rho")
        for shards in [
            [np.asarray(s.data) for s in state[key].value.addressable_shards]
        ]
    )
    devices = len(model.optimizer.admm_state()[0]["z"].value.sharding.device_set)
    masks = keras_admm.hard_prune(model, plan, graph=True)
    backend_probe.compile_with(
        model, keras_admm.MaskedWrapper(keras.optimizers.SGD(0.05), masks)
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    out.update(backend_probe.kernels(model, "masked"))
    return out, replicas_agree, devices


def main(out_path):
    single, _, single_devices = run(None)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    parallel, agree, devices = run(distribution)
    batch_layout = distribution.get_data_layout((8, 8, 8, 3))
    results = {f"single/{k}": v for k, v in single.items()}
    results.update({f"parallel/{k}": v for k, v in parallel.items()})
    results["replicas_agree"] = np.array(agree)
    results["devices"] = np.array([single_devices, devices])
    results["batch_axes"] = np.array([str(a) for a in batch_layout.axes])
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
