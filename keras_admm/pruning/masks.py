"""Hard pruning and 0/1 masks: per layer, or per channel group of the graph.

After the ADMM phase the planned kernels are projected once more onto their
sparsity sets (`hard_prune`); the returned 0/1 masks drive masked retraining.
With a dependency graph (`graph=True`), Filter / Channel targets cut whole
channel groups (`group_masks`), the same index in every coupled layer, so
`compact` can remove them.

Example:

>>> import keras
>>> from keras_admm import PruningPlan
>>> from keras_admm.pruning import masks
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(8, 3, name="conv1"),
...     keras.layers.Conv2D(16, 3, name="conv2"),
...     keras.layers.Flatten(), keras.layers.Dense(10, name="fc")], name="net")
>>> kept = masks.hard_prune(model, PruningPlan({"conv2": "filter:0.5"}))
>>> int(kept["net/conv2/kernel"].sum(axis=(0, 1, 2)).astype(bool).sum())
8
"""

from __future__ import annotations

import collections.abc
import warnings

import keras
import numpy as np

from keras_admm import registry
from keras_admm import sparsity as sparsity_lib
from keras_admm.exceptions import KerasAdmmWarning
from keras_admm.graph import graph_for
from keras_admm.plan import find_variable, planned_kernels, prunable_layers
from keras_admm.pruning import selection

__all__ = [
    "hard_prune",
    "projection_masks",
    "group_masks",
    "masks_from_model",
    "apply_masks",
    "check_mask_values",
]


# ------------------------------------------------------------------- masks
def hard_prune(model, plan, graph=None) -> dict[str, np.ndarray]:
    """Project every planned kernel onto its sparsity set, in place.

    W <- Proj_S(W) for each planned layer: the step between the ADMM phase and
    masked retraining. The plan is checked and every projection is computed
    before any weight is written, so a bad plan changes nothing.

    Args:
        model: a built Keras model.
        plan: a PruningPlan (resolved against `model` here if it is not yet) or
            a dict of rules such as {"conv2": "filter:0.5"}.
        graph: None for per-layer projections; True or a
            `keras_admm.graph.DependencyGraph` of `model` for group-aware
            Filter / Channel pruning (`group_masks`): coupled
            channels (residual Adds, Concatenate, depthwise, Flatten) are cut
            at the same index in every member, so `compact` can remove them.

    Returns:
        {weight_path: mask}: a 0/1 float32 NumPy array per planned kernel, the
        mask of its projection (1 = kept). Feed it to `MaskedWrapper`. With a
        graph, also the masks of the other kernels a group cut touches.

    Raises:
        TypeError: `plan` is not a PruningPlan or a dict.
        ValueError: the plan does not fit the model (a missing layer, a layer
            without a kernel, a sparsity that means nothing for a kernel).

    Example:

        masks = hard_prune(model, PruningPlan.uniform(model, "filter:0.5"))
        model.compile(optimizer=MaskedWrapper(keras.optimizers.Adam(), masks), ...)
    """
    masks = projection_masks(model, plan, graph=graph)
    apply_masks(model, masks)
    return masks


def projection_masks(model, plan, graph=None) -> dict[str, np.ndarray]:
    """The masks `hard_prune(model, plan, graph)` applies, without applying them.

    Args and Returns: as `hard_prune`; the model is not changed.

    Example:

        masks = projection_masks(model, {"conv2": "filter:0.5"})
        apply_masks(model, masks)   # what hard_prune does
    """
    graph = graph_for(model, graph, "hard_prune")
    if graph is not None:
        return group_masks(model, plan, graph=graph)
    masks = {}
    pairs = planned_kernels(model, plan)
    _warn_output_filter_cuts(model, pairs)
    for target, variable in pairs:
        value = keras.ops.convert_to_numpy(variable)
        masks[variable.path] = keras.ops.convert_to_numpy(
            target.sparsity.mask(value, target.layout)
        ).astype("float32")
    return masks


def _output_layer_names(model) -> set:
    """Names of the layers whose filters make the model's outputs, seen back
    through layers that keep each channel apart (BN, activations, Dropout,
    pooling, Reshape, Flatten: channelwise in the registry) and Softmax; none
    known for a subclassed model."""
    outputs = getattr(model, "outputs", None) or []
    names = set()
    for tensor in keras.tree.flatten(outputs):
        while getattr(tensor, "_keras_history", None) is not None:
            layer, node_index, _ = tensor._keras_history
            names.add(layer.name)
            inputs = keras.tree.flatten(layer._inbound_nodes[node_index].input_tensors)
            if len(inputs) != 1 or not _keeps_channels_apart(layer):
                break  # a kernel layer, a merge, a nested model ...: stop here
            tensor = inputs[0]
    return names


def _keeps_channels_apart(layer) -> bool:
    """Whether each output channel of `layer` comes from its own input channel
    (Softmax mixes them, but a cut logit still fixes its class's output)."""
    rule = registry.channel_rule(layer)
    if rule is not None and rule.kind in ("channelwise", "flatten"):
        return True
    return isinstance(layer, keras.layers.Softmax)


def _warn_output_filter_cuts(model, pairs):
    """Per-layer Filter cuts of an output layer cut model outputs: say so."""
    outputs = _output_layer_names(model)
    for target, _ in pairs:
        if target.layer_name in outputs and isinstance(
            target.sparsity, (sparsity_lib.Filter, sparsity_lib.FilterShape)
        ):
            warnings.warn(
                f"The per-layer {target.sparsity} cut of layer "
                f"'{target.layer_name}' cuts outputs of the model: its filters "
                "make the model's output units, so those outputs become zero or "
                "constant. Exclude it from the plan, or pass graph=True, which "
                "keeps output channels.",
                KerasAdmmWarning,
                stacklevel=4,
            )


def masks_from_model(model, plan=None) -> dict[str, np.ndarray]:
    """0/1 float32 masks of the current non-zero pattern of the kernels.

    Args:
        model: a built Keras model.
        plan: the PruningPlan whose kernels to read; None reads the kernel of
            every prunable layer.

    Returns:
        {weight_path: mask} with mask = (kernel != 0) as float32.

    Raises:
        ValueError: the plan does not fit the model.

    Example:

        masks = masks_from_model(keras.saving.load_model("pruned.keras"))
    """
    if plan is None:
        variables = [
            registry.kernel_variable(layer) for layer in prunable_layers(model)
        ]
    else:
        variables = [variable for _, variable in planned_kernels(model, plan)]
    return {
        variable.path: (keras.ops.convert_to_numpy(variable) != 0).astype("float32")
        for variable in variables
    }


def apply_masks(model, masks) -> None:
    """Multiply model weights by 0/1 masks in place: W <- W * mask.

    All masks are checked before any weight is written.

    Args:
        model: a built Keras model.
        masks: {weight_path: 0/1 array of the variable's shape}, e.g. from
            `hard_prune` or `masks_from_model`.

    Raises:
        ValueError: a path is not a variable of `model`, or a mask's shape
            differs from its variable's.

    Example:

        masks = hard_prune(pruned_model, plan)
        apply_masks(other_model, masks)   # the same zeros in another copy
    """
    if not isinstance(masks, collections.abc.Mapping):
        raise TypeError(
            f"apply_masks needs {{weight_path: 0/1 array}}, as hard_prune or "
            f"masks_from_model return, got {type(masks).__name__}. For a plan, "
            "use hard_prune(model, plan)."
        )
    checked = []
    for path, mask in masks.items():
        variable = find_variable(model.weights, path)
        if variable is None:
            raise ValueError(
                f"Mask for '{path}': no such variable in model '{model.name}'. "
                "Mask keys are variable paths (`variable.path`), as returned by "
                "hard_prune(model, plan)."
            )
        mask = np.asarray(mask)
        if mask.shape != tuple(variable.shape):
            raise ValueError(
                f"Mask for '{path}' has shape {mask.shape}, but the variable has "
                f"shape {tuple(variable.shape)}. Recompute the masks for this model."
            )
        check_mask_values(path, mask, "apply_masks")
        checked.append((variable, mask))
    for variable, mask in checked:
        value = keras.ops.convert_to_numpy(variable)
        variable.assign(value * mask.astype(value.dtype))


def check_mask_values(path, mask, owner):
    """Raise ValueError, naming `owner` and `path`, unless `mask` holds only 0 and 1.

    A mask of 0.5 or NaN would scale or poison weights instead of pruning them.
    """
    mask = np.asarray(mask)
    bad = mask[(mask != 0) & (mask != 1)]
    if bad.size:
        raise ValueError(
            f"{owner}: the mask for '{path}' must hold only 0 and 1 (found e.g. "
            f"{bad.ravel()[:3].tolist()}). Use the masks of keras_admm.hard_prune "
            "or masks_from_model."
        )


def group_masks(model, plan, graph=None) -> dict:
    """0/1 masks that cut whole channel groups, for Filter / Channel plans.

    A Filter target asks to cut its layer's output-channel groups, a Channel
    target its input-channel groups (a Dense after Flatten reaches the conv
    channels behind the Flatten). Each asked, prunable group keeps the
    `kept_count(size, ratio)` channels with the largest summed squared L2
    norm over the members that ask for the cut (the Filter targets among its
    producers, the Channel targets among its consumers), with the largest
    ratio any member asks for, and
    every kernel member of the group, planned or not, loses the cut channels:
    the same index everywhere in the group, or nowhere. Pinned groups (model
    inputs, outputs, barriers) are not cut. Targets of other sparsity types
    (unstructured, shape, N:M, filter_shape) get their own per-layer masks,
    chosen among the weights the group cuts leave (a Dense after a pruned conv
    spends its unstructured budget on live inputs) and multiplied with them.
    `GroupProjection` makes the same choice inside ADMM training.

    Args:
        model: the built Sequential or functional model.
        plan: a PruningPlan (resolved against `model` if it is not yet).
        graph: its DependencyGraph (built here when None).

    Returns:
        {weight_path: 0/1 float32 array}, for every planned kernel and every
        other kernel a group cut touches (e.g. the consumers of a filter).

    Raises:
        TypeError / ValueError: as `hard_prune`; a subclassed model.

    Example:

        masks = group_masks(model, PruningPlan.uniform(model, "filter:0.7"))
        apply_masks(model, masks)   # what hard_prune(model, plan, graph=True) does
    """
    graph = graph_for(model, True if graph is None else graph, "group_masks")
    if graph is None:
        raise ValueError(
            "group_masks needs a graph: pass None, True or a DependencyGraph."
        )
    pairs = planned_kernels(model, plan)
    layers = {layer.name: layer for layer in graph.functional.layers}
    scoring = selection.scoring_kernels(graph, pairs)
    values = {}

    def value_of(layer_name, weight):
        key = (layer_name, weight)
        if key not in values:
            variable = graph._weight(layers[layer_name], weight)
            values[key] = (variable, keras.ops.convert_to_numpy(variable))
        return values[key]

    asks, handled, skipped = selection.group_asks(graph, pairs)
    selection.warn_skipped_cuts(skipped, "hard_prune")
    masks = {}

    def mask_for(variable):
        if variable.path not in masks:
            masks[variable.path] = np.ones(tuple(variable.shape), dtype="float32")
        return masks[variable.path]

    for index, ratio in sorted(asks.items()):
        group = graph.groups[index]
        keep = sparsity_lib.kept_count(group.size, ratio)
        if keep >= group.size:
            continue
        scores = selection.channel_scores(
            group.size,
            [
                (
                    value_of(m.layer, m.weight)[1].astype(np.float64),
                    m.axis,
                    m.mapping.indices(),
                )
                for m in selection.scored_members(group, scoring)
            ],
        )
        if scores is None:
            scores = np.zeros(group.size)
        kept = selection.keep_top(np.asarray(keras.ops.convert_to_numpy(scores)), keep)
        cut = np.flatnonzero(kept == 0)
        for member in group.members:
            if not member.is_kernel:
                continue
            variable, _ = value_of(member.layer, member.weight)
            mask = mask_for(variable)
            index_cut = member.mapping.indices()[cut].ravel()
            index_cut = index_cut[index_cut >= 0]
            slicer = [slice(None)] * mask.ndim
            slicer[member.axis] = index_cut
            mask[tuple(slicer)] = 0.0
    for target, variable in pairs:
        if target.layer_name in handled and type(target.sparsity) in (
            sparsity_lib.Filter,
            sparsity_lib.Channel,
        ):
            mask_for(variable)
            continue
        # Rank only the live weights: a weight fed by a cut channel is zero
        # anyway, so the kernel's own budget (top-k weights, columns ...) goes
        # to inputs that survive, as GroupProjection.project does in ADMM.
        group_mask = mask_for(variable)
        value = keras.ops.convert_to_numpy(variable) * group_mask
        own = keras.ops.convert_to_numpy(
            target.sparsity.mask(value, target.layout)
        ).astype("float32")
        masks[variable.path] = group_mask * own
    return masks
