"""ADMMRegularizer: the StructADMM penalty and Z/U updates for custom loops.

`ADMMWrapper` runs ADMM inside `model.fit`. When you write your own training
loop (tf.GradientTape), add `ADMMRegularizer`'s penalty to the loss and call
`step()` after each optimizer step instead; the algorithm is the same:

    loss   = f(W) + sum_i rho_i / 2 * ||W_i - Z_i + U_i||^2
    every `admm_steps` steps:
        Z_i <- Proj_{S_i}(W_i + U_i);  U_i <- U_i + W_i - Z_i
        rho_i <- min(rho_i * rho_multiplier, rho_max)

Z = Proj(W) and U = 0 when the regularizer is built.

On JAX, compute the penalty inside the differentiated function with the
trainable variables mapped to the traced values
(`with keras.StatelessScope(state_mapping=zip(variables, values)): reg(model)`)
and call `step()` after each update, outside `jax.jit`; on torch, add the
penalty to the loss before `backward()`. tests/conftest.py's `value_and_grad`
shows the three backends' patterns.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_admm.plan import as_plan, planned_kernels
from keras_admm.training import admm

__all__ = ["ADMMRegularizer"]


class ADMMRegularizer:
    """The ADMM penalty and Z/U updates for custom (GradientTape) training loops.

    Adds sum_i rho_i / 2 * ||W_i - Z_i + U_i||^2 over the planned kernels to
    your loss (its gradient is rho_i * (W_i - Z_i + U_i)), and `step()` runs
    the Z/U/rho updates every `admm_steps` calls. Z, U, rho and the step count
    are `keras.Variable`s, so the penalty and `step()` also run inside a
    `tf.function`; build the regularizer eagerly first. `variables` lists them
    for checkpointing (e.g. `tf.train.Checkpoint(admm=reg.variables)`).

    Args:
        plan: a PruningPlan (resolved against the model in `build` if needed)
            or a dict of rules such as {"conv2": "filter:0.5"}.
        rho: initial penalty weight, > 0. Larger pulls W towards Z faster.
        rho_multiplier: rho grows by this factor at every Z/U update, >= 1
            (1.0 keeps rho fixed).
        rho_max: upper bound of rho, >= rho.
        admm_steps: optimizer steps between Z/U updates, >= 1; about one
            epoch's worth of steps is a good start.
        rescale_dual: scale U by rho_old / rho_new whenever rho grows (see
            ADMMWrapper).

    Raises:
        TypeError / ValueError: a bad argument, naming the value and the fix.

    Example (a complete custom loop):

        import keras, tensorflow as tf, keras_admm

        model = keras.Sequential([keras.Input((28, 28, 1)),
            keras.layers.Conv2D(20, 5, activation="relu", name="conv1"),
            keras.layers.Conv2D(50, 5, activation="relu", name="conv2"),
            keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
        plan = keras_admm.PruningPlan({"conv2": "filter_shape:0.5:0.5"})
        reg = keras_admm.ADMMRegularizer(plan, rho=1e-3, admm_steps=100)
        reg.build(model)                       # Z = Proj(W), U = 0
        optimizer = keras.optimizers.Adam(1e-3)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True)) + reg(model)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            reg.step(model)                    # Z/U update every 100 steps
            return loss

        for epoch in range(10):
            for x, y in dataset:
                train_step(x, y)
            print(epoch, reg.residuals(model))   # ||W - Z|| / ||W|| per layer
        masks = keras_admm.hard_prune(model, reg.plan)  # then masked retraining
    """

    def __init__(
        self,
        plan,
        rho=1e-3,
        rho_multiplier=1.3,
        rho_max=1.0,
        admm_steps=100,
        rescale_dual=False,
    ):
        rho, rho_multiplier, rho_max, admm_steps = admm.check_settings(
            "ADMMRegularizer", rho, rho_multiplier, rho_max, admm_steps
        )
        plan = as_plan(plan, "ADMMRegularizer")
        self.plan = plan
        self.rho = rho
        self.rho_multiplier = rho_multiplier
        self.rho_max = rho_max
        self.admm_steps = int(admm_steps)
        self.rescale_dual = bool(rescale_dual)
        self.built = False
        self._model = None
        self._state = []
        self._steps = None

    # ------------------------------------------------------------------ state
    def build(self, model) -> ADMMRegularizer:
        """Create Z = Proj(W), U = 0 and rho for every planned kernel of `model`.

        Call it eagerly, before any `tf.function` that uses the regularizer.
        Building again (e.g. on another model) starts ADMM afresh.

        Args:
            model: the built Keras model being trained.

        Returns:
            self.

        Raises:
            ValueError: the plan does not fit the model (nothing is created).
        """
        plan = self.plan if self.plan.resolved else self.plan.resolve(model)
        pairs = planned_kernels(model, plan)
        state = []
        for target, weight in pairs:
            z = target.sparsity.project(ops.cast(weight, "float32"), target.layout)
            name = target.layer_name.replace("/", "_")
            state.append(
                admm.new_state(
                    target,
                    weight,
                    z=keras.Variable(z, trainable=False, name=f"{name}_admm_z"),
                    u=keras.Variable(
                        ops.zeros_like(z), trainable=False, name=f"{name}_admm_u"
                    ),
                    rho=keras.Variable(
                        self.rho,
                        dtype="float32",
                        trainable=False,
                        name=f"{name}_admm_rho",
                    ),
                )
            )
        self.plan = plan
        self._state = state
        self._steps = keras.Variable(
            0, dtype="int64", trainable=False, name="admm_steps"
        )
        self._model = model
        self.built = True
        return self

    def _require(self, model, what):
        if not self.built:
            if model is None:
                raise ValueError(
                    f"ADMMRegularizer.{what}() before build(): call "
                    "reg.build(model) first (eagerly, before any tf.function)."
                )
            self.build(model)
        elif model is not None and model is not self._model:
            raise ValueError(
                f"ADMMRegularizer.{what}() got model '{model.name}', but it was "
                f"built on model '{self._model.name}'. Use one regularizer per "
                "model, or call reg.build(model) to start ADMM on this one."
            )
        return self._state

    def admm_state(self) -> list[dict]:
        """Per planned layer: {"layer_name", "weight", "z", "u", "rho", "target"}.

        The same structure as `ADMMWrapper.admm_state()`, so `ADMMLogger` reads
        either.

        Raises:
            ValueError: the regularizer is not built.
        """
        return list(self._require(None, "admm_state"))

    @property
    def variables(self) -> list:
        """Z, U and rho of every planned layer, and the step counter."""
        variables = [s[key] for s in self._state for key in ("z", "u", "rho")]
        return variables + ([self._steps] if self._steps is not None else [])

    @property
    def iterations(self):
        """How many times `step()` has run (a keras.Variable, int64)."""
        self._require(None, "iterations")
        return self._steps

    # --------------------------------------------------------------- training
    def penalty(self, model=None):
        """sum_i rho_i / 2 * ||W_i - Z_i + U_i||^2 as a float32 scalar tensor.

        Differentiable with respect to the model's kernels: under a
        tf.GradientTape its gradient for W_i is rho_i * (W_i - Z_i + U_i).

        Args:
            model: the model the regularizer was built on (built on first use
                when eager and not built yet); None uses that model.

        Returns:
            A scalar float32 tensor to add to the loss.

        Raises:
            ValueError: `model` is not the model the regularizer was built on.
        """
        return admm.penalty(self._require(model, "penalty"))

    def __call__(self, model=None):
        """The penalty: `loss = task_loss + reg(model)`. See `penalty`."""
        return self.penalty(model)

    def step(self, model=None):
        """Count one optimizer step; every `admm_steps`-th call update Z, U, rho.

        Call it once after each optimizer step. On the due steps:
        Z <- Proj(W + U), U <- U + W - Z, rho <- min(rho * rho_multiplier,
        rho_max). Runs eagerly or inside a tf.function.

        Args:
            model: the model the regularizer was built on; None uses it.

        Returns:
            A boolean scalar tensor: whether Z, U and rho were updated.
        """
        self._require(model, "step")
        steps = self._steps.assign_add(1)
        due = ops.equal(ops.mod(steps, self.admm_steps), 0)

        admm.update_z_u_rho_if(
            due,
            self._state,
            lambda: admm.next_z_u_rho(
                self._state,
                admm.project_each(s["target"] for s in self._state),
                self.rho_multiplier,
                self.rho_max,
                self.rescale_dual,
            ),
        )
        return due

    def residuals(self, model=None) -> dict[str, float]:
        """{layer_name: ||W - Z|| / ||W||}: the primal residual per planned layer.

        It falls towards 0 as ADMM converges (W approaches its sparse Z).

        Args:
            model: the model the regularizer was built on; None uses it.
        """
        return admm.primal_residuals(self._require(model, "residuals"))

    def __repr__(self):
        layers = len(self._state) if self.built else "unbuilt"
        return (
            f"ADMMRegularizer(rho={self.rho:g}, rho_multiplier="
            f"{self.rho_multiplier:g}, rho_max={self.rho_max:g}, "
            f"admm_steps={self.admm_steps}, layers={layers})"
        )
