"""What keras-admm needs to know about the Keras backend, in one place.

Everything else is written with `keras.ops` and runs on tensorflow, jax and
torch alike. The few backend-specific facts live here:

- `num_replicas()`: how many replicas' gradients an optimizer step sums
  (tf.distribute; 1 elsewhere: JAX's keras.distribution averages inside the
  compiled step).
- `concrete_bool(x)`: a boolean tensor's value when it has one now (eager
  execution: torch, TF eager), None while it is traced (tf.function, jax.jit),
  so that eager code can skip a branch instead of computing both sides.
- `sync_model_state(model)`: on JAX, `fit()` keeps the weights in a state
  tree and writes them back to the model's variables only at epoch ends; a
  callback that reads or writes weights between batches syncs them first
  (and the trainer then reads back what the callback wrote).

Example:

    class MyCallback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            keras_admm.backends.sync_model_state(self.model)
            ...  # read or assign weights
"""

from __future__ import annotations

import keras

__all__ = ["name", "num_replicas", "sync_model_state", "concrete_bool"]


def name() -> str:
    """The Keras backend in use: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def num_replicas() -> int:
    """Replicas whose gradients the optimizer sums (1 outside tf.distribute)."""
    if name() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def sync_model_state(model) -> None:
    """Make `model`'s variables hold the values training has reached.

    A no-op except on JAX during `fit()`/`evaluate()`/`predict()`, where it
    writes the trainer's state back to the variables (Keras' own
    `jax_state_sync`); the next step then starts from the variables, so a
    callback's assignments are kept.
    """
    sync = getattr(model, "jax_state_sync", None)
    if name() == "jax" and callable(sync):
        sync()


def concrete_bool(value):
    """`value` (a boolean scalar tensor) as a Python bool, or None when traced.

    Example: `due = concrete_bool(step_is_due)`; `if due is None:` build a
    cond, else branch in Python.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.is_symbolic_tensor(value) or not tf.executing_eagerly():
            return None
        return bool(value)
    if backend == "jax":
        import jax

        if isinstance(value, jax.core.Tracer):
            return None
        return bool(value)
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
        return bool(value)
    return bool(value)
