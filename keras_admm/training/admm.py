"""The ADMM core shared by ADMMWrapper (fit) and ADMMRegularizer (custom loops).

Both keep, per planned kernel W, a state dict {"layer_name", "target",
"weight", "z", "u", "rho"}. This module checks their settings, computes the
penalty and its gradient, runs the Z/U/rho update on such states, measures
the primal residual, and finds the ADMM state behind a (wrapped) optimizer:

    penalty  : sum_i rho_i / 2 * ||W_i - Z_i + U_i||^2, gradient rho_i (W - Z + U)
    Z-step   : Z_i <- Proj_{S_i}(W_i + U_i)
    U-step   : U_i <- U_i + W_i - Z_i
    rho      : rho_i <- min(rho_i * rho_multiplier, rho_max)
"""

from __future__ import annotations

from keras import ops

from keras_admm import backends
from keras_admm.arguments import check_count, check_number

__all__ = [
    "check_settings",
    "project_each",
    "new_state",
    "penalty",
    "penalty_gradient",
    "next_z_u_rho",
    "current_z_u_rho",
    "assign_z_u_rho",
    "update_z_u_rho_if",
    "primal_residual",
    "primal_residuals",
    "find_admm_wrapper",
]


def check_settings(owner, rho, rho_multiplier, rho_max, admm_steps):
    """Validated (rho, rho_multiplier, rho_max, admm_steps), or a clear error.

    Raises:
        TypeError / ValueError naming `owner`, the argument, its value and the
        fix. Nothing is created before the check passes.
    """
    rho = check_number(
        owner, "rho", rho, "Pass a positive penalty such as rho=1e-3.", above=0
    )
    rho_multiplier = check_number(
        owner,
        "rho_multiplier",
        rho_multiplier,
        "rho may only grow: use 1.0 for a fixed rho, or e.g. 1.3 to grow it at "
        "every Z/U update.",
        at_least=1,
    )
    rho_max = check_number(  # inf: no cap (rho still grows by a finite factor)
        owner, "rho_max", rho_max, "Set rho_max >= rho.", allow_inf=True
    )
    if rho_max < rho:
        raise ValueError(
            f"{owner} `rho_max` ({rho_max!r}) must be >= rho ({rho!r}). Set "
            f"rho_max >= {rho!r}, or lower rho."
        )
    admm_steps = check_count(
        owner,
        "admm_steps",
        admm_steps,
        "It is the number of optimizer steps between Z/U updates, e.g. "
        "admm_steps=100 or one epoch.",
    )
    return rho, rho_multiplier, rho_max, admm_steps


def project_each(targets):
    """The per-kernel projection: {path: V} -> {path: Proj_{S}(V)} of `targets`.

    Each kernel is projected on its own sparsity set; a `GroupProjection`
    replaces it when coupled channels must be cut together.
    """
    targets = list(targets)

    def project(values):
        return {
            t.weight_path: t.sparsity.project(values[t.weight_path], t.layout)
            for t in targets
        }

    return project


def new_state(target, weight, z, u, rho) -> dict:
    """The state dict of one planned kernel (z, u, rho: variables)."""
    return {
        "layer_name": target.layer_name,
        "target": target,
        "weight": weight,
        "z": z,
        "u": u,
        "rho": rho,
    }


def penalty_gradient(state, variable, dtype):
    """rho * (W - Z + U): the penalty's gradient for one kernel, in `dtype`."""
    rho = ops.cast(state["rho"], dtype)
    return rho * (
        ops.cast(variable, dtype)
        - ops.cast(state["z"], dtype)
        + ops.cast(state["u"], dtype)
    )


def penalty(states):
    """sum_i rho_i / 2 * ||W_i - Z_i + U_i||^2 as a float32 scalar tensor."""
    total = ops.zeros((), dtype="float32")
    for state in states:
        gap = ops.cast(state["weight"], "float32") - state["z"] + state["u"]
        total = total + 0.5 * state["rho"] * ops.sum(ops.square(gap))
    return total


def next_z_u_rho(states, project, rho_multiplier, rho_max, rescale_dual=False):
    """The values of one Z/U/rho update, as [(z, u, rho)] per state; assigns nothing.

    Z <- Proj(W + U), U <- U + W - Z, rho <- min(rho * rho_multiplier, rho_max).

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
    values = []
    for state in states:
        path = state["target"].weight_path
        new_z = ops.cast(projected[path], state["z"].dtype)
        new_u = state["u"] + weights[path] - new_z
        new_rho = ops.minimum(state["rho"] * rho_multiplier, rho_max)
        if rescale_dual:
            new_u = new_u * ops.cast(state["rho"] / new_rho, new_u.dtype)
        values.append((new_z, new_u, ops.cast(new_rho, state["rho"].dtype)))
    return values


def current_z_u_rho(states):
    """[(z, u, rho)] per state, as tensors: the 'no update' branch of a cond."""
    return [
        tuple(ops.convert_to_tensor(s[key]) for key in ("z", "u", "rho"))
        for s in states
    ]


def assign_z_u_rho(states, values):
    """Assign [(z, u, rho)] (from `next_z_u_rho`) to the states' variables."""
    for state, (z, u, rho) in zip(states, values):
        state["z"].assign(z)
        state["u"].assign(u)
        state["rho"].assign(rho)


def update_z_u_rho_if(due, states, compute):
    """Assign `compute()`'s [(z, u, rho)] when `due`, keep the state otherwise.

    The branches of the cond only compute values and the assignment follows
    it: a variable assigned inside a branch leaks that branch's tracer on
    JAX (keras.ops.cond is jax.lax.cond there), and is fine on TF and torch.

    Args:
        due: a boolean scalar tensor.
        states: the per-kernel state dicts.
        compute: () -> [(z, u, rho)] per state, e.g. a `next_z_u_rho` call.
    """
    now = backends.concrete_bool(due)
    if now is not None:  # eager: branch in Python, copy nothing when not due
        if now:
            assign_z_u_rho(states, compute())
        return
    values = ops.cond(due, compute, lambda: current_z_u_rho(states))
    assign_z_u_rho(states, values)


def primal_residual(weight, z) -> float:
    """||W - Z||_F / ||W||_F as a Python float (||W - Z|| when W is zero).

    Computed with keras.ops (on the weights' device); only the two norms are
    copied to the host.
    """
    weight = ops.cast(ops.convert_to_tensor(weight), "float32")
    z = ops.cast(ops.convert_to_tensor(z), "float32")
    diff = float(ops.convert_to_numpy(ops.sqrt(ops.sum(ops.square(weight - z)))))
    norm = float(ops.convert_to_numpy(ops.sqrt(ops.sum(ops.square(weight)))))
    return diff / max(norm, 1e-12)


def primal_residuals(admm_state) -> dict[str, float]:
    """{layer_name: ||W - Z|| / ||W||} for a list of ADMM state dicts.

    Args:
        admm_state: `ADMMWrapper.admm_state()` or `ADMMRegularizer.admm_state()`:
            dicts with at least "layer_name", "weight" and "z".
    """
    return {
        state["layer_name"]: primal_residual(state["weight"], state["z"])
        for state in admm_state
    }


def find_admm_wrapper(optimizer):
    """The object with ADMM state in an optimizer's `inner_optimizer` chain.

    Follows `.inner_optimizer` (e.g. LossScaleOptimizer(ADMMWrapper(Adam)))
    until an object with a callable `admm_state` (an ADMMWrapper) appears.

    Args:
        optimizer: a Keras optimizer, possibly wrapped; may be None.

    Returns:
        That object, or None when the chain has none.
    """
    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        if callable(getattr(optimizer, "admm_state", None)):
            return optimizer
        seen.add(id(optimizer))
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None
