"""Re-creating a layer for a rewritten model (compact, fold_batchnorm)."""

from __future__ import annotations

import copy

__all__ = ["clone_layer"]


def clone_layer(layer, config=None, what="compact()"):
    """A new layer like `layer`, from `config` (default: its own), no weights set.

    A stateless layer that `from_config` cannot re-create (e.g. a Lambda) is
    copied shallowly with its own node lists: it computes the same and leaves
    the original alone.

    Raises:
        ValueError: a layer with weights that cannot be re-created from its
            config; the message names the layer and the fix (`what` names the
            caller).
    """
    config = layer.get_config() if config is None else config
    try:
        return type(layer).from_config(config)
    except Exception as e:  # noqa: BLE001 - any failure gets the same fix
        if not getattr(layer, "weights", None):
            try:
                clone = copy.copy(layer)
            except Exception:  # noqa: BLE001 - a layer pickled by its config
                clone = object.__new__(type(layer))
                clone.__dict__.update(layer.__dict__)
            clone._inbound_nodes = []
            clone._outbound_nodes = []
            return clone
        raise ValueError(
            f"{what} cannot re-create layer '{layer.name}' "
            f"({type(layer).__name__}) from its config ({e}). Give the layer a "
            "get_config() that from_config() accepts, and register it with "
            "@keras.saving.register_keras_serializable."
        ) from e
