"""Tests for keras_admm.training.callbacks.ADMMLogger."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import build_lenet_like, to_numpy

from keras_admm.plan import PruningPlan
from keras_admm.training import ADMMLogger, ADMMRegularizer, find_admm_wrapper

RULES = {"conv2": "filter:0.5", "fc1": "channel:0.5"}
KEYS = {
    "admm_residual/conv2",
    "admm_residual/fc1",
    "admm_rho/conv2",
    "admm_rho/fc1",
    "admm_residual_max",
}


def lenet_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 10, size=(n,))
    return x, y


def expected_residual(state):
    w = to_numpy(state["weight"]).astype("float64")
    z = to_numpy(state["z"]).astype("float64")
    return np.linalg.norm(w - z) / np.linalg.norm(w)


class FakeADMMOptimizer(keras.optimizers.SGD):
    """TEST DOUBLE, not ADMM: plain SGD exposing the ADMMWrapper state interface.

    `admm_state()` returns one dict per planned layer with the model's kernel as
    "weight", Z = Proj(W) frozen at construction, U = 0 and a fixed rho, so the
    logger can be tested without ADMMWrapper.
    """

    def __init__(self, model, rules, rho=0.01, **kwargs):
        super().__init__(learning_rate=0.05, **kwargs)
        # Untracked: the optimizer must not take the model's kernels (in the
        # state dicts) for its own variables (JAX would donate them twice).
        object.__setattr__(self, "_fake_state", [])
        for i, target in enumerate(PruningPlan(rules).resolve(model).targets):
            weight = model.get_layer(target.layer_name).kernel
            z = target.sparsity.project(weight, target.layout)
            self._fake_state.append(
                {
                    "layer_name": target.layer_name,
                    "weight": weight,
                    "z": keras.Variable(z, trainable=False),
                    "u": keras.Variable(keras.ops.zeros_like(z), trainable=False),
                    "rho": keras.Variable(rho * (i + 1), dtype="float32"),
                }
            )

    def admm_state(self):
        return list(self._fake_state)


class BatchLogsRecorder(keras.callbacks.Callback):
    """Records the batch logs that later callbacks (the progress bar) see."""

    def __init__(self):
        super().__init__()
        self.batch_logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))


def fit_lenet(optimizer, model, logger, epochs=2):
    recorder = BatchLogsRecorder()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = lenet_data()
    history = model.fit(
        x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[logger, recorder]
    )
    return history, recorder


def test_history_and_batch_logs_get_the_admm_keys(lenet_model):
    optimizer = FakeADMMOptimizer(lenet_model, RULES)
    history, recorder = fit_lenet(optimizer, lenet_model, ADMMLogger())

    assert KEYS <= set(history.history)
    for key in KEYS:
        assert len(history.history[key]) == 2, key
    # The epoch-end values are those of the final weights.
    for state in optimizer.admm_state():
        name = state["layer_name"]
        assert history.history[f"admm_residual/{name}"][-1] == pytest.approx(
            expected_residual(state), rel=1e-5
        )
        assert history.history[f"admm_rho/{name}"][-1] == pytest.approx(
            float(to_numpy(state["rho"]))
        )
    residuals = [history.history[f"admm_residual/{n}"][-1] for n in ("conv2", "fc1")]
    assert history.history["admm_residual_max"][-1] == max(residuals)
    assert history.history["admm_residual/conv2"][-1] > 0  # W moved away from Z
    # Every batch's logs (what the progress bar prints) carry the keys too.
    assert len(recorder.batch_logs) == 8
    assert all(KEYS <= set(logs) for logs in recorder.batch_logs)


def test_per_layer_false_and_epoch_frequency(lenet_model):
    optimizer = FakeADMMOptimizer(lenet_model, RULES)
    logger = ADMMLogger(per_layer=False, update_freq="epoch")
    history, recorder = fit_lenet(optimizer, lenet_model, logger, epochs=1)
    assert "admm_residual_max" in history.history
    assert not any(k.startswith("admm_residual/") for k in history.history)
    assert not any("admm_residual_max" in logs for logs in recorder.batch_logs)


def test_state_is_found_through_inner_optimizer_chains(lenet_model):
    fake = FakeADMMOptimizer(lenet_model, RULES)
    wrapped = keras.optimizers.LossScaleOptimizer(fake)
    assert find_admm_wrapper(wrapped) is fake
    assert find_admm_wrapper(keras.optimizers.Adam()) is None
    assert find_admm_wrapper(None) is None
    history, _ = fit_lenet(wrapped, lenet_model, ADMMLogger(), epochs=1)
    assert KEYS <= set(history.history)


def test_without_admm_state_fit_fails_early_with_the_fix(lenet_model):
    before = to_numpy(lenet_model.get_layer("conv2").kernel)
    with pytest.raises(ValueError, match="ADMMWrapper.*regularizer"):
        fit_lenet(keras.optimizers.Adam(), lenet_model, ADMMLogger(), epochs=1)
    np.testing.assert_array_equal(
        to_numpy(lenet_model.get_layer("conv2").kernel), before
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="update_freq"):
        ADMMLogger(update_freq="step")
    with pytest.raises(TypeError, match="ADMMRegularizer"):
        ADMMLogger(regularizer=keras.optimizers.Adam())


def test_logger_reads_a_regularizer_in_a_custom_loop(lenet_model):
    reg = ADMMRegularizer(RULES, rho=0.02).build(lenet_model)
    logger = ADMMLogger(regularizer=reg)
    logger.set_model(lenet_model)
    logs = {"loss": 1.0}
    logger.on_train_batch_end(0, logs)
    assert KEYS <= set(logs) and logs["loss"] == 1.0
    assert logs["admm_rho/conv2"] == pytest.approx(0.02)
    # ||W - Z|| / ||W|| computed here, not by the code under test.
    residuals = {
        target.layer_name: expected_residual(state)
        for target, state in zip(reg.plan.targets, reg.admm_state(), strict=True)
    }
    assert residuals["fc1"] > 0
    assert logs["admm_residual/fc1"] == pytest.approx(residuals["fc1"], rel=1e-5)
    assert logs["admm_residual_max"] == pytest.approx(max(residuals.values()), rel=1e-5)


# ---------------------------------------------------------- the real ADMMWrapper
def _admm_wrapper_class():
    from keras_admm.training import ADMMWrapper

    return ADMMWrapper


@pytest.mark.parametrize("loss_scale", [False, True])
def test_history_gets_the_keys_with_the_real_admm_wrapper(loss_scale):
    admm_wrapper = _admm_wrapper_class()
    keras.utils.set_random_seed(0)
    model = build_lenet_like()
    plan = PruningPlan(RULES).resolve(model)
    optimizer = admm_wrapper(
        keras.optimizers.Adam(1e-3), plan, rho=1e-3, rho_multiplier=2.0, admm_steps=2
    )
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    history, recorder = fit_lenet(optimizer, model, ADMMLogger(), epochs=2)

    assert KEYS <= set(history.history)
    assert all(KEYS <= set(logs) for logs in recorder.batch_logs)
    # 8 steps with an update every 2: rho doubled 4 times.
    assert history.history["admm_rho/conv2"][-1] == pytest.approx(1.6e-2)
    assert history.history["admm_rho/conv2"][0] == pytest.approx(4e-3)
    source = find_admm_wrapper(model.optimizer)
    for state in source.admm_state():
        assert history.history[f"admm_residual/{state['layer_name']}"][
            -1
        ] == pytest.approx(expected_residual(state), rel=1e-5)


def test_deep_models_get_a_summary_and_the_per_layer_values_in_files(tmp_path):
    """ResNet-20's 21 planned convs: two keys in the bar, every layer on disk."""
    import json
    import os

    import keras_admm
    from keras_admm import models

    keras.utils.set_random_seed(0)
    model = models.resnet_cifar(8)  # 7 planned convs: more than the 4 of 'auto'
    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5", skip_first=False)
    model.compile(
        optimizer=keras_admm.ADMMWrapper(keras.optimizers.SGD(0.01), plan),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    import importlib.util

    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    logger = ADMMLogger(
        log_dir=str(tmp_path / "tb") if has_tensorboard else None,
        json_path=str(tmp_path / "admm.json"),
    )
    x = np.random.default_rng(0).random((16, 32, 32, 3), dtype="float32")
    y = np.arange(16) % 10
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[logger])
    admm_keys = {k for k in history.history if k.startswith("admm")}
    assert admm_keys == {"admm_residual_max", "admm_rho_max"}
    with open(tmp_path / "admm.json") as f:
        recorded = json.load(f)
    assert [r["epoch"] for r in recorded] == [1, 2]
    assert set(recorded[-1]["residual"]) == set(plan.layer_names)
    assert max(recorded[-1]["residual"].values()) == pytest.approx(
        history.history["admm_residual_max"][-1]
    )
    if has_tensorboard:
        assert any(name.startswith("events") for name in os.listdir(tmp_path / "tb"))
    else:
        without = ADMMLogger(log_dir=str(tmp_path / "tb"))
        without.set_model(model)
        with pytest.raises(ImportError, match="pip install tensorboard"):
            without.on_train_begin()
