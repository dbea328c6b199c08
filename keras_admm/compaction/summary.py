"""CompactionSummary: what `compact` did, per layer, with the one FLOP counter."""

from __future__ import annotations

import dataclasses

import keras

from keras_admm import registry
from keras_admm.graph import check_graph_model
from keras_admm.tables import dump_json, factor, human, text_table

__all__ = ["CompactionSummary", "build_summary", "layer_rows"]


def layer_rows(model):
    functional = check_graph_model(model, "compact")
    in_model = {
        id(node) for nodes in functional._nodes_by_depth.values() for node in nodes
    }
    rows = {}
    for layer in functional.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        flops = 0
        for node in layer._inbound_nodes:
            if id(node) not in in_model or not node.output_tensors:
                continue
            try:
                f = registry.node_flops(layer, node)
            except (AttributeError, KeyError, IndexError):
                f = None
            flops = None if flops is None or f is None else flops + f
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = None
        kernel = next((v for v in layer.weights if "kernel" in v.name), None)
        rows[layer.name] = {
            "class": type(layer).__name__,
            "output_shape": None if shape is None else list(shape),
            "kernel_shape": None if kernel is None else list(kernel.shape),
            "params": int(layer.count_params()),
            "flops": flops,
        }
    return rows


def _shape_text(shape):
    if shape is None:
        return "-"
    return "x".join("?" if d is None else str(d) for d in shape[1:])


class CompactionSummary:
    """What `compact` did, per layer: shapes, params and FLOPs before / after.

    Attributes:
        rows: one dict per layer of the original model (keys: layer,
            class_before, class_after, shape_before, shape_after,
            kernel_before, kernel_after, params_before, params_after,
            flops_before, flops_after, note).
        totals: params / FLOPs before and after and their reduction factors.
        barriers: the graph's barriers (layers whose channels were kept).
        removed_channels / kept_channels: totals over all channel groups.
    """

    _HEADERS = ("layer", "class", "shape", "params", "FLOPs", "note")

    def __init__(self, rows, barriers, kept_channels, removed_channels, align):
        self.rows = rows
        self.barriers = list(barriers)
        self.kept_channels = kept_channels
        self.removed_channels = removed_channels
        self.align = align
        self.totals = self._totals()

    def _totals(self):
        totals = {}
        for key in ("params", "flops"):
            before = [r[f"{key}_before"] for r in self.rows]
            after = [r[f"{key}_after"] for r in self.rows]
            b = None if any(v is None for v in before) else int(sum(before))
            a = None if any(v is None for v in after) else int(sum(after))
            totals[f"{key}_before"] = b
            totals[f"{key}_after"] = a
            totals[f"{key}_reduction"] = b / a if b and a else None
        return totals

    def to_dict(self) -> dict:
        """Plain-Python rows, totals, barriers and channel counts."""
        return {
            "rows": [dict(r) for r in self.rows],
            "totals": dict(self.totals),
            "barriers": [dataclasses.asdict(b) for b in self.barriers],
            "kept_channels": self.kept_channels,
            "removed_channels": self.removed_channels,
            "align": self.align,
        }

    def to_json(self, path=None, indent=2) -> str:
        """The summary as JSON; also written to `path` when given."""
        return dump_json(self.to_dict(), path, indent)

    def _cells(self):
        cells = []
        for r in self.rows:
            cls = r["class_before"]
            if r["class_after"] != cls:
                cls = f"{cls} -> {r['class_after']}"
            shape = _shape_text(r["shape_before"])
            if r["shape_after"] != r["shape_before"]:
                shape += f" -> {_shape_text(r['shape_after'])}"
            params = human(r["params_before"])
            if r["params_after"] != r["params_before"]:
                params += f" -> {human(r['params_after'])}"
            flops = human(r["flops_before"])
            if r["flops_after"] != r["flops_before"]:
                flops += f" -> {human(r['flops_after'])}"
            cells.append((r["layer"], cls, shape, params, flops, r["note"]))
        return cells

    def _total_lines(self):
        t = self.totals

        lines = [
            f"params: {human(t['params_before'])} -> {human(t['params_after'])} "
            f"({factor(t['params_reduction'])} fewer)",
            f"FLOPs: {human(t['flops_before'])} -> {human(t['flops_after'])} "
            f"({factor(t['flops_reduction'])} fewer)",
            f"channels removed: {self.removed_channels} of "
            f"{self.removed_channels + self.kept_channels} (align={self.align})",
        ]
        if self.barriers:
            lines.append(
                "barriers (channels kept): " + "; ".join(str(b) for b in self.barriers)
            )
        return lines

    def __str__(self):
        table = text_table(self._HEADERS, self._cells())
        rule = "-" * len(table.splitlines()[1])
        return "\n".join([table, rule, *self._total_lines()])

    def to_markdown(self) -> str:
        """The table and totals as GitHub-flavoured Markdown."""
        header = "| " + " | ".join(self._HEADERS) + " |"
        align = "|" + "|".join(["---"] * len(self._HEADERS)) + "|"
        body = ["| " + " | ".join(map(str, r)) + " |" for r in self._cells()]
        return "\n".join(
            [header, align, *body, "", *(f"- {t}" for t in self._total_lines())]
        )

    def __repr__(self):
        t = self.totals
        return (
            f"CompactionSummary({len(self.rows)} layers, params "
            f"{human(t['params_before'])} -> {human(t['params_after'])}, FLOPs "
            f"{human(t['flops_before'])} -> {human(t['flops_after'])})"
        )


def build_summary(model, new_model, compactor, removed=()):
    """The CompactionSummary of `compactor`'s rewrite of `model` into `new_model`.

    `removed` names the layers of zero residual branches left out before it.
    """
    before = layer_rows(model)
    after = layer_rows(new_model)
    gone = {
        "class": "removed",
        "output_shape": None,
        "kernel_shape": None,
        "params": 0,
        "flops": 0,
    }
    rows = []
    for name, b in before.items():
        a = gone if name in removed else after.get(name, b)
        note = compactor.choices.get(name, "")
        if name in removed:
            note = "in a residual branch of exact zeros"
        barrier = next((x for x in compactor.graph.barriers if x.layer == name), None)
        if barrier is not None:
            note = f"barrier: {barrier.reason}"
        rows.append(
            {
                "layer": name,
                "class_before": b["class"],
                "class_after": a["class"],
                "shape_before": b["output_shape"],
                "shape_after": a["output_shape"],
                "kernel_before": b["kernel_shape"],
                "kernel_after": a["kernel_shape"],
                "params_before": b["params"],
                "params_after": a["params"],
                "flops_before": b["flops"],
                "flops_after": a["flops"],
                "note": note,
            }
        )
    kept = int(compactor.kept_class.sum())
    removed = int(compactor.kept_class.size - kept)
    return CompactionSummary(
        rows, compactor.graph.barriers, kept, removed, compactor.align
    )
