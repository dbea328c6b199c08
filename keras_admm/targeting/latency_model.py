"""LatencyModel: a model's latency predicted from the kept count of each group.

predicted(counts) = scale * sum over timed layers of table[layer](cin, cout)
                    + rest

Each Conv / Dense layer's input and output channel counts follow from the kept
counts of the channel groups it reads and writes (`DependencyGraph`); its
latency comes from a `LatencyTable`. Timed alone, layers pay per-call costs the whole
model pays once and miss what runs between them (BatchNorm, adds, pooling,
layers not timed alone); `calibrate` fits the scale and the rest from two
whole models timed on the engine: the dense model and one cut to about half
of every group.

Example:

    lm = LatencyModel(model, graph, table, candidates)
    lm.calibrate(dense_ms=12.0, half_counts=..., half_ms=7.1)
    lm.predict({1: 8, 6: 16})      # ms
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["LatencyModel", "TimedLayer"]


@dataclasses.dataclass
class TimedLayer:
    """A layer with a latency table: how its channel counts follow the groups.

    Attributes:
        layer: the Keras layer.
        cin / cout: its dense input / output channel counts.
        reads / writes: [(group index, width)]: a kept channel of the group
            is `width` input (output) channels of the layer (a Flatten before
            a Dense makes width = positions).
    """

    layer: object
    cin: int
    cout: int
    reads: list
    writes: list

    def counts(self, kept, sizes):
        """(cin, cout) of the layer when group g keeps kept[g] channels."""

        def removed(pairs):
            return sum(w * (sizes[g] - kept.get(g, sizes[g])) for g, w in pairs)

        return max(1, self.cin - removed(self.reads)), max(
            1, self.cout - removed(self.writes)
        )


def _width(member):
    indices = member.mapping.indices()
    return len(indices[0]) if len(indices) else 1


class LatencyModel:
    """Predicts a model's latency on one engine from per-group kept counts.

    Args:
        model: the dense Keras model.
        graph: its `DependencyGraph`.
        table: a `LatencyTable` (engine, batch size).
        candidates: {group index: ascending kept counts} of the groups a
            plan may cut; the tables are measured for every combination a
            timed layer can see. `self.candidates` keeps the groups that
            some timed layer reads or writes.
    """

    def __init__(self, model, graph, table, candidates):
        from keras_admm import registry
        from keras_admm.plan import prunable_layers

        self.table = table
        self.graph = graph
        self.candidates = {g: sorted(set(c)) for g, c in candidates.items()}
        self.sizes = {g.index: g.size for g in graph.groups}
        self.layers, self.untimed = [], {}
        for layer in prunable_layers(model):
            ok, why = table.supports(layer)
            if not ok:
                self.untimed[layer.name] = why
                continue
            kernel = registry.kernel_variable(layer)
            spec = registry.kernel_spec(layer)
            layout = spec.layout.normalized(len(kernel.shape))
            cin = math.prod(kernel.shape[a] for a in layout.channel_axes)
            cout = math.prod(kernel.shape[a] for a in layout.filter_axes)
            reads = [
                (g.index, _width(m))
                for g, m in graph.groups_of(layer.name, "consumer")
                if m.is_kernel and g.index in self.candidates
            ]
            writes = [
                (g.index, _width(m))
                for g, m in graph.groups_of(layer.name, "producer")
                if m.is_kernel and g.index in self.candidates
            ]
            self.layers.append(TimedLayer(layer, cin, cout, reads, writes))
        # A group no timed layer reads or writes would be cut blind: keep it.
        touched = {g for t in self.layers for g, _ in t.reads + t.writes}
        self.candidates = {g: c for g, c in self.candidates.items() if g in touched}
        self.scale, self.rest_ms = 1.0, 0.0
        self.calibration = None

    # ----------------------------------------------------------------- tables
    def table_items(self):
        """Every (layer, cin, cout) the candidate counts can give."""
        import itertools

        items = []
        for timed in self.layers:
            groups = sorted({g for g, _ in timed.reads + timed.writes})
            for combo in itertools.product(*(self.candidates[g] for g in groups)):
                kept = dict(zip(groups, combo))
                items.append((timed.layer, *timed.counts(kept, self.sizes)))
        return items

    def measure_tables(self, verbose=0) -> int:
        """Times every missing table entry; returns how many were timed."""
        return self.table.measure(self.table_items(), verbose=verbose)

    # ------------------------------------------------------------- prediction
    def layer_ms(self, kept) -> float:
        """Sum of the timed layers' table latencies at `kept` counts."""
        return sum(
            self.table.latency_ms(t.layer, *t.counts(kept, self.sizes))
            for t in self.layers
        )

    def predict(self, kept) -> float:
        """Predicted latency (ms) with group g keeping kept[g] channels."""
        return max(self.scale * self.layer_ms(kept) + self.rest_ms, 1e-6)

    def calibrate(self, dense_ms, half_counts=None, half_ms=None) -> dict:
        """Fits predicted = scale * layer sum + rest to measured whole models.

        Timed alone, each layer pays the engine's per-call cost that the whole
        model pays once, and misses what runs between the layers (BatchNorm,
        adds, pooling), so the sum of the tables is off by a scale and an
        offset. Two measured models fix both: the dense one and a cut one;
        with the dense one alone the scale is 1.

        Args:
            dense_ms: the dense model's measured latency.
            half_counts / half_ms: another cut's counts and measured latency.

        Returns:
            The calibration: scale, rest and the numbers behind them.
        """
        dense_sum = self.layer_ms({})
        scale, rest = 1.0, dense_ms - dense_sum
        half_sum = None
        if half_counts is not None and half_ms is not None:
            half_sum = self.layer_ms(half_counts)
            if dense_sum - half_sum > 1e-9 and dense_ms > half_ms:
                scale = (dense_ms - half_ms) / (dense_sum - half_sum)
                rest = dense_ms - scale * dense_sum
        self.scale, self.rest_ms = scale, rest
        self.calibration = {
            "dense_ms": dense_ms,
            "dense_layer_sum_ms": dense_sum,
            "half_ms": half_ms,
            "half_layer_sum_ms": half_sum,
            "scale": scale,
            "rest_ms": rest,
        }
        return self.calibration
