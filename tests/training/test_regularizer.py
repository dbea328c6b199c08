"""Tests for keras_admm.training.ADMMRegularizer (custom training loops)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_feasible, build_lenet_like, to_numpy, value_and_grad

from keras_admm.plan import PruningPlan
from keras_admm.training import ADMMRegularizer, primal_residual

RULES = {"conv2": "filter:0.5", "fc1": "filter_shape:0.5:0.25"}


def randomize_state(reg, seed=0):
    """Give Z, U and rho arbitrary values, so the tests see every term."""
    rng = np.random.default_rng(seed)
    for i, state in enumerate(reg.admm_state()):
        shape = tuple(state["z"].shape)
        state["z"].assign(rng.normal(size=shape).astype("float32"))
        state["u"].assign(rng.normal(size=shape).astype("float32"))
        state["rho"].assign(0.1 * (i + 1))


def numpy_state(reg):
    return [
        {
            "w": to_numpy(s["weight"]).astype("float64"),
            "z": to_numpy(s["z"]).astype("float64"),
            "u": to_numpy(s["u"]).astype("float64"),
            "rho": float(to_numpy(s["rho"])),
        }
        for s in reg.admm_state()
    ]


# ----------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rho": 0.0}, ValueError, "rho.*> 0.*0.0"),
        ({"rho": -1e-3}, ValueError, "rho.*> 0"),
        ({"rho": "big"}, TypeError, "rho.*number"),
        ({"admm_steps": 0}, ValueError, "admm_steps.*>= 1.*got 0"),
        ({"admm_steps": 2.5}, TypeError, "admm_steps.*int"),
        ({"rho_multiplier": 0.9}, ValueError, "rho_multiplier.*>= 1.*0.9"),
        ({"rho": 0.1, "rho_max": 0.01}, ValueError, "rho_max.*>= rho"),
    ],
)
def test_bad_arguments_name_the_value_and_the_fix(kwargs, error, message):
    with pytest.raises(error, match=message):
        ADMMRegularizer(PruningPlan(RULES), **kwargs)


def test_plan_must_be_a_plan():
    with pytest.raises(TypeError, match="PruningPlan"):
        ADMMRegularizer(["conv2"])


def test_bad_plan_fails_at_build_and_creates_nothing(lenet_model):
    reg = ADMMRegularizer({"conv2": "filter:0.5", "nope": "filter:0.5"})
    with pytest.raises(ValueError, match="nope"):
        reg.build(lenet_model)
    assert not reg.built and reg.variables == []
    with pytest.raises(ValueError, match="build"):
        reg.admm_state()


# --------------------------------------------------------------------- state
def test_build_initialises_z_to_the_projection_and_u_to_zero(lenet_model):
    reg = ADMMRegularizer(PruningPlan(RULES), rho=2e-3).build(lenet_model)
    assert reg.plan.resolved
    states = reg.admm_state()
    assert [s["layer_name"] for s in states] == ["conv2", "fc1"]
    for state, target in zip(states, reg.plan.targets):
        w = to_numpy(state["weight"])
        expected = to_numpy(target.sparsity.project(w, target.layout))
        np.testing.assert_array_equal(to_numpy(state["z"]), expected)
        assert_feasible(state["z"], target.sparsity, target.layout)
        np.testing.assert_array_equal(to_numpy(state["u"]), np.zeros_like(w))
        assert float(to_numpy(state["rho"])) == pytest.approx(2e-3)
        assert state["weight"] is lenet_model.get_layer(state["layer_name"]).kernel
    assert int(to_numpy(reg.iterations)) == 0
    assert len(reg.variables) == 3 * 2 + 1


def test_penalty_equals_the_numpy_formula_and_its_gradient(lenet_model):
    reg = ADMMRegularizer(RULES).build(lenet_model)
    randomize_state(reg)
    expected = sum(
        s["rho"] / 2 * np.sum((s["w"] - s["z"] + s["u"]) ** 2) for s in numpy_state(reg)
    )
    assert float(to_numpy(reg(lenet_model))) == pytest.approx(expected, rel=1e-5)
    assert float(to_numpy(reg.penalty())) == pytest.approx(expected, rel=1e-5)

    variables = lenet_model.trainable_variables
    _, grads = value_and_grad(lambda: reg(lenet_model), variables)
    grads = dict(zip([v.path for v in variables], grads))
    for state, s in zip(reg.admm_state(), numpy_state(reg)):
        grad = to_numpy(grads.pop(state["weight"].path))
        np.testing.assert_allclose(
            grad, s["rho"] * (s["w"] - s["z"] + s["u"]), rtol=1e-5, atol=1e-6
        )
    assert all(g is None or not to_numpy(g).any() for g in grads.values()), (
        "unplanned weights got gradients"
    )


@pytest.mark.tensorflow_only
def test_penalty_and_step_run_inside_tf_function(lenet_model):
    reg = ADMMRegularizer(RULES, admm_steps=2).build(lenet_model)
    randomize_state(reg)
    eager = float(to_numpy(reg(lenet_model)))
    kernel = lenet_model.get_layer("conv2").kernel

    @tf.function
    def penalty_and_grad():
        with tf.GradientTape() as tape:
            penalty = reg(lenet_model)
        return penalty, tape.gradient(penalty, kernel)

    penalty, grad = penalty_and_grad()
    assert float(penalty) == pytest.approx(eager, rel=1e-6)
    s = numpy_state(reg)[0]
    np.testing.assert_allclose(
        grad.numpy(), s["rho"] * (s["w"] - s["z"] + s["u"]), rtol=1e-5, atol=1e-6
    )

    step = tf.function(lambda: reg.step(lenet_model))
    assert [bool(step()) for _ in range(4)] == [False, True, False, True]
    assert int(to_numpy(reg.iterations)) == 4


def test_z_u_rho_update_exactly_every_admm_steps(lenet_model):
    reg = ADMMRegularizer(
        RULES, rho=0.1, rho_multiplier=2.0, rho_max=0.3, admm_steps=3
    ).build(lenet_model)
    rng = np.random.default_rng(1)
    rho = 0.1
    for step in range(1, 10):
        old = numpy_state(reg)
        # Move the weights as an optimizer step would.
        for state in reg.admm_state():
            w = to_numpy(state["weight"])
            state["weight"].assign(w + rng.normal(size=w.shape).astype("float32"))
        moved = numpy_state(reg)
        updated = bool(reg.step(lenet_model))
        new = numpy_state(reg)
        assert updated == (step % 3 == 0), step
        if step % 3:
            for o, n in zip(old, new):
                np.testing.assert_array_equal(n["z"], o["z"])
                np.testing.assert_array_equal(n["u"], o["u"])
                assert n["rho"] == pytest.approx(rho)
            continue
        rho = min(rho * 2.0, 0.3)
        for target, m, n in zip(reg.plan.targets, moved, new):
            z = to_numpy(
                target.sparsity.project(
                    (m["w"] + m["u"]).astype("float32"), target.layout
                )
            )
            np.testing.assert_allclose(n["z"], z, rtol=1e-6, atol=1e-6)
            assert_feasible(n["z"], target.sparsity, target.layout)
            np.testing.assert_allclose(
                n["u"], m["u"] + m["w"] - n["z"], rtol=1e-6, atol=1e-6
            )
            assert n["rho"] == pytest.approx(rho)
    # Capped by rho_max after two doublings, in the regularizer's own state.
    assert [n["rho"] for n in numpy_state(reg)] == pytest.approx(
        [0.3] * len(reg.plan.targets)
    )


def test_regularizer_rejects_another_model(lenet_model):
    reg = ADMMRegularizer(RULES).build(lenet_model)
    other = build_lenet_like(name="other")
    with pytest.raises(ValueError, match="built on model 'lenet_like'"):
        reg(other)


def test_residuals_match_their_definition(lenet_model):
    reg = ADMMRegularizer(RULES).build(lenet_model)
    randomize_state(reg)
    residuals = reg.residuals(lenet_model)
    assert list(residuals) == ["conv2", "fc1"]
    for name, s in zip(residuals, numpy_state(reg)):
        expected = np.linalg.norm(s["w"] - s["z"]) / np.linalg.norm(s["w"])
        assert residuals[name] == pytest.approx(expected, rel=1e-5)
    assert primal_residual(np.zeros(3), np.zeros(3)) == 0.0


def test_custom_loop_drives_the_residual_down():
    """Least squares towards a dense target, constrained to half the inputs."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = x @ rng.normal(size=(16, 8)).astype("float32")
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, use_bias=False, name="fc")]
    )
    optimizer = keras.optimizers.SGD(0.3)
    reg = ADMMRegularizer(
        {"fc": "channel:0.5"}, rho=0.25, rho_multiplier=1.3, rho_max=3.0, admm_steps=10
    )

    def make_step(admm):
        def loss_fn():
            loss = keras.ops.mean(keras.ops.square(keras.ops.subtract(model(x), y)))
            return loss + reg(model) if admm else loss

        def train_step():
            _, grads = value_and_grad(loss_fn, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            if admm:
                reg.step(model)

        if keras.backend.backend() == "tensorflow":
            return tf.function(train_step)
        return train_step

    pretrain = make_step(admm=False)
    for _ in range(100):
        pretrain()
    reg.build(model)  # after pretraining, as in StructADMM
    start = reg.residuals()["fc"]
    admm_step = make_step(admm=True)
    for _ in range(200):
        admm_step()
    end = reg.residuals()["fc"]
    assert int(to_numpy(reg.iterations)) == 200
    assert start > 0.3, start  # the dense fit is far from the sparse set
    assert end < 0.01, (start, end)
    # W itself is now (almost) in the set: 8 of 16 input rows are ~0.
    kernel = to_numpy(model.get_layer("fc").kernel)
    row_norms = np.linalg.norm(kernel, axis=1)
    assert (row_norms > 0.05 * row_norms.max()).sum() == 8


def test_rescale_dual_scales_u_by_rho_old_over_rho_new(lenet_model):
    reg = ADMMRegularizer(
        RULES, rho=0.1, rho_multiplier=2.0, admm_steps=1, rescale_dual=True
    ).build(lenet_model)
    for state in reg.admm_state():
        w = to_numpy(state["weight"])
        state["weight"].assign(w + 0.1)
    moved = numpy_state(reg)
    assert bool(reg.step(lenet_model))
    for m, n in zip(moved, numpy_state(reg)):
        np.testing.assert_allclose(
            n["u"], (m["u"] + m["w"] - n["z"]) / 2.0, rtol=1e-6, atol=1e-6
        )
        assert n["rho"] == pytest.approx(0.2)
