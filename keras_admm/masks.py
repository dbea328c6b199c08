"""Hard pruning, 0/1 masks, and the per-layer sparsity / FLOP report.

After the ADMM phase the planned kernels are projected once more onto their
sparsity sets (`hard_prune`); the returned 0/1 masks drive masked retraining.
`sparsity_report` shows, layer by layer, what a pruning achieved: groups kept,
weight sparsity, parameters and FLOPs before and after.

Example:

>>> import keras
>>> from keras_admm import PruningPlan, masks
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(8, 3, name="conv1"),
...     keras.layers.Conv2D(16, 3, name="conv2"),
...     keras.layers.Flatten(), keras.layers.Dense(10, name="fc")], name="net")
>>> kept = masks.hard_prune(model, PruningPlan({"conv2": "filter:0.5"}))
>>> int(kept["net/conv2/kernel"].sum(axis=(0, 1, 2)).astype(bool).sum())
8
>>> print(masks.sparsity_report(model))   # doctest: +SKIP
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_admm import layers_registry
from keras_admm import sparsity as sparsity_lib
from keras_admm.plan import PruningPlan, as_plan, find_variable, prunable_layers
from keras_admm.tables import dump_json, factor, human, text_table

__all__ = [
    "hard_prune",
    "projection_masks",
    "masks_from_model",
    "apply_masks",
    "planned_kernels",
    "sparsity_report",
    "SparsityReport",
]

_CONV_OPS = ("conv", "conv_transpose", "depthwise", "separable")


# ------------------------------------------------------------------- plans
def _as_resolved_plan(model, plan) -> PruningPlan:
    plan = as_plan(plan, "hard_prune / sparsity_report")
    return plan if plan.resolved else plan.resolve(model)


def planned_kernels(model, plan) -> list:
    """The (LayerTarget, kernel variable) pairs of `plan` in `model`, checked.

    Resolves the plan against `model` when it is not resolved yet, then checks
    that every target's kernel exists in `model` with the planned shape and that
    its sparsity fits that kernel. Nothing is modified.

    Args:
        model: a built Keras model.
        plan: a PruningPlan (resolved or not) or a dict of rules.

    Returns:
        A list of (LayerTarget, keras.Variable) pairs in plan order.

    Raises:
        TypeError: `plan` is not a PruningPlan or a dict.
        ValueError: the plan does not fit the model (see `PruningPlan.resolve`),
            or a resolved plan names a kernel that is missing or has another
            shape in this model.
    """
    resolved = _as_resolved_plan(model, plan)
    variables = model.weights
    pairs = []
    for target in resolved.targets:
        variable = find_variable(variables, target.weight_path)
        if variable is None:
            raise ValueError(
                f"The plan prunes layer '{target.layer_name}' through variable "
                f"'{target.weight_path}', which is not in model '{model.name}'. "
                "The plan was resolved against another model: call "
                "plan.resolve(model) on this model, or pass the unresolved plan."
            )
        if tuple(variable.shape) != tuple(target.kernel_shape):
            raise ValueError(
                f"The plan expects the kernel of layer '{target.layer_name}' to have "
                f"shape {tuple(target.kernel_shape)}, but '{target.weight_path}' in "
                f"model '{model.name}' has shape {tuple(variable.shape)}. Resolve "
                "the plan against this model with plan.resolve(model)."
            )
        target.sparsity.check_kernel(
            tuple(variable.shape), target.layout, target.layer_name
        )
        pairs.append((target, variable))
    return pairs


# ------------------------------------------------------------------- masks
def hard_prune(model, plan, graph=None) -> dict[str, np.ndarray]:
    """Project every planned kernel onto its sparsity set, in place.

    W <- Proj_S(W) for each planned layer: the step between the ADMM phase and
    masked retraining. The plan is checked and every projection is computed
    before any weight is written, so a bad plan changes nothing.

    Args:
        model: a built Keras model.
        plan: a PruningPlan (resolved against `model` here if it is not yet) or
            a dict of rules such as {"conv2": "filter:0.5"}.
        graph: None for per-layer projections; True or a
            `keras_admm.graph.DependencyGraph` of `model` for group-aware
            Filter / Channel pruning (`keras_admm.graph.group_masks`): coupled
            channels (residual Adds, Concatenate, depthwise, Flatten) are cut
            at the same index in every member, so `compact` can remove them.

    Returns:
        {weight_path: mask}: a 0/1 float32 NumPy array per planned kernel, the
        mask of its projection (1 = kept). Feed it to `MaskedWrapper`. With a
        graph, also the masks of the other kernels a group cut touches.

    Raises:
        TypeError: `plan` is not a PruningPlan or a dict.
        ValueError: the plan does not fit the model (a missing layer, a layer
            without a kernel, a sparsity that means nothing for a kernel).

    Example:

        masks = hard_prune(model, PruningPlan.uniform(model, "filter:0.5"))
        model.compile(optimizer=MaskedWrapper(keras.optimizers.Adam(), masks), ...)
    """
    masks = projection_masks(model, plan, graph=graph)
    apply_masks(model, masks)
    return masks


def projection_masks(model, plan, graph=None) -> dict[str, np.ndarray]:
    """The masks `hard_prune(model, plan, graph)` applies, without applying them.

    Args and Returns: as `hard_prune`; the model is not changed.

    Example:

        masks = projection_masks(model, {"conv2": "filter:0.5"})
        apply_masks(model, masks)   # what hard_prune does
    """
    if graph is not None and graph is not False:
        from keras_admm import graph as graph_lib

        if graph is True:
            graph = graph_lib.DependencyGraph.from_model(model)
        return graph_lib.group_masks(model, plan, graph=graph)
    masks = {}
    for target, variable in planned_kernels(model, plan):
        value = keras.ops.convert_to_numpy(variable)
        masks[variable.path] = keras.ops.convert_to_numpy(
            target.sparsity.mask(value, target.layout)
        ).astype("float32")
    return masks


def masks_from_model(model, plan=None) -> dict[str, np.ndarray]:
    """0/1 float32 masks of the current non-zero pattern of the kernels.

    Args:
        model: a built Keras model.
        plan: the PruningPlan whose kernels to read; None reads the kernel of
            every prunable layer.

    Returns:
        {weight_path: mask} with mask = (kernel != 0) as float32.

    Raises:
        ValueError: the plan does not fit the model.

    Example:

        masks = masks_from_model(keras.saving.load_model("pruned.keras"))
    """
    if plan is None:
        variables = [
            layers_registry.kernel_variable(layer) for layer in prunable_layers(model)
        ]
    else:
        variables = [variable for _, variable in planned_kernels(model, plan)]
    return {
        variable.path: (keras.ops.convert_to_numpy(variable) != 0).astype("float32")
        for variable in variables
    }


def apply_masks(model, masks) -> None:
    """Multiply model weights by 0/1 masks in place: W <- W * mask.

    All masks are checked before any weight is written.

    Args:
        model: a built Keras model.
        masks: {weight_path: 0/1 array of the variable's shape}, e.g. from
            `hard_prune` or `masks_from_model`.

    Raises:
        ValueError: a path is not a variable of `model`, or a mask's shape
            differs from its variable's.

    Example:

        masks = hard_prune(pruned_model, plan)
        apply_masks(other_model, masks)   # the same zeros in another copy
    """
    checked = []
    for path, mask in masks.items():
        variable = find_variable(model.weights, path)
        if variable is None:
            raise ValueError(
                f"Mask for '{path}': no such variable in model '{model.name}'. "
                "Mask keys are variable paths (`variable.path`), as returned by "
                "hard_prune(model, plan)."
            )
        mask = np.asarray(mask)
        if mask.shape != tuple(variable.shape):
            raise ValueError(
                f"Mask for '{path}' has shape {mask.shape}, but the variable has "
                f"shape {tuple(variable.shape)}. Recompute the masks for this model."
            )
        checked.append((variable, mask))
    for variable, mask in checked:
        value = keras.ops.convert_to_numpy(variable)
        variable.assign(value * mask.astype(value.dtype))


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


def _positions(layer, which, spatial):
    """The number of positions (product of non-batch, non-channel dims)."""
    shape = _layer_shape(layer, which)
    if spatial and getattr(layer, "data_format", "channels_last") == "channels_first":
        dims = shape[2:]
    else:
        dims = shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(
            f"Cannot count FLOPs of layer '{layer.name}' ({type(layer).__name__}): "
            f"its {which} shape {shape} has unknown dimensions. Build the model with "
            "a fixed input shape (e.g. keras.Input((32, 32, 3))), or pass "
            "flops=False to sparsity_report."
        )
    return math.prod(dims)


def _layer_flops(layer, op, kernel_counts):
    """2 x multiply-accumulates of the layer's kernels, given their weight counts.

    `kernel_counts` is the number of kernel weights that are executed (all of
    them for "before", the non-zero ones for "after"); for separable layers the
    depthwise and pointwise counts are summed.
    """
    if op == "dense":
        positions = _positions(layer, "input", spatial=False)
    elif op in ("conv", "depthwise", "separable"):
        positions = _positions(layer, "output", spatial=True)
    elif op == "conv_transpose":
        # Every input position scatters its channels through the whole kernel.
        positions = _positions(layer, "input", spatial=True)
    else:
        return None
    return 2 * positions * kernel_counts


def _ratio(before, after):
    if not before or not after:
        return None
    return before / after


def sparsity_report(model, plan=None, flops=True) -> SparsityReport:
    """Per-layer sparsity, parameters and FLOPs of every prunable layer.

    One row per layer with a registered kernel (see `layers_registry`), in model
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
        kernel_spec = layers_registry.kernel_spec(layer)
        kernel = keras.ops.convert_to_numpy(layers_registry.kernel_variable(layer))
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
            flops_before = _layer_flops(layer, kernel_spec.op, params_before)
            flops_after = _layer_flops(layer, kernel_spec.op, params_after)
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
