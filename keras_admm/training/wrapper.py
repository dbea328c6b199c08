"""The base of keras-admm's optimizer wrappers (Keras' LossScaleOptimizer pattern).

A wrapper holds an inner optimizer, keeps its own state in optimizer variables
(saved with the model), delegates `learning_rate` and `iterations`, works as
the inner optimizer of a LossScaleOptimizer (mixed precision) and under
tf.distribute strategies. Subclasses change the gradients before the inner
step and act after it.
"""

from __future__ import annotations

import keras
from keras.src.utils import tracking

from keras_admm import backends
from keras_admm.plan import find_variable

__all__ = ["OptimizerWrapper", "match_variables"]

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
        try:
            inner_optimizer = keras.optimizers.get(inner_optimizer)
        except ValueError as error:
            raise ValueError(
                f"{wrapper_name}: {inner_optimizer!r} is not a Keras optimizer name; "
                f"pass an optimizer, e.g. {wrapper_name}(keras.optimizers.Adam(), "
                "...), or a name such as 'adam' or 'sgd'."
            ) from error
    if isinstance(inner_optimizer, OptimizerWrapper):
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


def match_variables(paths, variables, wrapper_name):
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
                "Resolve the plan (or compute the masks) on the model you compile. "
                "A frozen layer (trainable=False) is not among them: unfreeze it "
                "or leave it out of the plan."
            )
        matched[path] = variable
    return matched


class OptimizerWrapper(keras.optimizers.Optimizer):
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
        if backends.name() == "tensorflow":
            self._tf_apply(grads, trainable_variables)
        else:
            self._common_apply(grads, trainable_variables)

    def _replica_apply(self, grads, trainable_variables):
        variables = trainable_variables or self._trainable_variables
        grads = self._transform_grads(list(grads), list(variables))
        self.inner_optimizer.apply(grads, trainable_variables=trainable_variables)

    def _common_apply(self, grads, trainable_variables=None):
        self._before_step()
        self._replica_apply(grads, trainable_variables)
        self._after_step()

    def _before_step(self):
        """Runs once per step before the gradients are changed (cross-replica)."""

    def _tf_apply(self, grads, trainable_variables=None):
        """TF: under a strategy, step per replica, then update our state once."""
        import tensorflow as tf

        if tf.distribute.in_cross_replica_context():
            raise ValueError("apply() must be called in a replica context.")
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            self._common_apply(grads, trainable_variables)
            return

        def cross_replica(distribution, grads, trainable_variables):
            self._before_step()
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
