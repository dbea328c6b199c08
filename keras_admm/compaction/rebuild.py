"""Rebuilding a functional model layer by layer (compact, fold_batchnorm).

`rebuild_model` walks the graph's nodes, calls a new layer (from `make_layer`)
wherever the old one was called, and sets its weights after the first call;
`clone_layer` re-creates one layer from its config.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

__all__ = ["assign_weights", "clone_layer", "rebuild_model"]


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


def assign_weights(layer, values, what="compact()"):
    """Sets `layer`'s weights: a list in order, or {variable name: value}.

    Raises:
        RuntimeError: a variable without a value or with another shape (a bug
            of the rewrite `what`; the message asks for a report).
    """
    if isinstance(values, list):
        if values:
            layer.set_weights(values)
        return
    for variable in layer.weights:
        value = values.get(variable.name)
        if value is None or tuple(value.shape) != tuple(variable.shape):
            raise RuntimeError(
                f"{what} could not set '{variable.path}' of layer "
                f"'{layer.name}': computed "
                f"{None if value is None else tuple(value.shape)}, variable "
                f"{tuple(variable.shape)}. Please report this with the model."
            )
        variable.assign(np.asarray(value).astype(variable.dtype))


def rebuild_model(functional, nodes, make_layer, name, what, passthrough=()):
    """A new keras.Model: `functional`'s graph with every layer made anew.

    Args:
        functional: the Functional model to rebuild.
        nodes: its nodes in topological order (input layers are skipped).
        make_layer: node -> (new layer, weights for `assign_weights` or None),
            called at the first node of each layer (a shared layer stays shared).
        name: the new model's name.
        what: the caller, for error messages.
        passthrough: ids of layers left out: their output is their input (the
            first one; a dict {layer id: input index} picks another).
    """
    tensor_map, new_inputs = {}, []
    for x in functional.inputs:
        new = keras.Input(
            batch_shape=tuple(x.shape),
            dtype=x.dtype,
            name=x._keras_history.operation.name,
        )
        tensor_map[id(x)] = new
        new_inputs.append(new)
    made = {}
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if id(layer) in passthrough:
            index = passthrough[id(layer)] if isinstance(passthrough, dict) else 0
            tensor_map[id(node.output_tensors[0])] = tensor_map[
                id(node.input_tensors[index])
            ]
            continue
        if id(layer) not in made:
            made[id(layer)] = list(make_layer(node))
        new_layer, values = made[id(layer)]
        args, kwargs = node.arguments.fill_in(tensor_map)
        outputs = new_layer(*args, **kwargs)
        for old, new in zip(node.output_tensors, keras.tree.flatten(outputs)):
            tensor_map[id(old)] = new
        if values is not None:
            assign_weights(new_layer, values, what)
            made[id(layer)][1] = None
    outputs = [tensor_map[id(x)] for x in functional.outputs]
    inputs = keras.tree.pack_sequence_as(functional._inputs_struct, new_inputs)
    outputs = keras.tree.pack_sequence_as(functional._outputs_struct, outputs)
    return keras.Model(inputs, outputs, name=name)
