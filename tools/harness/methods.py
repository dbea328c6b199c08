"""The comparison harness: every pruning method behind one interface, equal budgets.

The methods themselves are public API of keras_admm (progressive_admm,
GradualPruning, one_shot_prune, GroupLasso); this module only gives them the same
data, optimizer, batch size and epoch budget.

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
(the default) every method uses the group-aware masks of `keras_admm.pruning`.

"Pruned at the end of phase 1" means `hard_prune`: the exact projection onto the
plan's sparsity sets (keep the groups with the largest L2 norm). Every method
therefore ends with exactly the plan's kept-group counts. `run_method` runs one
method; `plan_for_flops_reduction` derives per-layer ratios that cut a model's
conv FLOPs by a chosen factor, so the methods can be compared along that axis.

Example:

    from harness import methods      # tools/ on sys.path
    from keras_admm import models, plan_for_flops_reduction
    from keras_admm.datasets import load_mnist

    data = load_mnist()
    model = models.lenet5()
    ...  # train it densely
    level = plan_for_flops_reduction(model, "filter_shape", 8.0)
    budget = methods.TrainingBudget(epochs=12, finetune_epochs=4)
    for method in methods.METHODS:
        result = methods.run_method(method, models.lenet5,
                                    model.get_weights(), data, level.plan, budget)
        print(method, result.accuracy)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time

import keras

from keras_admm import sparsity as sparsity_lib
from keras_admm.graph import DependencyGraph
from keras_admm.plan import PruningPlan, planned_kernels
from keras_admm.pruning import hard_prune
from keras_admm.pruning.gradual import GradualPruning
from keras_admm.pruning.group_lasso import GroupLasso
from keras_admm.pruning.one_shot import one_shot_prune
from keras_admm.training import MaskedWrapper, progressive_admm

__all__ = [
    "METHODS",
    "TrainingBudget",
    "MethodOptions",
    "MethodResult",
    "budget_split",
    "run_method",
]

METHODS = ("admm", "one_shot_l2", "one_shot_l1", "gradual", "group_lasso")


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
            `keras_admm.plan_for_flops_reduction(...).plan`.
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
    plan = PruningPlan(plan._rule_pairs()).resolve(model)
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
        masks = one_shot_prune(model, plan, norm=method[-2:], graph=graph)
        _compile(model, MaskedWrapper(adam(0), masks), options)
        fit(budget.prune_epochs)
    elif method == "gradual":
        if budget.prune_epochs:
            frequency = max(1, phase1_steps // options.gradual_updates)
            callback = GradualPruning(
                plan, phase1_steps, frequency, options.gradual_power, graph
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
