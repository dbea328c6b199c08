"""ONNX Runtime one session at a time, with its default thread settings.

tools/profile_models.py keeps every model's session open and times them
round-robin, so it turns ONNX Runtime's spinning threads off (spinning threads
of idle sessions steal the cores of the one running). A deployed model is
usually one session with the defaults, spinning on. This script times that:
for each block, every model in turn (start rotated) gets a fresh session with
only intra_op_num_threads set, WARMUP untimed runs, then RUNS timed runs, and
the session is closed before the next model's opens. It prints the median
latency over all blocks and the speedup over the first model, beside the MAC
cut read from the ONNX graph. The input is one batch of random 0-255 images of
32x32x3 (the CIFAR-10 models). Run alone on an idle machine.

    .venv/bin/python tools/convert.py --output_dir /tmp/onnx/dense \\
        --model docs/cifar10/models/resnet20_dense.keras \\
        --formats onnx --fold_batchnorm          # the same for each model
    .venv/bin/python docs/cifar10/ort_sessions.py --threads 2 --batch_size 32 \\
        --output docs/cifar10/fold_s1out/ort_sessions/run2_t2_b32.json \\
        dense:/tmp/onnx/dense/model.onnx s1out_seed0:/tmp/onnx/s1out_seed0/model.onnx
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
os.environ.setdefault("KERAS_ADMM_LAZY", "1")  # ONNX only: never import TensorFlow

from keras_admm.profiling.onnx_flops import count_onnx_flops  # noqa: E402

WARMUP = 20
RUNS = 50


def time_block(path, x, threads):
    """Median-ready latencies (s) of RUNS runs of a fresh default session."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        path, options, providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: x}
    for _ in range(WARMUP):
        session.run(None, feed)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="NAME:MODEL.onnx, baseline first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads < 1 or args.batch_size < 1 or args.blocks < 1:
        parser.error("--threads, --batch_size and --blocks must be >= 1")
    models = {}
    for pair in args.models:
        name, sep, path = pair.partition(":")
        if not sep or not os.path.isfile(path) or name in models:
            parser.error(f"'{pair}' is not NAME:MODEL.onnx (a new name, a file)")
        models[name] = path
    if len(models) < 2:
        parser.error("give a baseline and at least one model to compare")
    load_before = os.getloadavg()
    x = np.random.default_rng(0).uniform(0, 255, (args.batch_size, 32, 32, 3))
    x = x.astype(np.float32)
    names = list(models)
    samples = {name: [] for name in names}
    for block in range(args.blocks):
        offset = block % len(names)
        for name in names[offset:] + names[:offset]:
            samples[name] += time_block(models[name], x, args.threads)
    base = names[0]
    results = {}
    for name in names:
        median_ms = statistics.median(samples[name]) * 1e3
        mac_cut = count_onnx_flops(models[base]) / count_onnx_flops(models[name])
        speedup = statistics.median(samples[base]) * 1e3 / median_ms
        results[name] = {
            "median_ms": median_ms,
            "speedup": speedup,
            "mac_cut": mac_cut,
            "share_of_mac_cut": speedup / mac_cut,
            "runs": len(samples[name]),
        }
        print(
            f"{name}: {median_ms:.3f} ms, {speedup:.2f}x faster, MAC cut "
            f"{mac_cut:.2f}x, share {speedup / mac_cut:.3f}"
        )
    if args.output:
        report = {
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads,
            "batch_size": args.batch_size,
            "blocks": args.blocks,
            "warmup": WARMUP,
            "runs_per_block": RUNS,
            "session": "fresh per block; only intra_op_num_threads set",
            "load_average_before": load_before,
            "results": results,
        }
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
