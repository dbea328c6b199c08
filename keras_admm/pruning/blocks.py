"""Residual branches as units of pruning: depth pruning.

Channel pruning leaves every layer in place, and each layer has a cost that
does not shrink with its MACs (on ResNet-20 on a 2-core CPU about 41% of the
time, docs/CIFAR10.md). Removing whole residual branches removes that cost too.

`residual_branches(model)` finds, for every two-input `Add`, the branch: the
layers that feed only that input (not the other one, nothing else), ending in
a BatchNormalization. `zero_branches(model, names)` sets those BatchNorms'
gamma and beta to 0, so the branch adds exact zeros and `compact()` removes its
layers (`compaction.zero_branches`); it returns the masks that keep them zero
in masked training. `targeting.branch_sensitivity` ranks branches by the loss
their removal costs.

Example:

>>> from keras_admm import models
>>> from keras_admm.pruning.blocks import residual_branches, zero_branches
>>> model = models.resnet_cifar(8)
>>> [b.add for b in residual_branches(model)]
['s1b0_add', 's2b0_add', 's3b0_add']
>>> masks = zero_branches(model, ["s1b0_add"])
>>> sorted(masks)
['s1b0_bn2/beta', 's1b0_bn2/gamma']
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_admm import registry
from keras_admm.graph import check_graph_model, ordered_nodes

__all__ = ["ResidualBranch", "residual_branches", "zero_branch", "zero_branches"]


@dataclasses.dataclass(frozen=True)
class ResidualBranch:
    """One removable residual branch.

    Attributes:
        add: the name of the Add layer it feeds (names the branch).
        layers: its layers' names, in graph order (the last is `batchnorm`).
        batchnorm: the BatchNormalization whose gamma = beta = 0 zeroes it.
        macs: its multiply-accumulates per sample (what removing it saves).
    """

    add: str
    layers: tuple
    batchnorm: str
    macs: int


def _flops(layer) -> int:
    """FLOPs (2 x MACs) of a layer's one call, per sample (0 when uncounted)."""
    try:
        return int(registry.node_flops(layer, layer._inbound_nodes[0]) or 0)
    except (AttributeError, KeyError, IndexError, TypeError):
        return 0


def _producer(tensor):
    return tensor._keras_history.operation


def _ancestors(tensor, cache):
    """ids of the operations `tensor` depends on (its producer included)."""
    key = id(tensor)
    if key in cache:
        return cache[key]
    layer = _producer(tensor)
    node = layer._inbound_nodes[tensor._keras_history.node_index]
    found = {id(layer)}
    for t in node.input_tensors:
        found |= _ancestors(t, cache)
    cache[key] = found
    return found


def residual_branches(model) -> list:
    """The model's removable residual branches, in graph order.

    For an Add of two tensors, the branch is the input with the most
    exclusive layers (those the other input does not depend on); it counts
    when those layers feed nothing but the branch and the Add (no model
    output among them), are called once, include no model input, and end in
    a BatchNormalization with a scale and a center. An Add layer called more
    than once has no branch. A projection block's long branch counts (its
    1x1 shortcut stays).

    Raises:
        TypeError / ValueError: a subclassed model, or a Sequential without
            an Input (the graph is needed).
    """
    functional = check_graph_model(model, "residual_branches()")
    by_id = {id(layer): layer for layer in functional.layers}
    nodes = ordered_nodes(functional)
    order = {id(n.operation): i for i, n in enumerate(nodes)}
    consumers = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers.setdefault(id(_producer(t)), set()).add(id(node.operation))
    for t in functional.outputs:  # a model output is used outside any branch
        consumers.setdefault(id(_producer(t)), set()).add(None)
    cache, branches = {}, []
    for node in nodes:
        add = node.operation
        if not isinstance(add, keras.layers.Add) or len(node.input_tensors) != 2:
            continue
        if len(add._inbound_nodes) != 1:  # one Add layer called twice: no one name
            continue
        a, b = node.input_tensors
        sets = [_ancestors(a, cache) - _ancestors(b, cache)]
        sets.append(_ancestors(b, cache) - _ancestors(a, cache))
        index = int(len(sets[1]) > len(sets[0]))
        exclusive = sets[index]
        if not exclusive or len(sets[0]) == len(sets[1]):
            continue
        last = _producer(node.input_tensors[index])
        members = [by_id.get(i) for i in exclusive]
        if any(layer is None or len(layer._inbound_nodes) != 1 for layer in members):
            continue
        if any(isinstance(layer, keras.layers.InputLayer) for layer in members):
            continue  # a model input feeding only the branch stays a model input
        allowed = exclusive | {id(add)}
        if any(not consumers.get(i, set()) <= allowed for i in exclusive):
            continue
        if not (
            type(last) is keras.layers.BatchNormalization and last.scale and last.center
        ):
            continue
        layers = sorted(members, key=lambda layer: order.get(id(layer), 0))
        macs = sum(_flops(layer) for layer in layers) // 2
        branches.append(
            ResidualBranch(
                add=add.name,
                layers=tuple(layer.name for layer in layers),
                batchnorm=last.name,
                macs=int(macs),
            )
        )
    return branches


def zero_branches(model, adds) -> dict:
    """Zero the residual branches feeding the named Adds; their masks.

    Sets each branch's last BatchNorm gamma and beta to 0 (in place), so the
    branch adds exact zeros; `compact(model)` then leaves its layers out.

    Args:
        model: the model (changed in place).
        adds: names of Add layers, as `ResidualBranch.add` (or the
            ResidualBranch objects themselves).

    Returns:
        {weight path: 0 mask} for the zeroed gammas and betas: pass them to
        `MaskedWrapper` (merged with any other masks) to keep them zero.

    Raises:
        ValueError: a name that is not the Add of a removable branch; the
            message lists the ones there are.
    """
    if isinstance(adds, str):
        raise TypeError(
            f"zero_branches(): `adds` must be a list of Add layer names, got the "
            f"string {adds!r}; pass [{adds!r}]."
        )
    if adds is None or not hasattr(adds, "__iter__"):
        raise TypeError(
            f"zero_branches(): `adds` must be a list of Add layer names, got "
            f"{adds!r}; e.g. [b.add for b in residual_branches(model)[:2]]."
        )
    adds = [a.add if isinstance(a, ResidualBranch) else a for a in adds]
    branches = {b.add: b for b in residual_branches(model)}
    unknown = [name for name in adds if name not in branches]
    if unknown:
        raise ValueError(
            f"zero_branches(): {unknown} are not Adds with a removable residual "
            f"branch in '{model.name}'. Removable: {sorted(branches)} (see "
            "residual_branches())."
        )
    masks = {}
    for name in adds:
        masks.update(zero_branch(model, branches[name]))
    return masks


def zero_branch(model, branch) -> dict:
    """Zero one `ResidualBranch` of `model` (its BatchNorm's gamma and beta).

    `zero_branches` by Add name, without finding the branches again; returns
    the same {weight path: 0 mask}.
    """
    bn = model.get_layer(branch.batchnorm)
    masks = {}
    for variable in (bn.gamma, bn.beta):
        variable.assign(np.zeros(variable.shape, variable.dtype))
        masks[variable.path] = np.zeros(variable.shape, "float32")
    return masks
