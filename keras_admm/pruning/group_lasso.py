"""Group lasso (SSL, Wen et al. 2016): a penalty that drives whole groups to zero.

Train with `GroupLasso` as the kernel regularizers of the planned layers, then
`hard_prune` to the plan. The groups are those of each layer's sparsity type.

Example:

    for target, variable in planned_kernels(model, plan):
        variable.regularizer = GroupLasso(1e-4, target.sparsity, target.layout)
    model.fit(x, y, epochs=5)
    masks = hard_prune(model, plan)
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from keras_admm import sparsity as sparsity_lib

__all__ = ["GroupLasso", "group_lasso_penalty"]


def _penalty_structures(spec, layout, rank):
    """The group axes the group-lasso penalty sums over for `spec`."""
    layout = layout.normalized(rank)
    if isinstance(spec, sparsity_lib.NM):
        raise ValueError(
            f"The group-lasso penalty has no groups for {spec}. Use unstructured, "
            "filter, channel, shape or filter_shape sparsity."
        )
    if isinstance(spec, sparsity_lib.FilterShape):
        return [
            sparsity_lib.Filter(0.0).group_axes(layout, rank),
            sparsity_lib.Shape(0.0).group_axes(layout, rank),
        ]
    return [spec.group_axes(layout, rank)]


def group_lasso_penalty(kernel, spec, layout=sparsity_lib.DEFAULT_LAYOUT):
    """sum_g sqrt(|g|) * ||W_g||_2 over the groups that `spec` prunes.

    The groups are those of the sparsity type (filters, channels, GEMM
    columns, single weights); FilterShape sums the filter and the column terms.
    Each group is weighted by the square root of its size (Yuan & Lin 2006), so
    the pull on one weight is about the same for every type; for unstructured
    sparsity this is the L1 norm. Written with keras.ops (differentiable).

    Args:
        kernel: the kernel tensor.
        spec: a Sparsity (its ratios are ignored) or its text form.
        layout: the kernel's layout.

    Returns:
        A float32 scalar tensor.

    Raises:
        ValueError: `spec` is N:M.
    """
    spec = sparsity_lib.parse(spec)
    kernel = ops.cast(ops.convert_to_tensor(kernel), "float32")
    rank = len(kernel.shape)
    total = ops.zeros((), "float32")
    for axes in _penalty_structures(spec, layout, rank):
        axes = sorted(a % rank for a in axes)
        reduce_axes = [a for a in range(rank) if a not in axes]
        group_size = math.prod(kernel.shape[a] for a in reduce_axes)
        if reduce_axes:
            norms = ops.sqrt(ops.sum(ops.square(kernel), axis=reduce_axes) + 1e-12)
        else:
            norms = ops.abs(kernel)
        total = total + math.sqrt(group_size) * ops.sum(norms)
    return total


@keras.saving.register_keras_serializable(package="keras_admm")
class GroupLasso(keras.regularizers.Regularizer):
    """lambda * group_lasso_penalty(W): the SSL regularizer of one kernel.

    Args:
        strength: lambda (>= 0).
        spec: the layer's Sparsity (names the groups).
        layout: the kernel's layout.
    """

    def __init__(self, strength, spec, layout=sparsity_lib.DEFAULT_LAYOUT):
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
            raise TypeError(f"GroupLasso strength must be a number, got {strength!r}.")
        if not strength >= 0:
            raise ValueError(
                f"GroupLasso strength must be >= 0, got {strength!r}. Try 1e-4."
            )
        self.strength = float(strength)
        self.spec = sparsity_lib.parse(spec)
        self.layout = layout

    def __call__(self, kernel):
        return self.strength * group_lasso_penalty(kernel, self.spec, self.layout)

    def get_config(self):
        return {
            "strength": self.strength,
            "spec": str(self.spec),
            "layout": self.layout.to_dict(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            config["strength"],
            config["spec"],
            sparsity_lib.KernelLayout.from_dict(config["layout"]),
        )
