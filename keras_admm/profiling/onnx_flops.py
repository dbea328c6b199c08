"""FLOP counting for ONNX graphs, so .onnx files get the same static figures.

Counts 2 x MACs of one sample for Conv, ConvTranspose, MatMul and Gemm, the nodes a
Keras model's convolutions and Dense layers export to, so the totals match
`flops.count_flops` of the source model. Shapes come from ONNX shape inference with
the batch dimension fixed to 1; shapes it cannot resolve are measured with one
ONNX Runtime inference on zeros. Needs only `onnx` and `onnxruntime`.
"""

import math

_SUPPORTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _dims(value_info):
    """Static dims of a ValueInfoProto, None where a dim is symbolic."""
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _with_unit_batch(model):
    """A copy of `model` whose graph inputs have batch dimension 1."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name for init in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    return model


def _known_shapes(model):
    """Maps tensor name -> static shape for every tensor shape inference resolves."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for value_info in (*graph.input, *graph.value_info, *graph.output):
        dims = _dims(value_info)
        if dims and all(d is not None for d in dims):
            shapes[value_info.name] = dims
    return shapes


def _runtime_shapes(model, names):
    """Shapes of tensors `names` from one ONNX Runtime inference at batch 1.

    Shape inference cannot follow every shape computation (Keras' Dense on a
    rank > 2 input exports as Shape/Gather/Concat/Reshape around a MatMul), so the
    tensors it leaves unknown are exposed as outputs and measured on zeros.
    """
    import numpy as np
    import onnx
    import onnxruntime

    model = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {output.name for output in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    initializers = {init.name for init in model.graph.initializer}
    feed = {}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        tensor_type = graph_input.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feed[graph_input.name] = np.zeros(_dims(graph_input), dtype)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    output_names = [output.name for output in session.get_outputs()]
    values = session.run(output_names, feed)
    return {n: v.shape for n, v in zip(output_names, values) if n in set(names)}


def _needed_tensors(node):
    """The tensors whose shapes `_node_flops` reads for `node`."""
    if node.op_type == "Conv":
        return [node.input[1], node.output[0]]
    if node.op_type == "ConvTranspose":
        return [node.input[0], node.input[1]]
    return [node.input[0], node.output[0]]


def _node_flops(node, shapes):
    """FLOPs of one node at batch 1, or None when a needed shape is unknown."""
    if node.op_type == "Conv":
        weight, output = shapes.get(node.input[1]), shapes.get(node.output[0])
        if weight is None or output is None:
            return None
        return 2 * math.prod(output[2:]) * math.prod(weight)
    if node.op_type == "ConvTranspose":
        data, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
        if data is None or weight is None:
            return None
        return 2 * math.prod(data[2:]) * math.prod(weight)
    if node.op_type in ("MatMul", "Gemm"):
        left, output = shapes.get(node.input[0]), shapes.get(node.output[0])
        if left is None or output is None:
            return None
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        inner = left[-2] if trans_a else left[-1]
        return 2 * math.prod(output) * inner
    return 0


def onnx_layer_flops(model_or_path):
    """Per-node FLOPs (2 x MACs, one sample) of an ONNX model.

    Args:
        model_or_path: an `onnx.ModelProto` or the path of an .onnx file.

    Returns:
        A list of dicts {"layer", "class", "flops"}, one per Conv, ConvTranspose,
        MatMul or Gemm node, in graph order.

    Raises:
        ValueError: if a counted node's shapes cannot be inferred statically.

    Example:
        >>> sum(row["flops"] for row in onnx_layer_flops("model.onnx"))
    """
    import onnx

    model = model_or_path
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model_or_path))
    model = _with_unit_batch(model)
    shapes = _known_shapes(model)
    counted = [n for n in model.graph.node if n.op_type in _SUPPORTED_OPS]
    unknown = {t for n in counted for t in _needed_tensors(n) if t not in shapes}
    if unknown:
        shapes.update(_runtime_shapes(model, sorted(unknown)))
    rows = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in _SUPPORTED_OPS:
            continue
        flops = _node_flops(node, shapes)
        name = node.name or f"{node.op_type}_{index}"
        if flops is None:
            raise ValueError(
                f"ONNX node '{name}' ({node.op_type}) has shapes that cannot be "
                "resolved; export the model with static non-batch dimensions."
            )
        rows.append({"layer": name, "class": node.op_type, "flops": flops})
    return rows


def count_onnx_flops(model_or_path):
    """Total FLOPs (2 x MACs) of one sample through an ONNX model.

    Args:
        model_or_path: an `onnx.ModelProto` or the path of an .onnx file.

    Returns:
        The FLOP count as an int.

    Raises:
        ValueError: see `onnx_layer_flops`.
    """
    return sum(row["flops"] for row in onnx_layer_flops(model_or_path))
