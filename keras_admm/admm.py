"""The ADMM pieces shared by ADMMWrapper (fit) and ADMMRegularizer (custom loops).

Both keep, per planned kernel W, a state dict {"layer_name", "target",
"weight", "z", "u", "rho"}; these functions check their settings and run the
Z/U/rho update on such states.
"""

from __future__ import annotations

import math
import numbers

from keras import ops

__all__ = ["check_settings", "update_z_u_rho"]


def _number(owner, name, value, fix):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner} `{name}` must be a number, got {value!r} "
            f"({type(value).__name__}). {fix}"
        )
    if math.isnan(value):
        raise ValueError(f"{owner} `{name}` must not be NaN. {fix}")
    return float(value)


def check_settings(owner, rho, rho_multiplier, rho_max, admm_steps):
    """Validated (rho, rho_multiplier, rho_max, admm_steps), or a clear error.

    Raises:
        TypeError / ValueError naming `owner`, the argument, its value and the
        fix. Nothing is created before the check passes.
    """
    rho = _number(owner, "rho", rho, "Pass a positive penalty such as 1e-3.")
    if rho <= 0:
        raise ValueError(
            f"{owner} `rho` must be > 0, got {rho!r}. Pass a positive penalty "
            "such as rho=1e-3."
        )
    rho_multiplier = _number(
        owner, "rho_multiplier", rho_multiplier, "Use 1.0 for a fixed rho."
    )
    if rho_multiplier < 1:
        raise ValueError(
            f"{owner} `rho_multiplier` must be >= 1, got {rho_multiplier!r}: rho "
            "may only grow. Use 1.0 for a fixed rho, or e.g. 1.3 to grow it at "
            "every Z/U update."
        )
    rho_max = _number(owner, "rho_max", rho_max, "Set rho_max >= rho.")
    if rho_max < rho:
        raise ValueError(
            f"{owner} `rho_max` ({rho_max!r}) must be >= rho ({rho!r}). Set "
            f"rho_max >= {rho!r}, or lower rho."
        )
    if isinstance(admm_steps, bool) or not isinstance(admm_steps, numbers.Integral):
        raise TypeError(
            f"{owner} `admm_steps` must be an int, got {admm_steps!r} "
            f"({type(admm_steps).__name__}). Pass e.g. admm_steps=100."
        )
    if admm_steps < 1:
        raise ValueError(
            f"{owner} `admm_steps` must be >= 1, got {admm_steps}. It is the "
            "number of optimizer steps between Z/U updates, e.g. one epoch."
        )
    return rho, rho_multiplier, rho_max, int(admm_steps)


def update_z_u_rho(states, project, rho_multiplier, rho_max, rescale_dual=False):
    """Z <- Proj(W + U), U <- U + W - Z, rho <- min(rho * multiplier, rho_max).

    Args:
        states: the per-kernel state dicts.
        project: {weight_path: W + U} -> {weight_path: Z}, the (joint)
            projection onto the planned sparsity sets.
        rho_multiplier, rho_max: the rho schedule.
        rescale_dual: also scale U by rho_old / rho_new, so that the unscaled
            dual rho * U is unchanged when rho grows (Boyd et al. 2011,
            section 3.4.1). Off by default, as in the StructADMM code.
    """
    weights = {
        s["target"].weight_path: ops.cast(
            ops.convert_to_tensor(s["weight"]), s["z"].dtype
        )
        for s in states
    }
    projected = project(
        {path: w + s["u"] for (path, w), s in zip(weights.items(), states)}
    )
    for state in states:
        path = state["target"].weight_path
        new_z = projected[path]
        new_u = state["u"] + weights[path] - new_z
        new_rho = ops.minimum(state["rho"] * rho_multiplier, rho_max)
        if rescale_dual:
            new_u = new_u * ops.cast(state["rho"] / new_rho, new_u.dtype)
        state["z"].assign(new_z)
        state["u"].assign(new_u)
        state["rho"].assign(new_rho)
