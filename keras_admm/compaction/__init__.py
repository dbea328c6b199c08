"""Compaction: rewrite a pruned model into a smaller dense one, same outputs.

`compact(model)` (compactor.py) removes the channels the outputs do not need
through residual, concatenated and depthwise graphs; `summary.py` reports what
it did; `layers.py` holds the column-sparse conv it may write.
`fold_batchnorm(model)` (batchnorm_folding.py) merges inference BatchNorms into
the conv / dense layers before them, for engines that do not (TensorFlow);
`rebuild.py` re-creates layers for both rewrites; `zero_branches.py` drops the
residual branches that add exact zeros (compact's first step).
"""

from keras_admm.compaction.batchnorm_folding import fold_batchnorm
from keras_admm.compaction.compactor import column_sparse_pays, compact
from keras_admm.compaction.layers import ColumnSparseConv2D, same_padding
from keras_admm.compaction.summary import CompactionSummary
from keras_admm.compaction.zero_branches import remove_zero_branches

__all__ = [
    "ColumnSparseConv2D",
    "CompactionSummary",
    "column_sparse_pays",
    "compact",
    "fold_batchnorm",
    "remove_zero_branches",
    "same_padding",
]
