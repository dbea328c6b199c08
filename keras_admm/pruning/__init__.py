"""Pruning: choosing channels, hard pruning to 0/1 masks, the sparsity report.

`selection` is the one channel-selection core; `masks` hard-prunes a model
(per layer or per channel group); `group_projection` is the group-aware ADMM
Z-step; `report` counts what a pruning removed; `recalibration` recomputes the
BatchNorm statistics a prune left stale; `blocks` zeroes whole residual branches
(depth pruning); `gradual`, `one_shot` and `group_lasso` are the other pruning
methods; `flops_target` turns a FLOPs target into per-layer ratios.
"""

from keras_admm.pruning.blocks import (
    ResidualBranch,
    residual_branches,
    zero_branch,
    zero_branches,
)
from keras_admm.pruning.flops_target import LevelPlan, plan_for_flops_reduction
from keras_admm.pruning.gradual import GradualPruning
from keras_admm.pruning.group_lasso import GroupLasso
from keras_admm.pruning.group_projection import GroupProjection
from keras_admm.pruning.masks import (
    apply_masks,
    group_masks,
    hard_prune,
    masks_from_model,
    projection_masks,
)
from keras_admm.pruning.one_shot import one_shot_prune
from keras_admm.pruning.recalibration import Recalibration, recalibrate_batchnorm
from keras_admm.pruning.report import SparsityReport, sparsity_report

__all__ = [
    "GradualPruning",
    "GroupLasso",
    "GroupProjection",
    "LevelPlan",
    "Recalibration",
    "ResidualBranch",
    "SparsityReport",
    "apply_masks",
    "group_masks",
    "hard_prune",
    "masks_from_model",
    "one_shot_prune",
    "plan_for_flops_reduction",
    "projection_masks",
    "recalibrate_batchnorm",
    "residual_branches",
    "sparsity_report",
    "zero_branch",
    "zero_branches",
]
