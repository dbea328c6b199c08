"""Residual branches that add exact zeros, and their removal (compact's first step).

A branch of an `Add` whose output is zero for every input adds nothing: its last
BatchNormalization has gamma = beta = 0, or a conv / Dense in it has an all-zero
kernel and no bias (or a zero one) and everything after maps zeros to zeros.
`remove_zero_branches` rebuilds the model with each such `Add` replaced by its
one remaining input, so the branch's layers leave the model: their MACs and
their fixed per-layer cost, which channel pruning cannot remove (docs/CIFAR10.md
measured it at about 41% of ResNet-20's time on a 2-core CPU).

`compact()` calls it first; `keras_admm.pruning.blocks` zeroes branches.

Example:

>>> import numpy as np
>>> from keras_admm import models
>>> from keras_admm.compaction.zero_branches import remove_zero_branches
>>> model = models.resnet_cifar(8)
>>> bn = model.get_layer("s1b0_bn2")
>>> for variable in (bn.gamma, bn.beta):
...     _ = variable.assign(np.zeros(16))
>>> smaller, removed = remove_zero_branches(model)
>>> removed
['s1b0_conv1', 's1b0_bn1', 's1b0_relu1', 's1b0_conv2', 's1b0_bn2', 's1b0_add']
"""

from __future__ import annotations

import keras
import numpy as np

from keras_admm import registry
from keras_admm.compaction.rebuild import clone_layer, rebuild_model
from keras_admm.graph import check_graph_model, ordered_nodes

__all__ = ["remove_zero_branches", "zero_tensors"]

_WHAT = "compact()"


def _array(variable):
    return keras.ops.convert_to_numpy(variable)


def _always_zero(layer) -> bool:
    """The layer outputs zeros whatever its input (at inference)."""
    if type(layer) is keras.layers.BatchNormalization:
        gamma = _array(layer.gamma) if layer.scale else None
        beta = _array(layer.beta) if layer.center else None
        return (
            gamma is not None and not gamma.any() and (beta is None or not beta.any())
        )
    kernel = getattr(layer, "kernel", None)
    if kernel is None or type(layer) not in _KERNEL_LAYERS:
        return False
    if _array(kernel).any():
        return False
    bias = getattr(layer, "bias", None) if getattr(layer, "use_bias", False) else None
    if bias is not None and _array(bias).any():
        return False
    return registry.activation_name(layer) in ("linear", "relu")


_KERNEL_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)


def _zero_in_zero_out(node) -> bool:
    """The node's layer, given zeros, returns exact zeros (checked by running it)."""
    layer = node.operation
    if isinstance(layer, keras.Model):
        return False
    if any(None in tuple(t.shape[1:]) for t in node.input_tensors):
        return False  # unknown sizes (e.g. Input((None, None, 3))): not probed
    arrays = {
        id(t): np.zeros((1,) + tuple(t.shape[1:]), t.dtype) for t in node.input_tensors
    }
    try:
        args, kwargs = node.arguments.fill_in(arrays)
        if isinstance(layer, keras.Layer):
            kwargs = dict(kwargs, training=False)
        outputs = keras.tree.flatten(layer(*args, **kwargs))
    except Exception:  # noqa: BLE001 - a layer we cannot probe is not zero
        return False
    return all(not keras.ops.convert_to_numpy(o).any() for o in outputs)


def zero_tensors(model) -> set:
    """ids of the graph's tensors that are exactly zero for every input.

    Raises:
        TypeError / ValueError: as `compact()`, for models without a graph.
    """
    functional = check_graph_model(model, "zero_tensors (compact()'s first step)")
    zeros = set()
    for node in ordered_nodes(functional):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = node.input_tensors
        if isinstance(layer, keras.layers.Add):
            zero = all(id(t) in zeros for t in inputs)
        elif _always_zero(layer):
            zero = True
        else:
            zero = bool(inputs) and all(id(t) in zeros for t in inputs)
            zero = zero and _zero_in_zero_out(node)
        if zero:
            zeros.update(id(t) for t in node.output_tensors)
    return zeros


def remove_zero_branches(model):
    """`model` without the Add inputs that are exact zeros, and the layers removed.

    Each `Add` with exactly one input that is not identically zero becomes that
    input; layers that then feed nothing are left out. Exact: x + 0 = x. Left
    as they are (to `compact()`'s per-channel constants): Adds with two or more
    non-zero inputs or none, an Add layer called more than once, an Add that
    broadcasts its non-zero input to a larger shape, and zeros that reach
    other layers. The input model is unchanged.

    Returns:
        (new model, names of the layers left out); `model` itself and [] when
        no Add has a zero branch.

    Raises:
        TypeError / ValueError: as `compact()`, for models without a graph, or
            a layer that cannot be re-created from its config.
    """
    functional = check_graph_model(model, "remove_zero_branches")
    zeros = zero_tensors(functional)
    if not zeros:
        return model, []
    nodes = ordered_nodes(functional)
    calls = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    route = {}
    for node in nodes:
        if not isinstance(node.operation, keras.layers.Add):
            continue
        if calls[id(node.operation)] > 1:  # a shared Add: left to compact()
            continue
        inputs = node.input_tensors
        live = [i for i, t in enumerate(inputs) if id(t) not in zeros]
        if len(live) != 1 or len(inputs) < 2:
            continue
        # x + 0 is x only where the Add did not broadcast x to a larger shape
        if tuple(inputs[live[0]].shape) == tuple(node.output_tensors[0].shape):
            route[id(node.operation)] = live[0]
    if not route:
        return model, []

    def make_layer(node):
        layer = node.operation
        values = layer.get_weights() if isinstance(layer, keras.Layer) else None
        return clone_layer(layer, None, _WHAT), values or None

    rebuilt = rebuild_model(
        functional, nodes, make_layer, model.name, _WHAT, passthrough=route
    )
    kept = {layer.name for layer in rebuilt.layers}
    removed = [
        layer.name
        for layer in functional.layers
        if layer.name not in kept and not isinstance(layer, keras.layers.InputLayer)
    ]
    return rebuilt, removed
