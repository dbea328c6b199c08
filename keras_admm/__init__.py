"""keras-admm: structured weight pruning with ADMM (StructADMM) for Keras 3.

plan = keras_admm.PruningPlan.uniform(model, "filter_shape:0.5:0.5")
model.compile(optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(), plan),
              loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=10, callbacks=[keras_admm.ADMMLogger()])
masks = keras_admm.hard_prune(model, plan)
"""

from keras_admm import layers_registry, sparsity
from keras_admm.callbacks import ADMMLogger
from keras_admm.exporting import (
    ExportError,
    ExportResult,
    ExportVerificationError,
    export,
)
from keras_admm.masks import apply_masks, hard_prune, masks_from_model, sparsity_report
from keras_admm.optimizers import ADMMWrapper, MaskedWrapper, find_admm_wrapper
from keras_admm.plan import LayerTarget, PruningPlan
from keras_admm.regularizers import ADMMRegularizer
from keras_admm.version import __version__

__all__ = [
    "ADMMLogger",
    "ADMMRegularizer",
    "ADMMWrapper",
    "ExportError",
    "ExportResult",
    "ExportVerificationError",
    "LayerTarget",
    "MaskedWrapper",
    "PruningPlan",
    "apply_masks",
    "export",
    "find_admm_wrapper",
    "hard_prune",
    "layers_registry",
    "masks_from_model",
    "sparsity",
    "sparsity_report",
    "__version__",
]
