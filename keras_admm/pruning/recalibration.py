"""BatchNorm recalibration: recompute moving statistics after pruning.

A hard prune (or any change of the weights without training) leaves every
BatchNormalization with the moving mean and variance of the old weights, so the
pruned model is scored with stale statistics: on ResNet-20 at 3x fewer MACs this
alone cost 8-16 validation points (docs/CIFAR10.md). `recalibrate_batchnorm`
recomputes them from a few batches of training data, changing nothing else
(the idea of AdaBN, Li et al. 2016, and of EagleEye's adaptive BN, Li et al. 2020;
`torch.optim.swa_utils.update_bn` does the same for PyTorch).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import keras
import numpy as np

from keras_admm.exceptions import KerasAdmmWarning


@dataclasses.dataclass(frozen=True)
class Recalibration:
    """What `recalibrate_batchnorm` did: the layers, and the data it used."""

    layers: tuple[str, ...]
    batches: int
    samples: int


def recalibrate_batchnorm(model, data, batch_size=128, steps=None):
    """Recomputes every BatchNormalization's moving mean and variance from `data`.

    The model runs in training mode over the batches (as in training: Dropout is
    active, every BatchNorm normalizes with its batch's statistics), and each
    BatchNorm's moving mean and variance become the exact mean and (biased)
    variance of its inputs over all the samples, batch sizes weighted. No other
    variable changes; the layers' `momentum` and `trainable` are restored.

        masks = keras_admm.hard_prune(model, plan)    # after ADMM
        keras_admm.recalibrate_batchnorm(model, x_train[:2000])
        model.evaluate(x_val, y_val)                  # no stale statistics

    Args:
      model: a built Keras model; BatchNorms inside nested models and custom
        layers count too.
      data: a NumPy array (or a list / dict of arrays for several inputs), split
        into batches of `batch_size` (a last batch of one sample joins the one
        before); or a `tf.data.Dataset` or any iterable of
        batches, each `x` or `(x, y[, sample_weight])` as `model.fit` takes them
        (labels are not used).
      batch_size: batch size for array data (at least 2).
      steps: use at most this many batches (default: all of `data`).

    Returns:
      A `Recalibration` with the layer names, batches and samples used.

    Raises:
      ValueError: `data` holds no samples, `batch_size` or `steps` is not
        positive, a BatchNorm runs more than once (or not at all) in one call
        of the model (one set of moving statistics cannot serve two inputs),
        or a BatchNorm uses renorm=True.
      TypeError: `data` is a tuple (pass the inputs alone, or a dataset).

    Dropout layers and seed generators advance their random state. A BatchNorm
    whose input carries a Keras mask is weighted by batch size, not by the
    unmasked count. On any error every BatchNorm is put back as it was.
    """
    if data is None:
        raise TypeError(
            "recalibrate_batchnorm: data is None; pass training images, e.g. "
            "recalibrate_batchnorm(model, x_train[:2000])."
        )
    if batch_size < 2:
        raise ValueError(
            f"recalibrate_batchnorm: batch_size={batch_size}; use at least 2 "
            "(one sample has no variance)."
        )
    if steps is not None and steps < 1:
        raise ValueError(
            f"recalibrate_batchnorm: steps={steps}; use 1 or more, or None."
        )
    layers = _batchnorms(model)
    if not layers:
        warnings.warn(
            f"recalibrate_batchnorm: '{model.name}' has no BatchNormalization; "
            "nothing to recalibrate.",
            KerasAdmmWarning,
            stacklevel=2,
        )
        return Recalibration(layers=(), batches=0, samples=0)
    for layer in layers:
        if getattr(layer, "renorm", False):
            raise ValueError(
                f"recalibrate_batchnorm: BatchNormalization '{layer.name}' uses "
                "renorm=True, whose statistics it does not recompute; recalibrate "
                "a model without batch renormalization."
            )
    saved = [
        (layer.momentum, layer.trainable, _stats(layer)) for layer in layers
    ]  # put back whatever happens, so an error leaves the model as it was
    calls = [0] * len(layers)
    sums = [None] * len(layers)
    batches = samples = 0
    try:
        for i, layer in enumerate(layers):
            layer.momentum = 0.0  # a training-mode call stores the batch statistics
            layer.trainable = True  # a frozen BatchNorm runs in inference mode
            layer.call = _counted(layer.call, calls, i)
        for x in itertools.islice(_batches(data, batch_size), steps):
            n = _batch_size_of(x)
            calls[:] = [0] * len(layers)
            model(x, training=True)
            for i, layer in enumerate(layers):
                if calls[i] != 1:
                    raise ValueError(
                        f"recalibrate_batchnorm: BatchNormalization '{layer.name}' "
                        f"ran {calls[i]} times in one call of '{model.name}'; one "
                        "set of moving statistics cannot be recomputed for "
                        f"{'no input' if not calls[i] else 'several inputs'}. "
                        "Give each call its own BatchNormalization layer."
                    )
                mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
                var = keras.ops.convert_to_numpy(layer.moving_variance).astype(
                    np.float64
                )
                # E[x] and E[x^2] of this batch, weighted by its size.
                moments = np.stack([mean, var + mean**2]) * n
                sums[i] = moments if sums[i] is None else sums[i] + moments
            batches += 1
            samples += n
        if samples == 0:
            raise ValueError(
                "recalibrate_batchnorm: `data` gave no samples; pass a few batches "
                "of training images (about 2,000 are enough for ResNet-20)."
            )
    except BaseException:
        _restore(layers, saved, new_stats=None)
        raise
    new_stats = []
    for total in sums:
        mean, square = total / samples
        new_stats.append((mean, np.maximum(square - mean**2, 0.0)))
    _restore(layers, saved, new_stats)
    return Recalibration(
        layers=tuple(layer.name for layer in layers), batches=batches, samples=samples
    )


def _stats(layer):
    return (
        keras.ops.convert_to_numpy(layer.moving_mean),
        keras.ops.convert_to_numpy(layer.moving_variance),
    )


def _counted(call, calls, index):
    """`call`, counting its runs in calls[index] (an instance attribute that
    shadows the class's `call` until `_restore` deletes it)."""

    def counted(*args, **kwargs):
        calls[index] += 1
        return call(*args, **kwargs)

    return counted


def _restore(layers, saved, new_stats):
    """Puts back call, momentum and trainable, and the old statistics or
    `new_stats`."""
    for i, (layer, (momentum, trainable, old)) in enumerate(zip(layers, saved)):
        layer.__dict__.pop("call", None)
        layer.momentum = momentum
        layer.trainable = trainable
        mean, variance = old if new_stats is None else new_stats[i]
        layer.moving_mean.assign(np.asarray(mean).astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(
            np.asarray(variance).astype(layer.moving_variance.dtype)
        )


def _batchnorms(model):
    """Every BatchNormalization in `model`, inside nested models and layers too,
    in the order of the model's layers."""
    found, seen = [], set()

    def walk(layer):
        if isinstance(layer, keras.Model):
            children = layer.layers
        else:
            children = layer._flatten_layers(include_self=False, recursive=False)
        for child in children:
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, keras.layers.BatchNormalization):
                found.append(child)
            else:
                walk(child)

    walk(model)
    return found


def _batches(data, batch_size):
    """Yields the model inputs of each batch."""
    if isinstance(data, tuple):
        raise TypeError(
            "recalibrate_batchnorm: `data` is a tuple; pass the inputs alone (an "
            "array, or a list / dict of arrays for several inputs), or a dataset "
            "of (x, y) batches. Labels are not used."
        )
    if isinstance(data, (np.ndarray, list, dict)) or keras.ops.is_tensor(data):
        total = _batch_size_of(data)
        starts = list(range(0, total, batch_size))
        if len(starts) > 1 and total - starts[-1] == 1:
            starts.pop()  # no batch of one sample: the last batch takes it
        for start, end in zip(starts, starts[1:] + [total]):
            yield keras.tree.map_structure(lambda a, s=start, e=end: a[s:e], data)
        return
    for batch in data:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        yield x


def _batch_size_of(x):
    first = keras.tree.flatten(x)[0]
    return int(keras.ops.shape(first)[0])
