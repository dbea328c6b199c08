"""Shared test helpers: kernel layouts, tiny model builders, sparsity asserts.

Test modules import the plain helpers (`from conftest import assert_feasible`)
and use the fixtures (`lenet_model`, `multi_conv_model`) by name.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tools/ on sys.path, as when its scripts run: its harness package is importable.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(
    os.path.join(REPO, "tools")
)  # after the stdlib: tools/profile_models.py

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import reference  # noqa: E402
from hypothesis import settings  # noqa: E402

from keras_admm.sparsity import KernelLayout  # noqa: E402

settings.register_profile("keras_admm", deadline=None, print_blob=True)
settings.load_profile("keras_admm")

# The suite runs on the tensorflow backend, and its backend-independent tests
# on jax and torch too (`make test` / `make test-torch`, one process each).
BACKEND = keras.backend.backend()


def examples(count):
    """Hypothesis examples for a property test: all on tensorflow, a quarter on
    the other backends, whose eager ops compile each new shape (the property
    tests cost jax 8x tensorflow's time); tests/test_backends.py compares the
    backends' projections directly."""
    return count if BACKEND == "tensorflow" else max(5, count // 4)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tensorflow_only: needs the TensorFlow backend (tf.function, XLA, "
        "tf.distribute, SavedModel/ONNX/LiteRT export); skipped on the others",
    )


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the tensorflow backend, not {BACKEND}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


def value_and_grad(fn, variables):
    """(fn(), [d fn / d v for v in variables]) on the current backend.

    `fn` takes no arguments and reads the variables (a loss, a penalty). A
    variable `fn` does not use gets None on tensorflow and torch, zeros on
    jax. The custom-loop pattern of each backend: tf.GradientTape, jax.grad
    over the variables' values (keras.StatelessScope), torch's backward().
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = fn()
        return value, tape.gradient(value, variables)
    if BACKEND == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()

        value, grads = jax.value_and_grad(pure)([v.value for v in variables])
        return value, list(grads)
    if BACKEND == "torch":
        for v in variables:
            v.value.grad = None
        value = fn()
        value.backward()
        return value.detach(), [v.value.grad for v in variables]
    raise NotImplementedError(f"no gradients on the {BACKEND} backend")


# Keras kernel layouts, written down from Keras' own kernel shapes.
STANDARD = KernelLayout(filter_axes=(-1,), channel_axes=(-2,))
TRANSPOSED = KernelLayout(filter_axes=(-2,), channel_axes=(-1,))
DEPTHWISE = KernelLayout(filter_axes=(-2, -1), channel_axes=(-2,))

# name -> (layout, kernel rank). Shapes: Dense (in, out); ConvND (*spatial, in,
# out); Conv2DTranspose (kh, kw, out, in); DepthwiseConv2D (kh, kw, in, mult).
KERNEL_LAYOUTS = {
    "dense": (STANDARD, 2),
    "conv1d": (STANDARD, 3),
    "conv2d": (STANDARD, 4),
    "conv3d": (STANDARD, 5),
    "conv2d_transpose": (TRANSPOSED, 4),
    "depthwise2d": (DEPTHWISE, 4),
}


# --------------------------------------------------------------------- models
def build_lenet_like(name="lenet_like"):
    """Sequential LeNet-like model; prunable: conv1, conv2, fc1, fc2.

    conv1 has a single input channel (N:M means nothing for it).
    """
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ],
        name=name,
    )


def build_multi_conv_model(name="multi_conv"):
    """Functional model with every kernel layout; all input-channel counts are
    multiples of 4, so N:M 2:4 fits every prunable layer.

    Prunable layers: conv1d, conv2d, depthwise, separable, conv2d_transpose,
    conv3d, dense1, dense2.
    """
    layers = keras.layers
    seq = keras.Input((10, 4), name="sequence")
    x1 = layers.Conv1D(8, 3, activation="relu", name="conv1d")(seq)
    x1 = layers.GlobalAveragePooling1D(name="gap1d")(x1)

    image = keras.Input((6, 6, 4), name="image")
    x2 = layers.Conv2D(8, 3, padding="same", name="conv2d")(image)
    x2 = layers.DepthwiseConv2D(
        3, padding="same", depth_multiplier=2, name="depthwise"
    )(x2)
    x2 = layers.SeparableConv2D(8, 3, padding="same", name="separable")(x2)
    x2 = layers.Conv2DTranspose(4, 3, strides=2, name="conv2d_transpose")(x2)
    x2 = layers.GlobalAveragePooling2D(name="gap2d")(x2)

    volume = keras.Input((4, 4, 4, 4), name="volume")
    x3 = layers.Conv3D(4, 3, padding="same", name="conv3d")(volume)
    x3 = layers.GlobalAveragePooling3D(name="gap3d")(x3)

    x = layers.Concatenate(name="concat")([x1, x2, x3])
    x = layers.Dense(8, activation="relu", name="dense1")(x)
    out = layers.Dense(3, name="dense2")(x)
    return keras.Model([seq, image, volume], out, name=name)


def multi_conv_inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, 10, 4)).astype("float32"),
        rng.normal(size=(batch, 6, 6, 4)).astype("float32"),
        rng.normal(size=(batch, 4, 4, 4, 4)).astype("float32"),
    ]


@pytest.fixture
def lenet_model():
    keras.utils.set_random_seed(0)
    return build_lenet_like()


@pytest.fixture
def multi_conv_model():
    keras.utils.set_random_seed(0)
    return build_multi_conv_model()


def weights_snapshot(model):
    """{variable path: numpy copy} of every weight of `model`."""
    return {v.path: np.array(v.numpy()) for v in model.weights}


def assert_weights_equal(model, snapshot):
    current = weights_snapshot(model)
    assert current.keys() == snapshot.keys()
    for path, value in snapshot.items():
        np.testing.assert_array_equal(current[path], value, err_msg=path)


# -------------------------------------------------------------------- asserts
def to_numpy(x):
    """A numpy copy of a tensor, variable or array (on any backend)."""
    if isinstance(x, keras.Variable):
        x = x.value
    return np.array(keras.ops.convert_to_numpy(x))


def assert_feasible(kernel, sparsity, layout=STANDARD):
    """Assert that `kernel` lies in the sparsity set `sparsity`.

    Group kinds: at most kept_count(groups, ratio) non-zero groups. FilterShape:
    at most that many filters and GEMM columns. NM: at most n non-zeros in every
    block of m consecutive input channels.
    """
    kernel = to_numpy(kernel)
    rank = kernel.ndim
    kind = sparsity.kind
    if kind == "nm":
        counts = reference.nm_block_counts(kernel, layout, sparsity.m)
        assert counts.max(initial=0) <= sparsity.n, (
            f"{sparsity}: a block holds {counts.max()} non-zeros"
        )
        return
    if kind == "filter_shape":
        checks = [
            ("filter", sparsity.filter_ratio),
            ("shape", sparsity.shape_ratio),
        ]
    else:
        checks = [(kind, sparsity.ratio)]
    for group_kind, ratio in checks:
        axes = reference.group_axes(group_kind, layout, rank)
        groups = int(np.prod([kernel.shape[a] for a in axes]))
        allowed = reference.kept_count(groups, ratio)
        used = reference.nonzero_groups(kernel, axes)
        assert used <= allowed, (
            f"{sparsity}: {used} non-zero {group_kind} groups of {groups}, "
            f"at most {allowed} allowed"
        )


def tiny_model():
    """conv1 8@3x3 (14x14 out), pool, conv2 16@3x3 (5x5 out), fc1 16, fc2 10."""
    return keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ],
        name="tiny",
    )


class TinyData:
    """Random images and labels: enough to run every method, not to learn."""

    def __init__(self, train=128, test=64, seed=0):
        rng = np.random.default_rng(seed)
        self.x_train = rng.random((train, 16, 16, 1), dtype="float32")
        self.y_train = rng.integers(0, 10, train)
        self.x_test = rng.random((test, 16, 16, 1), dtype="float32")
        self.y_test = rng.integers(0, 10, test)
        self.source = f"random ({train} train, {test} test)"
