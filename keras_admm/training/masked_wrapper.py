"""MaskedWrapper: masked retraining, pruned weights stay exactly zero.

Example:

    masks = keras_admm.hard_prune(model, plan)
    model.compile(
        optimizer=keras_admm.MaskedWrapper(keras.optimizers.Adam(1e-4), masks),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=2)   # pruned weights stay exactly zero
"""

from __future__ import annotations

import base64

import keras
import numpy as np
from keras import ops
from keras.src.utils import tracking

from keras_admm.pruning.masks import check_mask_values
from keras_admm.training.wrapper import OptimizerWrapper, match_variables

__all__ = ["MaskedWrapper"]


@keras.saving.register_keras_serializable(package="keras_admm")
class MaskedWrapper(OptimizerWrapper):
    """Masked retraining: pruned weights stay exactly zero through every step.

    Gradients of masked weights are zeroed before the inner step, and the
    weights are multiplied by their mask after it, so neither momentum, Adam
    moments nor weight decay can move a pruned weight.

    Args:
        inner_optimizer: the optimizer that takes the steps.
        masks: {weight_path: 0/1 array}, as returned by `keras_admm.hard_prune`.
        name: optional name.

    Example:

        masks = keras_admm.hard_prune(model, plan)
        model.compile(optimizer=keras_admm.MaskedWrapper(
            keras.optimizers.SGD(1e-2, momentum=0.9), masks), loss=...)
    """

    def __init__(
        self,
        inner_optimizer,
        masks=None,
        name=None,
        mask_shapes=None,
        packed_masks=None,
        **kwargs,
    ):
        if packed_masks is not None:  # from get_config: the masks themselves
            masks = {path: _unpack(item) for path, item in packed_masks.items()}
        if masks is None and mask_shapes is None:
            raise ValueError(
                "MaskedWrapper needs masks: pass the dict returned by "
                "keras_admm.hard_prune(model, plan)."
            )
        if masks is not None:
            if not isinstance(masks, dict):
                raise TypeError(
                    "MaskedWrapper `masks` must be a non-empty dict {weight_path: "
                    f"0/1 array}}, got {type(masks).__name__}."
                )
            if not masks:
                raise ValueError(
                    "MaskedWrapper `masks` is empty: nothing would stay pruned. "
                    "Pass the dict hard_prune(model, plan) returns, or use the "
                    "inner optimizer alone."
                )
            checked = {}
            for path, mask in masks.items():
                array = np.asarray(ops.convert_to_numpy(mask), dtype="float32")
                check_mask_values(path, array, "MaskedWrapper")
                checked[path] = array
            masks = checked
            mask_shapes = {p: list(m.shape) for p, m in masks.items()}
        else:
            mask_shapes = {p: list(s) for p, s in mask_shapes.items()}
        super().__init__(inner_optimizer, name=name, **kwargs)
        # Without `masks` (from_config), the values come back with the saved
        # optimizer variables when a .keras file is loaded.
        self.masks = masks
        self.mask_shapes = mask_shapes

    @tracking.no_automatic_dependency_tracking
    def _build_own(self, var_list):
        matched = match_variables(list(self.mask_shapes), var_list, "MaskedWrapper")
        self._masked = []
        self._mask_by_key = {}
        self._mask_by_path = {}
        for path, shape in self.mask_shapes.items():
            weight = matched[path]
            if tuple(weight.shape) != tuple(shape):
                raise ValueError(
                    f"MaskedWrapper mask for '{path}' has shape {tuple(shape)}, but "
                    f"the variable '{weight.path}' has shape {tuple(weight.shape)}. "
                    "Compute the masks on the model you compile."
                )
            value = None if self.masks is None else self.masks[path]

            def init(shape, dtype=None, value=value):
                return (
                    ops.ones(shape, dtype) if value is None else ops.cast(value, dtype)
                )

            mask = self._state_variable(weight, "mask", init)
            self._masked.append((weight, mask))
            self._mask_by_key[self._var_key(weight)] = mask
            self._mask_by_path[path] = mask

    def _transform_grads(self, grads, variables):
        out = []
        for grad, variable in zip(grads, variables):
            mask = self._mask_by_key.get(self._var_key(variable))
            out.append(
                grad
                if grad is None or mask is None
                else ops.multiply(grad, ops.cast(mask, grad.dtype))
            )
        return out

    def _after_step(self):
        for weight, mask in self._masked:
            weight.assign(weight * ops.cast(mask, weight.dtype))

    def get_config(self):
        # The masks travel in the config, so a model saved before its first
        # step (when the mask variables do not exist yet) keeps them.
        masks = self.masks
        if masks is None and self.built:
            masks = {p: ops.convert_to_numpy(m) for p, m in self._mask_by_path.items()}
        config = {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "mask_shapes": self.mask_shapes,
        }
        if masks is not None:
            config["packed_masks"] = {p: _pack(m) for p, m in masks.items()}
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


def _pack(mask) -> dict:
    """A 0/1 mask as {"shape", "bits"}: one bit a weight, base64 text."""
    array = np.asarray(mask).astype(bool)
    bits = np.packbits(array.ravel())
    return {
        "shape": list(array.shape),
        "bits": base64.b64encode(bits.tobytes()).decode(),
    }


def _unpack(item) -> np.ndarray:
    shape = tuple(item["shape"])
    bits = np.frombuffer(base64.b64decode(item["bits"]), dtype=np.uint8)
    count = int(np.prod(shape))
    return np.unpackbits(bits)[:count].reshape(shape).astype("float32")
