"""The from-scratch control of a pruning run: the pruned model's shape, fresh weights.

Pruning is worth its dense training only if retraining the pruned model from
its inherited weights beats training the same small model from random weights
for the same epochs (Liu et al. 2019, "Rethinking the value of network
pruning"). `reinitialize` gives a pruned model fresh random weights from its
layers' own initializers and zeroes its pruned weights again, so that the same
masked retraining then trains it from scratch.

    >>> masks = keras_admm.pruning.projection_masks(model, plan)  # doctest: +SKIP
    >>> reinitialize(model, masks, seed=0)  # doctest: +SKIP
"""

import keras

from keras_admm.pruning import apply_masks


def reinitialize(model, masks, seed):
    """Fresh random weights for every layer of `model` that trains; masks kept.

    Each layer with trainable weights gets the values its initializers draw
    (from a clone of the model, seeded by `seed`); a BatchNorm's moving mean
    and variance restart at 0 and 1 with it. Layers with no trainable weights
    (frozen or weightless) keep theirs; a nested model counts as one layer.
    An initializer given a fixed seed draws the same values whatever `seed`
    is. Then `masks` ({weight_path: 0/1 array}, e.g. from
    `keras_admm.pruning.projection_masks` taken before this call) zero the
    pruned weights again, so the pruned model keeps its shape.

    Args:
        model: a built Keras model, changed in place.
        masks: {weight_path: 0/1 array}; {} when nothing is masked.
        seed: integer seed of the fresh weights.

    Raises:
        ValueError: a mask names no variable of `model`, or has another shape
            (from `apply_masks`, checked before any weight is written).
    """
    keras.utils.set_random_seed(seed)
    fresh = keras.models.clone_model(model)  # same layer names, so same paths
    if masks:
        apply_masks(fresh, masks)  # checked and applied before `model` changes
    for layer in model.layers:
        if layer.trainable_weights:
            layer.set_weights(fresh.get_layer(layer.name).get_weights())
