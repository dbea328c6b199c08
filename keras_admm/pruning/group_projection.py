"""GroupProjection: the group-aware Z-step of ADMM, channel groups cut jointly.

Built from a plan and the model's dependency graph; inside training it works
on tensors only (no graph, no model), and it serialises with the optimizer.
Channels are chosen by `keras_admm.pruning.selection`, as hard pruning chooses
them.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_admm import sparsity as sparsity_lib
from keras_admm.graph import graph_for
from keras_admm.plan import planned_kernels
from keras_admm.pruning import selection

__all__ = ["GroupProjection"]


@keras.saving.register_keras_serializable(package="keras_admm")
class GroupProjection:
    """The group-aware Z-step of ADMM: Filter / Channel cuts per channel group.

    ADMMWrapper projects every planned kernel on its own; in a residual,
    concatenating or depthwise net that asks for cuts the converter cannot
    realise. With a GroupProjection, the planned kernels of each asked group
    are projected jointly: a group channel's score is its summed squared norm
    (of W + U) over the group's kernels that ask for the cut (Filter targets
    among its producers, Channel targets among its consumers), the
    `kept_count(size, ratio)` best channels are kept, and every planned
    kernel of the group loses the same cut channels; a planned kernel of
    another type (a Dense with unstructured sparsity after a pruned conv)
    then projects among its live inputs only. For one group whose planned
    members all ask for the cut, this is the exact Euclidean projection
    (argmin ||Z - V|| with at most k channels of the group non-zero). A
    planned kernel that loses the cut channels without asking (the next conv
    of a filter-pruned chain, reading them as inputs) does not score them, so
    there the choice is by the asking kernels' norms alone: a feasible point,
    not always the joint argmin. So is a kernel in two asked groups (its
    filters in one, its input channels in another), which gets both cuts (as
    with FilterShape). It chooses the channels
    `group_masks` (hard_prune with a graph) chooses for the same weights (up
    to float32 rounding in near-ties). Targets of other sparsity types keep
    their own projection.

    Args:
        groups: [{"ratio": r, "members": [{"path": weight path, "axis": a,
            "index": [[...], ...], "score": whether it scores the channels
            (default True)}]}], as built by `from_plan`.
        handled: weight paths of the Filter / Channel targets the groups
            replace; other targets keep their own projection.

    Example:

        plan = PruningPlan.uniform(model, "filter:0.5")
        projection = GroupProjection.from_plan(model, plan)
        optimizer = ADMMWrapper(keras.optimizers.Adam(), plan,
                                projection=projection)
    """

    def __init__(self, groups, handled=()):
        self.handled = sorted(str(path) for path in handled)
        self.groups = []
        for group in groups:
            members = [
                {
                    "path": str(m["path"]),
                    "axis": int(m["axis"]),
                    "index": np.asarray(m["index"], dtype=np.int64).tolist(),
                    "score": bool(m.get("score", True)),
                }
                for m in group["members"]
            ]
            self.groups.append({"ratio": float(group["ratio"]), "members": members})

    @classmethod
    def from_plan(cls, model, plan, graph=None) -> GroupProjection:
        """The projection of `plan`'s Filter / Channel targets in `model`.

        Raises:
            TypeError / ValueError: as `group_masks`.
        """
        graph = graph_for(model, True if graph is None else graph, "GroupProjection")
        if graph is None:
            raise ValueError(
                "GroupProjection needs a graph: pass None, True or a DependencyGraph."
            )
        pairs = planned_kernels(model, plan)
        scoring = selection.scoring_kernels(graph, pairs)
        planned = {target.layer_name: variable.name for target, variable in pairs}
        # Keyed like ADMMWrapper's state: by the plan's weight paths.
        paths = {target.layer_name: target.weight_path for target, _ in pairs}
        asks, handled, skipped = selection.group_asks(graph, pairs)
        selection.warn_skipped_cuts(skipped, "GroupProjection")
        groups = []
        for index, ratio in sorted(asks.items()):
            group = graph.groups[index]
            scored = selection.scored_members(group, scoring)
            members = [
                {
                    "path": paths[m.layer],
                    "axis": m.axis,
                    "index": m.mapping.indices(),
                    "score": any(m is other for other in scored),
                }
                for m in group.members
                if planned.get(m.layer) == m.weight
            ]
            if members and not any(np.any(np.asarray(m["index"]) < 0) for m in members):
                groups.append({"ratio": ratio, "members": members})
        return cls(groups, handled=[paths[name] for name in handled])

    def check_plan(self, plan, what="ADMMWrapper"):
        """Raise ValueError unless this projection was built for `plan`.

        Every path it cuts must be one of the plan's kernels, and every group's
        ratio one that a kernel of the group asks for in the plan: a projection
        built from another model, or for other ratios, would otherwise steer
        ADMM to the wrong targets without a word.
        """
        targets = {t.weight_path: t.sparsity for t in plan.targets}
        strangers = sorted(
            {m["path"] for g in self.groups for m in g["members"]}.union(self.handled)
            - set(targets)
        )
        if strangers:
            raise ValueError(
                f"{what}: the GroupProjection cuts kernels that are not in the plan "
                f"({', '.join(strangers[:3])}{', ...' if len(strangers) > 3 else ''})"
                ": it was built for another model or plan. Build it from the same "
                "ones: GroupProjection.from_plan(model, plan)."
            )
        for group in self.groups:
            asked = {
                round(float(getattr(targets[m["path"]], name)), 9)
                for m in group["members"]
                for name in ("ratio", "filter_ratio")
                if hasattr(targets[m["path"]], name)
            }
            if round(group["ratio"], 9) not in asked:
                path = group["members"][0]["path"]
                raise ValueError(
                    f"{what}: the GroupProjection cuts the group of '{path}' at "
                    f"ratio {group['ratio']:g}, but the plan asks for "
                    f"{sorted(asked) or 'no Filter or Channel cut'} there: it was "
                    "built for another plan. Build it from this one: "
                    "GroupProjection.from_plan(model, plan)."
                )

    def masks(self, values) -> dict:
        """{path: 0/1 mask} of the group cuts, for the paths in the groups."""
        ops = keras.ops
        masks = {}
        for group in self.groups:
            members = [m for m in group["members"] if m["path"] in values]
            if not members:
                continue
            size = len(members[0]["index"])
            keep = sparsity_lib.kept_count(size, group["ratio"])
            if keep >= size:
                continue
            scores = selection.channel_scores(
                size,
                [
                    (ops.cast(values[m["path"]], "float32"), m["axis"], m["index"])
                    for m in members
                    if m["score"]
                ],
            )
            if scores is None:
                continue
            kept = selection.keep_top(scores, keep)
            for m in members:
                index = np.asarray(m["index"])
                shape = tuple(values[m["path"]].shape)
                length = shape[m["axis"]]
                cut = ops.repeat(1.0 - kept, index.shape[1])
                axis_mask = 1.0 - ops.scatter(index.reshape(-1, 1), cut, (length,))
                broadcast = [1] * len(shape)
                broadcast[m["axis"]] = length
                mask = ops.reshape(axis_mask, broadcast)
                previous = masks.get(m["path"])
                masks[m["path"]] = mask if previous is None else previous * mask
        return masks

    def project(self, values, targets) -> dict:
        """{weight_path: Z} for every target: group cuts, then own projections.

        Args:
            values: {weight_path: tensor} (W + U of every planned kernel).
            targets: the plan's LayerTargets.
        """
        masks = self.masks(values)
        handled = set(self.handled)
        result = {}
        for target in targets:
            path = target.weight_path
            value = keras.ops.convert_to_tensor(values[path])
            if path in masks:
                value = value * keras.ops.cast(masks[path], value.dtype)
            if path not in handled:
                value = target.sparsity.project(value, target.layout)
            result[path] = value
        return result

    def get_config(self):
        return {"groups": self.groups, "handled": list(self.handled)}

    @classmethod
    def from_config(cls, config):
        return cls(config["groups"], config.get("handled", ()))

    def __repr__(self):
        return f"GroupProjection({len(self.groups)} groups)"
