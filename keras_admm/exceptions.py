"""The package's own warning categories (filter them with `warnings.filterwarnings`).

>>> import warnings, keras_admm
>>> warnings.simplefilter("error", keras_admm.PruningSkippedWarning)  # doctest: +SKIP
"""

__all__ = ["KerasAdmmWarning", "PruningSkippedWarning"]


class KerasAdmmWarning(UserWarning):
    """Something you asked keras-admm for was not done as asked."""


class PruningSkippedWarning(KerasAdmmWarning):
    """A requested cut was not made (its channels are pinned by the graph)."""
