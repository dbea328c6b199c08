"""keras_admm.progressive_admm: stages on the schedule, exact hard prune, checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_admm import (
    MaskedWrapper,
    PruningPlan,
    progressive_admm,
    sparsity_report,
)
from keras_admm import sparsity as sparsity_lib

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def small_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="fc"),
        ],
        name="small",
    )


def data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 12, 12, 1), dtype="float32"), rng.integers(0, 10, n)


def ratio_of(plan, layer):
    for target in plan.targets:
        if target.layer_name == layer:
            return target.sparsity
    raise AssertionError(f"{layer} not in {plan}")


@pytest.mark.parametrize("graph", [True, False, None])
def test_stages_climb_to_the_plan_then_the_prune_is_exact(graph):
    model = small_model()
    x, y = data()
    plan = PruningPlan({"conv1": "filter:0.5", "conv2": "shape:0.75"})
    result = progressive_admm(
        model,
        plan,
        x,
        y,
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        loss=LOSS,
        stage_epochs=[1, 1, 1],
        masked_epochs=1,
        updates_per_stage=2,
        graph=graph,
        batch_size=16,
        verbose=0,
    )
    shapes = [ratio_of(p, "conv2").ratio for p in result.stage_plans]
    assert 0 < shapes[0] < shapes[1] < shapes[2] == 0.75
    assert shapes[0] == pytest.approx(0.75 * (1 - (2 / 3) ** 3))
    assert result.admm_steps == [2, 2, 2]  # 4 steps per epoch / 2 updates
    assert len(result.histories) == 4 and all("loss" in h for h in result.histories)
    assert [sorted(r) for r in result.residuals] == [["conv1", "conv2"]] * 3
    assert isinstance(model.optimizer, MaskedWrapper)
    rows = {row["layer"]: row for row in sparsity_report(model, plan).rows}
    for target in plan.resolve(model).targets:
        spec = target.sparsity
        for group in rows[target.layer_name]["groups"]:
            assert group["kept"] == sparsity_lib.kept_count(group["total"], spec.ratio)
    for path, mask in result.masks.items():
        kernel = next(v for v in model.variables if v.path == path)
        assert not np.asarray(kernel)[mask == 0].any()


def test_an_optimizer_instance_is_copied_for_every_stage():
    model = small_model()
    x, y = data(32)
    adam = keras.optimizers.Adam(2e-3)
    progressive_admm(
        model,
        PruningPlan({"conv2": "filter:0.5"}),
        x,
        y,
        optimizer=adam,
        loss=LOSS,
        stage_epochs=[1, 1],
        masked_epochs=0,
        batch_size=16,
        verbose=0,
    )
    inner = model.optimizer.inner_optimizer
    assert inner is not adam and not adam.built
    assert float(inner.learning_rate) == pytest.approx(2e-3)


def test_a_dataset_of_known_length_sets_the_update_interval():
    model = small_model()
    x, y = data(64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 8 steps
    result = progressive_admm(
        model,
        PruningPlan({"conv2": "filter:0.5"}),
        dataset,
        optimizer="adam",
        loss=LOSS,
        stage_epochs=[1],
        masked_epochs=0,
        updates_per_stage=3,
        verbose=0,
    )
    assert result.admm_steps == [3]  # ceil(8 / 3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 3}, ValueError, "stage_epochs=\\[...\\]"),
        ({"stage_epochs": 4}, TypeError, "\\[1\\] \\* 4"),
        ({"stage_epochs": []}, ValueError, "at least one stage"),
        ({"stage_epochs": [1, 0]}, ValueError, "stage_epochs\\[1\\] must be >= 1"),
        ({"masked_epochs": -1}, ValueError, "masked_epochs must be >= 0"),
        ({"updates_per_stage": 1.5}, TypeError, "updates_per_stage must be an int"),
        ({"optimizer": 3}, TypeError, "lambda: keras.optimizers.Adam"),
        ({"optimizer": lambda: "adam"}, TypeError, "must return a"),
        ({"plan": ["conv2"]}, TypeError, "PruningPlan"),
    ],
)
def test_bad_input_is_named_and_leaves_the_model_alone(kwargs, error, match):
    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    x, y = data(16)
    arguments = dict(
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        loss=LOSS,
        batch_size=16,
        verbose=0,
    )
    arguments.update(kwargs)
    plan = arguments.pop("plan", PruningPlan({"conv2": "filter:0.5"}))
    with pytest.raises(error, match=match):
        progressive_admm(model, plan, x, y, **arguments)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_dataset_of_unknown_length_needs_steps_per_epoch():
    model = small_model()
    x, y = data(16)
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch=..."):
        progressive_admm(
            model,
            PruningPlan({"conv2": "filter:0.5"}),
            endless,
            optimizer="adam",
            loss=LOSS,
            verbose=0,
        )
    result = progressive_admm(
        model,
        PruningPlan({"conv2": "filter:0.5"}),
        endless,
        optimizer="adam",
        loss=LOSS,
        stage_epochs=[1],
        masked_epochs=1,
        steps_per_epoch=2,
        verbose=0,
    )
    assert result.admm_steps == [1] and len(result.histories) == 2


def test_steps_per_epoch_follows_what_model_fit_will_do():
    from keras_admm.training.progressive import _steps_per_epoch

    x = np.zeros((100, 3), "float32")
    assert _steps_per_epoch(x, None) == 4  # Keras' default batch of 32
    assert _steps_per_epoch(x, 10) == 10
    assert _steps_per_epoch(x, 10, validation_split=0.2) == 8
    assert _steps_per_epoch([x, x], 30) == 4
    assert _steps_per_epoch({"a": x}, 50) == 2
    batches = tf.data.Dataset.from_tensor_slices(x).batch(7)
    assert _steps_per_epoch(batches, None) == 15
    assert _steps_per_epoch(batches.repeat(), None) is None
    assert _steps_per_epoch(iter(range(3)), 10) is None


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", [2, 4])  # inside stage 2 / inside masked epochs
def test_checkpoint_resumes_after_the_last_finished_epoch(tmp_path, stop_at):
    """An interrupted run resumes where it stopped, with the ADMM or mask state
    it saved, and ends exactly pruned to the plan."""
    path = str(tmp_path / "run.keras")
    x, y = data()
    plan = PruningPlan({"conv1": "filter:0.5", "conv2": "shape:0.75"})
    settings = dict(
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        loss=LOSS,
        stage_epochs=[1, 2],
        masked_epochs=2,
        updates_per_stage=2,
        batch_size=16,
        verbose=0,
        checkpoint=path,
    )
    begun = []

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            begun.append(epoch)
            if len(begun) == stop_at + 1:
                raise _Stop

    model = small_model()
    with pytest.raises(_Stop):
        progressive_admm(model, plan, x, y, callbacks=[Interrupt()], **settings)
    import json

    with open(path + ".json") as f:
        state = json.load(f)
    saved = keras.saving.load_model(path)
    saved_steps = int(saved.optimizer.iterations.numpy())

    resumed_begun = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            resumed_begun.append(epoch)

        def on_train_begin(self, logs=None):
            if not resumed_begun:  # the first fit of the resumed run
                first_steps.append(int(self.model.optimizer.iterations.numpy()))

    first_steps = []
    fresh = small_model()  # other weights: the checkpoint must replace them
    result = progressive_admm(fresh, plan, x, y, callbacks=[Count()], **settings)
    # 5 epochs in all (1 + 2 ADMM, 2 masked); stop_at of them were done.
    assert len(resumed_begun) == 5 - stop_at
    assert state["epochs_done"] == 1
    assert first_steps[0] == saved_steps > 0  # the saved optimizer state
    assert isinstance(fresh.optimizer, MaskedWrapper)
    for path_, mask in result.masks.items():
        kernel = next(v for v in fresh.variables if v.path == path_)
        assert not np.asarray(kernel)[mask == 0].any()
    assert len(result.histories) == 3


def test_checkpoint_of_another_schedule_is_refused(tmp_path):
    path = str(tmp_path / "run.keras")
    x, y = data(32)
    plan = PruningPlan({"conv1": "filter:0.5"})
    common = dict(optimizer="adam", loss=LOSS, batch_size=16, verbose=0)
    progressive_admm(
        small_model(),
        plan,
        x,
        y,
        stage_epochs=[1],
        masked_epochs=0,
        checkpoint=path,
        **common,
    )
    with pytest.raises(ValueError, match="same stage_epochs"):
        progressive_admm(
            small_model(),
            plan,
            x,
            y,
            stage_epochs=[1, 1],
            masked_epochs=0,
            checkpoint=path,
            **common,
        )
