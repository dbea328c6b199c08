"""The per-layer sparsity / FLOP report of a pruned model.

`sparsity_report` shows, layer by layer, what a pruning achieved: groups kept,
weight sparsity, parameters and FLOPs before and after. FLOPs come from the
one counter of `keras_admm.registry`.

Example:

    print(sparsity_report(model, plan))
    sparsity_report(model).totals["conv_flops_reduction"]   # e.g. 5.3
"""

from __future__ import annotations

import keras
import numpy as np

from keras_admm import registry
from keras_admm import sparsity as sparsity_lib
from keras_admm.plan import planned_kernels, prunable_layers
from keras_admm.tables import dump_json, factor, human, text_table

__all__ = ["sparsity_report", "SparsityReport"]

_CONV_OPS = ("conv", "conv_transpose", "depthwise", "separable")


# ------------------------------------------------------------------ report
def _unit_names(op):
    if op == "dense":
        return {"filter": "units", "channel": "inputs"}
    return {"filter": "filters", "channel": "channels"}


def _group_structures(spec, layout, rank, op):
    """[(unit name, group axes)] for the structures `spec` removes."""
    names = _unit_names(op)
    layout = layout.normalized(rank)
    columns = sparsity_lib.Shape(0.0).group_axes(layout, rank)
    if spec is None or isinstance(spec, sparsity_lib.Filter):
        return [(names["filter"], layout.filter_axes)]
    if isinstance(spec, sparsity_lib.Channel):
        return [(names["channel"], layout.channel_axes)]
    if isinstance(spec, sparsity_lib.Shape):
        return [("columns", columns)]
    if isinstance(spec, sparsity_lib.FilterShape):
        return [(names["filter"], layout.filter_axes), ("columns", columns)]
    return [("weights", tuple(range(rank)))]


def _count_groups(kernel, axes):
    """(non-zero groups, total groups) of `kernel` grouped along `axes`."""
    rank = kernel.ndim
    reduce_axes = tuple(a for a in range(rank) if a not in axes)
    nonzero = kernel != 0
    if reduce_axes:
        nonzero = nonzero.any(axis=reduce_axes)
    return int(nonzero.sum()), int(nonzero.size)


def _layer_shape(layer, which):
    """layer.input.shape / layer.output.shape, or a ValueError naming the fix."""
    try:
        tensor = getattr(layer, which)
    except (AttributeError, ValueError) as e:
        raise ValueError(
            f"Cannot count FLOPs of layer '{layer.name}' ({type(layer).__name__}): "
            f"its {which} shape is unknown ({e}). Build the model as a Sequential "
            "or functional model with an Input shape (keras.Input((28, 28, 1))), "
            "or pass flops=False to sparsity_report."
        ) from None
    if isinstance(tensor, (list, tuple)):
        tensor = tensor[0]
    return tuple(tensor.shape)


def _layer_flops(layer, weight_count):
    """FLOPs of the layer's kernels when `weight_count` of their weights run.

    The one counter of `keras_admm.registry`, given the executed weights (all
    of them for "before", the non-zero ones for "after").
    """
    input_shape = _layer_shape(layer, "input")[1:]
    output_shape = _layer_shape(layer, "output")[1:]
    try:
        return registry.flops_of(layer, input_shape, output_shape, weight_count)
    except ValueError as e:
        raise ValueError(f"{e} Or pass flops=False to sparsity_report.") from None


def _ratio(before, after):
    if not before or not after:
        return None
    return before / after


def sparsity_report(model, plan=None, flops=True) -> SparsityReport:
    """Per-layer sparsity, parameters and FLOPs of every prunable layer.

    One row per layer with a registered kernel (see `keras_admm.registry`), in model
    order, whether it is pruned or not:

    - `sparsity`: the plan's type for the layer, or "dense".
    - `groups`: kept / total groups of the structure that type removes (filters,
      channels, columns; single weights for unstructured and N:M; output
      filters for dense layers), counted from the current zeros.
    - `weight_sparsity`: fraction of zeros in the prunable kernel.
    - `params_before` / `params_after`: kernel weights, all / non-zero (both the
      depthwise and pointwise kernels for separable layers; biases excluded).
    - `flops_before` / `flops_after`: 2 x multiply-accumulates of the kernels.
      Conv, depthwise: 2 * prod(output spatial) * kernel size (the kernel's
      input dim is already in / groups); separable: the same for the depthwise
      plus the pointwise kernel; conv transpose: 2 * prod(input spatial) *
      kernel size; dense: 2 * prod(input dims except batch and last) * in *
      out. Biases, normalisation and activations are not counted. "After" is
      the same formula with the non-zero weights only: the FLOPs of a
      zero-skipping (or compacted) execution of this layer alone. It does not
      include the savings a filter cut brings to the next layer's inputs,
      until that layer is pruned or compacted too.

    Args:
        model: a built Sequential or functional model (FLOPs read the layers'
            input / output shapes from the model graph).
        plan: optional PruningPlan (resolved or not) naming each layer's type.
        flops: count FLOPs (needs known shapes); False leaves them None.

    Returns:
        A SparsityReport: `.rows`, `.totals`, `str()` a table, `.to_dict()`,
        `.to_json()`, `.to_markdown()`.

    Raises:
        ValueError: the plan does not fit the model, or FLOPs are asked for and
            a layer's input / output shape is unknown (a subclassed model, or an
            input with unknown spatial size).

    Example:

        print(sparsity_report(model, plan))
        sparsity_report(model).totals["conv_flops_reduction"]   # e.g. 5.3
    """
    specs = {}
    if plan is not None:
        specs = {
            target.layer_name: target.sparsity
            for target, _ in planned_kernels(model, plan)
        }
    rows = []
    for layer in prunable_layers(model):
        kernel_spec = registry.kernel_spec(layer)
        kernel = keras.ops.convert_to_numpy(registry.kernel_variable(layer))
        spec = specs.get(layer.name)
        kernels = [kernel]
        if kernel_spec.op == "separable":
            kernels.append(keras.ops.convert_to_numpy(layer.depthwise_kernel))
        params_before = sum(int(k.size) for k in kernels)
        params_after = sum(int(np.count_nonzero(k)) for k in kernels)
        groups = []
        for unit, axes in _group_structures(
            spec, kernel_spec.layout, kernel.ndim, kernel_spec.op
        ):
            kept, total = _count_groups(kernel, axes)
            groups.append({"unit": unit, "kept": kept, "total": total})
        flops_before = flops_after = None
        if flops:
            flops_before = _layer_flops(layer, params_before)
            flops_after = _layer_flops(layer, params_after)
        rows.append(
            {
                "layer": layer.name,
                "class": type(layer).__name__,
                "op": kernel_spec.op,
                "sparsity": "dense" if spec is None else str(spec),
                "kernel_shape": list(kernel.shape),
                "groups": groups,
                "weight_sparsity": 1.0 - np.count_nonzero(kernel) / kernel.size,
                "params_before": params_before,
                "params_after": params_after,
                "flops_before": flops_before,
                "flops_after": flops_after,
            }
        )
    return SparsityReport(rows)


class SparsityReport:
    """The result of `sparsity_report`: rows per layer and model totals.

    Attributes:
        rows: one dict per prunable layer (keys: layer, class, op, sparsity,
            kernel_shape, groups [{unit, kept, total}], weight_sparsity,
            params_before, params_after, flops_before, flops_after).
        totals: sums over the rows: params_*, flops_* (all layers) and
            conv_flops_* (convolution-type layers), each with a `*_reduction`
            factor before / after (None when undefined).
    """

    _HEADERS = (
        "layer",
        "class",
        "sparsity",
        "groups kept",
        "zeros",
        "params",
        "params nnz",
        "FLOPs",
        "FLOPs after",
    )

    def __init__(self, rows):
        self.rows = list(rows)
        self.totals = self._totals()

    def _totals(self):
        def total(key, rows):
            values = [row[key] for row in rows]
            if any(v is None for v in values):
                return None
            return int(sum(values))

        conv_rows = [row for row in self.rows if row["op"] in _CONV_OPS]
        totals = {}
        for prefix, rows, keys in (
            ("params", self.rows, ("params_before", "params_after")),
            ("flops", self.rows, ("flops_before", "flops_after")),
            ("conv_flops", conv_rows, ("flops_before", "flops_after")),
        ):
            before, after = (total(key, rows) for key in keys)
            totals[f"{prefix}_before"] = before
            totals[f"{prefix}_after"] = after
            totals[f"{prefix}_reduction"] = (
                None if before is None or after is None else _ratio(before, after)
            )
        return totals

    # -------------------------------------------------------------- as data
    def to_dict(self) -> dict:
        """{"rows": [...], "totals": {...}} with plain Python values."""
        return {
            "rows": [dict(row, groups=list(row["groups"])) for row in self.rows],
            "totals": dict(self.totals),
        }

    def to_json(self, path=None, indent=2) -> str:
        """The report as JSON text; also written to `path` when given."""
        return dump_json(self.to_dict(), path, indent)

    # -------------------------------------------------------------- as text
    def _cells(self):
        table = []
        for row in self.rows:
            groups = ", ".join(
                f"{g['kept']}/{g['total']} {g['unit']}" for g in row["groups"]
            )
            table.append(
                (
                    row["layer"],
                    row["class"],
                    row["sparsity"],
                    groups,
                    f"{100 * row['weight_sparsity']:.1f}%",
                    human(row["params_before"]),
                    human(row["params_after"]),
                    human(row["flops_before"]),
                    human(row["flops_after"]),
                )
            )
        return table

    def _total_lines(self):
        t = self.totals
        return [
            f"conv FLOPs: {human(t['conv_flops_before'])} -> "
            f"{human(t['conv_flops_after'])} "
            f"({factor(t['conv_flops_reduction'])} fewer)",
            f"all FLOPs: {human(t['flops_before'])} -> {human(t['flops_after'])} "
            f"({factor(t['flops_reduction'])} fewer)",
            f"kernel weights: {human(t['params_before'])} -> "
            f"{human(t['params_after'])} ({factor(t['params_reduction'])} fewer)",
        ]

    def __str__(self):
        table = text_table(self._HEADERS, self._cells(), numeric=range(4, 9))
        rule = "-" * len(table.splitlines()[1])
        return "\n".join([table, rule, *self._total_lines()])

    def to_markdown(self) -> str:
        """The table and totals as GitHub-flavoured Markdown."""
        header = "| " + " | ".join(self._HEADERS) + " |"
        align = "|" + "|".join("---" if i < 4 else "---:" for i in range(9)) + "|"
        body = ["| " + " | ".join(map(str, r)) + " |" for r in self._cells()]
        totals = [f"- {text}" for text in self._total_lines()]
        return "\n".join([header, align, *body, "", *totals])

    def __repr__(self):
        return (
            f"SparsityReport({len(self.rows)} layers, conv FLOPs reduction "
            f"{factor(self.totals['conv_flops_reduction'])}, weights reduction "
            f"{factor(self.totals['params_reduction'])})"
        )
