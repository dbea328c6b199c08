"""A seeded random-architecture fuzzer for `compact`.

`random_model(seed)` builds a small functional model that mixes the layers the
dependency graph knows (convolutions, depthwise, separable, transpose, BN,
activations, pooling, padding, cropping, upsampling, merges, Concatenate, a
layer called twice, Flatten -> Dense), with random non-zero biases and BN
statistics. `random_pruning(model, seed)` hard-prunes it with a random
group-aware Filter / Channel plan at high ratios, and also zeroes a few filters
on their own (so some removed channels emit constants that must be folded).
`check_seed(seed)` runs both, compacts, and compares the outputs.

Example:

    from keras_admm.testing import fuzz
    result = fuzz.check_seed(3)
    assert result.matched, result
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_admm import registry
from keras_admm.compaction import compact
from keras_admm.plan import PruningPlan, prunable_layers
from keras_admm.pruning import hard_prune

__all__ = [
    "random_model",
    "randomize_weights",
    "random_pruning",
    "check_seed",
    "FuzzResult",
    "max_relative_error",
    "run",
]

layers = keras.layers


def _float64(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


def max_relative_error(expected, actual) -> float:
    """max |expected - actual| / max |expected| (over all outputs).

    Raises ValueError if the two have different numbers of outputs or shapes:
    a model that lost an output, or one that broadcasts, does not match.
    """
    expected = [_float64(e) for e in keras.tree.flatten(expected)]
    actual = [_float64(a) for a in keras.tree.flatten(actual)]
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} outputs expected, got {len(actual)}")
    for i, (e, a) in enumerate(zip(expected, actual)):
        if e.shape != a.shape:
            raise ValueError(f"output {i}: shape {e.shape} expected, got {a.shape}")
    scale = max(max(float(np.abs(e).max()) for e in expected), 1e-6)
    diff = max(float(np.abs(e - a).max()) for e, a in zip(expected, actual))
    return diff / scale


class _Builder:
    def __init__(self, rng):
        self.rng = rng
        self.count = 0

    def name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]


def _spatial(x):
    return tuple(x.shape[1:-1])


def _conv(b, x, channels=None, kernel=None, padding=None, strides=1):
    channels = channels or int(b.choice([4, 6, 8, 12]))
    kernel = kernel or int(b.choice([1, 3]))
    padding = padding or b.choice(["same", "valid"])
    if min(_spatial(x)) < kernel + 2:
        padding = "same"
    cls = layers.Conv2D if len(_spatial(x)) == 2 else layers.Conv1D
    return cls(
        channels,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=bool(b.rng.random() < 0.7),
        activation=b.choice([None, None, "relu"]),
        name=b.name("conv"),
    )(x)


def _activation(b, x):
    options = [
        lambda: layers.ReLU(name=b.name("relu")),
        lambda: layers.ReLU(max_value=6.0, name=b.name("relu6")),
        lambda: layers.LeakyReLU(negative_slope=0.1, name=b.name("leaky")),
        lambda: layers.ELU(name=b.name("elu")),
        lambda: layers.Activation("tanh", name=b.name("tanh")),
        lambda: layers.PReLU(shared_axes=None, name=b.name("prelu")),
        lambda: layers.PReLU(
            shared_axes=list(range(1, len(x.shape) - 1)), name=b.name("prelu")
        ),
        lambda: layers.Dropout(0.3, name=b.name("dropout")),
        lambda: layers.GaussianNoise(0.3, name=b.name("noise")),
        lambda: layers.Activation("swish", name=b.name("swish")),
    ]
    return b.choice(options)()(x)


def _step_2d(b, pool, x):
    """One random layer on the current tensor `x`; returns the new tensor."""
    h = min(_spatial(x))
    op = b.choice(
        [
            "conv",
            "conv",
            "bn",
            "act",
            "depthwise",
            "separable",
            "pool",
            "pad",
            "crop",
            "up",
            "transpose",
            "merge",
            "merge",
            "concat",
            "concat",
            "shared",
            "dense",
            "spatial_dropout",
        ]
    )
    if op == "conv":
        strides = 2 if h >= 10 and b.rng.random() < 0.3 else 1
        return _conv(b, x, strides=strides)
    if op == "bn":
        return layers.BatchNormalization(name=b.name("bn"))(x)
    if op == "act":
        return _activation(b, x)
    if op == "depthwise":
        return layers.DepthwiseConv2D(
            3,
            padding=b.choice(["same", "valid"]) if h >= 6 else "same",
            depth_multiplier=int(b.choice([1, 1, 2])),
            use_bias=bool(b.rng.random() < 0.7),
            name=b.name("dw"),
        )(x)
    if op == "separable":
        return layers.SeparableConv2D(
            int(b.choice([4, 8])),
            3,
            padding=b.choice(["same", "valid"]) if h >= 6 else "same",
            depth_multiplier=int(b.choice([1, 2])),
            name=b.name("sep"),
        )(x)
    if op == "pool" and h >= 4:
        cls = b.choice([layers.MaxPooling2D, layers.AveragePooling2D])
        return cls(2, padding=b.choice(["valid", "same"]), name=b.name("pool"))(x)
    if op == "pad":
        return layers.ZeroPadding2D(1, name=b.name("pad"))(x)
    if op == "crop" and h >= 6:
        return layers.Cropping2D(1, name=b.name("crop"))(x)
    if op == "up" and h <= 8:
        return layers.UpSampling2D(2, name=b.name("up"))(x)
    if op == "transpose" and h <= 10:
        return layers.Conv2DTranspose(
            int(b.choice([4, 8])),
            3,
            strides=int(b.choice([1, 2])),
            padding=b.choice(["same", "valid"]),
            name=b.name("convT"),
        )(x)
    if op in ("merge", "concat"):
        same = [t for t in pool if _spatial(t) == _spatial(x) and t is not x]
        other = b.choice(same) if same else x
        if op == "concat":
            return layers.Concatenate(name=b.name("concat"))([x, other])
        if other.shape[-1] != x.shape[-1]:
            other = _conv(b, other, channels=x.shape[-1], kernel=1)
        cls = b.choice(
            [
                layers.Add,
                layers.Add,
                layers.Subtract,
                layers.Multiply,
                layers.Average,
                layers.Maximum,
                layers.Minimum,
            ]
        )
        return cls(name=b.name(cls.__name__.lower()))([x, other])
    if op == "dense":  # a Dense on a rank-4 tensor mixes the channel axis only
        return layers.Dense(int(b.choice([4, 8])), name=b.name("dense"))(x)
    if op == "spatial_dropout":
        return layers.SpatialDropout2D(0.3, name=b.name("sdrop"))(x)
    if op == "shared":
        conv = layers.Conv2D(
            x.shape[-1], 3, padding="same", name=b.name("shared"), use_bias=True
        )
        y = conv(x)
        y = layers.ReLU(name=b.name("relu"))(y)
        return conv(y)
    return _conv(b, x)


def random_model(seed) -> keras.Model:
    """A random functional model (2D image, sometimes 1D sequence), seeded."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    one_d = rng.random() < 0.15
    if one_d:
        inputs = keras.Input((int(rng.integers(12, 20)), 3), name="inputs")
        x = _conv(b, inputs)
        for _ in range(int(rng.integers(2, 6))):
            op = b.choice(["conv", "bn", "act", "pool", "merge"])
            if op == "conv":
                y = _conv(b, x)
            elif op == "bn":
                y = layers.BatchNormalization(name=b.name("bn"))(x)
            elif op == "act":
                y = _activation(b, x)
            elif op == "pool" and x.shape[1] >= 4:
                y = layers.MaxPooling1D(2, name=b.name("pool"))(x)
            else:
                z = _conv(b, x, channels=x.shape[-1], kernel=3, padding="same")
                y = layers.Add(name=b.name("add"))([x, z])
            x = y
    else:
        size = int(rng.integers(10, 17))
        inputs = keras.Input((size, size, 3), name="inputs")
        x = _conv(b, inputs)
        pool = [x]
        for _ in range(int(rng.integers(3, 9))):
            x = _step_2d(b, pool, x)
            pool.append(x)
    head = b.choice(["gap", "flatten", "gmp"])
    if head == "flatten" and np.prod(x.shape[1:]) <= 4096:
        x = layers.Flatten(name="flatten")(x)
    elif head == "gmp":
        cls = layers.GlobalMaxPooling1D if one_d else layers.GlobalMaxPooling2D
        x = cls(name="gmp")(x)
    else:
        cls = layers.GlobalAveragePooling1D if one_d else layers.GlobalAveragePooling2D
        x = cls(name="gap")(x)
    x = layers.Dense(int(b.choice([8, 16])), activation="relu", name="fc1")(x)
    outputs = layers.Dense(5, name="fc2")(x)
    return keras.Model(inputs, outputs, name=f"fuzz_{seed}")


def randomize_weights(model, seed) -> None:
    """Random non-zero biases, BN statistics and PReLU slopes, in place."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.name in ("moving_variance", "gamma"):
                value = rng.uniform(0.5, 1.5, shape)
            elif variable.name in ("moving_mean", "beta", "bias"):
                value = rng.normal(0.0, 0.5, shape)
            elif variable.name == "alpha":
                value = rng.uniform(0.0, 0.5, shape)
            else:
                continue
            variable.assign(value.astype("float32"))


def random_pruning(model, seed) -> dict:
    """Group-aware Filter / Channel hard pruning at high ratios, plus stray zeros.

    Returns the masks of `hard_prune(model, plan, graph=True)`.
    """
    rng = np.random.default_rng(seed)
    prunable = prunable_layers(model)
    rules = []
    for layer in prunable[:-1]:
        draw = rng.random()
        if isinstance(layer, layers.Conv2D) and type(layer) is layers.Conv2D:
            if draw < 0.2:
                rules.append((layer.name, f"shape:{rng.uniform(0.5, 0.9):.2f}"))
                continue
        if draw < 0.8:
            kind = "filter" if rng.random() < 0.7 else "channel"
            rules.append((layer.name, f"{kind}:{rng.uniform(0.5, 0.95):.2f}"))
    if not rules:
        rules.append((prunable[0].name, "filter:0.75"))
    masks = hard_prune(model, PruningPlan(rules), graph=True)
    # Zero a few whole filters on their own: their channels then emit a
    # constant (bias / BN beta) that compact must fold or keep.
    for layer in prunable[:-1]:
        kernel = next((v for v in layer.weights if v.name == "kernel"), None)
        if kernel is None or rng.random() < 0.5:
            continue
        value = keras.ops.convert_to_numpy(kernel)
        rule = registry.channel_rule(layer)
        axis = (rule.out_axis if rule is not None else -1) % value.ndim
        if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
            axis = value.ndim - 2
        chosen = rng.random(value.shape[axis]) < 0.3
        slicer = [slice(None)] * value.ndim
        slicer[axis] = np.flatnonzero(chosen)
        value[tuple(slicer)] = 0.0
        kernel.assign(value)
    return masks


@dataclasses.dataclass
class FuzzResult:
    """The outcome of one fuzzed graph."""

    seed: int
    matched: bool
    error: float
    params_before: int
    params_after: int
    align: int
    column_sparse: str
    exception: str | None = None

    def __str__(self):
        status = "ok" if self.matched else "MISMATCH"
        text = (
            f"seed {self.seed}: {status} rel. error {self.error:.2e}, params "
            f"{self.params_before} -> {self.params_after} (align={self.align}, "
            f"column_sparse={self.column_sparse})"
        )
        if self.exception:
            text += f" exception: {self.exception}"
        return text


def check_seed(seed, tolerance=1e-4, batch=3) -> FuzzResult:
    """Build, prune and compact one random model; compare the outputs."""
    rng = np.random.default_rng(seed + 1_000_003)
    model = random_model(seed)
    randomize_weights(model, seed)
    random_pruning(model, seed)
    align = int(rng.choice([1, 1, 4, 8]))
    column_sparse = str(rng.choice(["auto", "never", "always"]))
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    x = rng.normal(size=shape).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    try:
        small = compact(model, align=align, column_sparse=column_sparse)
        actual = keras.ops.convert_to_numpy(small(x))
        error = max_relative_error(expected, actual)  # raises on another shape
    except Exception as e:  # noqa: BLE001 - the fuzzer reports every failure
        return FuzzResult(
            seed,
            False,
            float("inf"),
            model.count_params(),
            -1,
            align,
            column_sparse,
            f"{type(e).__name__}: {e}",
        )
    return FuzzResult(
        seed,
        bool(error <= tolerance),
        error,
        model.count_params(),
        small.count_params(),
        align,
        column_sparse,
    )


def run(num_graphs, seed=0, tolerance=1e-4, on_result=None) -> list:
    """Fuzz `num_graphs` random models with seeds seed, seed + 1, ...

    Args:
        num_graphs: how many graphs (>= 1).
        seed: the first seed.
        tolerance: the largest relative output error that counts as a match.
        on_result: optional callback, called with each FuzzResult.

    Returns:
        The list of FuzzResults.

    Raises:
        ValueError: num_graphs < 1.
    """
    if num_graphs < 1:
        raise ValueError(f"fuzz.run needs num_graphs >= 1, got {num_graphs}.")
    results = []
    for s in range(seed, seed + num_graphs):
        keras.backend.clear_session()
        result = check_seed(s, tolerance=tolerance)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
