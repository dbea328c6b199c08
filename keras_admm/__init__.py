"""keras-admm: structured weight pruning with ADMM (StructADMM) for Keras 3.

    plan = keras_admm.PruningPlan.uniform(model, "filter_shape:0.5:0.5")
    model.compile(optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(), plan),
                  loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, callbacks=[keras_admm.ADMMLogger()])
    masks = keras_admm.hard_prune(model, plan)

A run walks down the package: `plan` -> `training` (ADMM) -> `pruning` (hard
prune, masks) -> `compaction` -> `exporting` -> `profiling`; `registry` (the layer
table), `graph` (channel dependencies) and `sparsity` (projections) are the
ground they stand on. docs/ARCHITECTURE.md draws the tree.

`import keras_admm` imports everything, which registers the Keras-serializable
classes (ADMMWrapper, MaskedWrapper, the sparsity types) so that
`keras.saving.load_model()` finds them. With the environment variable
KERAS_ADMM_LAZY=1 names load on first use instead (PEP 562), so that
`keras_admm.profiling` can time .onnx files without importing Keras or
TensorFlow; tools/profile_models.py sets it.
"""

import importlib
import os

from keras_admm.version import __version__ as __version__

_EXPORTS = {
    # planning
    "LayerTarget": "keras_admm.plan",
    "PruningPlan": "keras_admm.plan",
    "LevelPlan": "keras_admm.pruning.flops_target",
    "plan_for_flops_reduction": "keras_admm.pruning.flops_target",
    "TargetPlan": "keras_admm.targeting",
    "check_prediction": "keras_admm.targeting",
    "plan_for_target": "keras_admm.targeting",
    # training with ADMM, masked retraining
    "ADMMLogger": "keras_admm.training",
    "ADMMRegularizer": "keras_admm.training",
    "ADMMWrapper": "keras_admm.training",
    "MaskedWrapper": "keras_admm.training",
    "ProgressiveResult": "keras_admm.training",
    "find_admm_wrapper": "keras_admm.training",
    "progressive_admm": "keras_admm.training",
    # pruning: masks, methods without ADMM, the report
    "DependencyGraph": "keras_admm.graph",
    "GroupProjection": "keras_admm.pruning",
    "GradualPruning": "keras_admm.pruning.gradual",
    "GroupLasso": "keras_admm.pruning.group_lasso",
    "apply_masks": "keras_admm.pruning",
    "hard_prune": "keras_admm.pruning",
    "masks_from_model": "keras_admm.pruning",
    "one_shot_prune": "keras_admm.pruning.one_shot",
    "recalibrate_batchnorm": "keras_admm.pruning",
    "residual_branches": "keras_admm.pruning.blocks",
    "zero_branches": "keras_admm.pruning.blocks",
    "branch_sensitivity": "keras_admm.targeting",
    "sparsity_report": "keras_admm.pruning",
    # compaction, export, profiling
    "CompactionSummary": "keras_admm.compaction",
    "compact": "keras_admm.compaction",
    "fold_batchnorm": "keras_admm.compaction",
    "remove_zero_branches": "keras_admm.compaction.zero_branches",
    "ExportError": "keras_admm.exporting",
    "ExportResult": "keras_admm.exporting",
    "ExportVerificationError": "keras_admm.exporting",
    "export": "keras_admm.exporting",
    "count_flops": "keras_admm.profiling",
    "KerasAdmmWarning": "keras_admm.exceptions",
    "PruningSkippedWarning": "keras_admm.exceptions",
    "profile_models": "keras_admm.profiling",
    "register_flops": "keras_admm.registry",
}
_SUBMODULES = (
    "backends",
    "compaction",
    "graph",
    "models",
    "plan",
    "profiling",
    "pruning",
    "registry",
    "schedules",
    "sparsity",
    "targeting",
    "training",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"keras_admm.{name}")
    else:
        raise AttributeError(f"module 'keras_admm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


if os.environ.get("KERAS_ADMM_LAZY", "").lower() not in ("1", "true", "yes"):
    for _name in (*_EXPORTS, *_SUBMODULES):
        __getattr__(_name)
    del _name
