"""One worker of a two-process ADMM run under TF's MultiWorkerMirroredStrategy.

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]},
                "task": {"type": "worker", "index": I}}' \
        python tests/multiworker_probe.py OUT_DIR
    python tests/multiworker_probe.py OUT_DIR           # the one-process reference
    python tests/multiworker_probe.py OUT_DIR resume    # from OUT_DIR/chief.keras

Each worker trains the probe model of tests/backend_probe.py with
ADMMWrapper on its half of every global batch, then writes its ADMM state to
OUT_DIR/worker_I.npz; the chief (worker 0) also saves OUT_DIR/chief.keras.
Without TF_CONFIG it trains on one process (the reference) and one epoch
more; `resume` loads the chief's file and trains that epoch too.
tests/training/test_distribution.py starts the two workers on loopback.

The loop is a custom one (`strategy.run` over a GradientTape step, the
optimizer's `apply`): Keras 3's `fit()` does not run under
MultiWorkerMirroredStrategy (keras-team/keras#20585, open; it fails here in
`_maybe_symbolic_build` with TF 2.21 and Keras 3.15 too).
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402

import backend_probe  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_admm  # noqa: E402

GLOBAL_BATCH = 8


def dataset():
    x, y = backend_probe.data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return data.with_options(options)


def train(model, strategy, epochs):
    """A custom loop: strategy.run over a GradientTape step, optimizer.apply."""
    optimizer = model.optimizer
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )

    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                losses = loss_fn(y, model(x, training=True))
                loss = tf.reduce_sum(losses) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return tf.shape(x)[0]

        return strategy.run(step, args=(x, y))

    local_batches = set()
    for _ in range(epochs):
        for x, y in strategy.experimental_distribute_dataset(dataset()):
            local = strategy.experimental_local_results(train_step(x, y))
            local_batches.update(int(n) for n in local)
    return local_batches


def main(out_dir, mode):
    if mode == "resume":  # one process, from the chief's checkpoint
        model = keras.saving.load_model(os.path.join(out_dir, "chief.keras"))
        state = backend_probe.admm_state(model.optimizer, "loaded")
        train(model, tf.distribute.get_strategy(), epochs=1)
        state.update(backend_probe.admm_state(model.optimizer, "after"))
        np.savez(os.path.join(out_dir, "resumed.npz"), **state)
        return
    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    else:
        strategy = tf.distribute.get_strategy()
        index = None
    with strategy.scope():
        model = backend_probe.build_model()
        plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
        backend_probe.compile_admm(model, plan)
    local_batches = train(model, strategy, epochs=2)
    state = backend_probe.admm_state(model.optimizer, "admm")
    state["replicas"] = np.array(strategy.num_replicas_in_sync)
    state["local_batches"] = np.array(sorted(local_batches))
    if index in (None, 0):
        name = "single" if index is None else "chief"
        model.save(os.path.join(out_dir, f"{name}.keras"))
    if index is None:  # the reference for the resumed run: one more epoch
        train(model, strategy, epochs=1)
        state.update(backend_probe.admm_state(model.optimizer, "after"))
    name = "single" if index is None else f"worker_{index}"
    np.savez(os.path.join(out_dir, f"{name}.npz"), **state)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "train")
