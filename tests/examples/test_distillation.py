"""examples/distillation.py: the loss against a NumPy reference, the combined
model trains the student only, and mismatched models are refused."""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

from distillation import DistillationLoss, student_accuracy, with_teacher  # noqa: E402


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference(y, student, teacher, t, alpha):
    ce = -log_softmax(student)[np.arange(len(y)), y]
    p = np.exp(log_softmax(teacher / t))
    kl = (p * (log_softmax(teacher / t) - log_softmax(student / t))).sum(-1)
    return ((1 - alpha) * ce + alpha * t * t * kl).mean()


@pytest.mark.parametrize("t, alpha", [(4.0, 0.9), (1.0, 0.5), (2.0, 0.0)])
def test_loss_matches_the_formula(t, alpha):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 6, 3)) * 3
    y = np.array([0, 1, 2, 2, 1, 0])
    logits = np.concatenate([student, teacher], -1).astype("float32")
    got = float(keras.ops.convert_to_numpy(DistillationLoss(3, t, alpha)(y, logits)))
    assert got == pytest.approx(reference(y, student, teacher, t, alpha), rel=1e-4)


def test_loss_is_zero_distillation_when_student_equals_teacher():
    logits = np.tile(np.array([[1.0, -2.0, 0.5]], "float32"), (4, 2))
    loss = DistillationLoss(3, 4.0, alpha=1.0)(np.zeros(4, "int32"), logits)
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(0.0, abs=1e-6)


def small_net(name, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name=name)


def test_fit_trains_the_student_in_place_and_leaves_the_teacher():
    student, teacher = small_net("net", 0), small_net("net", 1)  # same names
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    combined = with_teacher(student, teacher)
    combined.compile(
        keras.optimizers.SGD(0.1),
        loss=DistillationLoss(3),
        metrics=[student_accuracy(3)],
    )
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    history = combined.fit(x, np.arange(32) % 3, epochs=2, batch_size=8, verbose=0)
    assert "accuracy" in history.history
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)  # BN statistics included
    assert any(
        not np.array_equal(b, a) for b, a in zip(student_before, student.get_weights())
    )
    # The combined output is the two models' logits side by side.
    out = keras.ops.convert_to_numpy(combined(x[:4]))
    np.testing.assert_allclose(
        out[:, :3], keras.ops.convert_to_numpy(student(x[:4])), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        out[:, 3:], keras.ops.convert_to_numpy(teacher(x[:4])), rtol=1e-5, atol=1e-5
    )


def test_student_accuracy_scores_the_student_not_the_teacher():
    student, teacher = small_net("student", 0), small_net("teacher", 1)
    combined = with_teacher(student, teacher)
    combined.compile(loss=DistillationLoss(3), metrics=[student_accuracy(3)])
    x = np.random.default_rng(1).normal(size=(64, 6)).astype("float32")
    # Labels = the teacher's own predictions: the teacher scores 100% on them.
    y = keras.ops.convert_to_numpy(teacher(x)).argmax(-1)
    student_hits = keras.ops.convert_to_numpy(student(x)).argmax(-1) == y
    assert student_hits.mean() < 1.0  # else the check below could not tell
    got = combined.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert got["accuracy"] == pytest.approx(student_hits.mean(), abs=1e-6)


def test_mismatched_teacher_is_refused():
    inputs = keras.Input((5,))
    other = keras.Model(inputs, keras.layers.Dense(3)(inputs), name="other")
    with pytest.raises(ValueError, match="takes .* and the teacher 'other'"):
        with_teacher(small_net("net", 0), other)
    inputs = keras.Input((6,))
    wide = keras.Model(inputs, keras.layers.Dense(4)(inputs), name="wide")
    with pytest.raises(ValueError, match="3 outputs, the teacher 'wide' 4"):
        with_teacher(small_net("net", 0), wide)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="temperature=0"):
        DistillationLoss(3, temperature=0)
    with pytest.raises(ValueError, match="alpha=1.5"):
        DistillationLoss(3, alpha=1.5)
