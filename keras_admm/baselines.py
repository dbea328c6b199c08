"""Baseline pruning methods next to ADMM, behind one interface, at equal budgets.

Every method starts from the same pretrained weights, trains on the same data
with the same optimizer (Adam) and batch size, and gets the same total number of
epochs, split into two phases with the same learning rates for every method:

    phase 1: `budget.prune_epochs` epochs at `budget.learning_rate`
    phase 2: `budget.finetune_epochs` epochs of masked fine-tuning at
             `budget.finetune_learning_rate` (pruned weights stay exactly 0)

What phase 1 does is what tells the methods apart:

| method        | phase 1                                           | pruned at      |
|---------------|---------------------------------------------------|----------------|
| admm          | progressive ADMMWrapper training towards the       | after 2/3 of   |
|               | sparsity sets, then masked training               | phase 1        |
| one_shot_l2   | masked fine-tuning (Li et al. 2017, L2 group norm) | start          |
| one_shot_l1   | masked fine-tuning (Li et al. 2017, L1 group norm) | start          |
| gradual       | training while groups are pruned on tfmot's        | during phase 1 |
|               | PolynomialDecay schedule (Zhu & Gupta 2017)        |                |
| group_lasso   | training with lambda * sum_g sqrt(|g|) ||W_g||_2   | end of phase 1 |
|               | added to the loss (SSL, Wen et al. 2016)           |                |

ADMM's share of phase 1, its stages and rho are `MethodOptions`; the defaults
(4 stages over 2/3 of phase 1, rho 0.3) were chosen on single-seed probes at
LeNet-5 filter and shape 16x (docs/COMPARISON.md). With `MethodOptions.graph`
(the default) every method uses the group-aware masks of `keras_admm.graph`.

"Pruned at the end of phase 1" means `hard_prune`: the exact projection onto the
plan's sparsity sets (keep the groups with the largest L2 norm). Every method
therefore ends with exactly the plan's kept-group counts. `run_method` runs one
method; `plan_for_flops_reduction` derives per-layer ratios that cut a model's
conv FLOPs by a chosen factor, so the methods can be compared along that axis.

Example:

    from keras_admm import baselines, models
    from keras_admm.datasets import load_mnist

    data = load_mnist()
    model = models.lenet5()
    ...  # train it densely
    level = baselines.plan_for_flops_reduction(model, "filter_shape", 8.0)
    budget = baselines.TrainingBudget(epochs=12, finetune_epochs=4)
    for method in baselines.METHODS:
        result = baselines.run_method(method, models.lenet5,
                                      model.get_weights(), data, level.plan, budget)
        print(method, result.accuracy)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time

import keras
import numpy as np
from keras import ops

from keras_admm import layers_registry
from keras_admm import sparsity as sparsity_lib
from keras_admm.masks import (
    apply_masks,
    hard_prune,
    planned_kernels,
    projection_masks,
    sparsity_report,
)
from keras_admm.optimizers import MaskedWrapper
from keras_admm.plan import PruningPlan, all_layers
from keras_admm.progressive import progressive_admm
from keras_admm.schedules import polynomial_sparsity, scheduled_sparsity, stage_plan

__all__ = [
    "METHODS",
    "LEVEL_TYPES",
    "TrainingBudget",
    "MethodOptions",
    "MethodResult",
    "LevelPlan",
    "GroupLasso",
    "budget_split",
    "group_lasso_penalty",
    "norm_masks",
    "plan_for_flops_reduction",
    "polynomial_sparsity",
    "run_method",
    "scheduled_sparsity",
    "stage_plan",
]

METHODS = ("admm", "one_shot_l2", "one_shot_l1", "gradual", "group_lasso")
LEVEL_TYPES = ("filter", "shape", "filter_shape", "unstructured", "channel")
_CONV_OPS = ("conv", "conv_transpose", "depthwise", "separable")


# ------------------------------------------------------------------ budgets
@dataclasses.dataclass(frozen=True)
class TrainingBudget:
    """The training every method gets after the shared pretrained model.

    Attributes:
        epochs: total epochs per method (phase 1 + phase 2).
        finetune_epochs: the last epochs, masked fine-tuning (phase 2).
        batch_size: batch size of every phase.
        learning_rate: Adam learning rate of phase 1.
        finetune_learning_rate: Adam learning rate of phase 2.
    """

    epochs: int = 12
    finetune_epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 3e-4

    def __post_init__(self):
        for name in ("epochs", "finetune_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"TrainingBudget.{name} must be an int, got {value!r}.")
        if self.epochs < 1:
            raise ValueError(
                f"TrainingBudget.epochs must be >= 1, got {self.epochs}: every "
                "method needs at least one epoch after the pretrained model."
            )
        if not 0 <= self.finetune_epochs <= self.epochs:
            raise ValueError(
                f"TrainingBudget.finetune_epochs must be in [0, epochs={self.epochs}]"
                f", got {self.finetune_epochs}. It is the part of the budget spent "
                "on masked fine-tuning, e.g. a third of it."
            )
        if self.batch_size < 1:
            raise ValueError(f"TrainingBudget.batch_size must be >= 1, got {self}.")
        for name in ("learning_rate", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"TrainingBudget.{name} must be > 0, got {getattr(self, name)!r}."
                )

    @property
    def prune_epochs(self) -> int:
        """Epochs of phase 1 (epochs - finetune_epochs)."""
        return self.epochs - self.finetune_epochs


def budget_split(method: str, budget: TrainingBudget) -> list[dict]:
    """How `method` spends `budget`: one dict per phase, in order.

    Each dict has "phase" (what is trained), "epochs" and "learning_rate". The
    total of "epochs" is `budget.epochs` for every method.

    Raises:
        ValueError: unknown method.

    >>> [p["epochs"] for p in budget_split("admm", TrainingBudget(12, 4))]
    [8, 4]
    """
    _check_method(method)
    first = {
        "admm": "progressive ADMM (W-, Z-, U-steps), hard pruning, masked training",
        "one_shot_l2": "one-shot L2-norm pruning, then masked fine-tuning",
        "one_shot_l1": "one-shot L1-norm pruning, then masked fine-tuning",
        "gradual": "gradual structured pruning on the polynomial schedule",
        "group_lasso": "training with the group-lasso penalty, then thresholding",
    }[method]
    return [
        {
            "phase": first,
            "epochs": budget.prune_epochs,
            "learning_rate": budget.learning_rate,
        },
        {
            "phase": "masked fine-tuning",
            "epochs": budget.finetune_epochs,
            "learning_rate": budget.finetune_learning_rate,
        },
    ]


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Method-specific settings (the same for every level and sparsity type).

    Attributes:
        rho: ADMM initial penalty (each stage starts again from it).
        rho_multiplier: ADMM rho growth per Z/U update.
        rescale_dual: ADMM scales U by rho_old / rho_new when rho grows.
        admm_updates: Z/U updates asked for over ADMM's epochs, split evenly
            between the stages; a stage updates every ceil(steps / asked)
            steps, so it may run one fewer.
        admm_stages: progressive ADMM (Ye et al. 2018): the ADMM epochs are
            split into this many stages, and stage s of S projects onto the
            plan's ratios on the polynomial schedule at s / S (power
            `gradual_power`), so the last stage targets the plan itself. Each
            stage starts a fresh ADMMWrapper (Z = Proj(W), U = 0). 1 is plain
            ADMM. N:M targets keep their pattern in every stage.
        admm_fraction: the share of phase 1 spent in ADMM (at least one
            epoch); the rest of phase 1 is masked training at phase 1's
            learning rate after the hard prune.
        graph: group-aware masks and projections for every method
            (`hard_prune(..., graph=True)`, ADMM's `GroupProjection`): coupled
            channels are cut together and a kernel's own budget goes to the
            inputs that stay live.
        gradual_power: exponent of the polynomial schedule (tfmot: 3).
        gradual_updates: mask updates spread evenly over gradual's phase 1
            (tfmot's `frequency` = phase-1 steps / this).
        group_lasso_strength: lambda of the group-lasso penalty.
        from_logits: the model outputs logits (True) or probabilities.
    """

    rho: float = 0.3
    rho_multiplier: float = 1.3
    rescale_dual: bool = False
    admm_updates: int = 16
    admm_stages: int = 4
    admm_fraction: float = 2 / 3
    graph: bool = True
    gradual_power: float = 3.0
    gradual_updates: int = 16
    group_lasso_strength: float = 1e-4
    from_logits: bool = True

    def __post_init__(self):
        for name in ("admm_updates", "admm_stages", "gradual_updates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"MethodOptions.{name} must be an int, got {value!r}.")
            if value < 1:
                raise ValueError(f"MethodOptions.{name} must be >= 1, got {value}.")
        if not 0.0 < self.admm_fraction <= 1.0:
            raise ValueError(
                f"MethodOptions.admm_fraction must be in (0, 1], got "
                f"{self.admm_fraction!r}: it is the share of phase 1 spent in "
                "ADMM, e.g. 2/3."
            )

    def admm_epochs(self, prune_epochs) -> list[int]:
        """Epochs of each ADMM stage within `prune_epochs` (sum <= it).

        >>> MethodOptions(admm_stages=4, admm_fraction=2 / 3).admm_epochs(6)
        [1, 1, 1, 1]
        >>> MethodOptions(admm_stages=2, admm_fraction=1.0).admm_epochs(5)
        [3, 2]
        """
        if prune_epochs <= 0:
            return []
        total = min(prune_epochs, max(1, int(prune_epochs * self.admm_fraction + 0.5)))
        stages = min(self.admm_stages, total)
        return [
            total // stages + (1 if i < total % stages else 0) for i in range(stages)
        ]


# -------------------------------------------------------------- group lasso
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


# ------------------------------------------------------------------- masks
def norm_masks(model, plan, norm="l2", graph=None) -> dict[str, np.ndarray]:
    """Prune the planned kernels in place by group norm; return their 0/1 masks.

    `norm="l2"` is `hard_prune` (the Euclidean projection). `norm="l1"` keeps
    the groups with the largest L1 norm instead (Li et al. 2017): it projects
    sqrt(|W|), whose group L2 norm is the square root of W's group L1 norm, so
    the same exact top-k (and FilterShape's alternating search) rank by L1.

    Args:
        model: a built Keras model.
        plan: a PruningPlan or dict of rules.
        norm: "l2" or "l1".
        graph: as `hard_prune`: None for per-layer masks, True or a
            DependencyGraph for group-aware ones (the groups are ranked by the
            same norm).

    Returns:
        {weight_path: 0/1 float32 mask}, like `hard_prune`.

    Raises:
        ValueError: unknown norm, or the plan does not fit the model.
    """
    if norm == "l2":
        return hard_prune(model, plan, graph=graph)
    if norm != "l1":
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}.")
    # Rank by L1: project sqrt(|W|) in place of W, then restore W and cut it.
    saved = [
        (variable, ops.convert_to_numpy(variable))
        for _, variable in planned_kernels(model, plan)
    ]
    try:
        for variable, value in saved:
            variable.assign(
                np.sqrt(np.abs(value.astype("float32"))).astype(value.dtype)
            )
        masks = projection_masks(model, plan, graph=graph)
    finally:
        for variable, value in saved:
            variable.assign(value)
    apply_masks(model, masks)
    return masks


# ------------------------------------------------------------ level plans
@dataclasses.dataclass
class LevelPlan:
    """A plan whose per-layer ratios cut the conv FLOPs by about `level`.

    Attributes:
        plan: the resolved PruningPlan (conv layers + any extra rules).
        kind: the sparsity type of the conv layers.
        level: the requested conv FLOPs reduction.
        expected_conv_flops_reduction: the reduction the kept counts give,
            as `sparsity_report` counts it (>= level).
        layers: per conv layer: name, flops_before, keep_fraction, kept and
            total counts per unit ("groups", or "filters"/"columns").
    """

    plan: PruningPlan
    kind: str
    level: float
    expected_conv_flops_reduction: float
    layers: list

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "level": self.level,
            "expected_conv_flops_reduction": self.expected_conv_flops_reduction,
            "layers": self.layers,
            "plan": {t.layer_name: str(t.sparsity) for t in self.plan.targets},
        }


def _groups(shape, layout, kind):
    """(rows, columns) or (groups,) counts of a kernel for `kind`."""
    rank = len(shape)
    layout = layout.normalized(rank)
    size = math.prod(shape)
    rows = math.prod(shape[a] for a in layout.filter_axes)
    channels = math.prod(shape[a] for a in layout.channel_axes)
    return {
        "filter": (rows,),
        "shape": (size // rows,),
        "channel": (channels,),
        "unstructured": (size,),
        "filter_shape": (rows, size // rows),
    }[kind]


def _round_counts(kind, totals, keep):
    if kind == "filter_shape":
        rows, cols = totals
        r = min(rows, max(1, round(math.sqrt(keep) * rows)))
        c = min(cols, max(1, round(keep * rows * cols / r)))
        return [r, c]
    return [min(totals[0], max(1, round(keep * totals[0])))]


def _fraction(counts, totals):
    return math.prod(c / t for c, t in zip(counts, totals))


def plan_for_flops_reduction(
    model, kind, level, extra_rules=(), first_layer_exponent=0.5
) -> LevelPlan:
    """Per-layer ratios of one sparsity type that cut conv FLOPs by `level`.

    Every conv-type layer is pruned. The first keeps a fraction k^e of its
    weights (e = `first_layer_exponent`: it is cheap and sensitive, so it is
    pruned less), every other conv layer keeps k, and k is solved so that the
    conv FLOPs after are 1/level of before. The fractions become whole group
    counts (FilterShape: sqrt of the layer's fraction of filters, the rest in
    columns), and while rounding leaves the reduction below `level` the layer
    with the most remaining FLOPs gives up one more group. FLOPs are counted as
    `sparsity_report` does (kernel weights executed x output positions), so the
    report of a model pruned to this plan shows `expected_conv_flops_reduction`.

    Args:
        model: a built model with known shapes (Sequential or functional).
        kind: "filter", "shape", "filter_shape", "unstructured" or "channel".
        level: the conv FLOPs reduction, > 1 (e.g. 8.0 for 8x fewer).
        extra_rules: (layer name, sparsity) pairs for non-conv layers (e.g.
            [("fc1", "unstructured:0.9")]), the same at every level.
        first_layer_exponent: e above, in [0, 1]; 1 treats all layers alike.

    Returns:
        A LevelPlan.

    Raises:
        ValueError: unknown kind, level <= 1, a level no group count reaches,
            a model without conv layers, or an extra rule for a conv layer.

    Example:

        level = plan_for_flops_reduction(models.lenet5(), "filter", 4.0,
                                         extra_rules=[("fc1", "unstructured:0.9")])
        level.plan.targets, level.expected_conv_flops_reduction   # ..., 4.0x
    """
    if kind not in LEVEL_TYPES:
        raise ValueError(
            f"Unknown sparsity type {kind!r} for a FLOPs level. Use one of "
            f"{', '.join(LEVEL_TYPES)}."
        )
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or level <= 1:
        raise ValueError(
            f"The conv FLOPs reduction level must be a number > 1, got {level!r} "
            "(e.g. 4.0 for 4x fewer conv FLOPs)."
        )
    if not 0.0 <= first_layer_exponent <= 1.0:
        raise ValueError(
            f"first_layer_exponent must be in [0, 1], got {first_layer_exponent!r}."
        )
    rows = [r for r in sparsity_report(model).rows if r["op"] in _CONV_OPS]
    if not rows:
        raise ValueError(
            f"Model '{model.name}' has no conv layer, so there are no conv FLOPs to "
            "reduce. Pass a model with Conv layers."
        )
    conv_names = {r["layer"] for r in rows}
    for name, _ in extra_rules:
        if name in conv_names:
            raise ValueError(
                f"extra_rules names conv layer '{name}', whose sparsity the level "
                "sets. Give extra rules for non-conv (e.g. Dense) layers only."
            )
    specs = {layer.name: layer for layer in all_layers(model)}
    flops = [r["flops_before"] for r in rows]
    totals = [
        _groups(
            tuple(r["kernel_shape"]),
            layers_registry.kernel_spec(specs[r["layer"]]).layout,
            kind,
        )
        for r in rows
    ]
    exponents = [first_layer_exponent] + [1.0] * (len(rows) - 1)
    budget = sum(flops) / level

    def after(k):
        return sum(f * k**e for f, e in zip(flops, exponents))

    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if after(mid) < budget else (low, mid)
    keep = [low**e for e in exponents]
    counts = [_round_counts(kind, t, k) for t, k in zip(totals, keep)]

    def cost(i):
        return flops[i] * _fraction(counts[i], totals[i])

    def total():
        return sum(cost(i) for i in range(len(rows)))

    def shrink(i):
        """Drop one group of layer i (FilterShape: a column, else a filter)."""
        if counts[i][-1] > 1:
            counts[i][-1] -= 1
            return True
        if counts[i][0] > 1:
            counts[i][0] -= 1
            return True
        return False

    while total() > budget * (1 + 1e-12):
        # Prefer the single cut that reaches the level with the least overshoot,
        # else cut the layer with the most FLOPs left.
        reaching = []
        for i in range(len(rows)):
            saved = [list(c) for c in counts]
            if shrink(i) and total() <= budget * (1 + 1e-12):
                reaching.append((total(), i))
            counts[:] = saved
        if reaching:
            shrink(max(reaching)[1])
            continue
        if not any(shrink(i) for i in sorted(range(len(rows)), key=cost)[::-1]):
            best = sum(flops) / total()
            raise ValueError(
                f"A {kind} plan cannot cut the conv FLOPs of '{model.name}' by "
                f"{level}x: keeping one group per layer gives {best:.2f}x. Choose "
                "a lower level or a finer sparsity type (e.g. unstructured)."
            )
    rules, layers = [], []
    for row, total, count, k in zip(rows, totals, counts, keep):
        removed = [(t - c) / t for t, c in zip(total, count)]
        if kind == "filter_shape":
            spec = sparsity_lib.FilterShape(*removed)
            units = {"filters": [count[0], total[0]], "columns": [count[1], total[1]]}
        else:
            spec = sparsity_lib.parse(f"{kind}:{removed[0]!r}")
            units = {"groups": [count[0], total[0]]}
        rules.append((row["layer"], spec))
        layers.append(
            {
                "layer": row["layer"],
                "flops_before": row["flops_before"],
                "keep_fraction": _fraction(count, total),
                "solved_keep_fraction": k,
                "kept": {u: v[0] for u, v in units.items()},
                "total": {u: v[1] for u, v in units.items()},
                "sparsity": str(spec),
            }
        )
    plan = PruningPlan(rules + [(n, s) for n, s in extra_rules]).resolve(model)
    expected = sum(flops) / sum(cost(i) for i in range(len(rows)))
    return LevelPlan(plan, kind, float(level), expected, layers)


# ---------------------------------------------------------------- running
@dataclasses.dataclass
class MethodResult:
    """What `run_method` returns.

    Attributes:
        method: the method name.
        model: the trained, pruned model (planned kernels hold exact zeros).
        masks: {weight_path: 0/1 mask} of the final pruning.
        plan: the plan resolved against `model`.
        accuracy: held-out accuracy (None when the data has no test split).
        phases: `budget_split(method, budget)` with "seconds" added per phase,
            and for phase 1 "accuracy_at_end": the held-out accuracy at the
            end of phase 1 with the final masks applied (before phase 2).
        seconds: wall time of the method.
    """

    method: str
    model: keras.Model
    masks: dict
    plan: PruningPlan
    accuracy: float | None
    phases: list
    seconds: float


def _check_method(method):
    if method not in METHODS:
        raise ValueError(
            f"Unknown pruning method {method!r}. Use one of {', '.join(METHODS)}."
        )


def _loss_and_metrics(options):
    """The compile() loss and metrics every method trains with."""
    return {
        "loss": keras.losses.SparseCategoricalCrossentropy(
            from_logits=options.from_logits
        ),
        "metrics": ["accuracy"],
    }


def _compile(model, optimizer, options):
    model.compile(optimizer=optimizer, **_loss_and_metrics(options))


def _split(data):
    if isinstance(data, (tuple, list)):
        if len(data) == 2:
            return data[0], data[1], None, None
        if len(data) == 4:
            return tuple(data)
        raise ValueError(
            "data must be (x_train, y_train), (x_train, y_train, x_test, y_test) or "
            f"an object with x_train / y_train / x_test / y_test; got {len(data)} "
            "arrays."
        )
    return (
        data.x_train,
        data.y_train,
        getattr(data, "x_test", None),
        getattr(data, "y_test", None),
    )


def _accuracy(model, x, y):
    scores = model.evaluate(x, y, batch_size=1000, verbose=0, return_dict=True)
    return float(scores["accuracy"])


class _GradualPruning(keras.callbacks.Callback):
    """Re-prunes on the polynomial schedule and keeps pruned weights at zero.

    With a graph, each update is `group_masks` of the scheduled plan, so
    coupled channels are cut together (and their consumers' weights too).
    """

    def __init__(self, model, plan, end_step, frequency, power, graph=None):
        super().__init__()
        self.pruned_model = model
        self.plan = plan
        self.end_step = end_step
        self.frequency = frequency
        self.power = power
        self.graph = graph
        self.step = 0
        self.variables = {v.path: v for v in model.variables}
        self.masks = {}
        self.history = []

    def _prune(self):
        rules = [
            (
                t.layer_name,
                scheduled_sparsity(t.sparsity, self.step, self.end_step, self.power),
            )
            for t in self.plan.targets
        ]
        plan = PruningPlan(rules).resolve(self.pruned_model)
        self.masks = projection_masks(self.pruned_model, plan, graph=self.graph)
        self.history.append(self.step)

    def on_train_begin(self, logs=None):
        self._prune()
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        due = self.step % self.frequency == 0 or self.step == self.end_step
        if due and self.step <= self.end_step:
            self._prune()
        self._apply()

    def _apply(self):
        for path, mask in self.masks.items():
            variable = self.variables[path]
            value = ops.convert_to_numpy(variable)
            variable.assign(value * mask.astype(value.dtype))


def _run_admm(model, plan, data, options, phases, budget, graph, verbose):
    """Phase 1 of "admm": `progressive_admm` with the options' stages."""
    prune_epochs = phases[0]["epochs"]
    stage_epochs = options.admm_epochs(prune_epochs)
    if not stage_epochs:
        return hard_prune(model, plan, graph=graph)
    updates = max(1, options.admm_updates // len(stage_epochs))
    masked_epochs = prune_epochs - sum(stage_epochs)
    learning_rate = phases[0]["learning_rate"]
    result = progressive_admm(
        model,
        plan,
        data[0],
        data[1],
        optimizer=lambda: keras.optimizers.Adam(learning_rate),
        **_loss_and_metrics(options),
        stage_epochs=stage_epochs,
        masked_epochs=masked_epochs,
        rho=options.rho,
        rho_multiplier=options.rho_multiplier,
        updates_per_stage=updates,
        power=options.gradual_power,
        graph=graph,
        rescale_dual=options.rescale_dual,
        batch_size=budget.batch_size,
        verbose=verbose,
    )
    phases[0].update(
        admm_stage_epochs=stage_epochs,
        admm_updates_per_stage=updates,
        masked_epochs=masked_epochs,
    )
    return result.masks


def run_method(
    method,
    model_fn,
    pretrained_weights,
    data,
    plan,
    budget=None,
    options=None,
    seed=0,
    verbose=0,
) -> MethodResult:
    """Prune a pretrained model with one method, within a total epoch budget.

    Phase 1 and phase 2 are described in the module docstring and by
    `budget_split`. Every method ends with the plan's exact kept-group counts
    (a final `hard_prune`) and masked fine-tuning, so the results differ only
    by how phase 1 chose and prepared the kept weights.

    Args:
        method: one of METHODS: "admm", "one_shot_l2", "one_shot_l1",
            "gradual", "group_lasso".
        model_fn: builds a fresh model of the architecture (no arguments).
        pretrained_weights: `model.get_weights()` of the trained dense model.
        data: an object with x_train, y_train (and x_test, y_test for the
            accuracy), e.g. `keras_admm.datasets.load_mnist()`, or a tuple of
            2 or 4 arrays.
        plan: a PruningPlan (re-resolved against the fresh model), e.g.
            `plan_for_flops_reduction(...).plan`.
        budget: a TrainingBudget (default TrainingBudget()).
        options: MethodOptions (default MethodOptions()).
        seed: seeds Python, NumPy and the backend before training.
        verbose: Keras fit verbosity.

    Returns:
        A MethodResult with the pruned model, its masks and held-out accuracy.

    Raises:
        ValueError: unknown method, weights that do not fit the model, a plan
            that does not fit it, or a sparsity the method cannot handle (N:M
            for gradual and group_lasso).

    Example:

        result = run_method("gradual", models.lenet5, dense.get_weights(), data,
                            PruningPlan({"conv2": "filter:0.8"}),
                            TrainingBudget(epochs=12, finetune_epochs=4))
        print(result.accuracy, sparsity_report(result.model, result.plan))
    """
    _check_method(method)
    budget = budget or TrainingBudget()
    options = options or MethodOptions()
    if not isinstance(plan, PruningPlan):
        raise TypeError(
            f"run_method needs a keras_admm.PruningPlan, got {type(plan).__name__}. "
            "Use plan_for_flops_reduction(...).plan or PruningPlan({...})."
        )
    keras.utils.set_random_seed(seed)
    start = time.time()
    model = model_fn()
    try:
        model.set_weights(pretrained_weights)
    except ValueError as error:
        raise ValueError(
            f"The pretrained weights do not fit the model from model_fn ({error}). "
            "Pass model.get_weights() of a model built by the same model_fn."
        ) from None
    plan = PruningPlan.from_dict({"rules": plan.to_dict()["rules"]}).resolve(model)
    x_train, y_train, x_test, y_test = _split(data)
    pairs = planned_kernels(model, plan)
    if method in ("gradual", "group_lasso"):
        for target, _ in pairs:
            if isinstance(target.sparsity, sparsity_lib.NM):
                raise ValueError(
                    f"Method {method!r} cannot prune layer '{target.layer_name}' to "
                    f"{target.sparsity}: N:M has no group ratio or group norms. Use "
                    "'admm' or 'one_shot_l2' for N:M."
                )
    graph = None
    if options.graph:
        from keras_admm.graph import DependencyGraph

        graph = DependencyGraph.from_model(model)
    steps_per_epoch = math.ceil(len(x_train) / budget.batch_size)
    phase1_steps = steps_per_epoch * budget.prune_epochs
    phases = budget_split(method, budget)

    def fit(epochs, callbacks=()):
        if epochs:
            model.fit(
                x_train,
                y_train,
                batch_size=budget.batch_size,
                epochs=epochs,
                verbose=verbose,
                callbacks=list(callbacks),
            )

    def adam(phase):
        return keras.optimizers.Adam(phases[phase]["learning_rate"])

    tick = time.time()
    if method == "admm":
        masks = _run_admm(
            model, plan, (x_train, y_train), options, phases, budget, graph, verbose
        )
    elif method in ("one_shot_l2", "one_shot_l1"):
        masks = norm_masks(model, plan, norm=method[-2:], graph=graph)
        _compile(model, MaskedWrapper(adam(0), masks), options)
        fit(budget.prune_epochs)
    elif method == "gradual":
        if budget.prune_epochs:
            frequency = max(1, phase1_steps // options.gradual_updates)
            callback = _GradualPruning(
                model, plan, phase1_steps, frequency, options.gradual_power, graph
            )
            _compile(model, adam(0), options)
            fit(budget.prune_epochs, [callback])
            phases[0]["frequency"] = frequency
            phases[0]["mask_updates"] = len(callback.history)
        masks = hard_prune(model, plan, graph=graph)
    else:  # group_lasso
        if budget.prune_epochs:
            for target, variable in pairs:
                variable.regularizer = GroupLasso(
                    options.group_lasso_strength, target.sparsity, target.layout
                )
            try:
                _compile(model, adam(0), options)
                fit(budget.prune_epochs)
            finally:
                for _, variable in pairs:
                    variable.regularizer = None
        masks = hard_prune(model, plan, graph=graph)
    phases[0]["seconds"] = round(time.time() - tick, 2)
    if x_test is not None:
        phases[0]["accuracy_at_end"] = _accuracy(model, x_test, y_test)

    tick = time.time()
    _compile(model, MaskedWrapper(adam(1), masks), options)
    fit(budget.finetune_epochs)
    phases[1]["seconds"] = round(time.time() - tick, 2)

    accuracy = None if x_test is None else _accuracy(model, x_test, y_test)
    return MethodResult(
        method=method,
        model=model,
        masks=masks,
        plan=plan,
        accuracy=accuracy,
        phases=phases,
        seconds=round(time.time() - start, 2),
    )
