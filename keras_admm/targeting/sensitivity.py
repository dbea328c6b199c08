"""Sensitivity: how much the loss grows when one channel group keeps k channels.

`group_sensitivity` cuts one group at a time, group-aware (the same channels
in every producer, consumer and BatchNorm of the group, as `hard_prune(...,
graph=...)` cuts them, so the cut model computes what its compact form
computes), evaluates the loss on a small calibration batch and restores the
weights. Without data it falls back to the share of the group's squared weight
norm that the cut removes (a proxy, said so in the result).

Example:

    sens = group_sensitivity(model, graph, {1: [8, 12, 16]}, data=(x_val, y_val))
    sens.values[1][8]      # loss increase with 8 of group 1's 16 channels
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_admm.plan import PruningPlan
from keras_admm.pruning.blocks import residual_branches, zero_branch
from keras_admm.pruning.masks import apply_masks, projection_masks

__all__ = [
    "Sensitivity",
    "branch_sensitivity",
    "group_sensitivity",
    "loss_after_cut",
    "plan_for_counts",
]


@dataclasses.dataclass
class Sensitivity:
    """Per group and kept count, the cost of the cut.

    Attributes:
        values: {group index: {kept count: cost}} (0 at the group's full size).
        measure: "loss" (loss increase on the calibration data) or
            "weight_norm" (share of the group's squared kernel norm removed).
        base_loss: the uncut model's loss on the calibration data (None
            without data).
        samples: calibration samples used (0 without data).
    """

    values: dict
    measure: str
    base_loss: float | None
    samples: int


def plan_for_counts(graph, counts) -> PruningPlan:
    """The Filter plan that leaves group g with counts[g] channels.

    Every kernel producer of a cut group gets `filter:r` with r = removed /
    group size (the group-aware cut keeps exactly counts[g]). A layer that
    produces several cut groups gets the largest ratio (as `group_asks`).
    """
    rules = {}
    for index, kept in counts.items():
        group = graph.groups[index]
        if kept >= group.size:
            continue
        ratio = (group.size - kept) / group.size
        for member in group.producers:
            rules[member.layer] = max(rules.get(member.layer, 0.0), ratio)
    return PruningPlan({name: f"filter:{ratio!r}" for name, ratio in rules.items()})


def _as_arrays(data, max_samples):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(
            "Calibration data must be an (x, y) pair of arrays, got "
            f"{type(data).__name__}; pass e.g. data=(x_val[:512], y_val[:512])."
        )
    x, y = (np.asarray(a) for a in data)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"Calibration data needs as many labels as samples (> 0), got "
            f"{len(x)} samples and {len(y)} labels."
        )
    return x[:max_samples], y[:max_samples]


def _default_loss(model):
    import keras

    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=activation != "softmax"
    )


def _evaluator(model, data, loss, batch_size, max_samples):
    """(evaluate() -> mean calibration loss, samples used)."""
    import keras

    x, y = _as_arrays(data, max_samples)
    loss_fn = loss or _default_loss(model)

    def evaluate():
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            pred = model(xb, training=False)
            total += float(keras.ops.convert_to_numpy(loss_fn(yb, pred))) * len(xb)
        return total / len(x)

    return evaluate, len(x)


def _cut(model, graph, counts):
    plan = plan_for_counts(graph, counts).resolve(model)
    return projection_masks(model, plan, graph=graph)


def loss_after_cut(
    model, graph, counts, data, loss=None, batch_size=256, max_samples=1024
) -> tuple:
    """(uncut loss, loss with every group cut to counts[g] at once).

    The sum of one-group sensitivities predicts the joint cut's cost only
    where the cuts add up; this measures it. The weights are restored.
    """
    evaluate, _ = _evaluator(model, data, loss, batch_size, max_samples)
    original = model.get_weights()
    base = evaluate()
    cut = {g: k for g, k in counts.items() if k < graph.groups[g].size}
    if not cut:
        return base, base
    try:
        apply_masks(model, _cut(model, graph, cut))
        return base, evaluate()
    finally:
        model.set_weights(original)


def group_sensitivity(
    model, graph, candidates, data=None, loss=None, batch_size=256, max_samples=1024
) -> Sensitivity:
    """The cost of cutting each group to each candidate count, one at a time.

    Args:
        model: the (trained) model; its weights are restored afterwards.
        graph: its `DependencyGraph`.
        candidates: {group index: [kept counts]}.
        data: (x, y) calibration arrays (a validation split, never the test
            set), or None for the weight-norm proxy.
        loss: a Keras loss (None: sparse categorical cross-entropy, from
            logits unless the last layer ends in softmax).
        batch_size: inference batch size.
        max_samples: calibration samples used at most.

    Returns:
        A `Sensitivity`.
    """
    import keras

    def norm_share(masks):
        removed = total = 0.0
        for variable in model.weights:
            if variable.path in masks:
                w = np.square(keras.ops.convert_to_numpy(variable))
                total += float(w.sum())
                removed += float((w * (1.0 - masks[variable.path])).sum())
        return removed / total if total else 0.0

    def table(cost):
        """{group: {kept: cost(masks of that one-group cut)}}."""
        values = {}
        for index, counts in candidates.items():
            size = graph.groups[index].size
            values[index] = {
                kept: 0.0 if kept >= size else cost(_cut(model, graph, {index: kept}))
                for kept in counts
            }
        return values

    if data is None:
        return Sensitivity(table(norm_share), "weight_norm", None, 0)

    evaluate, samples = _evaluator(model, data, loss, batch_size, max_samples)
    original = model.get_weights()
    base = evaluate()

    def loss_increase(masks):
        apply_masks(model, masks)
        try:
            return evaluate() - base
        finally:
            model.set_weights(original)

    return Sensitivity(table(loss_increase), "loss", base, samples)


def branch_sensitivity(
    model, data, branches=None, loss=None, batch_size=256, max_samples=1024
) -> list:
    """The loss increase when each residual branch alone adds zeros, smallest first.

    Args:
        model: the (trained) model; its weights are restored afterwards.
        data: (x, y) calibration arrays (a validation split, never the test set).
        branches: `pruning.blocks.ResidualBranch`es (None: all of the model's).
        loss, batch_size, max_samples: as `group_sensitivity`.

    Returns:
        [(ResidualBranch, loss increase)], the cheapest branch to remove first.

    Example:

        ranked = branch_sensitivity(model, (x_val, y_val))
        zero_branches(model, [b.add for b, _ in ranked[:3]])
    """
    import keras

    evaluate, _ = _evaluator(model, data, loss, batch_size, max_samples)
    base = evaluate()
    if branches is None:
        branches = residual_branches(model)
    costs = []
    for branch in branches:
        bn = model.get_layer(branch.batchnorm)
        saved = [keras.ops.convert_to_numpy(v) for v in (bn.gamma, bn.beta)]
        try:
            zero_branch(model, branch)
            costs.append((branch, evaluate() - base))
        finally:
            bn.gamma.assign(saved[0])
            bn.beta.assign(saved[1])
    return sorted(costs, key=lambda item: item[1])
