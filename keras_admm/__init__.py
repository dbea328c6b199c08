"""keras-admm: structured weight pruning with ADMM (StructADMM) for Keras 3.

    plan = keras_admm.PruningPlan.uniform(model, "filter_shape:0.5:0.5")
    model.compile(optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(), plan),
                  loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, callbacks=[keras_admm.ADMMLogger()])
    masks = keras_admm.hard_prune(model, plan)

`import keras_admm` imports everything, which registers the Keras-serializable
classes (ADMMWrapper, MaskedWrapper, the sparsity types) so that
`keras.saving.load_model()` finds them. With the environment variable
KERAS_ADMM_LAZY=1 names load on first use instead (PEP 562), so that
`keras_admm.profiling` can time .onnx files without importing Keras or
TensorFlow; tools/profile.py sets it.
"""

import importlib
import os

from keras_admm.version import __version__ as __version__

_EXPORTS = {
    "ADMMLogger": "keras_admm.callbacks",
    "ADMMRegularizer": "keras_admm.regularizers",
    "ADMMWrapper": "keras_admm.optimizers",
    "CompactionSummary": "keras_admm.compaction",
    "DependencyGraph": "keras_admm.graph",
    "ExportError": "keras_admm.exporting",
    "ExportResult": "keras_admm.exporting",
    "ExportVerificationError": "keras_admm.exporting",
    "LayerTarget": "keras_admm.plan",
    "MaskedWrapper": "keras_admm.optimizers",
    "GroupProjection": "keras_admm.graph",
    "PruningPlan": "keras_admm.plan",
    "ProgressiveResult": "keras_admm.progressive",
    "apply_masks": "keras_admm.masks",
    "compact": "keras_admm.compaction",
    "count_flops": "keras_admm.profiling",
    "export": "keras_admm.exporting",
    "find_admm_wrapper": "keras_admm.optimizers",
    "hard_prune": "keras_admm.masks",
    "masks_from_model": "keras_admm.masks",
    "profile_models": "keras_admm.profiling",
    "progressive_admm": "keras_admm.progressive",
    "register_flops": "keras_admm.profiling",
    "sparsity_report": "keras_admm.masks",
}
_SUBMODULES = (
    "baselines",
    "comparison",
    "graph",
    "layers",
    "layers_registry",
    "profiling",
    "schedules",
    "sparsity",
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
