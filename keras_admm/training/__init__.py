"""Training: ADMM inside fit (ADMMWrapper), in custom loops (ADMMRegularizer),
progressively (progressive_admm); masked retraining (MaskedWrapper); ADMMLogger.

`admm` is the core both ADMM front ends share: state, penalty, Z/U/rho update,
residuals.
"""

from keras_admm.training.admm import (
    find_admm_wrapper,
    primal_residual,
    primal_residuals,
)
from keras_admm.training.admm_wrapper import ADMMWrapper
from keras_admm.training.callbacks import ADMMLogger
from keras_admm.training.masked_wrapper import MaskedWrapper
from keras_admm.training.progressive import ProgressiveResult, progressive_admm
from keras_admm.training.regularizer import ADMMRegularizer

__all__ = [
    "ADMMLogger",
    "ADMMRegularizer",
    "ADMMWrapper",
    "MaskedWrapper",
    "ProgressiveResult",
    "find_admm_wrapper",
    "primal_residual",
    "primal_residuals",
    "progressive_admm",
]
