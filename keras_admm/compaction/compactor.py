"""compact(): turn a pruned model into a smaller dense model, same outputs.

The converter reads the channel classes of `keras_admm.graph` and decides, for
every class of coupled channels, whether the model still needs it:

1. Constant propagation: a filter whose kernel slice is zero emits a constant
   (its bias, through its activation); BatchNormalization, activations,
   pooling, cropping, upsampling and merges map constants to constants; zero
   padding keeps only a zero constant (its borders are 0).
2. Liveness, to a fixed point: a class is kept when it is pinned (model
   input / output, barrier), or when a kept output channel of some layer
   reads it through a non-zero weight and its value cannot be folded. A
   constant folds exactly into a Dense bias, and into a convolution bias when
   the convolution adds no padding (then every output position sums the same
   kernel taps); otherwise the class is kept. So all-zero filters, channels
   that feed only zero weights, and filters whose consumers ignore them are
   all removed, in both directions.
3. `align=k`: each group's kept count is rounded up to a multiple of k by
   keeping its strongest removed channels (exact: they are simply not
   removed).
4. Rebuild: every layer is re-created from its config with the new filters /
   units, called node by node (a shared layer stays shared), and its weights
   are the sliced originals, plus the folded constants in the biases.
5. Column sparsity: a Conv2D whose remaining kernel keeps few GEMM columns on a
   small H x W becomes a `ColumnSparseConv2D` (compaction/layers.py), when the
   cost model (`column_sparse_pays`) says it pays.

Example:

>>> import keras_admm
>>> from keras_admm import compaction, models
>>> model = models.lenet5()
>>> plan = keras_admm.PruningPlan.uniform(model, "filter:0.8", skip_last=True)
>>> _ = keras_admm.hard_prune(model, plan, graph=True)
>>> small, summary = compaction.compact(model, return_summary=True)
>>> small.count_params() < model.count_params()
True
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_admm.compaction.layers import ColumnSparseConv2D, same_padding
from keras_admm.compaction.rebuild import clone_layer, rebuild_model
from keras_admm.compaction.summary import build_summary
from keras_admm.compaction.zero_branches import remove_zero_branches
from keras_admm.graph import DependencyGraph, check_graph_model
from keras_admm.pruning import selection

__all__ = ["compact", "column_sparse_pays"]

_COLUMN_MODES = ("auto", "always", "never")


# ------------------------------------------------------------- cost model
def column_sparse_pays(kept_fraction, positions, channels) -> bool:
    """Whether a column-sparse rewrite of a 3x3-like conv should run faster.

    The rule follows docs/DESIGN.md's measured table (shifted 1x1 sums against the
    dense conv, TF and ONNX Runtime on a 2-core CPU): at 8x8 positions with
    >= 128 input channels it breaks even at about 25% of the columns kept; at
    16x16 only at 12.5%; at 32x32 never. Elsewhere the dense conv (with its
    zeros) stays.

    Args:
        kept_fraction: kept columns / all columns (kh * kw * cin).
        positions: output positions H x W (None when unknown).
        channels: input channels.

    Returns:
        True when the rewrite is expected to pay.
    """
    if positions is None or kept_fraction >= 1.0:
        return False
    if positions <= 8 * 8 and channels >= 128:
        return kept_fraction <= 0.25
    if positions <= 16 * 16 and channels >= 64:
        return kept_fraction <= 0.125
    return False


# -------------------------------------------------------------- helpers
def _weights(layer) -> dict:
    variables = getattr(layer, "weights", ())  # a Keras op node has none
    return {v.name: keras.ops.convert_to_numpy(v) for v in variables}


def _call_on_constants(info, constants):
    """The node's operation on per-channel constants (tiny tensors).

    `constants` maps each input tensor id to a (channels,) array; it is
    reshaped to (1, ..., 1, channels) so it broadcasts like the original.
    Non-tensor arguments (a scalar in `x * 0.5`) stay as recorded.
    """
    arrays = {}
    for tensor in info.node.input_tensors:
        rank = len(tensor.shape)
        values = constants[id(tensor)].astype("float32")
        arrays[id(tensor)] = values.reshape((1,) * (rank - 1) + (-1,))
    args, kwargs = info.node.arguments.fill_in(arrays)
    if isinstance(info.layer, keras.Layer):
        kwargs = dict(kwargs, training=False)
    out = keras.ops.convert_to_numpy(info.layer(*args, **kwargs))
    return out.reshape(-1, out.shape[-1]).astype(np.float64)


def _spatial_sizes(keras_tensor):
    return tuple(keras_tensor.shape[1:-1])


def _pad_free(layer, input_tensor) -> bool:
    """True when the conv adds no padding, so a constant input folds exactly."""
    padding = getattr(layer, "padding", "valid")
    if padding == "valid":
        return True
    kernel = tuple(np.atleast_1d(layer.kernel_size))
    strides = tuple(np.atleast_1d(layer.strides))
    dilation = tuple(np.atleast_1d(getattr(layer, "dilation_rate", 1)))
    sizes = _spatial_sizes(input_tensor)
    rank = len(sizes)
    kernel = kernel * rank if len(kernel) == 1 else kernel
    strides = strides * rank if len(strides) == 1 else strides
    dilation = dilation * rank if len(dilation) == 1 else dilation
    for size, k, s, d in zip(sizes, kernel, strides, dilation):
        effective = (int(k) - 1) * int(d) + 1
        if effective == 1:
            continue
        if padding == "causal" or size is None:
            return False
        if sum(same_padding(int(size), int(k), int(s), int(d))) != 0:
            return False
    return True


def _activate(layer, values):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return values
    x = keras.ops.convert_to_tensor(values.astype("float32")[None, :])
    return keras.ops.convert_to_numpy(activation(x))[0].astype(np.float64)


def _kernel_matrices(info, weights):
    """(nz, tap_sums) of a weighted / separable node, both (n_in, n_out).

    nz[i, o]: input channel i reaches output o through a non-zero weight;
    tap_sums[i, o]: what a constant 1 on input i adds to output o when the
    layer adds no padding.
    """
    rule = info.rule
    if rule.kind == "separable":
        depthwise = weights["depthwise_kernel"]
        pointwise = weights["pointwise_kernel"]
        m = depthwise.shape[-1]
        n_in = depthwise.shape[-2]
        spatial = tuple(range(depthwise.ndim - 2))
        d_nz = np.any(depthwise != 0, axis=spatial)  # (in, m)
        d_sum = depthwise.sum(axis=spatial, dtype=np.float64)  # (in, m)
        pw = pointwise.reshape(-1, pointwise.shape[-1]).reshape(
            n_in, m, pointwise.shape[-1]
        )
        nz = np.any(d_nz[:, :, None] & (pw != 0), axis=1)
        sums = np.einsum("im,imo->io", d_sum, pw.astype(np.float64))
        return nz, sums
    kernel = weights[rule.kernel]
    rank = kernel.ndim
    in_axis, out_axis = rule.in_axis % rank, rule.out_axis % rank
    moved = np.moveaxis(kernel, (in_axis, out_axis), (rank - 2, rank - 1))
    spatial = tuple(range(rank - 2))
    nz = np.any(moved != 0, axis=spatial) if spatial else moved != 0
    sums = moved.sum(axis=spatial, dtype=np.float64) if spatial else moved
    return nz, np.asarray(sums, dtype=np.float64)


@dataclasses.dataclass
class _NodeState:
    info: object
    weights: dict
    nz: np.ndarray = None
    sums: np.ndarray = None
    foldable: np.ndarray = None


class _Compactor:
    """One compaction: constants, liveness, alignment, then the rebuild."""

    def __init__(self, model, align, column_sparse):
        self.model = model
        self.graph = DependencyGraph.from_model(model)
        self.align = align
        self.column_sparse = column_sparse
        g = self.graph
        self.layer_weights = {}
        for info in g.nodes:
            if id(info.layer) not in self.layer_weights:
                self.layer_weights[id(info.layer)] = _weights(info.layer)
        n = len(g.tensors)
        self.const = [None] * n
        self.value = [None] * n
        for t in range(n):
            self.const[t] = np.zeros(g.tensor_size[t], dtype=bool)
            self.value[t] = np.zeros(g.tensor_size[t], dtype=np.float64)

    # ------------------------------------------------- constant propagation
    def propagate_constants(self):
        g = self.graph
        self.states = []
        for info in g.nodes:
            weights = self.layer_weights[id(info.layer)]
            state = _NodeState(info, weights)
            self.states.append(state)
            if info.barrier is not None:
                continue
            kind = info.rule.kind
            handler = getattr(self, f"_const_{kind}")
            handler(state)

    def _const_weighted(self, state):
        info = state.info
        t_in, t_out = info.inputs[0], info.outputs[0]
        state.nz, state.sums = _kernel_matrices(info, state.weights)
        fold = info.rule.fold
        exact = fold == "dense" or (
            fold == "conv" and _pad_free(info.layer, info.node.input_tensors[0])
        )
        c_in, v_in = self.const[t_in], self.value[t_in]
        # A zero constant contributes nothing, padding or not.
        silent = c_in & (v_in == 0)
        foldable = c_in & exact & (info.calls == 1) if fold is not None else silent
        state.foldable = foldable | silent
        # Output o is constant when every input reaching it is a foldable
        # constant (or nothing reaches it: a zero filter).
        if fold is None:
            out_const = ~state.nz.any(axis=0)
            pre = np.zeros(state.nz.shape[1])
        else:
            blocking = state.nz & ~((c_in & exact) | silent)[:, None]
            out_const = ~blocking.any(axis=0)
            pre = np.where(c_in, v_in, 0.0) @ state.sums
        bias = state.weights.get("bias")
        if bias is not None and getattr(info.layer, "use_bias", True):
            pre = pre + bias
        self.const[t_out] = out_const
        self.value[t_out] = np.where(out_const, _activate(info.layer, pre), 0.0)

    _const_separable = _const_weighted

    def _const_depthwise(self, state):
        info = state.info
        t_in, t_out = info.inputs[0], info.outputs[0]
        kernel = state.weights["kernel"]
        m = kernel.shape[-1]
        spatial = tuple(range(kernel.ndim - 2))
        zero = ~np.any(kernel != 0, axis=spatial).ravel()  # (in * m,)
        sums = kernel.sum(axis=spatial, dtype=np.float64).ravel()
        exact = _pad_free(info.layer, info.node.input_tensors[0])
        c_in = np.repeat(self.const[t_in], m)
        v_in = np.repeat(self.value[t_in], m)
        usable = c_in & (exact | (v_in == 0))
        out_const = zero | usable
        pre = np.where(usable, v_in * sums, 0.0)
        if info.layer.use_bias:
            pre = pre + state.weights["bias"]
        self.const[t_out] = out_const
        self.value[t_out] = np.where(out_const, _activate(info.layer, pre), 0.0)

    def _const_channelwise(self, state):
        info = state.info
        t_in, t_out = info.inputs[0], info.outputs[0]
        c_in, v_in = self.const[t_in], self.value[t_in]
        mode = info.rule.constant
        if not c_in.any():
            return
        if mode == "keep":
            self.const[t_out] = c_in.copy()
            self.value[t_out] = v_in.copy()
            return
        if mode == "zero_border":
            keep = c_in & (v_in == 0)
            self.const[t_out] = keep
            self.value[t_out] = np.zeros_like(v_in)
            return
        tensor = info.node.input_tensors[0]
        y = _call_on_constants(info, {id(tensor): np.where(c_in, v_in, 0.0)})
        uniform = np.all(y == y[:1], axis=0)
        self.const[t_out] = c_in & uniform & np.isfinite(y[0])
        self.value[t_out] = np.where(self.const[t_out], y[0], 0.0)

    def _const_merge(self, state):
        info = state.info
        t_out = info.outputs[0]
        c = np.logical_and.reduce([self.const[t] for t in info.inputs])
        if not c.any():
            return
        constants = {
            id(tensor): np.where(c, self.value[t], 0.0)
            for tensor, t in zip(info.node.input_tensors, info.inputs)
        }
        y = _call_on_constants(info, constants)
        uniform = np.all(y == y[:1], axis=0)
        self.const[t_out] = c & uniform & np.isfinite(y[0])
        self.value[t_out] = np.where(self.const[t_out], y[0], 0.0)

    def _const_concat(self, state):
        info = state.info
        t_out = info.outputs[0]
        self.const[t_out] = np.concatenate([self.const[t] for t in info.inputs])
        self.value[t_out] = np.concatenate([self.value[t] for t in info.inputs])

    def _const_flatten(self, state):
        info = state.info
        t_in, t_out = info.inputs[0], info.outputs[0]
        index = np.arange(self.graph.tensor_size[t_out]) % self.graph.tensor_size[t_in]
        self.const[t_out] = self.const[t_in][index]
        self.value[t_out] = self.value[t_in][index]

    # ------------------------------------------------------------ liveness
    def decide(self):
        g = self.graph
        cls = g.element_class
        kept = g.class_pinned.copy()
        weighted = [
            s
            for s in self.states
            if s.info.barrier is None and s.info.rule.kind in ("weighted", "separable")
        ]
        needs = []
        for s in weighted:
            need = s.nz & ~s.foldable[:, None]
            needs.append(
                (
                    cls[g.elements(s.info.inputs[0])],
                    cls[g.elements(s.info.outputs[0])],
                    need,
                )
            )
        scores = {}
        while True:
            changed = True
            while changed:
                changed = False
                for in_cls, out_cls, need in reversed(needs):
                    out_kept = kept[out_cls]
                    if not out_kept.any():
                        continue
                    live = need[:, out_kept].any(axis=1)
                    new = in_cls[live & ~kept[in_cls]]
                    if new.size:
                        kept[new] = True
                        changed = True
            grew = self._keep_nonempty(kept, scores)
            if self.align > 1:
                grew |= self._align(kept, scores)
            if not grew:
                break
        self.kept_class = kept

    def _scores(self, group, cache):
        if group.index not in cache:
            layers = {layer.name: layer for layer in self.graph.functional.layers}

            def value_of(member):
                return self.layer_weights[id(layers[member.layer])][member.weight]

            members = [
                (value_of(m).astype(np.float64), m.axis, m.mapping.indices())
                for m in group.members
                if m.is_kernel
            ]
            scores = selection.channel_scores(group.size, members)
            cache[group.index] = (
                np.zeros(group.size)
                if scores is None
                else np.asarray(keras.ops.convert_to_numpy(scores))
            )
        return cache[group.index]

    def _keep_nonempty(self, kept, cache) -> bool:
        """Keep the strongest channel of any tensor that would have none."""
        g = self.graph
        grew = False
        for t in range(len(g.tensors)):
            classes = g.element_class[g.elements(t)]
            if kept[classes].any() or classes.size == 0:
                continue
            best, best_score = None, -1.0
            for c in np.unique(classes).tolist():
                group = g.groups[g.class_group[c]]
                score = self._scores(group, cache)[g.class_slot[c]]
                if score > best_score:
                    best, best_score = c, score
            kept[best] = True
            grew = True
        return grew

    def _align(self, kept, cache) -> bool:
        g = self.graph
        grew = False
        for group in g.groups:
            flags = kept[group.classes]
            count = int(flags.sum())
            target = min(group.size, -(-count // self.align) * self.align)
            if target == count:
                continue
            scores = self._scores(group, cache)
            removed = np.flatnonzero(~flags)
            added = selection.keep_top(scores[removed], target - count)
            kept[group.classes[removed[added == 1]]] = True
            grew = True
        return grew

    # -------------------------------------------------------------- rebuild
    def kept_indices(self, t):
        g = self.graph
        return np.flatnonzero(self.kept_class[g.element_class[g.elements(t)]])

    def rebuild(self):
        state_of = {id(state.info.node): state for state in self.states}
        self.choices = {}
        return rebuild_model(
            self.graph.functional,
            [state.info.node for state in self.states],
            lambda node: self._make_layer(state_of[id(node)]),
            self.model.name,
            "compact()",
        )

    def _make_layer(self, state):
        """(new layer, {weight name: value} to assign after the first call)."""
        info = state.info
        layer = info.layer
        weights = state.weights
        if info.barrier is not None or info.rule.kind in ("merge", "concat", "flatten"):
            # Unchanged layers (nested models included) keep all their weights,
            # in order: names may repeat inside a nested model.
            weights = layer.get_weights() if isinstance(layer, keras.Layer) else []
            return clone_layer(layer), weights or None
        kind = info.rule.kind
        t_in, t_out = info.inputs[0], info.outputs[0]
        kin, kout = self.kept_indices(t_in), self.kept_indices(t_out)
        if kind == "channelwise":
            values = {}
            for name, value in weights.items():
                if name in info.rule.params:
                    value = np.take(value, kin, axis=-1)
                values[name] = value
            config = None
            if info.rule.resize is not None:
                config = info.rule.resize(layer.get_config(), kin.size)
            return clone_layer(layer, config), values or None
        if kind == "depthwise":
            m = int(layer.depth_multiplier)
            values = {"kernel": np.take(weights["kernel"], kin, axis=-2)}
            if layer.use_bias:
                values["bias"] = weights["bias"].reshape(-1, m)[kin].ravel()
            return clone_layer(layer), values
        # weighted / separable: slice, fold the removed constants into the bias.
        config = layer.get_config()
        config[info.rule.count_key] = int(kout.size)
        removed = np.ones(self.graph.tensor_size[t_in], dtype=bool)
        removed[kin] = False
        folding = removed & state.foldable & self.const[t_in]
        fold = np.where(folding, self.value[t_in], 0.0) @ state.sums
        fold = fold[kout]
        has_bias = "bias" in weights and getattr(layer, "use_bias", True)
        bias = weights["bias"][kout].astype(np.float64) if has_bias else 0.0
        needs_bias = has_bias or np.any(fold != 0)
        if needs_bias and not has_bias:
            config["use_bias"] = True
        bias = (bias + fold).astype("float32")
        if kind == "separable":
            m = int(layer.depth_multiplier)
            rows = (kin[:, None] * m + np.arange(m)[None, :]).ravel()
            pointwise = weights["pointwise_kernel"]
            values = {
                "depthwise_kernel": np.take(weights["depthwise_kernel"], kin, axis=-2),
                "pointwise_kernel": np.take(
                    np.take(pointwise, rows, axis=-2), kout, axis=-1
                ),
            }
        else:
            rank = weights[info.rule.kernel].ndim
            kernel = np.take(
                weights[info.rule.kernel], kin, axis=info.rule.in_axis % rank
            )
            kernel = np.take(kernel, kout, axis=info.rule.out_axis % rank)
            values = {info.rule.kernel: kernel}
            column = self._column_sparse(info, config, kernel, needs_bias, bias)
            if column is not None:
                return column
        if needs_bias:
            values["bias"] = bias
        return clone_layer(layer, config), values

    def _column_sparse(self, info, config, kernel, needs_bias, bias):
        """A ColumnSparseConv2D for this node, or None to keep the dense conv."""
        layer = info.layer
        if (
            self.column_sparse == "never"
            or type(layer) is not keras.layers.Conv2D
            or info.calls != 1
            or kernel.size == 0
        ):
            return None
        columns = np.argwhere(np.any(kernel != 0, axis=-1))
        total = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
        if columns.shape[0] == 0 or columns.shape[0] == total:
            return None
        fraction = columns.shape[0] / total
        out_shape = info.node.output_tensors[0].shape
        positions = (
            None
            if out_shape[1] is None or out_shape[2] is None
            else int(out_shape[1] * out_shape[2])
        )
        unknown_size = info.node.input_tensors[0].shape[1] is None
        if unknown_size or (
            self.column_sparse == "auto"
            and not column_sparse_pays(fraction, positions, kernel.shape[2])
        ):
            self.choices[layer.name] = (
                f"dense conv kept ({columns.shape[0]}/{total} columns non-zero; "
                + (
                    "unknown input size)"
                    if unknown_size
                    else "column-sparse would not pay)"
                )
            )
            return None
        new = ColumnSparseConv2D(
            filters=config["filters"],
            kernel_size=config["kernel_size"],
            columns=columns.tolist(),
            strides=config["strides"],
            padding=config["padding"],
            dilation_rate=config["dilation_rate"],
            activation=config["activation"],
            use_bias=bool(needs_bias),
            name=layer.name,
            dtype=layer.dtype_policy,
        )
        values = {"kernel": kernel[columns[:, 0], columns[:, 1], columns[:, 2]]}
        self.choices[layer.name] = (
            f"column-sparse ({columns.shape[0]}/{total} columns kept)"
        )
        if needs_bias:
            values["bias"] = bias
        return new, values


# ---------------------------------------------------------------- compact
def compact(model, align=1, column_sparse="auto", return_summary=False):
    """A new, smaller keras.Model computing the same outputs as `model`.

    First drops the residual branches whose output is exactly zero (an Add
    input whose last BatchNorm has gamma = beta = 0, see
    `compaction.zero_branches`, which names the few Adds it leaves): the Add
    becomes its other input. Then removes
    every channel the outputs do not need, through BatchNorm,
    activations, pooling, residual Adds, Concatenates, depthwise layers and
    Flatten -> Dense: all-zero filters (their constant bias / BN beta is
    folded into the consumers' biases where that is exact, else the channel
    stays), channels that feed only zero weights, and filters whose consumers
    ignore them, to a fixed point. The input model is not modified.

    Args:
        model: a built Sequential or functional model (e.g. after
            `hard_prune(model, plan, graph=True)` and masked retraining).
        align: round each channel group's kept count up to a multiple of this
            (>= 1) by keeping its strongest removed channels; 8 or 16 suit
            vector units and tensor cores.
        column_sparse: "auto" rewrites a Conv2D with few remaining kernel
            columns as a ColumnSparseConv2D where `column_sparse_pays` says it
            pays; "always" wherever columns are missing; "never" keeps every
            dense conv.
        return_summary: also return a CompactionSummary.

    Returns:
        The new keras.Model (functional; a Sequential input gives a
        functional model with the same layer names), or (model, summary).

    Raises:
        TypeError: a subclassed model (compact needs the functional graph),
            or a non-int `align`.
        ValueError: a bad `align` / `column_sparse`, a Sequential without an
            Input, or a layer that cannot be re-created from its config.

    Example:

        masks = keras_admm.hard_prune(model, plan, graph=True)
        small, summary = keras_admm.compact(model, align=8, return_summary=True)
        print(summary)
        np.testing.assert_allclose(small(x), model(x), rtol=1e-4, atol=1e-4)
    """
    if isinstance(align, bool) or not isinstance(align, (int, np.integer)):
        raise TypeError(
            f"compact() `align` must be an int >= 1, got {align!r}. Use 1 for no "
            "rounding, or 8 / 16 for channel counts that run faster."
        )
    if align < 1:
        raise ValueError(
            f"compact() `align` must be >= 1, got {align}. Use 1 for no rounding."
        )
    if column_sparse not in _COLUMN_MODES:
        raise ValueError(
            f"compact() `column_sparse` must be one of {_COLUMN_MODES}, got "
            f"{column_sparse!r}."
        )
    check_graph_model(model, "compact()")
    stripped, removed = remove_zero_branches(model)
    compactor = _Compactor(stripped, int(align), column_sparse)
    compactor.propagate_constants()
    compactor.decide()
    new_model = compactor.rebuild()
    if return_summary:
        return new_model, build_summary(model, new_model, compactor, set(removed))
    return new_model
