"""keras-admm: structured weight pruning with ADMM (StructADMM) for Keras 3."""

from keras_admm import layers_registry, sparsity
from keras_admm.plan import LayerTarget, PruningPlan
from keras_admm.version import __version__

__all__ = ["LayerTarget", "PruningPlan", "layers_registry", "sparsity", "__version__"]
