"""Progressive ADMM: ADMM stages towards ever sparser targets, then a hard prune.

Plain ADMM pulls a dense model towards the final sparsity set in one go; at high
compression the weights have not reached it when training ends, and the hard
prune costs accuracy. Progressive ADMM (Ye et al. 2018) runs several ADMM
stages instead: stage s of S targets the plan's ratios on the cubic schedule at
s / S (the last stage targets the plan itself), and each stage starts afresh
(a new inner optimizer, Z = Proj(W), U = 0, rho back at its start). Then the
model is hard-pruned to the plan and trained with masks for `masked_epochs`.
With the group-aware masks (`graph=True`) this took LeNet-5 filter 16x from
88.1% (plain ADMM, per-layer masks) to 94.0% at the same budget
(docs/COMPARISON.md); it is what the comparison harness (tools/harness) runs
as "admm".

Example:

    result = keras_admm.progressive_admm(
        model, plan, x_train, y_train,
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"],
        stage_epochs=[1, 1, 1, 1], masked_epochs=2, batch_size=64)
    model.compile(optimizer=keras_admm.MaskedWrapper(
        keras.optimizers.Adam(3e-4), result.masks), loss=...)
    model.fit(x_train, y_train, epochs=3)          # masked fine-tuning
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os

import keras
import numpy as np

from keras_admm.graph import graph_for
from keras_admm.plan import as_plan
from keras_admm.pruning import GroupProjection, hard_prune, projection_masks
from keras_admm.schedules import stage_plan
from keras_admm.training.admm_wrapper import ADMMWrapper
from keras_admm.training.checkpoint import read_checkpoint_state, write_checkpoint
from keras_admm.training.masked_wrapper import MaskedWrapper

__all__ = ["progressive_admm", "ProgressiveResult"]

_OWN_FIT_ARGUMENTS = ("epochs", "initial_epoch", "x", "y")


@dataclasses.dataclass
class ProgressiveResult:
    """What `progressive_admm` did.

    Attributes:
        masks: {kernel path: 0/1 array}, the plan's masks after the hard prune
            (pass them to `MaskedWrapper` for further fine-tuning).
        stage_plans: the resolved plan of each ADMM stage (the last is `plan`).
        histories: one `History.history` dict per stage, then one for the
            masked epochs (if any).
        residuals: per stage, the primal residual ||W - Z|| / ||W|| of each
            planned layer at the end of the stage.
        admm_steps: optimizer steps between Z/U updates in each stage.
    """

    masks: dict
    stage_plans: list
    histories: list
    residuals: list
    admm_steps: list


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"progressive_admm: {name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"progressive_admm: {name} must be >= {minimum}, got {value}.")
    return int(value)


def _optimizer_factory(optimizer):
    """A function that returns a fresh optimizer for every stage."""
    if isinstance(optimizer, str):
        return lambda: keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        return lambda: type(optimizer).from_config(config)
    if callable(optimizer):

        def make():
            made = optimizer()
            if not isinstance(made, keras.optimizers.Optimizer):
                raise TypeError(
                    "progressive_admm: `optimizer` must return a "
                    f"keras.optimizers.Optimizer, got {made!r}. Pass e.g. "
                    "lambda: keras.optimizers.Adam(1e-3)."
                )
            return made

        return make
    raise TypeError(
        f"progressive_admm: `optimizer` must be an optimizer, its name or a "
        f"function returning one, got {optimizer!r}. Pass e.g. "
        "lambda: keras.optimizers.Adam(1e-3)."
    )


def _steps_per_epoch(x, batch_size, validation_split=0.0):
    """Optimizer steps in one epoch over `x` (None when it cannot be known)."""
    samples = None
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        samples = len(x)
    elif isinstance(x, (list, tuple)) and x and hasattr(x[0], "__len__"):
        samples = len(x[0])
    elif isinstance(x, dict) and x:
        samples = len(next(iter(x.values())))
    if samples is not None:  # model.fit trains on the first (1 - split) share
        samples = int(samples * (1.0 - (validation_split or 0.0)))
        return max(1, math.ceil(samples / (batch_size or 32)))
    cardinality = getattr(x, "cardinality", None)
    if callable(cardinality):
        count = int(cardinality())
        return count if count > 0 else None
    if hasattr(x, "__len__"):  # a keras.utils.PyDataset or Sequence
        return len(x)
    return None


def progressive_admm(
    model,
    plan,
    x,
    y=None,
    *,
    optimizer,
    loss,
    metrics=None,
    stage_epochs=(1, 1, 1, 1),
    masked_epochs=2,
    rho=0.3,
    rho_multiplier=1.3,
    rho_max=1.0,
    updates_per_stage=4,
    steps_per_epoch=None,
    power=3.0,
    graph=True,
    rescale_dual=False,
    checkpoint=None,
    **fit_kwargs,
) -> ProgressiveResult:
    """Prune `model` in place with progressive ADMM, a hard prune and masked epochs.

    Args:
        model: a built Keras model, trained dense first.
        plan: a PruningPlan (resolved against `model` here if it is not).
        x, y: training data, as for `model.fit` (arrays, a tf.data.Dataset, a
            PyDataset).
        optimizer: the inner optimizer: a function returning a fresh one, an
            optimizer (copied from its config for each stage) or its name.
            Each stage and the masked epochs get a new one; sharing one across
            stages measured worse on LeNet-5 (docs/COMPARISON.md).
        loss, metrics: passed to `model.compile` for every stage.
        stage_epochs: epochs of each ADMM stage; its length is the number of
            stages S. (1, 1, 1, 1) is the setting of docs/COMPARISON.md.
        masked_epochs: epochs of masked training after the hard prune (>= 0).
        rho, rho_multiplier, rho_max: ADMMWrapper's penalty, restarted at `rho`
            in every stage.
        updates_per_stage: Z/U updates in each stage; a stage of E epochs
            updates every ceil(E * steps_per_epoch / updates_per_stage) steps.
        steps_per_epoch: optimizer steps per epoch. Worked out from `x` and
            `batch_size` when None; needed for datasets of unknown length (and
            then passed on to `model.fit`).
        power: exponent of the stage schedule (3: tfmot's and Zhu & Gupta's).
        graph: True builds a `DependencyGraph`, so that coupled channels are
            cut together (`GroupProjection`, `hard_prune(..., graph=)`); a
            DependencyGraph uses that one; False (or None) projects kernel by
            kernel.
        rescale_dual: ADMMWrapper's `rescale_dual`.
        checkpoint: optional path of a .keras file. After every epoch the model
            and its optimizer (ADMM Z, U, rho or the masks, and the inner
            optimizer's state) are saved there, with `<path>.json` saying how
            far the run is. Calling again with the same path and settings
            resumes after the last finished epoch; the stages before it are
            not rerun (their histories come from the JSON).
        **fit_kwargs: passed to every `model.fit` call (batch_size, callbacks,
            validation_data, verbose, ...), but not epochs: use
            `stage_epochs` and `masked_epochs`.

    Returns:
        A ProgressiveResult; the model's planned kernels are exactly sparse
        and it stays compiled with a MaskedWrapper.

    Raises:
        TypeError / ValueError: a bad plan, optimizer, stage list, or `epochs`
            in fit_kwargs; the message names the value and the fix.
    """
    for name in _OWN_FIT_ARGUMENTS:
        if name in fit_kwargs:
            raise ValueError(
                f"progressive_admm sets `{name}` of model.fit itself; got "
                f"{name}={fit_kwargs[name]!r}. Use stage_epochs=[...] and "
                "masked_epochs=... for the epochs."
            )
    plan = as_plan(plan, "progressive_admm")
    plan = plan if plan.resolved else plan.resolve(model)
    if isinstance(stage_epochs, numbers.Integral):
        raise TypeError(
            f"progressive_admm: stage_epochs is a list of epochs per stage, got "
            f"{stage_epochs!r}. For {stage_epochs} one-epoch stages pass "
            f"[1] * {stage_epochs}."
        )
    stage_epochs = [
        _positive_int(f"stage_epochs[{i}]", e) for i, e in enumerate(stage_epochs)
    ]
    if not stage_epochs:
        raise ValueError(
            "progressive_admm needs at least one stage: stage_epochs=[] given. "
            "Use hard_prune(model, plan) to prune without ADMM."
        )
    masked_epochs = _positive_int("masked_epochs", masked_epochs, minimum=0)
    updates_per_stage = _positive_int("updates_per_stage", updates_per_stage)
    make_optimizer = _optimizer_factory(optimizer)
    if steps_per_epoch is not None:
        steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
        fit_kwargs["steps_per_epoch"] = steps_per_epoch
    else:
        steps_per_epoch = _steps_per_epoch(
            x, fit_kwargs.get("batch_size"), fit_kwargs.get("validation_split")
        )
        if steps_per_epoch is None:
            raise ValueError(
                "progressive_admm cannot tell how many steps an epoch of this "
                f"input has ({type(x).__name__} of unknown length). Pass "
                "steps_per_epoch=... (it is also passed to model.fit)."
            )
    graph = graph_for(model, graph, "progressive_admm")

    phases = [("stage", e) for e in stage_epochs] + [("masked", masked_epochs)]
    saver = _Checkpoint(checkpoint, phases) if checkpoint else None
    start_phase, start_epoch, histories = (0, 0, [])
    if saver is not None:
        start_phase, start_epoch, histories = saver.progress()
        if start_phase or start_epoch:
            # Weights as they were; the optimizer state is loaded below.
            saved = keras.saving.load_model(saver.path, compile=False)
            model.set_weights(saved.get_weights())

    def fit(phase, epochs, done):
        callbacks = list(fit_kwargs.get("callbacks") or [])
        if saver is not None:
            callbacks.append(saver.callback(phase, done, histories))
        kwargs = dict(fit_kwargs, callbacks=callbacks)
        return model.fit(x, y, epochs=epochs, initial_epoch=done, **kwargs).history

    def resume_optimizer(phase):
        """Load the saved optimizer state when resuming inside this phase."""
        if saver is not None and phase == start_phase and start_epoch:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(saver.path)

    verbose = fit_kwargs.get("verbose", "auto") != 0
    result = ProgressiveResult({}, [], [], [], [])
    result.histories.extend(histories[:start_phase])
    for stage, epochs in enumerate(stage_epochs, start=1):
        target = stage_plan(plan, stage, len(stage_epochs), power)
        admm_steps = max(1, math.ceil(epochs * steps_per_epoch / updates_per_stage))
        result.stage_plans.append(target)
        result.admm_steps.append(admm_steps)
        if stage - 1 < start_phase:
            result.residuals.append(None)  # finished before the resume
            continue
        projection = None
        if graph is not None:
            projection = GroupProjection.from_plan(model, target, graph=graph)
        wrapper = ADMMWrapper(
            make_optimizer(),
            target,
            rho=rho,
            rho_multiplier=rho_multiplier,
            rho_max=rho_max,
            admm_steps=admm_steps,
            rescale_dual=rescale_dual,
            projection=projection,
        )
        model.compile(optimizer=wrapper, loss=loss, metrics=metrics)
        resume_optimizer(stage - 1)
        done = start_epoch if stage - 1 == start_phase else 0
        if verbose:
            print(
                f"Progressive ADMM stage {stage}/{len(stage_epochs)}: {epochs} "
                f"epoch(s), Z/U update every {admm_steps} steps, targets "
                + ", ".join(f"{t.layer_name} {t.sparsity}" for t in target.targets),
                flush=True,
            )
        result.histories.append(fit(stage - 1, epochs, done))
        result.residuals.append(wrapper.residuals())
    masked_phase = len(stage_epochs)
    if masked_phase == start_phase and start_epoch:
        # Already hard-pruned: the same masks, then their saved values.
        result.masks = projection_masks(model, plan, graph=graph)
    else:
        result.masks = hard_prune(model, plan, graph=graph)
    model.compile(
        optimizer=MaskedWrapper(make_optimizer(), result.masks),
        loss=loss,
        metrics=metrics,
    )
    resume_optimizer(masked_phase)
    if masked_epochs:
        if verbose:
            print(
                f"Progressive ADMM: hard-pruned to the plan; {masked_epochs} "
                "masked epoch(s)",
                flush=True,
            )
        done = start_epoch if masked_phase == start_phase else 0
        result.histories.append(fit(masked_phase, masked_epochs, done))
    return result


class _Checkpoint:
    """progressive_admm's per-epoch checkpoint: a .keras file and its JSON."""

    def __init__(self, path, phases):
        path = os.fspath(path)
        if not path.endswith(".keras"):
            raise ValueError(
                f"progressive_admm: checkpoint must be a .keras path, got {path!r}."
            )
        self.path = path
        self.phases = [list(p) for p in phases]

    def progress(self):
        """(phase, epochs done in it, histories) of a saved run, or zeros."""
        state = read_checkpoint_state(self.path)
        if state is None:
            return 0, 0, []
        if state.get("phases") != self.phases:
            raise ValueError(
                f"progressive_admm: the checkpoint {self.path} is of a run with "
                f"phases {state.get('phases')}, not {self.phases}. Pass the same "
                "stage_epochs and masked_epochs to resume it, or another path."
            )
        phase, done = state["phase"], state["epochs_done"]
        if done >= self.phases[phase][1]:  # that phase finished: the next one
            phase, done = phase + 1, 0
        return phase, done, state["histories"]

    def callback(self, phase, done, histories):
        saver = self

        class _Save(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                while len(histories) <= phase:
                    histories.append({})
                for key, value in (logs or {}).items():
                    histories[phase].setdefault(key, []).append(float(value))
                state = {
                    "phases": saver.phases,
                    "phase": phase,
                    "epochs_done": epoch + 1,
                    "histories": histories,
                }
                write_checkpoint(self.model, saver.path, state)

        return _Save()
