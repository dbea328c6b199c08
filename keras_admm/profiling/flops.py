"""FLOP counting for Keras models: a registry keyed by layer class.

FLOPs are counted as 2 x multiply-accumulates (MACs) of one sample (batch size 1);
bias additions, activations, normalisation and pooling are not counted, because the
convolutions and matrix products dominate every model this package prunes. A layer
class gets its counter through `register_flops`, so later layers (for example a
gather-conv layer) plug in without touching this module:

    @register_flops(MyGatherConv)
    def _gather_conv_flops(layer, input_shape, output_shape):
        return 2 * math.prod(output_shape[:-1]) * layer.kept_columns * layer.filters

Keras is imported only when a Keras model is counted.
"""

import math

_REGISTRY = {}
_BUILTINS_REGISTERED = False


def register_flops(*layer_classes):
    """Registers a per-sample FLOP counter for one or more layer classes.

    The counter is called as `fn(layer, input_shape, output_shape)` with the shapes
    of one call of the layer, batch dimension removed (tuples of ints), and returns
    the FLOPs of one sample. Subclasses of a registered class inherit its counter
    unless they register their own.

    Args:
        *layer_classes: the layer classes (types) the counter applies to.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        TypeError: if no class is given or an argument is not a class.

    Example:
        >>> @register_flops(keras.layers.Dense)
        ... def dense_flops(layer, input_shape, output_shape):
        ...     return 2 * math.prod(input_shape) * layer.units
    """
    if not layer_classes:
        raise TypeError("register_flops() needs at least one layer class.")
    for cls in layer_classes:
        if not isinstance(cls, type):
            raise TypeError(
                f"register_flops() takes layer classes, got {cls!r}; pass the class "
                "itself, e.g. register_flops(keras.layers.Conv2D)."
            )

    def decorator(fn):
        for cls in layer_classes:
            _REGISTRY[cls] = fn
        return fn

    return decorator


def flops_counter_for(layer):
    """Returns the registered FLOP counter for `layer`, or None if it has none.

    The lookup walks the class hierarchy, so the most specific registration wins.
    """
    _register_builtins()
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def _spatial(shape, data_format):
    """The spatial dimensions of a per-sample shape (batch already removed)."""
    if data_format == "channels_first":
        return tuple(shape[1:])
    return tuple(shape[:-1])


def _conv_flops(layer, input_shape, output_shape):
    # kernel: (*kernel_size, cin / groups, cout); one MAC per weight per output pixel.
    positions = math.prod(_spatial(output_shape, layer.data_format))
    return 2 * positions * math.prod(layer.kernel.shape)


def _conv_transpose_flops(layer, input_shape, output_shape):
    # Every input pixel scatters the whole kernel (*kernel_size, cout, cin).
    positions = math.prod(_spatial(input_shape, layer.data_format))
    return 2 * positions * math.prod(layer.kernel.shape)


def _depthwise_flops(layer, input_shape, output_shape):
    # kernel: (*kernel_size, cin, depth_multiplier).
    positions = math.prod(_spatial(output_shape, layer.data_format))
    return 2 * positions * math.prod(layer.kernel.shape)


def _separable_flops(layer, input_shape, output_shape):
    # Depthwise (*k, cin, dm) then pointwise (1.., cin * dm, cout), same positions.
    positions = math.prod(_spatial(output_shape, layer.data_format))
    weights = math.prod(layer.depthwise_kernel.shape)
    weights += math.prod(layer.pointwise_kernel.shape)
    return 2 * positions * weights


def _dense_flops(layer, input_shape, output_shape):
    # A rank > 2 input applies the kernel to every leading position.
    rows = math.prod(input_shape[:-1])
    return 2 * rows * math.prod(layer.kernel.shape)


def _gather_conv_flops(layer, input_shape, output_shape):
    # keras_admm.layers.ColumnSparseConv2D: kernel (kept columns, filters), one
    # MAC per kept column per filter per output pixel.
    positions = math.prod(output_shape[:-1])
    return 2 * positions * math.prod(layer.kernel.shape)


def _register_package_layers():
    """Registers this package's own layers (the gather-conv of `compact`)."""
    try:
        from keras_admm.layers import ColumnSparseConv2D
    except ImportError:
        return
    _REGISTRY.setdefault(ColumnSparseConv2D, _gather_conv_flops)


def _register_builtins():
    """Registers the Keras layers counted out of the box (imports keras once)."""
    global _BUILTINS_REGISTERED
    if _BUILTINS_REGISTERED:
        return
    import keras

    layers = keras.layers
    builtins = {
        _conv_flops: (layers.Conv1D, layers.Conv2D, layers.Conv3D),
        _conv_transpose_flops: (
            layers.Conv1DTranspose,
            layers.Conv2DTranspose,
            layers.Conv3DTranspose,
        ),
        _depthwise_flops: (layers.DepthwiseConv1D, layers.DepthwiseConv2D),
        _separable_flops: (layers.SeparableConv1D, layers.SeparableConv2D),
        _dense_flops: (layers.Dense,),
    }
    for fn, classes in builtins.items():
        for cls in classes:
            _REGISTRY.setdefault(cls, fn)
    _register_package_layers()
    _BUILTINS_REGISTERED = True


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
        counter = flops_counter_for(layer)
        if counter is not None and node.input_tensors and node.output_tensors:
            input_shape = _per_sample(node.input_tensors[0].shape)
            output_shape = _per_sample(node.output_tensors[0].shape)
            row["flops"] += counter(layer, input_shape, output_shape)


def layer_flops(model):
    """Per-layer FLOPs (2 x MACs, one sample) of a built Functional/Sequential model.

    Layers without a registered counter (activations, pooling, BatchNormalization
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
