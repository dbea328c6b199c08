"""One of two JAX processes training with ADMM under DataParallel (or the reference).

    python tests/jax_multiprocess_probe.py OUT_DIR PORT PROCESS_ID   # 0 and 1
    python tests/jax_multiprocess_probe.py OUT_DIR                   # one process

Both processes join through jax.distributed on 127.0.0.1:PORT (CPU
collectives over gloo), one CPU device each, and train the probe model of
tests/backend_probe.py with ADMMWrapper on a DataParallel mesh over both
devices; each process feeds its own half of every global batch of 8. Every
process writes OUT_DIR/process_I.npz with its ADMM state; the one-process run
writes OUT_DIR/single.npz from the same global batches.
tests/training/test_distribution.py runs it.
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

GLOBAL_BATCH = 8


def main(out_dir, port=None, process_id=None):
    if port is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=2,
            process_id=process_id,
        )
    import backend_probe
    import keras

    import keras_admm

    # Every process must create the same initial values (Keras' initializers
    # run before the probe's set_weights).
    keras.utils.set_random_seed(0)
    x, y = backend_probe.data()
    if port is not None:
        # The rows of this process in each global batch; the input is
        # sharded by hand, so Keras must not shard it again.
        half = GLOBAL_BATCH // 2
        rows = np.concatenate(
            [
                np.arange(start + process_id * half, start + (process_id + 1) * half)
                for start in range(0, len(x), GLOBAL_BATCH)
            ]
        )
        x, y, batch = x[rows], y[rows], half
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(
                devices=jax.devices(), auto_shard_dataset=False
            )
        )
    else:
        batch = GLOBAL_BATCH
    model = backend_probe.build_model()
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    backend_probe.compile_admm(model, plan)
    model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)
    state = {}
    for entry in model.optimizer.admm_state():
        for key in ("weight", "z", "u", "rho"):
            value = entry[key].value
            local = np.asarray(value.addressable_shards[0].data)
            state[f"admm/{entry['layer_name']}/{key}"] = local
    state["devices"] = np.array(len(jax.devices()))
    name = "single" if port is None else f"process_{process_id}"
    np.savez(os.path.join(out_dir, f"{name}.npz"), **state)


if __name__ == "__main__":
    if len(sys.argv) == 4:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(sys.argv[1])
