"""TF time of each convolution of ResNet-20 models, alone, at one batch size.

Where does a pruned model's TF time go that its MAC cut does not remove? Each
model is loaded, BatchNorm folded, and every layer with a kernel (Conv2D,
Dense) is rebuilt as a one-layer model with its input shape, config and
weights. All one-layer models and the whole models are then timed round-robin
in one loop (keras_admm.profiling.time_interleaved) with tf.function, 2
intra-op and 2 inter-op threads (as `tools/profile_models.py --engines tf`).
Per model it reports each layer's MACs, median ms and GMAC/s, the sum of its
layers and the whole model's median: the difference is what the layers do not
account for (adds, ReLUs, pooling, the normalization layer, per-op overhead).
Each one-layer time also includes one call's own cost (about the time of the
640-MAC fc layer), so "rest" is negative; docs/CIFAR10.md subtracts that cost
("net" times). Run alone on an idle machine.

    .venv/bin/python docs/cifar10/layer_times.py docs/cifar10/layer_times \\
        dense:docs/cifar10/models/resnet20_dense.keras \\
        s1out_seed0:docs/cifar10/models/resnet20_depth60_3x_s1out_s3in32.keras

Writes OUT/layer_times.json and OUT/layer_times.md.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import keras_admm  # noqa: E402
from keras_admm.profiling import timing  # noqa: E402
from keras_admm.profiling.flops import layer_flops  # noqa: E402

BATCH = 32
THREADS = 2


def one_layer_model(layer):
    """`layer` alone, as a model taking its input shape, with its weights."""
    clone = layer.__class__.from_config(layer.get_config())
    inputs = keras.Input(shape=tuple(layer.input.shape[1:]))
    model = keras.Model(inputs, clone(inputs))
    clone.set_weights(layer.get_weights())
    return model


def runner(model, shape, seed):
    function = tf.function(lambda x: model(x, training=False))
    values = np.random.default_rng(seed).normal(size=(BATCH, *shape))
    x = tf.constant(values, tf.float32)

    def run():
        function(x).numpy()

    return run


def main(out, *pairs):
    if not pairs:
        sys.exit(__doc__)
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    runners, layers = {}, {}
    for pair in pairs:
        name, sep, path = pair.partition(":")
        if not sep or not os.path.isfile(path):
            sys.exit(f"layer_times.py: '{pair}' is not NAME:MODEL (an existing file)")
        model = keras_admm.fold_batchnorm(keras.saving.load_model(path))
        runners[f"{name}/whole"] = runner(
            model, tuple(model.input.shape[1:]), len(runners)
        )
        layer_macs = {r["layer"]: r["flops"] // 2 for r in layer_flops(model)}
        layers[name] = []
        for layer in model.layers:
            if not hasattr(layer, "kernel"):
                continue
            key = f"{name}/{layer.name}"
            shape = tuple(layer.input.shape[1:])
            runners[key] = runner(one_layer_model(layer), shape, len(runners))
            layers[name].append(
                {
                    "layer": layer.name,
                    "input": list(shape),
                    "output_channels": int(layer.kernel.shape[-1]),
                    "macs": layer_macs[layer.name],
                }
            )
        print(f"{name}: {len(layers[name])} layers", flush=True)
    protocol = timing.TimingProtocol(warmup=5, min_repeats=100, min_time_s=20)
    samples = timing.time_interleaved(runners, protocol)
    median = {key: timing.percentile(s, 50) * 1e3 for key, s in samples.items()}
    report = {"batch_size": BATCH, "threads": THREADS, "models": {}}
    lines = [
        f"# TF time per layer, batch {BATCH}, {THREADS} threads, BatchNorm folded",
        "",
        f"Median of {len(next(iter(samples.values())))} round-robin rounds.",
        "",
    ]
    for name, rows in layers.items():
        for row in rows:
            row["ms"] = median[f"{name}/{row['layer']}"]
            row["gmac_per_s"] = row["macs"] * BATCH / row["ms"] / 1e6
        whole = median[f"{name}/whole"]
        layer_sum = sum(row["ms"] for row in rows)
        macs = sum(row["macs"] for row in rows)
        report["models"][name] = {
            "whole_ms": whole,
            "layers_ms": layer_sum,
            "rest_ms": whole - layer_sum,
            "macs": macs,
            "layers": rows,
        }
        lines += [
            f"## {name}: whole {whole:.3f} ms, layers {layer_sum:.3f} ms, "
            f"rest {whole - layer_sum:.3f} ms, {macs / 1e6:.2f} M MACs a sample",
            "",
            "| layer | input | out channels | M MACs | ms | GMAC/s |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['layer']} | {'x'.join(map(str, r['input']))} | "
            f"{r['output_channels']} | {r['macs'] / 1e6:.3f} | {r['ms']:.3f} | "
            f"{r['gmac_per_s']:.1f} |"
            for r in rows
        ]
        lines.append("")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "layer_times.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "layer_times.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
