"""tools/alexnet_parts.py: per-layer keeps, a layer alone, summed layer timings."""

import keras
import numpy as np
import pytest
from alexnet_parts import CONVS, layer_alone, layer_keeps, layer_sums


def test_layer_keeps_overrides_single_layers():
    keeps = layer_keeps(0.2, ["conv1=1.0", "conv3=0.5"])
    assert keeps == {
        "conv1": 1.0,
        "conv2": 0.2,
        "conv3": 0.5,
        "conv4": 0.2,
        "conv5": 0.2,
    }


@pytest.mark.parametrize(
    "item, message",
    [
        ("conv9=0.5", "expected conv1..conv5=share"),
        ("conv1", "expected conv1..conv5=share"),
        ("conv2=0", "must be in \\(0, 1\\]"),
        ("conv2=1.5", "must be in \\(0, 1\\]"),
        ("conv2=half", "must be in \\(0, 1\\]"),
    ],
)
def test_layer_keeps_rejects_bad_items(item, message):
    with pytest.raises(ValueError, match=message):
        layer_keeps(0.25, [item])


def test_layer_keeps_rejects_a_plan_that_prunes_nothing():
    with pytest.raises(ValueError, match="nothing to prune"):
        layer_keeps(0.5, [f"{name}=1" for name in CONVS])


def test_layer_alone_computes_what_the_layer_computes_inside_its_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    x = keras.layers.Conv2D(5, 3, strides=2, activation="relu", name="b")(x)
    model = keras.Model(inputs, x)
    alone = layer_alone(model.get_layer("b"))
    assert tuple(alone.input.shape[1:]) == (10, 10, 4)
    sample = np.random.default_rng(0).standard_normal((2, 12, 12, 3), "float32")
    hidden = keras.Model(inputs, model.get_layer("a").output)(sample)
    np.testing.assert_allclose(alone(hidden), model(sample), rtol=1e-5, atol=1e-5)


def _row(part, model, ms, engine="tf", batch_size=32):
    return {
        "part": part,
        "model": model,
        "median_ms": ms,
        "engine": engine,
        "batch_size": batch_size,
    }


def test_layer_sums_adds_each_form_over_the_named_layers():
    results = [_row("trunk", "dense", 100.0), _row("trunk", "compact", 1.0)]
    for i, name in enumerate(CONVS):
        results += [_row(name, "dense", 10.0 * (i + 1)), _row(name, "compact", i + 1.0)]
    # batch 1 and ort lack a compact conv2: both incomplete, both skipped
    results += [_row(n, "dense", 7.0, batch_size=1) for n in CONVS]
    results += [_row(n, f, 1.0, engine="ort") for n in CONVS for f in ("dense",)]
    results += [_row(n, "compact", 1.0, engine="ort") for n in CONVS if n != "conv2"]
    (row,) = layer_sums(results, CONVS[1:])
    assert row["engine"] == "tf" and row["batch_size"] == 32
    assert row["dense_ms"] == pytest.approx(20 + 30 + 40 + 50)
    assert row["compact_ms"] == pytest.approx(2 + 3 + 4 + 5)
    assert row["speedup"] == pytest.approx(140 / 14)
    rows = layer_sums(results, ("conv1",))  # complete for conv1 on ort
    assert {(r["engine"], r["batch_size"]) for r in rows} == {("tf", 32), ("ort", 32)}
