"""AlexNet benchmark parts: per-layer kept shares, one layer as a model, sums.

Helpers of tools/bench_alexnet.py, kept free of flags so tests can import them.

    >>> layer_keeps(0.25, ["conv1=1"])["conv1"]
    1.0
"""

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def layer_keeps(keep, overrides):
    """{conv: kept share of its filters} from `keep` and "name=share" overrides.

    Raises:
        ValueError: an item is not conv1..conv5=share, a share is not in (0, 1],
            or no layer is left to prune.
    """
    keeps = dict.fromkeys(CONVS, keep)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in CONVS:
            raise ValueError(
                f"--layer_keep item {item!r}: expected conv1..conv5=share, "
                "e.g. conv1=1.0"
            )
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not 0 < share <= 1:
            raise ValueError(
                f"--layer_keep {name}={value!r}: the kept share must be in (0, 1]"
            )
        keeps[name] = share
    if all(k == 1.0 for k in keeps.values()):
        raise ValueError(
            "every conv keeps all its filters: nothing to prune; give --keep < 1 "
            "or a --layer_keep share < 1 for some layer."
        )
    return keeps


def layer_alone(layer):
    """A model of one built layer at its input shape, holding the layer's weights."""
    import keras

    inputs = keras.Input(tuple(layer.input.shape[1:]))
    copy = type(layer).from_config(layer.get_config())
    model = keras.Model(inputs, copy(inputs))
    copy.set_weights(layer.get_weights())
    return model


def layer_sums(results, names):
    """Per (engine, batch size): the parts `names` summed, dense and compact.

    Args:
        results: profile rows with "part", "engine", "batch_size", "model"
            ("dense" or "compact") and "median_ms".
        names: the parts to add.

    Returns:
        Rows {"engine", "batch_size", "dense_ms", "compact_ms", "speedup"}, for
        every engine and batch size that has all of `names` in both forms.
    """
    times = {}
    for r in results:
        if r["part"] in names:
            key = (r["engine"], r["batch_size"])
            times.setdefault(key, {})[(r["part"], r["model"])] = r["median_ms"]
    rows = []
    for (engine, batch_size), got in times.items():
        if len(got) != 2 * len(names):
            continue
        dense = sum(got[(n, "dense")] for n in names)
        compact = sum(got[(n, "compact")] for n in names)
        rows.append(
            {
                "engine": engine,
                "batch_size": batch_size,
                "dense_ms": dense,
                "compact_ms": compact,
                "speedup": dense / compact,
            }
        )
    return rows
