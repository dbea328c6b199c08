"""Optimizer wrappers: ADMM training (ADMMWrapper) and masked retraining.

Both follow Keras' LossScaleOptimizer pattern: they wrap an inner optimizer,
keep their own state in optimizer variables (saved with the model), delegate
`learning_rate` and `iterations`, and work as the inner optimizer of a
LossScaleOptimizer (mixed precision) and under tf.distribute strategies.

Example:

    plan = keras_admm.PruningPlan.uniform(model, "filter:0.5")
    model.compile(
        optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(1e-3), plan),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=5, callbacks=[keras_admm.ADMMLogger()])
    masks = keras_admm.hard_prune(model, plan)
    model.compile(
        optimizer=keras_admm.MaskedWrapper(keras.optimizers.Adam(1e-4), masks),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=2)   # pruned weights stay exactly zero
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from keras.src.utils import tracking

from keras_admm.admm import check_settings, update_z_u_rho
from keras_admm.plan import PruningPlan, find_variable
from keras_admm.regularizers import primal_residuals

__all__ = ["ADMMWrapper", "MaskedWrapper", "find_admm_wrapper"]

_BASE_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def _reject_base_options(wrapper_name, kwargs):
    """Raise for optimizer options that belong on the inner optimizer."""
    for name, default in _BASE_DEFAULTS.items():
        if name in kwargs:
            value = kwargs.pop(name)
            if value != default:
                raise ValueError(
                    f"{wrapper_name} does not support `{name}`. Set `{name}` on "
                    f"the inner optimizer instead, e.g. "
                    f"{wrapper_name}(keras.optimizers.AdamW({name}=...), ...)."
                )
    if kwargs:
        raise ValueError(
            f"{wrapper_name} does not support arguments: {', '.join(sorted(kwargs))}."
        )


def _check_inner(wrapper_name, inner_optimizer):
    if isinstance(inner_optimizer, str):
        inner_optimizer = keras.optimizers.get(inner_optimizer)
    if isinstance(inner_optimizer, _OptimizerWrapper):
        raise ValueError(
            f"{wrapper_name} cannot wrap a {type(inner_optimizer).__name__}: "
            "wrapping a pruning wrapper in another applies the penalty or the "
            "masks twice. Wrap the plain optimizer once, e.g. "
            f"{wrapper_name}(keras.optimizers.Adam(), ...)."
        )
    if isinstance(inner_optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            f"{wrapper_name} must be inside the LossScaleOptimizer, not outside "
            f"it: use LossScaleOptimizer({wrapper_name}(keras.optimizers.Adam(), "
            "...)), or just compile under the mixed_float16 policy and Keras "
            "adds the LossScaleOptimizer itself."
        )
    if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"{wrapper_name} needs a keras.optimizers.Optimizer to wrap, got "
            f"{inner_optimizer!r}. Pass e.g. keras.optimizers.Adam(1e-3)."
        )
    return inner_optimizer


def _match_variables(paths, variables, wrapper_name):
    """Map each weight path to its variable (see `plan.find_variable`)."""
    matched = {}
    for path in paths:
        variable = find_variable(variables, path)
        if variable is None:
            known = ", ".join(v.path for v in variables[:12])
            if len(variables) > 12:
                known += ", ..."
            raise ValueError(
                f"{wrapper_name} has state for weight '{path}', but the variables "
                f"it is built on have no single match for it (variables: {known}). "
                "Resolve the plan (or compute the masks) on the model you compile."
            )
        matched[path] = variable
    return matched


def _num_replicas():
    """Replicas whose gradients the optimizer sums (1 outside tf.distribute)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class _OptimizerWrapper(keras.optimizers.Optimizer):
    """Shared mechanics of the two wrappers (LossScaleOptimizer pattern).

    Subclasses implement `_build_own(var_list)`, `_transform_grads(grads, vars)`
    (runs per replica, before the inner step) and `_after_step()` (runs once,
    after the inner step, in cross-replica context under tf.distribute).
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        wrapper_name = type(self).__name__
        _reject_base_options(wrapper_name, kwargs)
        inner_optimizer = _check_inner(wrapper_name, inner_optimizer)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer

    @tracking.no_automatic_dependency_tracking
    def build(self, var_list):
        self._build_own(list(var_list))
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        if keras.backend.backend() == "tensorflow":
            self._tf_apply(grads, trainable_variables)
        else:
            self._common_apply(grads, trainable_variables)

    def _replica_apply(self, grads, trainable_variables):
        variables = trainable_variables or self._trainable_variables
        grads = self._transform_grads(list(grads), list(variables))
        self.inner_optimizer.apply(grads, trainable_variables=trainable_variables)

    def _common_apply(self, grads, trainable_variables=None):
        self._replica_apply(grads, trainable_variables)
        self._after_step()

    def _tf_apply(self, grads, trainable_variables=None):
        """TF: under a strategy, step per replica, then update our state once."""
        import tensorflow as tf

        if tf.distribute.in_cross_replica_context():
            raise ValueError("apply() must be called in a replica context.")
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            self._common_apply(grads, trainable_variables)
            return

        def cross_replica(distribution, grads, trainable_variables):
            distribution.extended.call_for_each_replica(
                self._replica_apply, args=(grads, trainable_variables)
            )
            self._after_step()

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(grads, trainable_variables)
        )

    def _state_variable(self, reference, name, initializer):
        """An optimizer variable shaped like `reference`, one value on all replicas."""
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer=initializer,
                shape=reference.shape,
                dtype=reference.dtype,
                trainable=False,
                aggregation="only_first_replica",
                name=f"{reference.path.replace('/', '_')}_{name}",
            )
        self._track_variable(variable)
        return variable

    def _scalar_variable(self, name, value):
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                value,
                dtype="float32",
                trainable=False,
                aggregation="only_first_replica",
                name=name,
            )
        self._track_variable(variable)
        return variable


@keras.saving.register_keras_serializable(package="keras_admm")
class ADMMWrapper(_OptimizerWrapper):
    """Trains towards a structured-sparse model with ADMM.

    Each step adds rho * (W - Z + U) to the gradient of every planned kernel W,
    then runs the inner optimizer. Every `admm_steps` steps it updates
    Z <- Proj(W + U), U <- U + W - Z and rho <- min(rho * rho_multiplier,
    rho_max). Z starts at Proj(W) and U at 0 when the optimizer is built.
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
            and `get_config()`, e.g. `keras_admm.graph.GroupProjection
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
                "keras_admm.graph.GroupProjection.from_plan(model, plan)."
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
        rho, rho_multiplier, rho_max, admm_steps = check_settings(
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
        return {
            t.weight_path: t.sparsity.project(values[t.weight_path], t.layout)
            for t in self.plan.targets
        }

    @tracking.no_automatic_dependency_tracking
    def _build_own(self, var_list):
        targets = self.plan.targets
        matched = _match_variables(
            [t.weight_path for t in targets], var_list, "ADMMWrapper"
        )
        self._admm = []
        self._admm_by_key = {}
        initial = {}  # Proj(W) of every kernel, computed on first use

        def initial_z(path):
            if not initial:
                initial.update(
                    self._project(
                        {
                            t.weight_path: ops.convert_to_tensor(matched[t.weight_path])
                            for t in targets
                        }
                    )
                )
            return initial[path]

        for target in targets:
            weight = matched[target.weight_path]
            if tuple(weight.shape) != tuple(target.kernel_shape):
                raise ValueError(
                    f"ADMMWrapper's plan expects layer '{target.layer_name}' to have "
                    f"a kernel of shape {target.kernel_shape}, but its variable "
                    f"'{weight.path}' has shape {tuple(weight.shape)}. Resolve the "
                    "plan again on this model."
                )

            def init_z(shape, dtype=None, weight=weight, path=target.weight_path):
                return ops.cast(initial_z(path), dtype or weight.dtype)

            state = {
                "layer_name": target.layer_name,
                "target": target,
                "weight": weight,
                "z": self._state_variable(weight, "admm_z", init_z),
                "u": self._state_variable(weight, "admm_u", "zeros"),
                "rho": self._scalar_variable(
                    f"{target.layer_name.replace('/', '_')}_admm_rho", self.rho
                ),
            }
            self._admm.append(state)
            self._admm_by_key[self._var_key(weight)] = state

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
        return primal_residuals(self.admm_state())

    def _transform_grads(self, grads, variables):
        replicas = _num_replicas()
        out = []
        for grad, variable in zip(grads, variables):
            state = self._admm_by_key.get(self._var_key(variable))
            if grad is None or state is None:
                out.append(grad)
                continue
            rho = ops.cast(state["rho"], grad.dtype)
            penalty = rho * (
                ops.cast(variable, grad.dtype)
                - ops.cast(state["z"], grad.dtype)
                + ops.cast(state["u"], grad.dtype)
            )
            out.append(grad + penalty / replicas)
        return out

    def _after_step(self):
        due = ops.equal(ops.mod(self.iterations, self.admm_steps), 0)
        ops.cond(due, self._admm_update, lambda: None)

    def _admm_update(self):
        update_z_u_rho(
            self._admm,
            self._project,
            self.rho_multiplier,
            self.rho_max,
            self.rescale_dual,
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


@keras.saving.register_keras_serializable(package="keras_admm")
class MaskedWrapper(_OptimizerWrapper):
    """Masked retraining: pruned weights stay exactly zero through every step.

    Gradients of masked weights are zeroed before the inner step, and the
    weights are multiplied by their mask after it, so neither momentum, Adam
    moments nor weight decay can move a pruned weight.

    Args:
        inner_optimizer: the optimizer that takes the steps.
        masks: {weight_path: 0/1 array}, as returned by `keras_admm.hard_prune`.
        name: optional name.

    Example:

        masks = keras_admm.hard_prune(model, plan)
        model.compile(optimizer=keras_admm.MaskedWrapper(
            keras.optimizers.SGD(1e-2, momentum=0.9), masks), loss=...)
    """

    def __init__(
        self, inner_optimizer, masks=None, name=None, mask_shapes=None, **kwargs
    ):
        if masks is None and mask_shapes is None:
            raise ValueError(
                "MaskedWrapper needs masks: pass the dict returned by "
                "keras_admm.hard_prune(model, plan)."
            )
        if masks is not None:
            if not isinstance(masks, dict) or not masks:
                raise TypeError(
                    "MaskedWrapper `masks` must be a non-empty dict {weight_path: "
                    f"0/1 array}}, got {type(masks).__name__}."
                )
            checked = {}
            for path, mask in masks.items():
                array = np.asarray(ops.convert_to_numpy(mask), dtype="float32")
                if not np.all((array == 0) | (array == 1)):
                    raise ValueError(
                        f"MaskedWrapper mask for '{path}' must hold only 0 and 1; "
                        "pass the masks from keras_admm.hard_prune."
                    )
                checked[path] = array
            masks = checked
            mask_shapes = {p: list(m.shape) for p, m in masks.items()}
        else:
            mask_shapes = {p: list(s) for p, s in mask_shapes.items()}
        super().__init__(inner_optimizer, name=name, **kwargs)
        # Without `masks` (from_config), the values come back with the saved
        # optimizer variables when a .keras file is loaded.
        self.masks = masks
        self.mask_shapes = mask_shapes

    @tracking.no_automatic_dependency_tracking
    def _build_own(self, var_list):
        matched = _match_variables(list(self.mask_shapes), var_list, "MaskedWrapper")
        self._masked = []
        self._mask_by_key = {}
        for path, shape in self.mask_shapes.items():
            weight = matched[path]
            if tuple(weight.shape) != tuple(shape):
                raise ValueError(
                    f"MaskedWrapper mask for '{path}' has shape {tuple(shape)}, but "
                    f"the variable '{weight.path}' has shape {tuple(weight.shape)}. "
                    "Compute the masks on the model you compile."
                )
            value = None if self.masks is None else self.masks[path]

            def init(shape, dtype=None, value=value):
                return (
                    ops.ones(shape, dtype) if value is None else ops.cast(value, dtype)
                )

            mask = self._state_variable(weight, "mask", init)
            self._masked.append((weight, mask))
            self._mask_by_key[self._var_key(weight)] = mask

    def _transform_grads(self, grads, variables):
        out = []
        for grad, variable in zip(grads, variables):
            mask = self._mask_by_key.get(self._var_key(variable))
            out.append(
                grad
                if grad is None or mask is None
                else grad * ops.cast(mask, grad.dtype)
            )
        return out

    def _after_step(self):
        for weight, mask in self._masked:
            weight.assign(weight * ops.cast(mask, weight.dtype))

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "mask_shapes": self.mask_shapes,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


def find_admm_wrapper(optimizer):
    """The ADMMWrapper inside `optimizer` (through LossScaleOptimizer), or None."""
    while optimizer is not None:
        if isinstance(optimizer, ADMMWrapper):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None
