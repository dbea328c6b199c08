"""The channel dependency graph: which channels must be pruned together.

Removing output channel c of a convolution removes input channel c of every
layer that reads it, through BatchNormalization, activations, pooling and
padding; an Add couples channel c of all its inputs; a Concatenate maps its
inputs' channels to offsets; a DepthwiseConv couples its input and output
channel; a Flatten maps channel c to the units {k * C + c}. The graph walks the
model's Keras Nodes (not its layers), so a layer called twice is one layer with
two nodes, and its weights tie the channels of both calls. How each layer class
moves channels is its `ChannelRule` in `keras_admm.registry`.

Every channel of every tensor is an element; the coupling rules join elements
into classes (union-find), and classes that touch the same tensors form a
`ChannelGroup`: a channel index of a group is cut everywhere in the group or
nowhere. Layers without a rule are barriers: the channels around them are
pinned (never pruned) and `graph.barriers` says why.

Example:

>>> from keras_admm import models
>>> from keras_admm.graph import DependencyGraph
>>> g = DependencyGraph.from_model(models.resnet_cifar(20))
>>> len(g.groups) > 10, g.barriers
(True, [])
>>> print(g)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_admm.graph.mappings import Explicit, IndexMapping
from keras_admm.registry import (
    ChannelRule,
    activation_name,
    acts_per_channel,
    channel_rule,
)

__all__ = [
    "DependencyGraph",
    "ChannelGroup",
    "GroupMember",
    "Barrier",
    "NodeInfo",
    "check_graph_argument",
    "check_graph_model",
    "graph_for",
    "ordered_nodes",
]


def _barrier_reason(layer, rule, node) -> str | None:
    """Why this node cannot pass channels (None when it can)."""
    cls = type(layer).__name__
    if rule is None:
        if isinstance(layer, keras.Model):
            return f"nested model {cls} (compact its layers in a flat model)"
        return f"{cls} has no channel rule (add one: keras_admm.registry.register)"
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return f"{cls} uses data_format='channels_first'"
    if rule.kind in ("weighted", "depthwise", "separable"):
        if getattr(layer, "groups", 1) != 1:
            return f"{cls} is a grouped convolution (groups={layer.groups})"
    if rule.kind == "channelwise" and rule.params == (
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    ):
        rank = len(node.input_tensors[0].shape)
        axis = layer.axis if isinstance(layer.axis, int) else None
        if axis is None or axis % rank != rank - 1:
            return f"{cls} normalizes along axis {layer.axis}, not the last axis"
    if isinstance(layer, keras.layers.Activation) and not acts_per_channel(layer):
        return (
            f"{cls} applies {activation_name(layer)}, not known to act channel by "
            "channel (keras_admm.registry.register_elementwise_activation if it does)"
        )
    if isinstance(layer, keras.layers.Reshape):
        before = node.input_tensors[0].shape[-1]
        after = node.output_tensors[0].shape[-1]
        if before is None or before != after:
            return f"Reshape changes the channel axis ({before} -> {after})"
    if rule.kind == "concat":
        rank = len(node.output_tensors[0].shape)
        if layer.axis % rank != rank - 1:
            return f"Concatenate along axis {layer.axis}, not the channel axis"
    if rule.kind == "flatten" and getattr(layer, "data_format", None) not in (
        None,
        "channels_last",
    ):
        return "Flatten of a channels_first tensor"
    if len(node.output_tensors) != 1:
        return f"{cls} has {len(node.output_tensors)} outputs"
    return None


# --------------------------------------------------------------- the graph
@dataclasses.dataclass(frozen=True)
class GroupMember:
    """One weight axis whose indices belong to a channel group.

    Attributes:
        layer: the layer's name.
        weight: the variable's name ("kernel", "bias", "gamma", ...).
        axis: the (non-negative) axis of that weight.
        mapping: group channel j -> indices along `axis`.
        role: "producer" (its output channels / filters), "consumer" (its
            input channels) or "param" (a per-channel parameter or bias).
    """

    layer: str
    weight: str
    axis: int
    mapping: IndexMapping
    role: str

    @property
    def is_kernel(self) -> bool:
        """A kernel axis (producer or consumer), not a bias or per-channel param."""
        return self.role != "param"

    def __str__(self):
        return f"{self.layer}.{self.weight}[axis {self.axis}, {self.mapping}]"


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are removed together, the same index everywhere.

    Attributes:
        index: the group's position in `graph.groups`.
        size: its number of channels (classes of coupled channels).
        producers: kernels whose output channels (filters) are in the group.
        consumers: kernels whose input channels read the group.
        params: per-channel parameters and biases in the group.
        passthrough: names of the parameter-free or per-channel layers the
            group's channels flow through (BN, ReLU, Add, pooling ...).
        pinned: why the group cannot be pruned ([] when it can): a model
            input or output, or a barrier layer.
        classes: internal class ids, one per group channel.
    """

    index: int
    size: int
    producers: list
    consumers: list
    params: list
    passthrough: list
    pinned: list
    classes: np.ndarray

    @property
    def prunable(self) -> bool:
        return not self.pinned

    @property
    def members(self) -> list:
        return self.producers + self.consumers + self.params

    def __str__(self):
        head = f"group {self.index}: {self.size} channels"
        if self.pinned:
            head += f" (pinned: {'; '.join(self.pinned[:3])})"
        lines = [head]
        for title, items in (
            ("producers", self.producers),
            ("consumers", self.consumers),
        ):
            if items:
                lines.append(f"  {title}: " + ", ".join(map(str, items)))
        if self.params:
            by_layer = {}
            for member in self.params:
                by_layer.setdefault(member.layer, []).append(member.weight)
            lines.append(
                "  params: "
                + ", ".join(f"{k}({'/'.join(v)})" for k, v in by_layer.items())
            )
        if self.passthrough:
            lines.append("  through: " + ", ".join(self.passthrough))
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Barrier:
    """A node whose channels are not pruned, and why."""

    layer: str
    layer_class: str
    reason: str

    def __str__(self):
        return f"{self.layer} ({self.layer_class}): {self.reason}"


@dataclasses.dataclass
class _Binding:
    """weight axis <-> elements of one tensor of a node."""

    weight: str
    axis: int
    tensor: int  # tensor index in graph.tensors
    element_of_index: np.ndarray  # weight index -> channel index in the tensor
    role: str


@dataclasses.dataclass
class NodeInfo:
    """One call of a layer, as the graph sees it.

    Attributes:
        layer: the layer object.
        node: the Keras Node.
        rule: its ChannelRule, or None for a barrier.
        inputs / outputs: tensor indices into `graph.tensors`.
        barrier: the barrier reason, or None.
        calls: how many nodes the layer has in this model.
    """

    layer: object
    node: object
    rule: ChannelRule | None
    inputs: list
    outputs: list
    barrier: str | None
    calls: int = 1
    bindings: list = dataclasses.field(default_factory=list)


class _UnionFind:
    """Union-find over element ids; the smaller id is the root."""

    def __init__(self, size):
        self.parent = list(range(size))

    def _find(self, x):
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a, b):
        parent, find = self.parent, self._find
        a = np.asarray(a, dtype=np.int64).ravel().tolist()
        b = np.asarray(b, dtype=np.int64).ravel().tolist()
        for x, y in zip(a, b):
            rx, ry = find(x), find(y)
            if rx != ry:
                if rx < ry:
                    parent[ry] = rx
                else:
                    parent[rx] = ry

    def find_all(self) -> np.ndarray:
        parent = np.asarray(self.parent, dtype=np.int64)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand


def ordered_nodes(functional) -> list:
    """The Functional graph's nodes, inputs first (every node after its inputs)."""
    depths = sorted(functional._nodes_by_depth, reverse=True)
    return [node for d in depths for node in functional._nodes_by_depth[d]]


def check_graph_model(model, what="DependencyGraph.from_model"):
    """The model's Functional graph; a clear error for other models.

    Raises:
        TypeError: `model` is not a keras.Model, or is subclassed.
        ValueError: a Sequential model without an Input.
    """
    from keras.src.models.functional import Functional

    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} needs a keras.Model, got {type(model).__name__}.")
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(
                f"{what}: Sequential model '{model.name}' has no graph yet. Start "
                "it with keras.Input(shape) (or call model.build(input_shape))."
            )
        return functional
    if isinstance(model, Functional):
        return model
    raise TypeError(
        f"{what} works on Sequential and functional models, but '{model.name}' is "
        f"a subclassed model ({type(model).__name__}) whose graph Keras cannot "
        "see. Rebuild it functionally (keras.Model(inputs, outputs)) for "
        f"{what}; ADMM training and per-layer hard_prune (graph=None) work on it "
        "as it is."
    )


def check_graph_argument(graph, what="hard_prune"):
    """Raise TypeError unless `graph` is None, a bool or a DependencyGraph.

    For callers that take `graph=` before they have a model (GradualPruning);
    `graph_for` does this check and also matches the graph to the model.
    """
    if not (graph is None or isinstance(graph, (bool, DependencyGraph))):
        raise TypeError(
            f"{what}: graph must be None or False (per layer), True (build the "
            f"channel dependency graph) or a DependencyGraph, got {graph!r}."
        )


def graph_for(model, graph, what="hard_prune"):
    """The DependencyGraph a `graph=` argument asks for, checked against `model`.

    Args:
        model: the model being pruned.
        graph: None or False (per-layer pruning, no graph), True (build it), or
            a DependencyGraph built from this same model.
        what: the caller's name, for the error messages.

    Returns:
        A DependencyGraph, or None for per-layer pruning.

    Raises:
        TypeError: `graph` is none of the above.
        ValueError: a DependencyGraph built from another model (its channel
            choices would read that model's weights).
    """
    check_graph_argument(graph, what)
    if graph is None or graph is False:
        return None
    if graph is True:
        return DependencyGraph.from_model(model)
    functional = check_graph_model(model, what)
    if graph.functional is functional:
        return graph
    same_layers = [id(layer) for layer in graph.functional.layers] == [
        id(layer) for layer in functional.layers
    ]
    if graph.model is model and same_layers:
        return graph  # a Sequential rebuilt its graph (e.g. model.build): same layers
    if graph.model is model:
        why = "its layers changed since the graph was built (add / pop?)"
    elif graph.model.name == model.name:
        why = (
            f"the graph is of another model object named '{model.name}' (a clone "
            "or a loaded copy?), whose weights it would read"
        )
    else:
        why = (
            f"the graph is of model '{graph.model.name}', not of '{model.name}', "
            "whose weights it would read"
        )
    raise ValueError(
        f"{what}: the DependencyGraph does not belong to the model being pruned: "
        f"{why}. Pass graph=True, or DependencyGraph.from_model(model)."
    )


class DependencyGraph:
    """Channel groups of a Sequential or functional model.

    Build it with `DependencyGraph.from_model(model)`.

    Attributes:
        model: the model.
        nodes: NodeInfo per Keras Node, in topological order.
        tensors: the KerasTensors, indexed by the tensor ids used in nodes.
        groups: the ChannelGroups (prunable and pinned).
        barriers: the Barrier nodes (layers whose channels are not pruned).
        element_class: element id -> class id (a class = coupled channels).
        class_group / class_slot: class id -> group index / channel index in it.
        class_pinned: class id -> True when the class must be kept.
    """

    def __init__(self):
        raise TypeError("Use DependencyGraph.from_model(model).")

    # ------------------------------------------------------------- building
    @classmethod
    def from_model(cls, model) -> DependencyGraph:
        """Walk `model`'s nodes and build its channel groups.

        Args:
            model: a built Sequential or functional keras.Model.

        Returns:
            A DependencyGraph.

        Raises:
            TypeError: a subclassed model (its graph is not visible).
            ValueError: a Sequential model without an Input.

        Example:

            g = DependencyGraph.from_model(model)
            print(g)            # groups, their members and barriers
            g.barriers          # layers whose channels stay
        """
        functional = check_graph_model(model)
        self = object.__new__(cls)
        self.model = model
        self.functional = functional
        self._build(functional)
        return self

    def _tensor(self, keras_tensor):
        key = id(keras_tensor)
        if key not in self._tensor_index:
            shape = tuple(keras_tensor.shape)
            size = shape[-1] if len(shape) >= 2 else 1
            if size is None:
                size = 1
                self._unknown_channels.add(len(self.tensors))
            self._tensor_index[key] = len(self.tensors)
            self.tensors.append(keras_tensor)
            self.tensor_start.append(self._num_elements)
            self.tensor_size.append(int(size))
            self._num_elements += int(size)
        return self._tensor_index[key]

    def elements(self, tensor: int) -> np.ndarray:
        """The element ids of tensor `tensor`'s channels."""
        start = self.tensor_start[tensor]
        return np.arange(start, start + self.tensor_size[tensor])

    def _build(self, functional):
        self.tensors = []
        self.tensor_start = []
        self.tensor_size = []
        self._tensor_index = {}
        self._unknown_channels = set()
        self._num_elements = 0
        self.nodes = []
        for x in functional.inputs:
            self._tensor(x)
        for node in ordered_nodes(functional):
            if node.operation is None or node.is_input:
                continue
            layer = node.operation
            info = NodeInfo(
                layer=layer,
                node=node,
                rule=channel_rule(layer),
                inputs=[self._tensor(t) for t in node.input_tensors],
                outputs=[self._tensor(t) for t in node.output_tensors],
                barrier=None,
            )
            info.barrier = _barrier_reason(layer, info.rule, node)
            if info.barrier is None and any(
                t in self._unknown_channels for t in info.inputs + info.outputs
            ):
                info.barrier = "a tensor with an unknown channel count"
            self.nodes.append(info)
        calls = {}
        for info in self.nodes:
            calls[id(info.layer)] = calls.get(id(info.layer), 0) + 1
        for info in self.nodes:
            info.calls = calls[id(info.layer)]
        self.inputs = [self._tensor(t) for t in functional.inputs]
        self.outputs = [self._tensor(t) for t in functional.outputs]
        uf = _UnionFind(self._num_elements)
        pins = []  # (element array, reason)
        for t in self.inputs:
            pins.append((self.elements(t), "model input"))
        for t in self.outputs:
            pins.append((self.elements(t), "model output"))
        first_node_of_layer = {}
        for info in self.nodes:
            if info.barrier is None:
                info.barrier = self._couple(info, uf)
            if info.barrier is not None:
                for t in info.inputs + info.outputs:
                    pins.append(
                        (self.elements(t), f"barrier {info.layer.name}: {info.barrier}")
                    )
                continue
            if info.rule.kind in (
                "weighted",
                "separable",
                "depthwise",
            ) and not acts_per_channel(info.layer):
                pins.append(
                    (
                        self.elements(info.outputs[0]),
                        f"{info.layer.name} applies {activation_name(info.layer)}, "
                        "not known to act channel by channel",
                    )
                )
            # A layer called twice: its weights tie the channels of both calls.
            key = id(info.layer)
            if key in first_node_of_layer:
                first = first_node_of_layer[key]
                # Weights (and a config that names the channel count) are
                # shared by every call, so the calls' channels are tied.
                if getattr(info.layer, "weights", None) or info.rule.resize:
                    for a, b in zip(
                        first.inputs + first.outputs, info.inputs + info.outputs
                    ):
                        if self.tensor_size[a] == self.tensor_size[b]:
                            uf.union(self.elements(a), self.elements(b))
            else:
                first_node_of_layer[key] = info
        root = uf.find_all()
        _, self.element_class = np.unique(root, return_inverse=True)
        num_classes = int(self.element_class.max()) + 1 if self._num_elements else 0
        self.class_pinned = np.zeros(num_classes, dtype=bool)
        self._class_pin_reasons = {}
        for elements, reason in pins:
            for c in np.unique(self.element_class[elements]).tolist():
                self.class_pinned[c] = True
                reasons = self._class_pin_reasons.setdefault(c, [])
                if len(reasons) < 4 and reason not in reasons:
                    reasons.append(reason)
        self.barriers = []
        seen = set()
        for info in self.nodes:
            if info.barrier is not None and info.layer.name not in seen:
                seen.add(info.layer.name)
                self.barriers.append(
                    Barrier(info.layer.name, type(info.layer).__name__, info.barrier)
                )
        self._make_groups(num_classes)

    def _couple(self, info, uf) -> str | None:
        """Union the elements this node ties; record its weight bindings."""
        rule, layer = info.rule, info.layer
        ins, outs = info.inputs, info.outputs
        size = self.tensor_size
        kind = rule.kind
        if kind in ("weighted", "separable"):
            if len(ins) != 1:
                return f"{type(layer).__name__} with {len(ins)} inputs"
            n_in, n_out = size[ins[0]], size[outs[0]]
            if kind == "weighted":
                info.bindings = [
                    _Binding(
                        rule.kernel, rule.in_axis, ins[0], np.arange(n_in), "consumer"
                    ),
                    _Binding(
                        rule.kernel,
                        rule.out_axis,
                        outs[0],
                        np.arange(n_out),
                        "producer",
                    ),
                ]
            else:
                m = int(layer.depth_multiplier)
                info.bindings = [
                    _Binding(
                        "depthwise_kernel", -2, ins[0], np.arange(n_in), "consumer"
                    ),
                    _Binding(
                        "pointwise_kernel",
                        -2,
                        ins[0],
                        np.repeat(np.arange(n_in), m),
                        "consumer",
                    ),
                    _Binding(
                        "pointwise_kernel", -1, outs[0], np.arange(n_out), "producer"
                    ),
                ]
            if getattr(layer, "use_bias", False):
                info.bindings.append(
                    _Binding("bias", 0, outs[0], np.arange(n_out), "param")
                )
            return None
        if kind == "depthwise":
            m = int(layer.depth_multiplier)
            n_in = size[ins[0]]
            if size[outs[0]] != n_in * m:
                return "depthwise output size does not match input x multiplier"
            uf.union(np.repeat(self.elements(ins[0]), m), self.elements(outs[0]))
            info.bindings = [
                _Binding("kernel", -2, ins[0], np.arange(n_in), "consumer")
            ]
            if layer.use_bias:
                info.bindings.append(
                    _Binding("bias", 0, outs[0], np.arange(n_in * m), "param")
                )
            return None
        if kind == "channelwise":
            if len(ins) != 1 or size[ins[0]] != size[outs[0]]:
                return "input and output channel counts differ"
            uf.union(self.elements(ins[0]), self.elements(outs[0]))
            present = {v.name for v in getattr(layer, "weights", ())}
            info.bindings = [
                _Binding(p, -1, ins[0], np.arange(size[ins[0]]), "param")
                for p in rule.params
                if p in present
            ]
            return None
        if kind == "merge":
            if any(size[t] != size[outs[0]] for t in ins):
                return "inputs broadcast along the channel axis"
            for t in ins:
                uf.union(self.elements(t), self.elements(outs[0]))
            return None
        if kind == "concat":
            offset = 0
            out_elements = self.elements(outs[0])
            for t in ins:
                uf.union(self.elements(t), out_elements[offset : offset + size[t]])
                offset += size[t]
            if offset != size[outs[0]]:
                return "concatenated sizes do not add up"
            return None
        if kind == "flatten":
            n_in, n_out = size[ins[0]], size[outs[0]]
            if n_out % n_in:
                return "flattened size is not a multiple of the channel count"
            uf.union(
                self.elements(ins[0])[np.arange(n_out) % n_in], self.elements(outs[0])
            )
            return None
        return f"unknown rule kind {kind!r}"

    def _make_groups(self, num_classes):
        elements = np.arange(self._num_elements)
        tensor_of = np.repeat(
            np.arange(len(self.tensors)), np.asarray(self.tensor_size, dtype=np.int64)
        )
        classes = self.element_class
        order = np.lexsort((tensor_of, classes))
        sorted_classes = classes[order]
        sorted_tensors = tensor_of[order]
        bounds = np.flatnonzero(np.diff(sorted_classes)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(order)]])
        by_footprint = {}
        first_element = np.full(num_classes, self._num_elements, dtype=np.int64)
        np.minimum.at(first_element, classes, elements)
        for start, end in zip(starts.tolist(), ends.tolist()):
            c = int(sorted_classes[start])
            key = sorted_tensors[start:end].tobytes()
            by_footprint.setdefault(key, []).append(c)
        self.class_group = np.zeros(num_classes, dtype=np.int64)
        self.class_slot = np.zeros(num_classes, dtype=np.int64)
        groups = []
        for members in by_footprint.values():
            members = np.asarray(members)
            members = members[np.argsort(first_element[members], kind="stable")]
            index = len(groups)
            self.class_group[members] = index
            self.class_slot[members] = np.arange(len(members))
            pinned = []
            for c in members.tolist():
                for reason in self._class_pin_reasons.get(c, []):
                    if reason not in pinned:
                        pinned.append(reason)
                if len(pinned) >= 4:
                    break
            groups.append(
                ChannelGroup(index, len(members), [], [], [], [], pinned, members)
            )
        self.groups = groups
        group_tensors = {}
        for start, end in zip(starts.tolist(), ends.tolist()):
            g = int(self.class_group[sorted_classes[start]])
            if g not in group_tensors:
                group_tensors[g] = set(sorted_tensors[start:end].tolist())
        self._group_tensors = group_tensors
        # Members: every weight binding, split by group.
        seen = set()
        for info in self.nodes:
            if info.barrier is not None:
                continue
            for binding in info.bindings:
                key = (info.layer.name, binding.weight, binding.axis, binding.role)
                if key in seen:
                    continue
                seen.add(key)
                for group, mapping in self._binding_mappings(info, binding):
                    rank = len(self._weight(info.layer, binding.weight).shape)
                    member = GroupMember(
                        info.layer.name,
                        binding.weight,
                        binding.axis % rank,
                        mapping,
                        binding.role,
                    )
                    {
                        "producer": group.producers,
                        "consumer": group.consumers,
                        "param": group.params,
                    }[binding.role].append(member)
        for info in self.nodes:
            if info.barrier is not None or info.rule.kind in ("weighted", "separable"):
                continue
            for t in info.inputs + info.outputs:
                for g in np.unique(
                    self.class_group[self.element_class[self.elements(t)]]
                ).tolist():
                    names = self.groups[g].passthrough
                    if info.layer.name not in names:
                        names.append(info.layer.name)

    @staticmethod
    def _weight(layer, name):
        for variable in layer.weights:
            if variable.name == name:
                return variable
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no weight '{name}'. "
            "Build the model before building its dependency graph."
        )

    def _binding_mappings(self, info, binding):
        """[(group, IndexMapping)] for one binding, one entry per group touched."""
        elements = self.tensor_start[binding.tensor] + binding.element_of_index
        classes = self.element_class[elements]
        groups = self.class_group[classes]
        slots = self.class_slot[classes]
        result = []
        for g in np.unique(groups).tolist():
            where = np.flatnonzero(groups == g)
            group = self.groups[g]
            order = np.lexsort((where, slots[where]))
            where = where[order]
            counts = np.bincount(slots[where], minlength=group.size)
            if counts.min() != counts.max() or counts.min() == 0:
                index = np.full((group.size, max(1, counts.max())), -1)
                for s, w in zip(slots[where].tolist(), where.tolist()):
                    row = index[s]
                    row[np.argmax(row < 0)] = w
                result.append((group, Explicit(index)))
                continue
            index = where.reshape(group.size, counts[0])
            result.append((group, IndexMapping.from_indices(index)))
        return result

    # -------------------------------------------------------------- queries
    def groups_of(self, layer_name, role) -> list:
        """[(group, member)] of `layer_name`'s kernel members with this role."""
        result = []
        for group in self.groups:
            for member in group.members:
                if member.layer == layer_name and member.role == role:
                    result.append((group, member))
        return result

    def node_infos(self, layer_name) -> list:
        return [info for info in self.nodes if info.layer.name == layer_name]

    def __str__(self):
        prunable = [g for g in self.groups if g.prunable]
        lines = [
            f"DependencyGraph of '{self.model.name}': {len(self.nodes)} nodes, "
            f"{len(self.groups)} channel groups ({len(prunable)} prunable), "
            f"{len(self.barriers)} barrier(s)"
        ]
        for group in self.groups:
            if group.producers or group.consumers:
                lines.append(str(group))
        if self.barriers:
            lines.append("barriers (channels around them are not pruned):")
            lines.extend(f"  {b}" for b in self.barriers)
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"DependencyGraph('{self.model.name}', {len(self.groups)} groups, "
            f"{len(self.barriers)} barriers)"
        )
