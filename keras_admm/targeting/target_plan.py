"""Plans for a target speed: per-group kept counts chosen from measured latency.

`plan_for_target(model, speedup=2.0, engine="onnxruntime", batch_size=32,
data=(x_val, y_val))` (also `PruningPlan.for_target`) measures

  * per-layer latency tables on the engine (`LatencyTable`, cached on disk),
    calibrated against the whole dense model and a half-cut one timed there;
  * per-group sensitivity: the calibration loss after cutting each channel
    group alone to each candidate count (`group_sensitivity`);

then a greedy solver cuts, step by step, the group whose next cut saves the
most predicted time per unit of loss added, until the predicted latency meets
the target, and gives back cuts that the target no longer needs. Candidate
counts are multiples of size / granularity, so the tables see (and the solver
picks) the channel alignments the engine runs fast. The result is a
`TargetPlan`: a group-aware Filter plan (prune with `graph=`) that says its
predicted latency; `check_prediction` compacts and times it.

Example:

    plan = PruningPlan.for_target(model, speedup=1.5, engine="onnxruntime",
                                  batch_size=32, data=(x_val, y_val))
    plan.predicted_latency_ms, plan.predicted_speedup
    check_prediction(model, plan)["relative_error"]      # e.g. 0.04
"""

from __future__ import annotations

import logging
import numbers
import os
import tempfile

from keras_admm.plan import PruningPlan
from keras_admm.profiling.timing import paired_speedup
from keras_admm.targeting.latency_model import LatencyModel
from keras_admm.targeting.latency_table import LatencyTable
from keras_admm.targeting.sensitivity import (
    group_sensitivity,
    loss_after_cut,
    plan_for_counts,
)

__all__ = [
    "TargetPlan",
    "candidate_counts",
    "check_prediction",
    "choose_counts",
    "compact_for_counts",
    "plan_for_target",
]

_LOG = logging.getLogger(__name__)


class TargetPlan(PruningPlan):
    """A resolved Filter plan chosen for a latency target, with its prediction.

    Attributes (besides PruningPlan's):
        prediction: a JSON-ready dict: engine, batch_size, target_ms,
            predicted_ms, dense_ms (measured), predicted_speedup, the kept
            count of every group, the calibration and the sensitivity used.
    """

    def __init__(self, rules=None, targets=None, prediction=None):
        super().__init__(rules, targets)
        self.prediction = dict(prediction or {})

    @property
    def predicted_latency_ms(self) -> float:
        return self.prediction["predicted_ms"]

    @property
    def predicted_speedup(self) -> float:
        return self.prediction["predicted_speedup"]

    def to_dict(self) -> dict:
        return {**super().to_dict(), "prediction": self.prediction}

    @classmethod
    def from_dict(cls, data: dict) -> TargetPlan:
        base = PruningPlan.from_dict(data)
        plan = cls(prediction=data.get("prediction"))
        plan.rules, plan.targets = base.rules, base.targets
        return plan

    def summary(self) -> str:
        """Groups, kept counts and the prediction as a short text table."""
        p = self.prediction
        lines = [
            f"target {p['target_ms']:.3f} ms on {p['engine']} at batch "
            f"{p['batch_size']}: predicted {p['predicted_ms']:.3f} ms "
            f"({p['predicted_speedup']:.2f}x of dense {p['dense_ms']:.3f} ms)",
            f"{'group':>5} {'kept':>9}  producers",
        ]
        for g in p["groups"]:
            kept = f"{g['kept']}/{g['size']}"
            lines.append(f"{g['index']:>5} {kept:>9}  {', '.join(g['producers'])}")
        return "\n".join(lines)


def candidate_counts(size, granularity=8, min_keep_fraction=0.0) -> list:
    """Kept counts a group of `size` may get: multiples of size // granularity.

    >>> candidate_counts(16), candidate_counts(64, 4)
    ([2, 4, 6, 8, 10, 12, 14, 16], [16, 32, 48, 64])
    """
    step = max(1, size // granularity)
    floor = max(1, int(min_keep_fraction * size + 0.999999))
    counts = [k for k in range(step, size + 1, step) if k >= floor]
    return sorted(set(counts) | {size})


def choose_counts(candidates, sensitivity, predict, target_ms) -> dict:
    """Greedy choice of kept counts whose predicted latency meets `target_ms`.

    Cuts: while the prediction is above the target, the move (one group to a
    smaller candidate) with the least added cost per millisecond saved.
    Then gives back: while some group can grow without breaking the target,
    the growth that lowers the cost most.

    Args:
        candidates: {group: ascending kept counts, the last the full size}.
        sensitivity: {group: {count: cost}}.
        predict: counts dict -> predicted ms (groups absent: full size).
        target_ms: the latency to meet.

    Returns:
        {group: kept count} for every group of `candidates`.

    Raises:
        ValueError: the target is below the fastest prediction reachable.
    """
    kept = {g: c[-1] for g, c in candidates.items()}
    now = predict(kept)
    while now > target_ms:
        best = None
        for g, counts in candidates.items():
            for k in counts:
                if k >= kept[g]:
                    break
                trial = predict({**kept, g: k})
                saved = now - trial
                if saved <= 1e-12:
                    continue
                cost = (sensitivity[g][k] - sensitivity[g][kept[g]]) / saved
                if best is None or cost < best[0]:
                    best = (cost, g, k, trial)
        if best is None:
            fastest = predict({g: c[0] for g, c in candidates.items()})
            raise ValueError(
                f"No plan reaches {target_ms:.4g} ms: the fastest candidate cut is "
                f"predicted at {fastest:.4g} ms. Ask for less (a smaller speedup or "
                "a larger latency) or a larger granularity."
            )
        _, g, k, now = best
        kept[g] = k
    while True:
        best = None
        for g, counts in candidates.items():
            for k in counts:
                if k <= kept[g]:
                    continue
                gain = sensitivity[g][kept[g]] - sensitivity[g][k]
                if gain <= 0:
                    continue
                trial = predict({**kept, g: k})
                if trial <= target_ms and (best is None or gain > best[0]):
                    best = (gain, g, k, trial)
        if best is None:
            return kept
        _, g, k, now = best
        kept[g] = k


def compact_for_counts(model, graph, counts, path=None):
    """A compact copy of `model` with group g cut to counts[g] (the model is kept).

    Returns:
        The compact keras.Model (saved to `path` when given).
    """
    import keras

    from keras_admm.compaction import compact
    from keras_admm.pruning.masks import hard_prune

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    cut = {g: k for g, k in counts.items() if k < graph.groups[g].size}
    if cut:
        # The clone's own graph: `graph` reads `model`'s variables (the same
        # values, so the same channels are chosen).
        hard_prune(clone, plan_for_counts(graph, cut).resolve(clone), graph=True)
    small = compact(clone)
    if path:
        small.save(path)
    return small


def _time_beside_dense(model, graph, table, cuts, folder):
    """Saves the dense model and a compact copy per {name: counts} in `folder`
    (dense.keras, <name>.keras) and times them interleaved on `table`'s engine.

    Returns:
        table.time_models' ({name: median ms}, {name: per-round seconds}),
        "dense" included.
    """
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, "dense.keras")]
    model.save(paths[0])
    for name, counts in cuts.items():
        paths.append(os.path.join(folder, f"{name}.keras"))
        compact_for_counts(model, graph, counts, paths[-1])
    return table.time_models(paths, ["dense", *cuts])


def _check_target(speedup, latency_ms):
    if (speedup is None) == (latency_ms is None):
        raise ValueError(
            "Give exactly one target: speedup=... (e.g. 1.5 for 1.5x faster than "
            "the dense model) or latency_ms=... (e.g. 5.0)."
        )
    value, name = (
        (speedup, "speedup") if speedup is not None else (latency_ms, "latency_ms")
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}.")
    if speedup is not None and speedup <= 1:
        raise ValueError(
            f"speedup must be > 1 (the dense model is 1x), got {speedup!r}; e.g. 1.5."
        )


def plan_for_target(
    model,
    speedup=None,
    latency_ms=None,
    engine="onnxruntime",
    batch_size=1,
    data=None,
    loss=None,
    granularity=8,
    min_keep_fraction=0.0,
    threads=None,
    device="cpu",
    cache_dir=None,
    calibrate=True,
    verbose=1,
) -> TargetPlan:
    """Per-group filter counts that meet a speed target at the least loss.

    Args:
        model: a built functional or Sequential model (trained, for a
            meaningful sensitivity).
        speedup: the target as dense latency / pruned latency (> 1), or
        latency_ms: the target latency in ms (one of the two).
        engine: the profiler engine whose latency counts ("onnxruntime",
            "tf", "litert", "openvino", "keras").
        batch_size: the batch size of the target.
        data: (x, y) calibration arrays for the sensitivity (a validation
            split: never the test set); None uses the weight-norm proxy.
        loss: the calibration loss (None: sparse categorical cross-entropy).
        granularity: each group's candidate counts are multiples of
            size // granularity.
        min_keep_fraction: no group keeps fewer than this share.
        threads / device: as the profiler.
        cache_dir: the latency tables' folder (None: `default_cache_dir()`).
        calibrate: also time a half-cut model to fit the non-conv rest.
        verbose: 1 shows progress.

    Returns:
        A resolved `TargetPlan` (prune it group-aware: `graph=` or
        GroupProjection), with `predicted_latency_ms`.

    Raises:
        ValueError: no target or both, a target no cut reaches, a model
            without a cuttable channel group.
    """
    from keras_admm.graph import DependencyGraph

    _check_target(speedup, latency_ms)
    graph = DependencyGraph.from_model(model)
    table = LatencyTable(engine, batch_size, threads, device, cache_dir)
    candidates = {}
    for group in graph.groups:
        if group.prunable and group.size > 1 and group.producers:
            counts = candidate_counts(group.size, granularity, min_keep_fraction)
            if len(counts) > 1:
                candidates[group.index] = counts
    latency = LatencyModel(model, graph, table, candidates)
    candidates = latency.candidates  # the groups some timed layer touches
    if not candidates:
        raise ValueError(
            f"Model '{model.name}' has no channel group that a Filter cut can "
            "shrink and a latency table can time (Conv with groups=1 or Dense "
            "producers); nothing to plan."
        )
    if verbose:
        _LOG.info("latency tables on %s, batch %d", engine, batch_size)
    latency.measure_tables(verbose=verbose)
    half = {
        g: min(c, key=lambda k: abs(k - graph.groups[g].size / 2))
        for g, c in candidates.items()
    }
    # The whole models timed for the calibration; removed afterwards.
    with tempfile.TemporaryDirectory(prefix="keras_admm_target_") as workdir:
        cut = {"half": half} if calibrate else {}
        medians, _ = _time_beside_dense(model, graph, table, cut, workdir)
    if calibrate:
        calibration = latency.calibrate(medians["dense"], half, medians["half"])
    else:
        calibration = latency.calibrate(medians["dense"])
    dense_ms = medians["dense"]
    target_ms = latency_ms if latency_ms is not None else dense_ms / speedup
    sens = group_sensitivity(model, graph, candidates, data=data, loss=loss)
    kept = choose_counts(candidates, sens.values, latency.predict, target_ms)
    predicted = latency.predict(kept)
    joint = None
    if data is not None:
        base_loss, cut_loss = loss_after_cut(model, graph, kept, data, loss)
        joint = {
            "sum_of_group_costs": sum(sens.values[g][k] for g, k in kept.items()),
            "joint_cut_cost": cut_loss - base_loss,
        }
    plan = plan_for_counts(graph, kept)
    if not plan.rules:
        raise ValueError(
            f"The dense model already meets the target ({dense_ms:.4g} ms <= "
            f"{target_ms:.4g} ms on {engine} at batch {batch_size}); nothing to cut."
        )
    resolved = plan.resolve(model)
    groups = [
        {
            "index": g,
            "size": graph.groups[g].size,
            "kept": kept[g],
            "producers": [m.layer for m in graph.groups[g].producers],
            "sensitivity": sens.values[g][kept[g]],
        }
        for g in sorted(candidates)
    ]
    prediction = {
        "engine": engine,
        "batch_size": batch_size,
        "threads": table.threads,
        "target_ms": target_ms,
        "target_speedup": speedup,
        "dense_ms": dense_ms,
        "predicted_ms": predicted,
        "predicted_speedup": dense_ms / predicted,
        "groups": groups,
        "calibration": calibration,
        "half_counts": half if calibrate else None,
        "sensitivity": {
            "measure": sens.measure,
            "base_loss": sens.base_loss,
            "samples": sens.samples,
            "values": {
                str(g): {str(k): v for k, v in c.items()}
                for g, c in sens.values.items()
            },
            "joint": joint,
        },
        "untimed_layers": latency.untimed,
        "table": {
            "path": table.path,
            "entries": len(table.entries),
            "measured_now": table.measured,
        },
        "granularity": granularity,
    }
    return TargetPlan(resolved._rule_pairs(), resolved.targets, prediction)


def check_prediction(model, plan, workdir=None) -> dict:
    """Compacts `model` cut to `plan` and times it beside the dense model.

    Uses the plan's engine, batch size and threads, dense and compact
    interleaved in one loop (30 rounds and 2 s at least).

    Args:
        model: the dense model the plan was made for (or the pruned model:
            the compact shapes depend only on the kept counts).
        plan: a `TargetPlan`.
        workdir: where the models are written (None: a temporary folder).

    Returns:
        {"predicted_ms", "measured_ms", "relative_error" ((predicted -
        measured) / measured), "dense_ms", "measured_speedup",
        "predicted_speedup", "engine", "batch_size"}.
    """
    from keras_admm.graph import DependencyGraph

    if not isinstance(plan, TargetPlan):
        raise TypeError(
            f"check_prediction needs a TargetPlan (from plan_for_target), got "
            f"{type(plan).__name__}."
        )
    p = plan.prediction
    graph = DependencyGraph.from_model(model)
    kept = {g["index"]: g["kept"] for g in p["groups"]}
    workdir = workdir or tempfile.mkdtemp(prefix="keras_admm_check_")
    table = LatencyTable(p["engine"], p["batch_size"], p.get("threads"), cache_dir="")
    medians, samples = _time_beside_dense(
        model, graph, table, {"compact": kept}, workdir
    )
    measured = medians["compact"]
    return {
        "engine": p["engine"],
        "batch_size": p["batch_size"],
        "predicted_ms": p["predicted_ms"],
        "measured_ms": measured,
        "relative_error": (p["predicted_ms"] - measured) / measured,
        "dense_ms": medians["dense"],
        "measured_speedup": paired_speedup(samples["dense"], samples["compact"]),
        "predicted_speedup": p["predicted_speedup"],
    }
