"""Plans for a FLOPs target: per-layer ratios that cut conv FLOPs by a factor.

`plan_for_flops_reduction(model, "filter", 2.0)` turns "2x fewer conv
multiply-accumulates" into one sparsity per conv layer (the first pruned less),
rounded to whole groups; FLOPs are counted by the one counter of
`keras_admm.registry`, as `sparsity_report` counts them.
"""

from __future__ import annotations

import dataclasses
import math

from keras_admm import registry
from keras_admm import sparsity as sparsity_lib
from keras_admm.arguments import check_number
from keras_admm.plan import PruningPlan, all_layers
from keras_admm.pruning.report import sparsity_report

__all__ = ["LEVEL_TYPES", "LevelPlan", "plan_for_flops_reduction"]

LEVEL_TYPES = ("filter", "shape", "filter_shape", "unstructured", "channel")
_CONV_OPS = ("conv", "conv_transpose", "depthwise", "separable")


@dataclasses.dataclass
class LevelPlan:
    """A plan whose per-layer ratios cut the conv FLOPs by about `level`.

    Attributes:
        plan: the resolved PruningPlan (conv layers + any extra rules).
        kind: the sparsity type of the conv layers.
        level: the requested conv FLOPs reduction.
        expected_conv_flops_reduction: the reduction the kept counts give,
            as `sparsity_report` counts it (>= level).
        layers: per conv layer: name, flops_before, keep_fraction, kept and
            total counts per unit ("groups", or "filters"/"columns").
    """

    plan: PruningPlan
    kind: str
    level: float
    expected_conv_flops_reduction: float
    layers: list

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "level": self.level,
            "expected_conv_flops_reduction": self.expected_conv_flops_reduction,
            "layers": self.layers,
            "plan": {t.layer_name: str(t.sparsity) for t in self.plan.targets},
        }


def _groups(shape, layout, kind):
    """(rows, columns) or (groups,) counts of a kernel for `kind`."""
    rank = len(shape)
    layout = layout.normalized(rank)
    size = math.prod(shape)
    rows = math.prod(shape[a] for a in layout.filter_axes)
    channels = math.prod(shape[a] for a in layout.channel_axes)
    return {
        "filter": (rows,),
        "shape": (size // rows,),
        "channel": (channels,),
        "unstructured": (size,),
        "filter_shape": (rows, size // rows),
    }[kind]


def _round_counts(kind, totals, keep):
    if kind == "filter_shape":
        rows, cols = totals
        r = min(rows, max(1, round(math.sqrt(keep) * rows)))
        c = min(cols, max(1, round(keep * rows * cols / r)))
        return [r, c]
    return [min(totals[0], max(1, round(keep * totals[0])))]


def _fraction(counts, totals):
    return math.prod(c / t for c, t in zip(counts, totals))


def plan_for_flops_reduction(
    model, kind, level, extra_rules=(), first_layer_exponent=0.5
) -> LevelPlan:
    """Per-layer ratios of one sparsity type that cut conv FLOPs by `level`.

    Every conv-type layer is pruned. The first keeps a fraction k^e of its
    weights (e = `first_layer_exponent`: it is cheap and sensitive, so it is
    pruned less), every other conv layer keeps k, and k is solved so that the
    conv FLOPs after are 1/level of before. The fractions become whole group
    counts (FilterShape: sqrt of the layer's fraction of filters, the rest in
    columns), and while rounding leaves the reduction below `level` the layer
    with the most remaining FLOPs gives up one more group. FLOPs are counted as
    `sparsity_report` does (kernel weights executed x output positions), so the
    report of a model pruned to this plan shows `expected_conv_flops_reduction`.

    Args:
        model: a built model with known shapes (Sequential or functional).
        kind: "filter", "shape", "filter_shape", "unstructured" or "channel".
        level: the conv FLOPs reduction, > 1 (e.g. 8.0 for 8x fewer).
        extra_rules: (layer name, sparsity) pairs for non-conv layers (e.g.
            [("fc1", "unstructured:0.9")]), the same at every level.
        first_layer_exponent: e above, in [0, 1]; 1 treats all layers alike.

    Returns:
        A LevelPlan.

    Raises:
        TypeError: level is not a real number.
        ValueError: unknown kind, level <= 1, a level no group count reaches,
            a model without conv layers, or an extra rule for a conv layer.

    Example:

        level = plan_for_flops_reduction(models.lenet5(), "filter", 4.0,
                                         extra_rules=[("fc1", "unstructured:0.9")])
        level.plan.targets, level.expected_conv_flops_reduction   # ..., 4.0x
    """
    if kind not in LEVEL_TYPES:
        raise ValueError(
            f"Unknown sparsity type {kind!r} for a FLOPs level. Use one of "
            f"{', '.join(LEVEL_TYPES)}."
        )
    level = check_number(
        "plan_for_flops_reduction",
        "level",
        level,
        "It is the conv FLOPs reduction, e.g. 4.0 for 4x fewer conv FLOPs.",
        above=1,
    )
    if not 0.0 <= first_layer_exponent <= 1.0:
        raise ValueError(
            f"first_layer_exponent must be in [0, 1], got {first_layer_exponent!r}."
        )
    rows = [r for r in sparsity_report(model).rows if r["op"] in _CONV_OPS]
    if not rows:
        raise ValueError(
            f"Model '{model.name}' has no conv layer, so there are no conv FLOPs to "
            "reduce. Pass a model with Conv layers."
        )
    conv_names = {r["layer"] for r in rows}
    if isinstance(extra_rules, dict):
        extra_rules = list(extra_rules.items())
    extra_rules = list(extra_rules)
    for rule in extra_rules:
        if not isinstance(rule, (tuple, list)) or len(rule) != 2:
            raise TypeError(
                f"extra_rules must be (layer, sparsity) pairs or a dict, got "
                f"{rule!r}; e.g. extra_rules={{'fc1': 'unstructured:0.9'}}."
            )
    for name, _ in extra_rules:
        if name in conv_names:
            raise ValueError(
                f"extra_rules names conv layer '{name}', whose sparsity the level "
                "sets. Give extra rules for non-conv (e.g. Dense) layers only."
            )
    specs = {layer.name: layer for layer in all_layers(model)}
    flops = [r["flops_before"] for r in rows]
    totals = [
        _groups(
            tuple(r["kernel_shape"]),
            registry.kernel_spec(specs[r["layer"]]).layout,
            kind,
        )
        for r in rows
    ]
    exponents = [first_layer_exponent] + [1.0] * (len(rows) - 1)
    budget = sum(flops) / level

    def after(k):
        return sum(f * k**e for f, e in zip(flops, exponents))

    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if after(mid) < budget else (low, mid)
    keep = [low**e for e in exponents]
    counts = [_round_counts(kind, t, k) for t, k in zip(totals, keep)]

    def cost(i):
        return flops[i] * _fraction(counts[i], totals[i])

    def total():
        return sum(cost(i) for i in range(len(rows)))

    def shrink(i):
        """Drop one group of layer i (FilterShape: a column, else a filter)."""
        if counts[i][-1] > 1:
            counts[i][-1] -= 1
            return True
        if counts[i][0] > 1:
            counts[i][0] -= 1
            return True
        return False

    while total() > budget * (1 + 1e-12):
        # Prefer the single cut that reaches the level with the least overshoot,
        # else cut the layer with the most FLOPs left.
        reaching = []
        for i in range(len(rows)):
            saved = [list(c) for c in counts]
            if shrink(i) and total() <= budget * (1 + 1e-12):
                reaching.append((total(), i))
            counts[:] = saved
        if reaching:
            shrink(max(reaching)[1])
            continue
        if not any(shrink(i) for i in sorted(range(len(rows)), key=cost)[::-1]):
            best = sum(flops) / total()
            raise ValueError(
                f"A {kind} plan cannot cut the conv FLOPs of '{model.name}' by "
                f"{level:g}x: keeping one group per layer gives {best:.2f}x. Choose "
                "a lower level or a finer sparsity type (e.g. unstructured)."
            )
    rules, layers = [], []
    for row, total, count, k in zip(rows, totals, counts, keep):
        removed = [(t - c) / t for t, c in zip(total, count)]
        if kind == "filter_shape":
            spec = sparsity_lib.FilterShape(*removed)
            units = {"filters": [count[0], total[0]], "columns": [count[1], total[1]]}
        else:
            spec = sparsity_lib.parse(f"{kind}:{removed[0]!r}")
            units = {"groups": [count[0], total[0]]}
        rules.append((row["layer"], spec))
        layers.append(
            {
                "layer": row["layer"],
                "flops_before": row["flops_before"],
                "keep_fraction": _fraction(count, total),
                "solved_keep_fraction": k,
                "kept": {u: v[0] for u, v in units.items()},
                "total": {u: v[1] for u, v in units.items()},
                "sparsity": str(spec),
            }
        )
    plan = PruningPlan(rules + [(n, s) for n, s in extra_rules]).resolve(model)
    expected = sum(flops) / sum(cost(i) for i in range(len(rows)))
    return LevelPlan(plan, kind, float(level), expected, layers)
