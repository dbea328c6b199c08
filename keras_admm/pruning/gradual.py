"""Gradual structured magnitude pruning (Zhu & Gupta 2017) as a Keras callback.

The planned kernels are re-pruned every `frequency` steps to their ratio on
tfmot's polynomial schedule (0 at step 0, the plan from `end_step` on), and the
pruned weights are held at zero after every step. On LeNet-5 it beat ADMM at
shape sparsity in the same budget (docs/COMPARISON.md).

Example:

    callback = GradualPruning(plan, end_step=5 * steps_per_epoch, graph=True)
    model.fit(x, y, epochs=5, callbacks=[callback])
    masks = hard_prune(model, plan, graph=True)   # then masked fine-tuning
"""

from __future__ import annotations

import keras
from keras import ops

from keras_admm import sparsity as sparsity_lib
from keras_admm.arguments import check_count, check_number
from keras_admm.backends import sync_model_state
from keras_admm.graph import check_graph_argument, graph_for
from keras_admm.plan import as_plan
from keras_admm.pruning.masks import projection_masks
from keras_admm.schedules import scheduled_sparsity

__all__ = ["GradualPruning"]


class GradualPruning(keras.callbacks.Callback):
    """Re-prunes on the polynomial schedule and keeps pruned weights at zero.

    Args:
        plan: the final PruningPlan (resolved against the model at train begin
            if it is not yet). N:M targets have no ratio to schedule.
        end_step: the step at which the plan's ratios are reached (> 0).
        frequency: steps between re-prunings (>= 1).
        power: the schedule's exponent (3 as in tfmot).
        graph: None for per-layer masks; True or the model's DependencyGraph
            for group-aware ones (coupled channels cut together).

    Attributes:
        masks: {weight_path: 0/1 mask} of the latest pruning.
        history: the steps at which it re-pruned.

    Raises:
        TypeError / ValueError: bad arguments (at construction), or an N:M
            target (at train begin).
    """

    def __init__(self, plan, end_step, frequency=100, power=3.0, graph=None):
        super().__init__()
        end_step = check_count(
            "GradualPruning",
            "end_step",
            end_step,
            "It is the step at which the plan's ratios are reached, e.g. "
            "end_step=5 * steps_per_epoch.",
        )
        frequency = check_count(
            "GradualPruning",
            "frequency",
            frequency,
            "It is the number of steps between re-prunings, e.g. frequency=100.",
        )
        power = check_number(
            "GradualPruning",
            "power",
            power,
            "It is the schedule's exponent: 3 as in Zhu & Gupta and tfmot.",
            above=0,
        )
        check_graph_argument(graph, "GradualPruning")
        self.plan = as_plan(plan, "GradualPruning")
        self.end_step = end_step
        self.frequency = frequency
        self.power = power
        self.graph = graph
        self.step = 0
        self.masks = {}
        self.history = []
        self._variables = None

    def _prune(self):
        model = self.model
        plan = self.plan.map_sparsity(
            lambda s: scheduled_sparsity(s, self.step, self.end_step, self.power)
        )
        self.masks = projection_masks(model, plan, graph=self.graph)
        self.history.append(self.step)

    def on_train_begin(self, logs=None):
        model = self.model
        if not self.plan.resolved:
            self.plan = self.plan.resolve(model)
        for target in self.plan.targets:
            if isinstance(target.sparsity, sparsity_lib.NM):
                raise ValueError(
                    f"GradualPruning cannot schedule layer '{target.layer_name}' "
                    f"to {target.sparsity}: N:M has no ratio. Use ADMM or "
                    "one_shot_prune for N:M."
                )
        self.graph = graph_for(model, self.graph, "GradualPruning")
        self._variables = {v.path: v for v in model.variables}
        self._prune()
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        sync_model_state(self.model)
        self.step += 1
        due = self.step % self.frequency == 0 or self.step == self.end_step
        if due and self.step <= self.end_step:
            self._prune()
        self._apply()

    def _apply(self):
        for path, mask in self.masks.items():
            variable = self._variables[path]
            value = ops.convert_to_numpy(variable)
            variable.assign(value * mask.astype(value.dtype))
