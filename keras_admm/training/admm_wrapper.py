"""ADMMWrapper: trains towards a structured-sparse model with ADMM inside fit().

Example:

    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    model.compile(
        optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(1e-3), plan),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=5, callbacks=[keras_admm.ADMMLogger()])
    masks = keras_admm.hard_prune(model, plan)
"""

from __future__ import annotations

import keras
from keras import ops
from keras.src.utils import tracking

from keras_admm.backends import num_replicas
from keras_admm.plan import PruningPlan
from keras_admm.training import admm
from keras_admm.training.wrapper import OptimizerWrapper, match_variables

__all__ = ["ADMMWrapper"]


@keras.saving.register_keras_serializable(package="keras_admm")
class ADMMWrapper(OptimizerWrapper):
    """Trains towards a structured-sparse model with ADMM.

    Each step adds rho * (W - Z + U) to the gradient of every planned kernel W,
    then runs the inner optimizer. Every `admm_steps` steps it updates
    Z <- Proj(W + U), U <- U + W - Z and rho <- min(rho * rho_multiplier,
    rho_max). Z starts at Proj(W) and U at 0 at the first step, from the weights
    training starts from.
    Z, U, rho and the step count are optimizer variables, so `model.save()` /
    `keras.saving.load_model()` resume training exactly.

    Args:
        inner_optimizer: the optimizer that takes the steps, e.g. Adam(1e-3).
        plan: a resolved PruningPlan (`PruningPlan.uniform(model, ...)` or
            `plan.resolve(model)`).
        rho: initial penalty weight (> 0). Larger pulls W to Z faster.
        rho_multiplier: rho grows by this factor at every Z/U update (>= 1).
        rho_max: upper bound of rho (>= rho).
        admm_steps: optimizer steps between Z/U updates (>= 1); about one
            epoch's worth of steps is a good start.
        rescale_dual: scale U by rho_old / rho_new whenever rho grows, which
            keeps the unscaled dual rho * U fixed (standard scaled ADMM with a
            varying penalty). Off by default, as in the StructADMM code.
        projection: optional joint projection of all planned kernels, an
            object with `project({weight_path: W + U}, targets) -> {path: Z}`
            and `get_config()`, e.g. `keras_admm.GroupProjection
            .from_plan(model, plan)` so that coupled channels (residual Adds,
            Concatenate, depthwise) are cut at the same index everywhere.
            None projects each kernel on its own sparsity set.
        name: optional name.

    Example:

        plan = keras_admm.PruningPlan.uniform(model, "filter_shape:0.5:0.5")
        model.compile(optimizer=keras_admm.ADMMWrapper(
            keras.optimizers.Adam(1e-3), plan, rho=1e-3, admm_steps=200),
            loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=10, callbacks=[keras_admm.ADMMLogger()])
    """

    def __init__(
        self,
        inner_optimizer,
        plan,
        rho=1e-3,
        rho_multiplier=1.3,
        rho_max=1.0,
        admm_steps=100,
        rescale_dual=False,
        projection=None,
        name=None,
        **kwargs,
    ):
        if isinstance(projection, dict):
            projection = keras.saving.deserialize_keras_object(projection)
        if projection is not None and not callable(
            getattr(projection, "project", None)
        ):
            raise TypeError(
                f"ADMMWrapper `projection` must have a project(values, targets) "
                f"method, got {projection!r}. Use "
                "keras_admm.GroupProjection.from_plan(model, plan)."
            )
        if isinstance(plan, dict):
            plan = PruningPlan.from_dict(plan)
        if not isinstance(plan, PruningPlan):
            raise TypeError(
                f"ADMMWrapper needs a PruningPlan, got {plan!r}. Build one with "
                "keras_admm.PruningPlan.uniform(model, 'filter:0.5')."
            )
        if not plan.resolved:
            raise ValueError(
                "ADMMWrapper needs a plan resolved against the model, so it knows "
                "each kernel's variable and layout. Pass plan.resolve(model) (or "
                "a plan from PruningPlan.uniform(model, ...))."
            )
        if callable(getattr(projection, "check_plan", None)):
            projection.check_plan(plan, "ADMMWrapper")
        rho, rho_multiplier, rho_max, admm_steps = admm.check_settings(
            "ADMMWrapper", rho, rho_multiplier, rho_max, admm_steps
        )
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.plan = plan
        self.rho = rho
        self.rho_multiplier = rho_multiplier
        self.rho_max = rho_max
        self.admm_steps = admm_steps
        self.rescale_dual = bool(rescale_dual)
        self.projection = projection

    def _project(self, values):
        """{weight_path: Proj(value)} for every planned kernel."""
        if self.projection is not None:
            return self.projection.project(values, self.plan.targets)
        return admm.project_each(self.plan.targets)(values)

    @tracking.no_automatic_dependency_tracking
    def _build_own(self, var_list):
        targets = self.plan.targets
        matched = match_variables(
            [t.weight_path for t in targets], var_list, "ADMMWrapper"
        )
        self._admm = []
        self._admm_by_key = {}
        for target in targets:
            weight = matched[target.weight_path]
            if tuple(weight.shape) != tuple(target.kernel_shape):
                raise ValueError(
                    f"ADMMWrapper's plan expects layer '{target.layer_name}' to have "
                    f"a kernel of shape {target.kernel_shape}, but its variable "
                    f"'{weight.path}' has shape {tuple(weight.shape)}. Resolve the "
                    "plan again on this model."
                )
            state = admm.new_state(
                target,
                weight,
                # Z = Proj(W) is set at the first step (see `_before_step`):
                # constant initial values keep the variables creatable inside
                # a tf.function (a custom loop's first step) on every strategy.
                z=self._state_variable(weight, "admm_z", "zeros"),
                u=self._state_variable(weight, "admm_u", "zeros"),
                rho=self._scalar_variable(
                    f"{target.layer_name.replace('/', '_')}_admm_rho", self.rho
                ),
            )
            self._admm.append(state)
            self._admm_by_key[self._var_key(weight)] = state
        # 0 until the first step: then Z = Proj(W) of the weights the step
        # starts from. A model saved before its first step and loaded again
        # builds this optimizer before its weights are loaded; the first step
        # then starts ADMM from the loaded weights, not the initial ones.
        self._admm_started = self._scalar_variable("admm_started", 0.0)

    def admm_state(self) -> list[dict]:
        """Per planned layer: {"layer_name", "weight", "z", "u", "rho", "target"}."""
        if not self.built:
            raise ValueError(
                "ADMMWrapper is not built yet: its state exists after the first "
                "training step (or optimizer.build(model.trainable_variables))."
            )
        return list(self._admm)

    def residuals(self) -> dict[str, float]:
        """Primal residual ||W - Z|| / ||W|| per planned layer."""
        return admm.primal_residuals(self.admm_state())

    def _transform_grads(self, grads, variables):
        replicas = num_replicas()
        out = []
        for grad, variable in zip(grads, variables):
            state = self._admm_by_key.get(self._var_key(variable))
            if grad is None or state is None:
                out.append(grad)
                continue
            penalty = admm.penalty_gradient(state, variable, grad.dtype)
            if replicas != 1:  # the inner optimizer sums the replicas' gradients
                penalty = penalty / replicas
            out.append(ops.add(grad, penalty))
        return out

    def _before_step(self):
        """At the first step: Z = Proj(W), U = 0 from the weights as they are now."""
        first = ops.equal(self._admm_started, 0.0)

        def start():
            projected = self._project(
                {
                    s["target"].weight_path: ops.convert_to_tensor(s["weight"])
                    for s in self._admm
                }
            )
            return [
                (
                    ops.cast(projected[s["target"].weight_path], s["z"].dtype),
                    ops.zeros(s["u"].shape, s["u"].dtype),
                    ops.convert_to_tensor(s["rho"]),
                )
                for s in self._admm
            ]

        admm.update_z_u_rho_if(first, self._admm, start)
        self._admm_started.assign(1.0)

    def _after_step(self):
        due = ops.equal(ops.mod(self.iterations, self.admm_steps), 0)
        admm.update_z_u_rho_if(
            due,
            self._admm,
            lambda: admm.next_z_u_rho(
                self._admm,
                self._project,
                self.rho_multiplier,
                self.rho_max,
                self.rescale_dual,
            ),
        )

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "plan": self.plan.to_dict(),
            "rho": self.rho,
            "rho_multiplier": self.rho_multiplier,
            "rho_max": self.rho_max,
            "admm_steps": self.admm_steps,
            "rescale_dual": self.rescale_dual,
            "projection": None
            if self.projection is None
            else keras.saving.serialize_keras_object(self.projection),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
