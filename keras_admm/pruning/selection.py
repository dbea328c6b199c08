"""The one channel-selection core: which channels of a group to keep.

Hard pruning (`group_masks`, NumPy weights), the group-aware Z-step of ADMM
(`GroupProjection`, tensors inside training) and `compact` (channels added to
reach an alignment) all choose channels here, the same way:

  * a group channel's score is its summed squared L2 norm over the members
    that score it (`channel_scores`);
  * the `keep` channels with the largest scores are kept, ties going to the
    lower channel index (`keep_top`).

Both are written with keras.ops, so they run on NumPy arrays (in their
dtype: float64 for hard pruning) and on backend tensors alike. Which groups a
plan asks to cut, and which kernels score them, is decided by `group_asks`
and `scoring_kernels`.

Example:

>>> import numpy as np
>>> keep_top(np.array([0.5, 2.0, 2.0, 0.1]), 2).tolist()
[0.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import warnings

import numpy as np
from keras import ops

from keras_admm import sparsity as sparsity_lib
from keras_admm.exceptions import PruningSkippedWarning
from keras_admm.registry import channel_rule

__all__ = [
    "channel_scores",
    "keep_top",
    "group_asks",
    "scoring_kernels",
    "scored_members",
    "warn_skipped_cuts",
]


def channel_scores(size, members):
    """Each group channel's summed squared L2 norm over `members`.

    Args:
        size: the group's channel count.
        members: [(value, axis, index)]: a weight's value (array or tensor),
            the axis its channels run along, and the (size, r) int array of
            its indices per group channel (-1 pads an Explicit mapping).

    Returns:
        A (size,) tensor in the values' dtype (float32 at least), or None when
        `members` is empty.
    """
    scores = None
    for value, axis, index in members:
        value = ops.convert_to_tensor(value)
        if value.dtype not in ("float32", "float64"):
            value = ops.cast(value, "float32")
        rank = len(value.shape)
        other = [a for a in range(rank) if a != axis]
        norms = ops.sum(ops.square(value), axis=other) if other else ops.square(value)
        index = np.asarray(index, dtype=np.int64)
        picked = ops.take(norms, np.maximum(index, 0).ravel())
        picked = ops.reshape(picked, index.shape)
        if (index < 0).any():
            picked = picked * ops.cast(index >= 0, picked.dtype)
        score = ops.sum(picked, axis=1)
        scores = score if scores is None else scores + score
    return scores


def keep_top(scores, keep):
    """A 0/1 float32 vector keeping the `keep` largest scores (ties: lower index).

    Args:
        scores: (n,) array or tensor.
        keep: how many to keep (0 <= keep <= n).

    Returns:
        A NumPy array for NumPy input, otherwise a tensor.
    """
    size = int(scores.shape[0])
    keep = int(keep)
    if keep >= size:
        kept = ops.ones((size,), "float32")
    elif keep <= 0:
        kept = ops.zeros((size,), "float32")
    else:
        kept = sparsity_lib.top_k_mask(scores, keep)
    if isinstance(scores, np.ndarray):
        return np.asarray(ops.convert_to_numpy(kept), dtype="float32")
    return kept


def asking_role(target, layer) -> str | None:
    """The role in which a Filter / Channel target asks for group cuts.

    A Filter target cuts its layer's output-channel groups ("producer"), a
    Channel target its input-channel groups ("consumer"); a depthwise filter
    is its input channel's group. Other sparsity types ask for none.
    """
    spec = target.sparsity
    if type(spec) not in (sparsity_lib.Filter, sparsity_lib.Channel):
        return None
    role = "producer" if isinstance(spec, sparsity_lib.Filter) else "consumer"
    rule = channel_rule(layer) if layer is not None else None
    if rule is not None and rule.kind == "depthwise":
        role = "consumer"
    return role


def group_asks(graph, pairs):
    """Which groups the plan's Filter / Channel targets ask to cut.

    Args:
        graph: the model's DependencyGraph.
        pairs: the plan's (LayerTarget, kernel variable) pairs.

    Returns:
        ({group index: ratio (the largest asked)}, names of the layers whose
        Filter / Channel target the groups replace, {layer name: why its cut
        cannot be made} for the targets whose channels are all pinned or whose
        layer is a barrier; see `warn_skipped_cuts`).
    """
    layers = {layer.name: layer for layer in graph.functional.layers}
    barriers = {b.layer: b.reason for b in graph.barriers}
    asks, handled, skipped = {}, set(), {}
    for target, _ in pairs:
        role = asking_role(target, layers.get(target.layer_name))
        if role is None:
            continue
        found = [
            group
            for group, member in graph.groups_of(target.layer_name, role)
            if member.is_kernel
        ]
        cuttable = [g for g in found if g.prunable and g.size > 1]
        if target.sparsity.ratio > 0 and not cuttable:
            if target.layer_name in barriers:
                why = f"the layer is a barrier ({barriers[target.layer_name]})"
            elif not found:
                why = "no channel group of the layer was found"
            else:
                pins = sorted({p for g in found for p in g.pinned})
                why = "its channels are pinned: " + "; ".join(pins[:3])
            skipped[target.layer_name] = (target, why)
        if not found:
            continue
        handled.add(target.layer_name)
        for group in cuttable:
            ratio = target.sparsity.ratio
            asks[group.index] = max(asks.get(group.index, 0.0), ratio)
    return asks, handled, skipped


def scoring_kernels(graph, pairs):
    """{layer: (weight name, role)} of the targets that score their groups."""
    layers = {layer.name: layer for layer in graph.functional.layers}
    scoring = {}
    for target, variable in pairs:
        role = asking_role(target, layers.get(target.layer_name))
        if role is not None:
            scoring[target.layer_name] = (variable.name, role)
    return scoring


def scored_members(group, scoring):
    """The members whose Filter / Channel target asks for this group's cut.

    A kernel planned with another type (say a Dense with unstructured
    sparsity that reads a pruned conv) is cut with the group but does not
    score it: its own budget is chosen afterwards among the live inputs.
    """
    return [m for m in group.members if scoring.get(m.layer) == (m.weight, m.role)]


def warn_skipped_cuts(skipped, what):
    """Warn (PruningSkippedWarning) for every cut `group_asks` found skipped.

    Args:
        skipped: {layer name: (LayerTarget, reason)} from `group_asks`.
        what: the caller, named in the message.
    """
    for name, (target, why) in skipped.items():
        warnings.warn(
            f"{what}: the {target.sparsity} cut of layer '{name}' is "
            f"not made group-aware: {why}. Register a channel rule for the "
            "blocking layer (keras_admm.registry.register), or prune this layer "
            "without graph= (its filters are then zeroed but compact() keeps them).",
            PruningSkippedWarning,
            stacklevel=3,
        )
