"""The channel dependency graph: which channels must be pruned together.

Removing output channel c of a convolution removes input channel c of every
layer that reads it, through BatchNormalization, activations, pooling and
padding; an Add couples channel c of all its inputs; a Concatenate maps its
inputs' channels to offsets; a DepthwiseConv couples its input and output
channel; a Flatten maps channel c to the units {k * C + c}. The graph walks the
model's Keras Nodes (not its layers), so a layer called twice is one layer with
two nodes, and its weights tie the channels of both calls.

Every channel of every tensor is an element; the coupling rules join elements
into classes (union-find), and classes that touch the same tensors form a
`ChannelGroup`: a channel index of a group is cut everywhere in the group or
nowhere. Layers outside the rule table are barriers: the channels around them
are pinned (never pruned) and `graph.barriers` says why.

Example:

>>> from keras_admm import graph, models
>>> g = graph.DependencyGraph.from_model(models.resnet_cifar(20))
>>> len(g.groups) > 10, g.barriers
(True, [])
>>> print(g)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_admm import sparsity as sparsity_lib

__all__ = [
    "DependencyGraph",
    "ChannelGroup",
    "GroupMember",
    "Barrier",
    "LayerRule",
    "RULES",
    "register_rule",
    "rule_for",
    "IndexMapping",
    "Identity",
    "Offset",
    "Interleave",
    "Repeat",
    "Explicit",
    "group_masks",
    "GroupProjection",
    "group_scores",
    "check_graph_model",
]


# ------------------------------------------------------------ index mappings
@dataclasses.dataclass(frozen=True)
class IndexMapping:
    """How a group's channel index j maps to indices along a weight axis.

    `indices()` is an int array of shape (group size, per_slot): row j lists
    the weight indices that group channel j owns.
    """

    def indices(self) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def from_indices(index: np.ndarray) -> IndexMapping:
        """The simplest named mapping that reproduces `index` (n, r)."""
        n, r = index.shape
        if n == 0:
            return Explicit(index)
        if r == 1:
            first = int(index[0, 0])
            if np.array_equal(index[:, 0], np.arange(first, first + n)):
                return Identity(n) if first == 0 else Offset(first, n)
        else:
            base = index[:, 0]
            steps = np.diff(index, axis=1)
            if np.all(steps == 1) and np.array_equal(base, np.arange(n) * r):
                return Repeat(n, r)
            if np.all(steps == steps[0, 0]):
                candidate = Interleave(int(steps[0, 0]), r, base.tolist())
                if np.array_equal(candidate.indices(), index):
                    return candidate
        return Explicit(index)


@dataclasses.dataclass(frozen=True)
class Identity(IndexMapping):
    """Group channel j is weight index j."""

    size: int

    def indices(self):
        return np.arange(self.size)[:, None]

    def __str__(self):
        return "identity"


@dataclasses.dataclass(frozen=True)
class Offset(IndexMapping):
    """Group channel j is weight index offset + j (a Concatenate segment)."""

    offset: int
    size: int

    def indices(self):
        return (self.offset + np.arange(self.size))[:, None]

    def __str__(self):
        return f"offset {self.offset}"


@dataclasses.dataclass(frozen=True)
class Interleave(IndexMapping):
    """Flatten (channels_last): channel c owns units {k * channels + c}.

    Attributes:
        channels: the channel count C of the flattened tensor (the stride).
        positions: the number of spatial positions (units per channel).
        channel_indices: for each group channel, its c (plus any offset).
    """

    channels: int
    positions: int
    channel_indices: list

    def indices(self):
        base = np.asarray(self.channel_indices, dtype=np.int64)[:, None]
        return base + self.channels * np.arange(self.positions)[None, :]

    def __str__(self):
        return f"flatten x{self.positions} (stride {self.channels})"


@dataclasses.dataclass(frozen=True)
class Repeat(IndexMapping):
    """Channel j owns indices j * multiplier .. j * multiplier + multiplier - 1.

    DepthwiseConv outputs (depth multiplier) and separable pointwise rows.
    """

    size: int
    multiplier: int

    def indices(self):
        return np.arange(self.size * self.multiplier).reshape(
            self.size, self.multiplier
        )

    def __str__(self):
        return f"repeat x{self.multiplier}"


@dataclasses.dataclass(frozen=True, eq=False)
class Explicit(IndexMapping):
    """Any other mapping, as an explicit (n, r) index array."""

    index: np.ndarray

    def indices(self):
        return np.asarray(self.index)

    def __str__(self):
        return "explicit"


# ------------------------------------------------------------- layer rules
@dataclasses.dataclass(frozen=True)
class LayerRule:
    """How one layer class moves channels.

    Attributes:
        kind: "weighted" (mixes input channels into output channels: conv,
            dense), "depthwise", "separable", "channelwise" (per-channel, with
            or without parameters: BN, activations, pooling, padding),
            "merge" (Add and friends), "concat" or "flatten".
        kernel: the kernel variable's name (weighted, depthwise, separable).
        in_axis / out_axis: kernel axes of input / output channels.
        count_key: the config key of the output channel count ("filters",
            "units"), or None.
        params: per-channel parameter names of a channelwise layer.
        constant: what a channelwise layer does to a spatially constant input:
            "eval" (apply the layer), "keep" (the same constant: pooling,
            cropping, upsampling) or "zero_border" (zero padding: only a zero
            constant stays constant).
        fold: how a constant input folds into the bias: "dense", "conv"
            (exact only without padding), or None (not foldable).
        resize: for a channelwise layer whose config names its channel count,
            a function (config, kept channels) -> new config.
    """

    kind: str
    kernel: str | None = None
    in_axis: int = -2
    out_axis: int = -1
    count_key: str | None = None
    params: tuple[str, ...] = ()
    constant: str = "eval"
    fold: str | None = None
    resize: object = None


def _resize_reshape(config, channels):
    target = list(config["target_shape"])
    if target[-1] != -1:
        target[-1] = int(channels)
    return {**config, "target_shape": tuple(target)}


L = keras.layers
_CONV = LayerRule("weighted", "kernel", -2, -1, "filters", fold="conv")
_TRANSPOSE = LayerRule("weighted", "kernel", -1, -2, "filters")
_DENSE = LayerRule("weighted", "kernel", -2, -1, "units", fold="dense")
_DEPTHWISE = LayerRule("depthwise", "kernel", -2, -1, fold="conv")
_SEPARABLE = LayerRule("separable", "pointwise_kernel", -2, -1, "filters", fold="conv")
_EVAL = LayerRule("channelwise")
_KEEP = LayerRule("channelwise", constant="keep")
_ZERO_BORDER = LayerRule("channelwise", constant="zero_border")
_MERGE = LayerRule("merge")

RULES: dict[type, LayerRule] = {
    L.Dense: _DENSE,
    L.Conv1D: _CONV,
    L.Conv2D: _CONV,
    L.Conv3D: _CONV,
    L.Conv1DTranspose: _TRANSPOSE,
    L.Conv2DTranspose: _TRANSPOSE,
    L.Conv3DTranspose: _TRANSPOSE,
    L.DepthwiseConv1D: _DEPTHWISE,
    L.DepthwiseConv2D: _DEPTHWISE,
    L.SeparableConv1D: _SEPARABLE,
    L.SeparableConv2D: _SEPARABLE,
    L.BatchNormalization: LayerRule(
        "channelwise", params=("gamma", "beta", "moving_mean", "moving_variance")
    ),
    L.PReLU: LayerRule("channelwise", params=("alpha",)),
    L.ReLU: _EVAL,
    L.LeakyReLU: _EVAL,
    L.ELU: _EVAL,
    L.Activation: _EVAL,
    L.Identity: _EVAL,
    L.Dropout: _EVAL,
    L.SpatialDropout1D: _EVAL,
    L.SpatialDropout2D: _EVAL,
    L.SpatialDropout3D: _EVAL,
    L.GaussianDropout: _EVAL,
    L.GaussianNoise: _EVAL,
    L.AlphaDropout: _EVAL,
    L.MaxPooling1D: _KEEP,
    L.MaxPooling2D: _KEEP,
    L.MaxPooling3D: _KEEP,
    L.AveragePooling1D: _KEEP,
    L.AveragePooling2D: _KEEP,
    L.AveragePooling3D: _KEEP,
    L.GlobalAveragePooling1D: _KEEP,
    L.GlobalAveragePooling2D: _KEEP,
    L.GlobalAveragePooling3D: _KEEP,
    L.GlobalMaxPooling1D: _KEEP,
    L.GlobalMaxPooling2D: _KEEP,
    L.GlobalMaxPooling3D: _KEEP,
    L.Cropping1D: _KEEP,
    L.Cropping2D: _KEEP,
    L.Cropping3D: _KEEP,
    L.UpSampling1D: _KEEP,
    L.UpSampling2D: _KEEP,
    L.UpSampling3D: _KEEP,
    L.ZeroPadding1D: _ZERO_BORDER,
    L.ZeroPadding2D: _ZERO_BORDER,
    L.ZeroPadding3D: _ZERO_BORDER,
    L.Add: _MERGE,
    L.Subtract: _MERGE,
    L.Multiply: _MERGE,
    L.Average: _MERGE,
    L.Maximum: _MERGE,
    L.Minimum: _MERGE,
    # A Reshape that keeps the last axis only moves positions (checked below).
    L.Reshape: LayerRule("channelwise", constant="keep", resize=_resize_reshape),
    L.Concatenate: LayerRule("concat"),
    L.Flatten: LayerRule("flatten"),
}
del L


def _register_keras_ops():
    """Keras ops called on symbolic tensors (`x + y`, `x * 0.5`) are nodes too."""
    try:
        from keras.src.ops import nn as nn_ops
        from keras.src.ops import numpy as numpy_ops
    except ImportError:  # another Keras layout: such nodes become barriers
        return
    for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide"):
        if hasattr(numpy_ops, name):
            RULES[getattr(numpy_ops, name)] = _MERGE
    for name in ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Tanh"):
        if hasattr(nn_ops, name):
            RULES[getattr(nn_ops, name)] = _EVAL


_register_keras_ops()

_CROSS_CHANNEL_ACTIVATIONS = ("softmax", "log_softmax")


def register_rule(layer_class: type, rule: LayerRule) -> None:
    """Teach the graph how a custom layer class moves channels.

    Args:
        layer_class: the keras.Layer subclass (matched exactly, not its
            subclasses, whose call may differ).
        rule: its LayerRule.

    Example:

        graph.register_rule(MyScale, graph.LayerRule("channelwise", params=("scale",)))

    Raises:
        TypeError: `layer_class` is not a keras.Layer subclass or `rule` is
            not a LayerRule.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Layer)):
        raise TypeError(
            f"register_rule() needs a keras.Layer subclass, got {layer_class!r}."
        )
    if not isinstance(rule, LayerRule):
        raise TypeError(f"register_rule() needs a LayerRule, got {rule!r}.")
    RULES[layer_class] = rule


def rule_for(layer) -> LayerRule | None:
    """The rule of `layer`'s exact class (subclasses may change semantics)."""
    return RULES.get(type(layer))


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _barrier_reason(layer, rule, node) -> str | None:
    """Why this node cannot pass channels (None when it can)."""
    cls = type(layer).__name__
    if rule is None:
        if isinstance(layer, keras.Model):
            return f"nested model {cls} (compact its layers in a flat model)"
        return f"{cls} has no channel rule (register one with register_rule)"
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
    if isinstance(layer, keras.layers.Activation):
        if _activation_name(layer) in _CROSS_CHANNEL_ACTIVATIONS:
            return f"{cls} applies {_activation_name(layer)} across channels"
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
        rule: its LayerRule, or None for a barrier.
        inputs / outputs: tensor indices into `graph.tensors`.
        barrier: the barrier reason, or None.
        calls: how many nodes the layer has in this model.
    """

    layer: object
    node: object
    rule: LayerRule | None
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
        "see. Rebuild it functionally (keras.Model(inputs, outputs)) to compact "
        "it; ADMM training and per-layer hard_prune (graph=None) work on it as it is."
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
        depths = sorted(functional._nodes_by_depth, reverse=True)
        for depth in depths:
            for node in functional._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                layer = node.operation
                info = NodeInfo(
                    layer=layer,
                    node=node,
                    rule=rule_for(layer),
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
            if info.rule.kind in ("weighted", "separable") and (
                _activation_name(info.layer) in _CROSS_CHANNEL_ACTIVATIONS
            ):
                pins.append(
                    (
                        self.elements(info.outputs[0]),
                        f"{info.layer.name} applies "
                        f"{_activation_name(info.layer)} across channels",
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

    # -------------------------------------------------- group-aware pruning
    def group_masks(self, plan) -> dict:
        """Group-aware masks: see `keras_admm.graph.group_masks`."""
        return group_masks(self.model, plan, graph=self)


def _is_kernel(name):
    return name in ("kernel", "depthwise_kernel", "pointwise_kernel")


def _axis_norms(value, axis):
    """Squared L2 norm of every index along `axis` (summed over other axes)."""
    other = tuple(a for a in range(value.ndim) if a != axis)
    return np.sum(np.square(value.astype(np.float64)), axis=other)


def group_scores(group, value_of, members=None) -> np.ndarray:
    """Each group channel's summed squared L2 norm over the group's kernels.

    Args:
        group: a ChannelGroup.
        value_of: member -> the NumPy value of its weight.
        members: the members to sum over (default: every kernel member).

    Returns:
        A float64 array of shape (group.size,).
    """
    scores = np.zeros(group.size)
    if members is None:
        members = [m for m in group.members if _is_kernel(m.weight)]
    for member in members:
        norms = _axis_norms(value_of(member), member.axis)
        index = member.mapping.indices()
        scores += np.where(index >= 0, norms[np.maximum(index, 0)], 0.0).sum(axis=1)
    return scores


def _group_asks(graph, pairs):
    """Which groups the plan's Filter / Channel targets ask to cut.

    Returns:
        ({group index: ratio (the largest asked)}, names of the layers whose
        Filter / Channel target the groups replace).
    """
    layers = {layer.name: layer for layer in graph.functional.layers}
    asks, handled = {}, set()
    for target, _ in pairs:
        spec = target.sparsity
        if type(spec) not in (sparsity_lib.Filter, sparsity_lib.Channel):
            continue
        layer = layers.get(target.layer_name)
        rule = rule_for(layer) if layer is not None else None
        role = "producer" if isinstance(spec, sparsity_lib.Filter) else "consumer"
        if rule is not None and rule.kind == "depthwise":
            role = "consumer"  # a depthwise filter is its input channel's group
        found = [
            group
            for group, member in graph.groups_of(target.layer_name, role)
            if _is_kernel(member.weight)
        ]
        if not found:
            continue
        handled.add(target.layer_name)
        for group in found:
            if group.prunable and group.size > 1:
                asks[group.index] = max(asks.get(group.index, 0.0), spec.ratio)
    return asks, handled


def _asking_role(target):
    """The role in which a Filter / Channel target asks for group cuts."""
    spec = target.sparsity
    if type(spec) not in (sparsity_lib.Filter, sparsity_lib.Channel):
        return None
    return "producer" if isinstance(spec, sparsity_lib.Filter) else "consumer"


def _scoring_kernels(graph, pairs):
    """{layer: (weight name, role)} of the targets whose groups they score."""
    layers = {layer.name: layer for layer in graph.functional.layers}
    scoring = {}
    for target, variable in pairs:
        role = _asking_role(target)
        if role is None:
            continue
        layer = layers.get(target.layer_name)
        rule = rule_for(layer) if layer is not None else None
        if rule is not None and rule.kind == "depthwise":
            role = "consumer"
        scoring[target.layer_name] = (variable.name, role)
    return scoring


def _scored_members(group, scoring):
    """The members whose Filter / Channel target asks for this group's cut.

    A kernel planned with another type (say a Dense with unstructured
    sparsity that reads a pruned conv) is cut with the group but does not
    score it: its own budget is chosen afterwards among the live inputs.
    """
    return [m for m in group.members if scoring.get(m.layer) == (m.weight, m.role)]


def group_masks(model, plan, graph=None) -> dict:
    """0/1 masks that cut whole channel groups, for Filter / Channel plans.

    A Filter target asks to cut its layer's output-channel groups, a Channel
    target its input-channel groups (a Dense after Flatten reaches the conv
    channels behind the Flatten). Each asked, prunable group keeps the
    `kept_count(size, ratio)` channels with the largest summed squared L2
    norm over the members that ask for the cut (the Filter targets among its
    producers, the Channel targets among its consumers), with the largest
    ratio any member asks for, and
    every kernel member of the group, planned or not, loses the cut channels:
    the same index everywhere in the group, or nowhere. Pinned groups (model
    inputs, outputs, barriers) are not cut. Targets of other sparsity types
    (unstructured, shape, N:M, filter_shape) get their own per-layer masks,
    chosen among the weights the group cuts leave (a Dense after a pruned conv
    spends its unstructured budget on live inputs) and multiplied with them.
    `GroupProjection` makes the same choice inside ADMM training.

    Args:
        model: the built Sequential or functional model.
        plan: a PruningPlan (resolved against `model` if it is not yet).
        graph: its DependencyGraph (built here when None).

    Returns:
        {weight_path: 0/1 float32 array}, for every planned kernel and every
        other kernel a group cut touches (e.g. the consumers of a filter).

    Raises:
        TypeError / ValueError: as `hard_prune`; a subclassed model.

    Example:

        masks = group_masks(model, PruningPlan.uniform(model, "filter:0.7"))
        apply_masks(model, masks)   # what hard_prune(model, plan, graph=True) does
    """
    from keras_admm.masks import planned_kernels

    graph = graph if graph is not None else DependencyGraph.from_model(model)
    pairs = planned_kernels(model, plan)
    layers = {layer.name: layer for layer in graph.functional.layers}
    scoring = _scoring_kernels(graph, pairs)
    values = {}

    def value_of(layer_name, weight):
        key = (layer_name, weight)
        if key not in values:
            variable = graph._weight(layers[layer_name], weight)
            values[key] = (variable, keras.ops.convert_to_numpy(variable))
        return values[key]

    asks, handled = _group_asks(graph, pairs)
    masks = {}

    def mask_for(variable):
        if variable.path not in masks:
            masks[variable.path] = np.ones(tuple(variable.shape), dtype="float32")
        return masks[variable.path]

    for index, ratio in sorted(asks.items()):
        group = graph.groups[index]
        keep = sparsity_lib.kept_count(group.size, ratio)
        if keep >= group.size:
            continue
        scores = group_scores(
            group,
            lambda m: value_of(m.layer, m.weight)[1],
            _scored_members(group, scoring),
        )
        # Largest score first; ties go to the lower channel index.
        order = np.lexsort((np.arange(group.size), -scores))
        cut = np.sort(order[keep:])
        for member in group.members:
            if not _is_kernel(member.weight):
                continue
            variable, _ = value_of(member.layer, member.weight)
            mask = mask_for(variable)
            index_cut = member.mapping.indices()[cut].ravel()
            index_cut = index_cut[index_cut >= 0]
            slicer = [slice(None)] * mask.ndim
            slicer[member.axis] = index_cut
            mask[tuple(slicer)] = 0.0
    for target, variable in pairs:
        if target.layer_name in handled and type(target.sparsity) in (
            sparsity_lib.Filter,
            sparsity_lib.Channel,
        ):
            mask_for(variable)
            continue
        # Rank only the live weights: a weight fed by a cut channel is zero
        # anyway, so the kernel's own budget (top-k weights, columns ...) goes
        # to inputs that survive, as GroupProjection.project does in ADMM.
        group_mask = mask_for(variable)
        value = keras.ops.convert_to_numpy(variable) * group_mask
        own = keras.ops.convert_to_numpy(
            target.sparsity.mask(value, target.layout)
        ).astype("float32")
        masks[variable.path] = group_mask * own
    return masks


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
        optimizer = ADMMWrapper(keras.optimizers.Adam(), plan, projection=projection)
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
        from keras_admm.masks import planned_kernels

        graph = graph if graph is not None else DependencyGraph.from_model(model)
        pairs = planned_kernels(model, plan)
        scoring = _scoring_kernels(graph, pairs)
        planned = {target.layer_name: variable.name for target, variable in pairs}
        # Keyed like ADMMWrapper's state: by the plan's weight paths.
        paths = {target.layer_name: target.weight_path for target, _ in pairs}
        asks, handled = _group_asks(graph, pairs)
        groups = []
        for index, ratio in sorted(asks.items()):
            group = graph.groups[index]
            scored = _scored_members(group, scoring)
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
            scores = None
            for m in members:
                if not m["score"]:
                    continue
                value = ops.cast(values[m["path"]], "float32")
                rank = len(value.shape)
                other = [a for a in range(rank) if a != m["axis"]]
                norms = ops.sum(ops.square(value), axis=other)
                index = np.asarray(m["index"])
                picked = ops.take(norms, index.ravel())
                score = ops.sum(ops.reshape(picked, index.shape), axis=1)
                scores = score if scores is None else scores + score
            if scores is None:
                continue
            _, top = ops.top_k(scores, keep)
            kept = ops.scatter(
                ops.expand_dims(top, -1), ops.ones((keep,), "float32"), (size,)
            )
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
