"""Pruning: choosing channels, hard pruning to 0/1 masks, the sparsity report.

`selection` is the one channel-selection core; `masks` hard-prunes a model
(per layer or per channel group); `group_projection` is the group-aware ADMM
Z-step; `report` counts what a pruning removed; `recalibration` recomputes the
BatchNorm statistics a prune left stale; `blocks` zeroes whole residual branches
(depth pruning).
"""

from keras_admm.pruning.group_projection import GroupProjection
from keras_admm.pruning.masks import (
    apply_masks,
    group_masks,
    hard_prune,
    masks_from_model,
    projection_masks,
)
from keras_admm.pruning.recalibration import Recalibration, recalibrate_batchnorm
from keras_admm.pruning.report import SparsityReport, sparsity_report

__all__ = [
    "GroupProjection",
    "Recalibration",
    "SparsityReport",
    "apply_masks",
    "group_masks",
    "hard_prune",
    "masks_from_model",
    "projection_masks",
    "recalibrate_batchnorm",
    "sparsity_report",
]
