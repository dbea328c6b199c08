"""Callbacks that show ADMM's progress in fit's progress bar, History and TensorBoard.

Example:

    model.compile(optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(), plan),
                  loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=5, callbacks=[keras_admm.ADMMLogger()])
    history.history["admm_residual_max"]   # one value per epoch
"""

from __future__ import annotations

import keras
from keras import ops

from keras_admm.training.admm import find_admm_wrapper, primal_residual

__all__ = ["ADMMLogger"]

_UPDATE_FREQS = ("batch", "epoch")


class ADMMLogger(keras.callbacks.Callback):
    """Logs the ADMM primal residual and rho of every planned layer into `logs`.

    Adds, at the end of every training batch (`update_freq="batch"`) and every
    epoch:

    - `admm_residual/<layer>`: ||W - Z|| / ||W||, which falls towards 0 as
      ADMM converges;
    - `admm_rho/<layer>`: the layer's current penalty rho;
    - `admm_residual_max`: the largest residual over the planned layers.

    Keras runs user callbacks before its ProgbarLogger and History, so these
    keys show in the progress bar and in `history.history`; list ADMMLogger
    before a TensorBoard callback so TensorBoard records them too.

    The ADMM state comes from `model.optimizer` (through `.inner_optimizer`
    wrappers such as the LossScaleOptimizer of mixed precision, until an object
    with `admm_state()` such as ADMMWrapper), or from `regularizer`.

    Args:
        regularizer: an ADMMRegularizer to read instead of the optimizer (for
            custom loops: call `logger.admm_logs()` or the `on_*` hooks).
        per_layer: log the per-layer keys; False logs only
            `admm_residual_max` (less clutter for deep models).
        update_freq: "batch" (every training batch and epoch) or "epoch" (epoch
            ends only, cheaper: each update reads the kernels' norms).

    Raises:
        ValueError: a bad `update_freq`; at train begin, when neither the
            optimizer chain nor `regularizer` holds ADMM state.

    Example:

        model.fit(x, y, epochs=5, callbacks=[keras_admm.ADMMLogger(),
                                             keras.callbacks.TensorBoard("logs")])
    """

    def __init__(self, regularizer=None, per_layer=True, update_freq="batch"):
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
        self.regularizer = regularizer
        self.per_layer = bool(per_layer)
        self.update_freq = update_freq

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

    def admm_logs(self) -> dict[str, float]:
        """The current ADMM metrics as {key: float}; {} before the state exists.

        ADMMWrapper creates its state at the first training step, so the
        metrics appear from the first batch end on.
        """
        source = self._source()
        if getattr(source, "built", True) is False:
            return {}
        logs = {}
        residuals = []
        for state in source.admm_state():
            name = state["layer_name"]
            residual = primal_residual(state["weight"], state["z"])
            residuals.append(residual)
            if self.per_layer:
                logs[f"admm_residual/{name}"] = residual
                logs[f"admm_rho/{name}"] = float(ops.convert_to_numpy(state["rho"]))
        if residuals:
            logs["admm_residual_max"] = max(residuals)
        return logs

    def on_train_begin(self, logs=None):
        self._source()  # fail early, before the first step, on a bad setup

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "batch" and logs is not None:
            logs.update(self.admm_logs())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.admm_logs())
