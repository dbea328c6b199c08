"""The channel dependency graph: nodes, channel groups and index mappings.

`DependencyGraph.from_model(model)` says which channels must be cut together
(residual Adds, Concatenate offsets, depthwise, Flatten); what each layer class
does to channels is its rule in `keras_admm.registry`.
"""

from keras_admm.graph.dependency import (
    Barrier,
    ChannelGroup,
    DependencyGraph,
    GroupMember,
    NodeInfo,
    check_graph_argument,
    check_graph_model,
    graph_for,
    ordered_nodes,
)
from keras_admm.graph.mappings import (
    Explicit,
    Identity,
    IndexMapping,
    Interleave,
    Offset,
    Repeat,
)

__all__ = [
    "Barrier",
    "ChannelGroup",
    "DependencyGraph",
    "Explicit",
    "GroupMember",
    "Identity",
    "IndexMapping",
    "Interleave",
    "NodeInfo",
    "Offset",
    "Repeat",
    "check_graph_argument",
    "check_graph_model",
    "graph_for",
    "ordered_nodes",
]
