"""Polynomial sparsity schedules (Zhu & Gupta 2017) for gradual and progressive pruning.

`polynomial_sparsity` is tfmot's PolynomialDecay; `scheduled_sparsity` applies
it to every ratio of a sparsity type; `stage_plan` gives the plan of one stage
of progressive ADMM (`keras_admm.progressive_admm`).

>>> round(polynomial_sparsity(50, 0.8, 100), 6)   # halfway: 0.8 * (1 - 0.5**3)
0.7
"""

from __future__ import annotations

from keras_admm import sparsity as sparsity_lib
from keras_admm.plan import PruningPlan

__all__ = ["polynomial_sparsity", "scheduled_sparsity", "stage_plan"]


def polynomial_sparsity(
    step, final_sparsity, end_step, initial_sparsity=0.0, begin_step=0, power=3.0
) -> float:
    """tfmot's PolynomialDecay sparsity at `step` (Zhu & Gupta 2017).

    s_t = s_f + (s_i - s_f) * (1 - p)^power, p = clip((t - t0) / (T - t0), 0, 1):
    s_i up to `begin_step`, s_f from `end_step` on.

    Args:
        step: the optimizer step t.
        final_sparsity: s_f, in [0, 1).
        end_step: T, the step at which s_f is reached (> begin_step).
        initial_sparsity: s_i, in [0, s_f].
        begin_step: t0.
        power: the exponent (3 in tfmot and the paper).

    Raises:
        ValueError: end_step <= begin_step, or sparsities outside [0, 1).

    >>> round(polynomial_sparsity(50, 0.8, 100), 6)
    0.7
    """
    if end_step <= begin_step:
        raise ValueError(
            f"polynomial_sparsity needs end_step > begin_step, got end_step="
            f"{end_step}, begin_step={begin_step}."
        )
    for name, value in (("final", final_sparsity), ("initial", initial_sparsity)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}_sparsity must be in [0, 1), got {value!r}.")
    progress = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final_sparsity + (initial_sparsity - final_sparsity) * (
        1.0 - progress
    ) ** float(power)


def scheduled_sparsity(spec, step, end_step, power=3.0) -> sparsity_lib.Sparsity:
    """`spec`'s type with every ratio at its polynomial-schedule value for `step`.

    Each ratio r of `spec` (FilterShape: the filter and the shape ratio) becomes
    `polynomial_sparsity(step, r, end_step, 0.0, 0, power)`: 0 at step 0, r
    from `end_step` on.

    Raises:
        ValueError: `spec` is N:M (it has no ratio to schedule), or
            end_step <= 0.

    >>> round(scheduled_sparsity("filter:0.8", 50, 100).ratio, 6)
    0.7
    """
    spec = sparsity_lib.parse(spec)
    if isinstance(spec, sparsity_lib.NM):
        raise ValueError(
            f"{spec} has no ratio to prune gradually. Use unstructured, filter, "
            "channel, shape or filter_shape sparsity for the gradual method."
        )

    def at(ratio):
        return polynomial_sparsity(step, ratio, end_step, power=power)

    if isinstance(spec, sparsity_lib.FilterShape):
        return sparsity_lib.FilterShape(at(spec.filter_ratio), at(spec.shape_ratio))
    return type(spec)(at(spec.ratio))


def stage_plan(plan, stage, stages, power=3.0) -> PruningPlan:
    """`plan` with its ratios at stage `stage` of `stages` of progressive ADMM.

    Each ratio is `scheduled_sparsity` at step `stage` of `stages`: the last
    stage is `plan` itself. N:M targets keep their pattern (no ratio). A
    resolved plan gives a resolved plan (`PruningPlan.map_sparsity`).

    >>> half = stage_plan(PruningPlan({"conv": "filter:0.8"}), 1, 2)
    >>> round(half.rules[0][2].ratio, 6)
    0.7
    """
    if not 1 <= stage <= stages:
        raise ValueError(f"stage must be in [1, {stages}], got {stage}.")
    if stage == stages:
        return plan

    def at_stage(spec):
        if isinstance(spec, sparsity_lib.NM):
            return spec
        return scheduled_sparsity(spec, stage, stages, power)

    return plan.map_sparsity(at_stage)
