"""fold_batchnorm(): merge inference-mode BatchNormalization into the layer before it.

In inference BatchNormalization is a per-channel affine map,
`y = gamma * (x - mean) / sqrt(var + eps) + beta`, so when it reads the output
of a conv / dense layer (and nothing else reads that output) it folds exactly
into that layer's kernel and bias:

    kernel' = kernel * s   (s = gamma / sqrt(var + eps), on the output axis)
    bias'   = (bias - mean) * s + beta

ONNX Runtime, LiteRT and OpenVINO do this themselves when they load a model;
TensorFlow running a Keras model does not, and pays for the BatchNorm ops at
every call (docs/PERFORMANCE.md measures what that costs a compact VGG-16).
The folded model is for inference only: it has no BatchNorm left to train.

Which layers fold is read from the layer table (`registry.channel_rule`):
"weighted" layers (Conv1D/2D/3D, their transposes, Dense), "depthwise" and
"separable" ones, with a linear activation and the channel axis the
BatchNormalization normalizes. Every other BatchNormalization stays as it is.

Example:

>>> import keras, numpy as np
>>> from keras_admm import compaction
>>> inputs = keras.Input((8, 8, 3))
>>> x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
>>> x = keras.layers.BatchNormalization()(x)
>>> model = keras.Model(inputs, keras.layers.ReLU()(x))
>>> folded, folds, skipped = compaction.fold_batchnorm(model, return_folds=True)
>>> len(folds), skipped, len(folded.layers) == len(model.layers) - 1
(1, [], True)
"""

from __future__ import annotations

import keras
import numpy as np

from keras_admm import registry
from keras_admm.compaction.rebuild import clone_layer, rebuild_model
from keras_admm.graph import check_graph_model, ordered_nodes

__all__ = ["fold_batchnorm"]

_FOLDABLE_KINDS = ("weighted", "depthwise", "separable")
_WHAT = "fold_batchnorm()"


def _single_node(layer, node_ids):
    """The layer's one node in the model, or None when it is shared / reused."""
    nodes = [n for n in layer._inbound_nodes if id(n) in node_ids]
    return nodes[0] if len(nodes) == 1 else None


def _channel_axis(layer, rank):
    """The output channel axis of a conv / dense layer, in [0, rank)."""
    data_format = getattr(layer, "data_format", "channels_last")
    return 1 if data_format == "channels_first" else rank - 1


def _bn_axes(bn, rank):
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    return sorted(a % rank for a in axis)


def _foldable_variables(producer, rule):
    """Why `producer`'s variables cannot take a fold (a short reason), or None.

    Only a plain kernel (+ depthwise kernel) and bias fold: LoRA factors add to
    the kernel and a quantized kernel has its own scale, so both are refused.
    """
    name = producer.name
    if getattr(producer, "lora_enabled", False):
        return f"'{name}' has LoRA enabled (its factors would need the fold too)"
    if getattr(producer, "quantization_mode", None):
        return f"'{name}' is quantized ({producer.quantization_mode})"
    if not hasattr(producer, "use_bias"):
        return f"'{name}' ({type(producer).__name__}) has no use_bias option"
    allowed = {rule.kernel, "bias"}
    if rule.kind == "separable":
        allowed.add("depthwise_kernel")
    extra = sorted({v.name for v in producer.weights} - allowed)
    if extra:
        return f"'{name}' has variables the fold does not know: {', '.join(extra)}"
    return None


def _why_not(producer, bn, node, consumers, outputs, node_ids):
    """Why `bn` (called at `node`) cannot fold into `producer`, or None."""
    rule = registry.channel_rule(producer)
    if rule is None or rule.kind not in _FOLDABLE_KINDS:
        return f"it reads {type(producer).__name__}, which has no foldable kernel"
    if registry.activation_name(producer) != "linear":
        return f"'{producer.name}' applies its activation before the BatchNorm"
    training = node.arguments.kwargs.get("training")
    if training is not None and training is not False:
        return "it is called with training=True (batch statistics at inference)"
    reason = _foldable_variables(producer, rule)
    if reason is not None:
        return reason
    producer_node = _single_node(producer, node_ids)
    if producer_node is None or _single_node(bn, node_ids) is None:
        return (
            f"'{producer.name}' or '{bn.name}' is called more than once (a shared "
            "layer)"
        )
    node = producer_node
    out = node.output_tensors
    if len(out) != 1 or consumers.get(id(out[0]), 0) != 1 or id(out[0]) in outputs:
        return f"another layer (or a model output) also reads '{producer.name}'"
    rank = len(out[0].shape)
    if _bn_axes(bn, rank) != [_channel_axis(producer, rank)]:
        return (
            f"it normalizes axis {bn.axis}, not the channel axis of '{producer.name}'"
        )
    return None


def _inner_batchnorms(model):
    """Names of the BatchNormalizations inside a nested model, at any depth."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            names.append(layer.name)
        elif isinstance(layer, keras.Model):
            names += _inner_batchnorms(layer)
    return names


def _bn_scale_shift(bn):
    """(s, t) with bn(x) == s * x + t in inference, float64."""
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    gamma = (
        keras.ops.convert_to_numpy(bn.gamma).astype(np.float64)
        if bn.gamma is not None
        else np.ones_like(mean)
    )
    beta = (
        keras.ops.convert_to_numpy(bn.beta).astype(np.float64)
        if bn.beta is not None
        else np.zeros_like(mean)
    )
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _folded_weights(producer, bn):
    """{variable name: value} of `producer` with `bn` folded in, and its config."""
    rule = registry.channel_rule(producer)
    values = {
        v.name: keras.ops.convert_to_numpy(v).astype(np.float64)
        for v in producer.weights
    }
    scale, shift = _bn_scale_shift(bn)
    kernel = values[rule.kernel]
    if rule.kind == "depthwise":  # (*spatial, in, multiplier): channel c*m + j
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        shape = [1] * kernel.ndim
        shape[rule.out_axis % kernel.ndim] = -1
        kernel = kernel * scale.reshape(shape)
    values[rule.kernel] = kernel
    bias = values.get("bias", np.zeros_like(scale)) if producer.use_bias else 0.0
    values["bias"] = bias * scale + shift
    config = producer.get_config()
    config["use_bias"] = True
    return config, values


def fold_batchnorm(model, return_folds=False):
    """A new model computing `model`'s inference outputs with BatchNorms folded.

    Each BatchNormalization that reads only a conv / dense layer's output (a
    linear activation, nothing else reading it, the channel axis normalized) is
    removed and folded into that layer's kernel and bias. The input model is
    not modified. Use it on the model you deploy or time on TensorFlow; it
    cannot be trained as a BatchNorm model any more. Left as they are, each
    with its reason in `return_folds`: BatchNorms after a shared layer, an
    activation, a layer with LoRA or a quantized kernel, ones called with
    training=True, subclasses, and those inside nested models.

    Args:
        model: a built Sequential or functional keras.Model (e.g. the output of
            `compact()`).
        return_folds: also return the folds made, a list of
            (BatchNormalization name, layer name) pairs, and the ones skipped,
            (BatchNormalization name, reason).

    Returns:
        The new functional keras.Model (same layer names, less the folded
        BatchNormalizations), or (model, folds, skipped) with `return_folds`.

    Raises:
        TypeError: a subclassed model (the graph is needed).
        ValueError: a layer that cannot be re-created from its config.

    Example:

        folded = keras_admm.fold_batchnorm(keras_admm.compact(pruned))
        np.testing.assert_allclose(folded(x), pruned(x, training=False),
                                   rtol=1e-4, atol=1e-4)
    """
    functional = check_graph_model(model, _WHAT)
    nodes = ordered_nodes(functional)
    node_ids = {id(n) for n in nodes}
    consumers = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    outputs = {id(t) for t in functional.outputs}

    folds, skipped, folded_into = [], [], {}
    for node in nodes:
        bn = node.operation
        if isinstance(bn, keras.Model):
            skipped += [
                (name, f"inside the nested model '{bn.name}'")
                for name in _inner_batchnorms(bn)
            ]
            continue
        if not isinstance(bn, keras.layers.BatchNormalization):
            continue
        if type(bn) is not keras.layers.BatchNormalization:
            skipped.append((bn.name, f"a {type(bn).__name__}, not BatchNormalization"))
            continue
        producer = node.input_tensors[0]._keras_history.operation
        reason = _why_not(producer, bn, node, consumers, outputs, node_ids)
        if reason is None and id(node.output_tensors[0]) in outputs:
            reason = "its output is a model output (its name would be lost)"
        if reason is not None:
            skipped.append((bn.name, reason))
            continue
        folded_into[id(producer)] = bn
        folds.append((bn.name, producer.name))
    removed = {id(bn) for bn in folded_into.values()}

    def make_layer(node):
        layer = node.operation
        if id(layer) in folded_into:
            config, values = _folded_weights(layer, folded_into[id(layer)])
            return clone_layer(layer, config, _WHAT), values
        values = layer.get_weights() if isinstance(layer, keras.Layer) else None
        return clone_layer(layer, None, _WHAT), values

    folded = rebuild_model(
        functional, nodes, make_layer, model.name, _WHAT, passthrough=removed
    )
    if return_folds:
        return folded, folds, skipped
    return folded
