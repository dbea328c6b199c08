"""ADMMWrapper and MaskedWrapper: the ADMM iteration, saving, wrapping, errors."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_admm import sparsity
from keras_admm.plan import PruningPlan
from keras_admm.training import ADMMWrapper, MaskedWrapper, find_admm_wrapper

X = np.random.RandomState(0).rand(64, 8, 8, 1).astype("float32")
Y = np.random.RandomState(1).randint(0, 10, 64)


def small_net(seed=0, name="net"):
    """A conv-conv-dense net with the same (NumPy) initial weights on every backend."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="fc"),
        ],
        name=name,
    )
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim > 1:  # Glorot uniform, fans as Keras counts them
            receptive = np.prod(w.shape[:-2])
            limit = np.sqrt(6.0 / (receptive * (w.shape[-2] + w.shape[-1])))
            w = rng.uniform(-limit, limit, w.shape)
        weights.append(np.asarray(w, dtype="float32"))
    model.set_weights(weights)
    return model


def numpy_of(variable):
    return np.asarray(ops.convert_to_numpy(variable))


def compile_admm(model, inner, rules=None, **kwargs):
    plan = PruningPlan(rules or {"c2": "filter:0.5", "fc": "unstructured:0.8"})
    plan = plan.resolve(model)
    model.compile(
        optimizer=ADMMWrapper(inner, plan, **kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return plan


def test_penalty_gradient_is_rho_times_w_minus_z_plus_u():
    model = small_net()
    plan = PruningPlan({"c2": "filter:0.5"}).resolve(model)
    optimizer = ADMMWrapper(keras.optimizers.SGD(0.1), plan, rho=0.5, admm_steps=1000)
    kernel = model.get_layer("c2").kernel
    optimizer.build(model.trainable_variables)
    w0 = numpy_of(kernel)
    c1_before = numpy_of(model.get_layer("c1").kernel)
    z0 = numpy_of(sparsity.Filter(0.5).project(w0))
    zero_grads = [ops.zeros(v.shape, v.dtype) for v in model.trainable_variables]
    optimizer.apply(zero_grads, model.trainable_variables)
    # The first step sets Z = Proj(W), U = 0 from the weights it starts from.
    np.testing.assert_allclose(numpy_of(optimizer.admm_state()[0]["z"]), z0)
    expected = w0 - 0.1 * 0.5 * (w0 - z0)
    np.testing.assert_allclose(numpy_of(kernel), expected, rtol=1e-6, atol=1e-7)
    # Variables outside the plan get the plain (zero) gradient.
    np.testing.assert_array_equal(numpy_of(model.get_layer("c1").kernel), c1_before)


def test_z_and_u_update_exactly_every_admm_steps():
    model = small_net()
    plan = PruningPlan({"c2": "filter:0.5"}).resolve(model)
    optimizer = ADMMWrapper(
        keras.optimizers.SGD(0.05), plan, rho=0.1, rho_multiplier=2.0, admm_steps=3
    )
    optimizer.build(model.trainable_variables)
    state = optimizer.admm_state()[0]
    # The first step sets Z = Proj(W) from the weights it starts from.
    z_start = numpy_of(sparsity.Filter(0.5).project(model.get_layer("c2").kernel))
    rng = np.random.RandomState(2)
    for step in range(1, 4):
        grads = [
            ops.convert_to_tensor(rng.randn(*v.shape).astype("float32"))
            for v in model.trainable_variables
        ]
        optimizer.apply(grads, model.trainable_variables)
        if step < 3:
            np.testing.assert_array_equal(numpy_of(state["z"]), z_start)
            np.testing.assert_array_equal(numpy_of(state["u"]), 0.0)
            assert float(numpy_of(state["rho"])) == pytest.approx(0.1)
    w = numpy_of(model.get_layer("c2").kernel)
    z = numpy_of(state["z"])
    np.testing.assert_allclose(z, numpy_of(sparsity.Filter(0.5).project(w)), atol=1e-7)
    np.testing.assert_allclose(numpy_of(state["u"]), w - z, atol=1e-7)
    assert float(numpy_of(state["rho"])) == pytest.approx(0.2)
    kept = (np.abs(z).sum(axis=(0, 1, 2)) > 0).sum()
    assert kept == 4


def test_rescale_dual_keeps_rho_times_u_when_rho_grows():
    model = small_net()
    plan = PruningPlan({"c2": "filter:0.5"}).resolve(model)
    optimizer = ADMMWrapper(
        keras.optimizers.SGD(0.05),
        plan,
        rho=0.1,
        rho_multiplier=2.0,
        admm_steps=1,
        rescale_dual=True,
    )
    optimizer.build(model.trainable_variables)
    grads = [ops.ones(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    state = optimizer.admm_state()[0]
    w = numpy_of(model.get_layer("c2").kernel)
    z = numpy_of(state["z"])
    # U = (0 + W - Z) * rho_old / rho_new = (W - Z) / 2, so rho * U is unchanged.
    np.testing.assert_allclose(numpy_of(state["u"]), (w - z) / 2.0, atol=1e-7)
    assert float(numpy_of(state["rho"])) == pytest.approx(0.2)
    restored = ADMMWrapper.from_config(optimizer.get_config())
    assert restored.rescale_dual is True


def test_rho_is_capped_by_rho_max():
    model = small_net()
    plan = PruningPlan({"c2": "filter:0.5"}).resolve(model)
    optimizer = ADMMWrapper(
        keras.optimizers.SGD(0.01),
        plan,
        rho=0.1,
        rho_multiplier=10.0,
        rho_max=0.5,
        admm_steps=1,
    )
    grads = [ops.zeros(v.shape, "float32") for v in model.trainable_variables]
    for _ in range(3):
        optimizer.apply(grads, model.trainable_variables)
    assert float(numpy_of(optimizer.admm_state()[0]["rho"])) == pytest.approx(0.5)


def distance_to_set(model, layer, spec):
    w = numpy_of(model.get_layer(layer).kernel)
    projected = numpy_of(sparsity.parse(spec).project(w))
    return np.linalg.norm(w - projected) / np.linalg.norm(w)


@pytest.mark.parametrize(
    "make_inner",
    [
        lambda: keras.optimizers.SGD(0.02, momentum=0.9),
        lambda: keras.optimizers.Adam(3e-3),
        lambda: keras.optimizers.AdamW(3e-3, weight_decay=1e-3),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_admm_pulls_weights_into_the_sparse_set(make_inner):
    """Same data and steps: ADMM ends far closer to the set than plain training."""
    rules = {"c2": "filter:0.5", "fc": "unstructured:0.8"}
    admm = small_net()
    compile_admm(admm, make_inner(), rules, rho=1.0, rho_multiplier=1.3, admm_steps=16)
    admm.fit(X, Y, batch_size=8, epochs=16, verbose=0, shuffle=False)
    plain = small_net()
    plain.compile(
        optimizer=make_inner(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    plain.fit(X, Y, batch_size=8, epochs=16, verbose=0, shuffle=False)
    residuals = find_admm_wrapper(admm.optimizer).residuals()
    assert set(residuals) == {"c2", "fc"}
    for layer, spec in rules.items():
        admm_distance = distance_to_set(admm, layer, spec)
        plain_distance = distance_to_set(plain, layer, spec)
        assert admm_distance < 0.5 * plain_distance, (
            layer,
            admm_distance,
            plain_distance,
        )
        # The logged residual ||W - Z|| / ||W|| (Z = Proj(W + U), so U adds to
        # it) is still below plain training's distance to the set.
        assert residuals[layer] < plain_distance


@pytest.mark.parametrize(
    "make_inner",
    [lambda: keras.optimizers.Adam(1e-2), lambda: keras.optimizers.SGD(0.05, 0.9)],
    ids=["adam", "sgd_momentum"],
)
def test_save_load_resumes_exactly(tmp_path, make_inner):
    straight = small_net()
    compile_admm(straight, make_inner(), rho=0.05, admm_steps=3)
    straight.fit(X, Y, batch_size=16, epochs=4, verbose=0, shuffle=False)

    resumed = small_net()
    compile_admm(resumed, make_inner(), rho=0.05, admm_steps=3)
    resumed.fit(X, Y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    path = os.path.join(tmp_path, "admm.keras")
    resumed.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, ADMMWrapper)
    assert int(numpy_of(loaded.optimizer.iterations)) == 8
    loaded.fit(X, Y, batch_size=16, epochs=2, verbose=0, shuffle=False)

    for a, b in zip(straight.weights, loaded.weights):
        np.testing.assert_allclose(numpy_of(a), numpy_of(b), atol=1e-6)
    for a, b in zip(straight.optimizer.admm_state(), loaded.optimizer.admm_state()):
        for key in ("z", "u", "rho"):
            np.testing.assert_allclose(numpy_of(a[key]), numpy_of(b[key]), atol=1e-6)


def test_config_round_trip():
    model = small_net()
    plan = PruningPlan({"c2": "filter_shape:0.5:0.3"}).resolve(model)
    wrapper = ADMMWrapper(
        keras.optimizers.Adam(2e-3), plan, rho=2e-3, rho_multiplier=1.5, admm_steps=7
    )
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(wrapper)
    )
    assert isinstance(restored, ADMMWrapper)
    assert restored.get_config() == wrapper.get_config()
    assert restored.plan == plan
    assert float(restored.learning_rate) == pytest.approx(2e-3)


def test_mixed_float16_inside_loss_scale_optimizer(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_net()
        compile_admm(model, keras.optimizers.Adam(1e-2), rho=0.05, admm_steps=2)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer, ADMMWrapper)
        model.fit(X, Y, batch_size=16, epochs=3, verbose=0)
        wrapper = find_admm_wrapper(model.optimizer)
        assert int(numpy_of(wrapper.iterations)) > 0
        z = numpy_of(wrapper.admm_state()[0]["z"])
        assert (np.abs(z).sum(axis=(0, 1, 2)) > 0).sum() == 4
        path = os.path.join(tmp_path, "mp.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(find_admm_wrapper(loaded.optimizer), ADMMWrapper)
    finally:
        keras.mixed_precision.set_global_policy("float32")


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras import ops
    from keras_admm.training import ADMMWrapper, MaskedWrapper
    from keras_admm.plan import PruningPlan

    x = np.random.RandomState(0).rand(64, 8, 8, 1).astype("float32")
    y = np.random.RandomState(1).randint(0, 10, 64)

    def run(strategy, make_optimizer):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
                keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
                keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
            plan = PruningPlan({"c2": "filter:0.5"}).resolve(model)
            model.compile(optimizer=make_optimizer(plan, model),
                          loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        return model

    def admm(plan, model):
        return ADMMWrapper(keras.optimizers.SGD(0.05, momentum=0.9), plan,
                           rho=0.1, admm_steps=3)

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    a = run(mirrored, admm)
    b = run(tf.distribute.get_strategy(), admm)
    for u, v in zip(a.weights, b.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(u), ops.convert_to_numpy(v),
                                   atol=1e-4)
    za = ops.convert_to_numpy(a.optimizer.admm_state()[0]["z"])
    zb = ops.convert_to_numpy(b.optimizer.admm_state()[0]["z"])
    np.testing.assert_allclose(za, zb, atol=1e-4)

    keep = np.tile(np.array([1, 0] * 4, "float32"), (3, 3, 4, 1))
    def masked(plan, model):
        return MaskedWrapper(keras.optimizers.Adam(1e-2),
                             {plan.targets[0].weight_path: keep})
    c = run(mirrored, masked)
    kernel = ops.convert_to_numpy(c.get_layer("c2").kernel)
    assert np.all(kernel[..., 1::2] == 0) and np.all(kernel[..., ::2] != 0)
    print("MIRRORED_OK")
    """
)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MIRRORED_OK" in result.stdout


# ----------------------------------------------------------------- MaskedWrapper
@pytest.mark.parametrize(
    "make_inner",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(1e-2),
        lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.01),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_masked_weights_stay_exactly_zero(make_inner, tmp_path):
    model = small_net()
    kernel = model.get_layer("c2").kernel
    mask = numpy_of(sparsity.Filter(0.5).mask(numpy_of(kernel)))
    kernel.assign(numpy_of(kernel) * mask)
    before = numpy_of(kernel)
    model.compile(
        optimizer=MaskedWrapper(make_inner(), {kernel.path: mask}),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(X, Y, batch_size=16, epochs=3, verbose=0)
    after = numpy_of(kernel)
    assert np.all(after[mask == 0] == 0.0)
    assert np.mean(after[mask == 1] != before[mask == 1]) > 0.5  # the rest trains

    path = os.path.join(tmp_path, "masked.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, MaskedWrapper)
    loaded.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert np.all(numpy_of(loaded.get_layer("c2").kernel)[mask == 0] == 0.0)


def test_masked_wrapper_zeroes_weights_moved_by_old_momentum():
    model = small_net()
    kernel = model.get_layer("c2").kernel
    inner = keras.optimizers.SGD(0.1, momentum=0.9)
    # Give the inner optimizer momentum on every weight first.
    grads = [ops.ones(v.shape, "float32") for v in model.trainable_variables]
    inner.apply(grads, model.trainable_variables)
    mask = np.zeros(kernel.shape, "float32")
    mask[..., :2] = 1.0
    wrapper = MaskedWrapper(inner, {kernel.path: mask})
    zeros = [ops.zeros(v.shape, "float32") for v in model.trainable_variables]
    wrapper.apply(zeros, model.trainable_variables)
    assert np.all(numpy_of(kernel)[..., 2:] == 0.0)


# ------------------------------------------------------------------------ errors
def _plan(model):
    return PruningPlan({"c2": "filter:0.5"}).resolve(model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rho": 0.0}, "rho"),
        ({"rho": -1.0}, "rho"),
        ({"admm_steps": 0}, "admm_steps"),
        ({"rho_multiplier": 0.5}, "rho_multiplier"),
        ({"rho": 1e-2, "rho_max": 1e-3}, "rho_max"),
        ({"clipnorm": 1.0}, "inner optimizer"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ADMMWrapper(keras.optimizers.Adam(), _plan(small_net()), **kwargs)


def test_wrapper_in_itself_is_rejected():
    plan = _plan(small_net())
    inner = ADMMWrapper(keras.optimizers.Adam(), plan)
    with pytest.raises(ValueError, match="cannot wrap"):
        ADMMWrapper(inner, plan)
    with pytest.raises(ValueError, match="cannot wrap"):
        MaskedWrapper(inner, {"net/c2/kernel": np.ones((3, 3, 4, 8))})
    with pytest.raises(ValueError, match="inside the LossScaleOptimizer"):
        ADMMWrapper(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()), plan)


def test_unresolved_plan_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="resolve"):
        ADMMWrapper(keras.optimizers.Adam(), PruningPlan({"c2": "filter:0.5"}))


def test_plan_for_another_model_fails_at_build_and_changes_nothing():
    plan = _plan(small_net())
    other = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, name="other")], name="o"
    )
    before = [numpy_of(v) for v in other.weights]
    wrapper = ADMMWrapper(keras.optimizers.Adam(), plan)
    with pytest.raises(ValueError, match="c2/kernel"):
        wrapper.build(other.trainable_variables)
    for a, b in zip(before, other.weights):
        np.testing.assert_array_equal(a, numpy_of(b))


def test_masks_must_be_binary_and_match_shapes():
    model = small_net()
    path = model.get_layer("c2").kernel.path
    with pytest.raises(ValueError, match="only 0 and 1"):
        MaskedWrapper(keras.optimizers.Adam(), {path: np.full((3, 3, 4, 8), 0.5)})
    wrapper = MaskedWrapper(keras.optimizers.Adam(), {path: np.ones((3, 3, 4, 9))})
    with pytest.raises(ValueError, match="shape"):
        wrapper.build(model.trainable_variables)


# ------------------------------------------- saved before the first step (issue 12)
def _three_convs():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, name="c1"),
            keras.layers.Conv2D(8, 3, name="c2"),
            keras.layers.Conv2D(4, 3, name="c3"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="fc"),
        ]
    )


def _regression_data():
    rng = np.random.default_rng(0)
    return rng.random((32, 8, 8, 3), dtype="float32"), rng.random((32, 2), "float32")


def test_masks_survive_a_save_before_the_first_step(tmp_path):
    """No ReLU: a lost mask lets every pruned weight grow back in one epoch."""
    import keras_admm

    keras.utils.set_random_seed(0)
    model = _three_convs()
    plan = PruningPlan({"c1": "filter:0.5", "c2": "filter:0.5", "c3": "filter:0.5"})
    masks = keras_admm.hard_prune(model, plan)
    model.compile(
        optimizer=MaskedWrapper(keras.optimizers.Adam(1e-2), masks), loss="mse"
    )
    path = tmp_path / "pruned.keras"
    model.save(path)  # the optimizer is not built: no mask variables yet
    loaded = keras.saving.load_model(path)
    x, y = _regression_data()
    loaded.fit(x, y, epochs=1, verbose=0)
    for layer_name in ("c1", "c2", "c3"):
        path_ = next(p for p in masks if layer_name in p)
        kernel = loaded.get_layer(layer_name).kernel.numpy()
        assert not kernel[masks[path_] == 0].any(), layer_name


def test_admm_starts_from_the_loaded_weights_after_a_save_before_the_first_step(
    tmp_path,
):
    import keras_admm

    keras.utils.set_random_seed(0)
    plan = PruningPlan({"c1": "filter:0.5", "c2": "filter:0.5"})

    def compiled(model):
        wrapper = keras_admm.ADMMWrapper(
            keras.optimizers.Adam(1e-2), plan.resolve(model), admm_steps=1
        )
        model.compile(optimizer=wrapper, loss="mse")
        return model

    model = compiled(_three_convs())
    reference = compiled(_three_convs())
    reference.set_weights(model.get_weights())
    path = tmp_path / "admm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x, y = _regression_data()
    for m in (loaded, reference):
        m.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(loaded.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_frozen_planned_layer_is_named_in_the_error():
    model = _three_convs()
    plan = PruningPlan({"c2": "filter:0.5"}).resolve(model)
    model.get_layer("c2").trainable = False
    model.compile(optimizer=ADMMWrapper(keras.optimizers.Adam(), plan), loss="mse")
    x, y = _regression_data()
    with pytest.raises(ValueError, match="c2/kernel.*frozen layer"):
        model.fit(x, y, epochs=1, verbose=0)


# ------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "name, value",
    [
        ("rho", float("inf")),
        ("rho", float("nan")),
        ("rho_multiplier", float("inf")),
        ("rho_multiplier", float("nan")),
        ("rho_max", float("nan")),
    ],
)
def test_admm_settings_must_be_finite(name, value):
    # rho=inf put NaN into the weights after one step, without a word.
    plan = PruningPlan.uniform(small_net(), "filter:0.5", skip_first=False)
    settings = {"rho": 1e-3, "rho_max": 1.0, "rho_multiplier": 1.3, name: value}
    want = {"rho": "a finite number > 0", "rho_multiplier": "a finite number >= 1"}
    want = want.get(name, "a number")  # rho_max may be inf: no cap
    with pytest.raises(ValueError, match=f"`{name}` must be {want}, got {value}"):
        ADMMWrapper(keras.optimizers.SGD(), plan, **settings)
    # rho_max=inf means no cap: allowed.
    ADMMWrapper(keras.optimizers.SGD(), plan, rho=1e-3, rho_max=float("inf"))


def test_a_group_projection_for_another_model_or_plan_is_refused():
    from keras_admm import GroupProjection

    model, other = small_net(name="a"), small_net(name="b")
    plan = PruningPlan.uniform(model, "filter:0.5", skip_first=False)
    # Built from another model: its paths are not the plan's kernels.
    foreign = GroupProjection.from_plan(
        other, PruningPlan.uniform(other, "filter:0.5", skip_first=False)
    )
    with pytest.raises(ValueError, match="cuts kernels that are not in the plan"):
        ADMMWrapper(keras.optimizers.SGD(), plan, projection=foreign)
    # Built for 0.5 while the plan asks for 0.75: it would steer ADMM to 0.5.
    deeper = PruningPlan.uniform(model, "filter:0.75", skip_first=False)
    with pytest.raises(
        ValueError, match=r"at ratio 0.5, but the plan asks for \[0.75\]"
    ):
        ADMMWrapper(
            keras.optimizers.SGD(),
            deeper,
            projection=GroupProjection.from_plan(model, plan),
        )
    # Its own plan's projection is accepted.
    own = GroupProjection.from_plan(model, plan)
    assert own.groups
    ADMMWrapper(keras.optimizers.SGD(), plan, projection=own)


def test_masked_wrapper_refuses_empty_masks():
    with pytest.raises(ValueError, match="`masks` is empty: nothing would stay pruned"):
        MaskedWrapper(keras.optimizers.SGD(), {})


def test_an_unknown_optimizer_name_is_named():
    plan = PruningPlan.uniform(small_net(), "filter:0.5", skip_first=False)
    with pytest.raises(ValueError, match="ADMMWrapper: 'nosuchopt' is not a Keras"):
        ADMMWrapper("nosuchopt", plan)
    assert isinstance(ADMMWrapper("sgd", plan).inner_optimizer, keras.optimizers.SGD)
