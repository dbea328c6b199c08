"""Targeting: pruning plans chosen for a speed target on a given engine.

`plan_for_target` (also `PruningPlan.for_target`) measures per-layer latency
tables (`LatencyTable`) and per-group sensitivity (`group_sensitivity`),
predicts the whole model's latency from them (`LatencyModel`) and picks the
kept count of every channel group; `check_prediction` times the result.

    from keras_admm.targeting import plan_for_target, check_prediction
    plan = plan_for_target(model, speedup=1.5, engine="onnxruntime",
                           batch_size=32, data=(x_val, y_val))
    print(plan.summary())
    check_prediction(model, plan)
"""

from keras_admm.plan import register_target_planner
from keras_admm.targeting.latency_model import LatencyModel
from keras_admm.targeting.latency_table import LatencyTable, default_cache_dir
from keras_admm.targeting.sensitivity import (
    Sensitivity,
    branch_sensitivity,
    group_sensitivity,
)
from keras_admm.targeting.target_plan import (
    TargetPlan,
    candidate_counts,
    check_prediction,
    choose_counts,
    compact_for_counts,
    plan_for_target,
)

register_target_planner(plan_for_target)  # behind PruningPlan.for_target

__all__ = [
    "LatencyModel",
    "LatencyTable",
    "Sensitivity",
    "TargetPlan",
    "candidate_counts",
    "check_prediction",
    "choose_counts",
    "compact_for_counts",
    "default_cache_dir",
    "branch_sensitivity",
    "group_sensitivity",
    "plan_for_target",
]
