"""One-shot pruning by group norm (Li et al. 2017), then masked fine-tuning.

`one_shot_prune(model, plan, norm="l1")` cuts the planned kernels once, by the
L1 or L2 norm of their groups, and returns the masks for `MaskedWrapper`.

Example:

    masks = one_shot_prune(model, plan, norm="l1", graph=True)
    model.compile(optimizer=MaskedWrapper(keras.optimizers.Adam(1e-4), masks), ...)
    model.fit(x, y, epochs=5)
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_admm.plan import planned_kernels
from keras_admm.pruning.masks import apply_masks, hard_prune, projection_masks

__all__ = ["one_shot_prune"]


def one_shot_prune(model, plan, norm="l2", graph=None) -> dict[str, np.ndarray]:
    """Prune the planned kernels in place by group norm; return their 0/1 masks.

    `norm="l2"` is `hard_prune` (the Euclidean projection). `norm="l1"` keeps
    the groups with the largest L1 norm instead (Li et al. 2017): it projects
    sqrt(|W|), whose group L2 norm is the square root of W's group L1 norm, so
    the same exact top-k (and FilterShape's alternating search) rank by L1.

    Args:
        model: a built Keras model.
        plan: a PruningPlan or dict of rules.
        norm: "l2" or "l1".
        graph: as `hard_prune`: None for per-layer masks, True or a
            DependencyGraph for group-aware ones (the groups are ranked by the
            same norm).

    Returns:
        {weight_path: 0/1 float32 mask}, like `hard_prune`.

    Raises:
        ValueError: unknown norm, or the plan does not fit the model.
    """
    if norm == "l2":
        return hard_prune(model, plan, graph=graph)
    if norm != "l1":
        raise ValueError(f"one_shot_prune `norm` must be 'l1' or 'l2', got {norm!r}.")
    # Rank by L1: project sqrt(|W|) in place of W, then restore W and cut it.
    saved = [
        (variable, ops.convert_to_numpy(variable))
        for _, variable in planned_kernels(model, plan)
    ]
    try:
        for variable, value in saved:
            variable.assign(
                np.sqrt(np.abs(value.astype("float32"))).astype(value.dtype)
            )
        masks = projection_masks(model, plan, graph=graph)
    finally:
        for variable, value in saved:
            variable.assign(value)
    apply_masks(model, masks)
    return masks
