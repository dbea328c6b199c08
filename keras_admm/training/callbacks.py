"""Callbacks that show ADMM's progress in fit's progress bar, History and TensorBoard.

Example:

    model.compile(optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(), plan),
                  loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=5, callbacks=[keras_admm.ADMMLogger()])
    history.history["admm_residual_max"]   # one value per epoch
"""

from __future__ import annotations

import json
import os

import keras
from keras import ops

from keras_admm.backends import sync_model_state
from keras_admm.training.admm import find_admm_wrapper, primal_residual

__all__ = ["ADMMLogger"]

_UPDATE_FREQS = ("batch", "epoch")


class ADMMLogger(keras.callbacks.Callback):
    """Shows ADMM's convergence in fit's progress bar; records it per layer.

    At the end of every training batch (`update_freq="batch"`) and every epoch
    it adds to `logs` (so to the progress bar and `history.history`):

    - `admm_residual_max`: the largest primal residual ||W - Z|| / ||W|| over
      the planned layers, which falls towards 0 as ADMM converges;
    - `admm_rho_max`: the largest penalty rho;
    - with `per_layer`, also `admm_residual/<layer>` and `admm_rho/<layer>`.

    Per-layer values of every epoch are kept in `layer_history`, and written to
    `json_path` (one JSON file, rewritten each epoch) and to TensorBoard under
    `log_dir` when given. Keras runs user callbacks before its ProgbarLogger and
    History, so the keys show in both; list ADMMLogger before a TensorBoard
    callback so TensorBoard records the logs keys too.

    The ADMM state comes from `model.optimizer` (through `.inner_optimizer`
    wrappers such as the LossScaleOptimizer of mixed precision, until an object
    with `admm_state()` such as ADMMWrapper), or from `regularizer`.

    Args:
        regularizer: an ADMMRegularizer to read instead of the optimizer (for
            custom loops: call `logger.admm_logs()` or the `on_*` hooks).
        per_layer: put the per-layer keys in `logs` too: True, False, or "auto"
            (only for up to 4 planned layers: a ResNet's 20 would flood the
            progress bar).
        update_freq: "batch" (every training batch and epoch) or "epoch" (epoch
            ends only, cheaper: each update reads the kernels' norms).
        log_dir: a TensorBoard folder for the per-layer scalars (TensorFlow's
            tf.summary), or None.
        json_path: a JSON file for `layer_history`, or None.

    Raises:
        ValueError: a bad `update_freq` or `per_layer`; at train begin, when
            neither the optimizer chain nor `regularizer` holds ADMM state.

    Example:

        model.fit(x, y, epochs=5, callbacks=[
            keras_admm.ADMMLogger(log_dir="logs/admm", json_path="admm.json")])
    """

    def __init__(
        self,
        regularizer=None,
        per_layer="auto",
        update_freq="batch",
        log_dir=None,
        json_path=None,
    ):
        super().__init__()
        if regularizer is not None and not callable(
            getattr(regularizer, "admm_state", None)
        ):
            raise TypeError(
                f"ADMMLogger `regularizer` must be an ADMMRegularizer (an object "
                f"with admm_state()), got {type(regularizer).__name__}. Leave it "
                "None to read the ADMMWrapper of model.optimizer."
            )
        if update_freq not in _UPDATE_FREQS:
            raise ValueError(
                f"ADMMLogger `update_freq` must be 'batch' or 'epoch', got "
                f"{update_freq!r}."
            )
        if per_layer not in (True, False, "auto"):
            raise ValueError(
                f"ADMMLogger `per_layer` must be True, False or 'auto', got "
                f"{per_layer!r}."
            )
        self.regularizer = regularizer
        self.per_layer = per_layer
        self.update_freq = update_freq
        self.log_dir = log_dir
        self.json_path = json_path
        self.layer_history = []
        self._writer = None

    def _source(self):
        if self.regularizer is not None:
            return self.regularizer
        optimizer = getattr(self.model, "optimizer", None)
        source = find_admm_wrapper(optimizer)
        if source is None:
            raise ValueError(
                "ADMMLogger found no ADMM state: the model's optimizer is "
                f"{type(optimizer).__name__}, and neither it nor its "
                "inner_optimizer chain has admm_state(). Compile with "
                "optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(), plan), "
                "or pass ADMMLogger(regularizer=reg) in a custom loop."
            )
        return source

    def layer_values(self) -> dict:
        """{"residual": {layer: float}, "rho": {layer: float}}; {} before the state."""
        source = self._source()
        if getattr(source, "built", True) is False:
            return {}
        residual, rho = {}, {}
        for state in source.admm_state():
            name = state["layer_name"]
            residual[name] = primal_residual(state["weight"], state["z"])
            rho[name] = float(ops.convert_to_numpy(state["rho"]))
        return {"residual": residual, "rho": rho}

    def admm_logs(self, values=None) -> dict[str, float]:
        """The current ADMM metrics as {key: float}; {} before the state exists.

        ADMMWrapper creates its state at the first training step, so the
        metrics appear from the first batch end on.
        """
        values = self.layer_values() if values is None else values
        if not values or not values["residual"]:
            return {}
        logs = {
            "admm_residual_max": max(values["residual"].values()),
            "admm_rho_max": max(values["rho"].values()),
        }
        per_layer = self.per_layer
        if per_layer == "auto":
            per_layer = len(values["residual"]) <= 4
        if per_layer:
            for name, value in values["residual"].items():
                logs[f"admm_residual/{name}"] = value
                logs[f"admm_rho/{name}"] = values["rho"][name]
        return logs

    def on_train_begin(self, logs=None):
        self._source()  # fail early, before the first step, on a bad setup
        if self.log_dir and self._writer is None:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it)
                import tensorflow as tf
            except ImportError:
                raise ImportError(
                    f"ADMMLogger(log_dir={self.log_dir!r}) writes TensorBoard "
                    "summaries, which need tensorflow and tensorboard: pip install "
                    "tensorboard, or leave log_dir None (json_path still works)."
                ) from None
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "batch" and logs is not None:
            sync_model_state(self.model)
            logs.update(self.admm_logs())

    def on_epoch_end(self, epoch, logs=None):
        values = self.layer_values()
        if logs is not None:
            logs.update(self.admm_logs(values))
        if not values:
            return
        self.layer_history.append({"epoch": epoch + 1, **values})
        if self.json_path:
            tmp = self.json_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.layer_history, f, indent=1)
            os.replace(tmp, self.json_path)
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default():
                for kind, per_layer in values.items():
                    for name, value in per_layer.items():
                        tf.summary.scalar(f"admm_{kind}/{name}", value, step=epoch)
            self._writer.flush()
