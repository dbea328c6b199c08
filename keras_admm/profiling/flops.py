"""FLOP counting for Keras models, per layer call, from the layer table.

FLOPs are counted as 2 x multiply-accumulates (MACs) of one sample (batch size 1);
bias additions, activations, normalisation and pooling are not counted, because the
convolutions and matrix products dominate every model this package prunes. What a
layer class costs is its entry in `keras_admm.registry` (the one FLOP counter,
also used by the sparsity report and `compact`'s summary); a custom layer plugs in
with `keras_admm.registry.register` or `register_flops`:

    @register_flops(MyGatherConv)
    def _gather_conv_flops(layer, input_shape, output_shape):
        return 2 * math.prod(output_shape[:-1]) * layer.kept_columns * layer.filters

Keras (and the registry) is imported only when a Keras model is counted.
"""


def register_flops(*layer_classes):
    """Registers a per-sample FLOP counter: see `keras_admm.registry.register_flops`."""
    from keras_admm import registry

    return registry.register_flops(*layer_classes)


def _per_sample(shape):
    """Drops the batch dimension of a Keras tensor shape, as a tuple of ints."""
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"FLOPs need static shapes, got {tuple(shape)}; build the model with a "
            "fixed input shape, e.g. keras.Input((32, 32, 3))."
        )
    return dims


def _graph_nodes(model):
    """The call nodes of a Functional or Sequential model, inputs first.

    Only the nodes of this model's own graph are used: a layer's `_inbound_nodes`
    also holds stale nodes (Sequential rebuilds its graph on every `add`).
    """
    graph = getattr(model, "_functional", None) or model
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise ValueError(
            f"model '{model.name}' has no layer graph (a subclassed model?), so its "
            "shapes are unknown; FLOPs need a Functional or Sequential model built "
            "on keras.Input(...), or count its ONNX export with count_onnx_flops()."
        )
    for depth in sorted(nodes_by_depth, reverse=True):
        yield from nodes_by_depth[depth]


def _is_model(layer):
    return hasattr(layer, "_nodes_by_depth") or hasattr(layer, "_functional")


def _accumulate(model, totals, prefix=""):
    """Adds the FLOPs of every layer call in `model` (nested models entered)."""
    from keras_admm import registry

    for node in _graph_nodes(model):
        layer = node.operation
        name = f"{prefix}{layer.name}"
        if _is_model(layer):
            _accumulate(layer, totals, prefix=f"{name}/")
            continue
        if type(layer).__name__ == "InputLayer":
            continue
        row = totals.setdefault(
            name, {"layer": name, "class": type(layer).__name__, "flops": 0}
        )
        if registry.counts_flops(layer) and node.input_tensors and node.output_tensors:
            input_shape = _per_sample(node.input_tensors[0].shape)
            output_shape = _per_sample(node.output_tensors[0].shape)
            row["flops"] += registry.flops_of(layer, input_shape, output_shape)


def layer_flops(model):
    """Per-layer FLOPs (2 x MACs, one sample) of a built Functional/Sequential model.

    Layers the registry counts nothing for (activations, pooling, BatchNormalization
    ...) are listed with 0 FLOPs. A layer called several times counts every call.

    Args:
        model: a built `keras.Model` whose layers have static input shapes.

    Returns:
        A list of dicts {"layer", "class", "flops"}, in model order.

    Raises:
        ValueError: if the model is not built, has no layer graph (a subclassed
            model) or a counted layer has a dynamic shape.

    Example:
        >>> rows = layer_flops(model)
        >>> sum(r["flops"] for r in rows) == count_flops(model)
        True
    """
    if not model.built:
        raise ValueError(
            f"model '{model.name}' is not built; call it once on an input or build "
            "it with keras.Input(...) before counting FLOPs."
        )
    totals = {}
    _accumulate(model, totals)
    return list(totals.values())


def count_flops(model):
    """Total FLOPs (2 x MACs) of one sample through a Keras model.

    Args:
        model: a built Functional or Sequential `keras.Model`.

    Returns:
        The FLOP count as an int.

    Raises:
        ValueError: see `layer_flops`.

    Example:
        >>> count_flops(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
        24
    """
    return sum(row["flops"] for row in layer_flops(model))
