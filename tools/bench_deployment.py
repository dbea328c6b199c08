r"""Benchmark: pruning and int8 together, as deployed (docs/DEPLOYMENT.md).

For LeNet-5 (MNIST) and ResNet-20 (CIFAR-10): the dense model, its compact
pruned form in float32 and the compact form quantized to int8 (LiteRT full
integer and ONNX Runtime QDQ, both calibrated on training images), each with
its test accuracy and file size; then, with --timing, their latency on every
engine at each batch size (tools/profile_models.py, one process per engine,
dense and compact interleaved in one run).

    python tools/bench_deployment.py --output_dir docs/deployment   # everything
    python tools/bench_deployment.py --notiming     # accuracy and size only

Inputs: --lenet5_dense / --lenet5_compact (made by examples/lenet5_mnist.py),
--resnet20_dense / --resnet20_compact (docs/cifar10/models), and the data in
--data_dir (../shared/data: mnist/ and cifar10/).
"""

import json
import os
import sys

import common_flags
from absl import app, flags
from profile_process import profile_in_process

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED = os.path.join(os.path.dirname(_REPO), "shared", "data")
MODEL_SETS = ("lenet5", "resnet20")
FORMATS = {  # the files compared, by label: (export format, file name)
    "dense fp32": ("dense", "keras", "model.keras"),
    "compact fp32": ("compact", "keras", "model.keras"),
    "compact int8 (LiteRT)": ("compact", "tflite_int8", "model_int8.tflite"),
    "compact int8 (ONNX QDQ)": ("compact", "onnx_int8", "model_int8.onnx"),
}

_SETS = flags.DEFINE_list("model_sets", list(MODEL_SETS), "lenet5, resnet20.")
_LENET5_DENSE = flags.DEFINE_string(
    "lenet5_dense", "runs/lenet5/lenet5_dense.keras", "Dense LeNet-5 (.keras)."
)
_LENET5_COMPACT = flags.DEFINE_string(
    "lenet5_compact", "runs/lenet5/lenet5_compact.keras", "Its compact form."
)
_RESNET20_DENSE = flags.DEFINE_string(
    "resnet20_dense", "docs/cifar10/models/resnet20_dense.keras", "Dense ResNet-20."
)
_RESNET20_COMPACT = flags.DEFINE_string(
    "resnet20_compact",
    "docs/cifar10/models/resnet20_admm_2x.keras",
    "Its compact form.",
)
_DATA_DIR = common_flags.data_dir(_SHARED, "Folder with mnist/ and cifar10/.")
_CALIBRATION = flags.DEFINE_integer(
    "calibration_size", 256, "Training images that calibrate the int8 ranges."
)
_TIMING = flags.DEFINE_bool("timing", True, "Also time every file (idle machine!).")
_ENGINES = common_flags.engines(["tf", "onnxruntime", "litert", "openvino"])
_BATCH_SIZES = common_flags.batch_sizes([1, 32], "Timed batch sizes.")
_OUTPUT_DIR = common_flags.output_dir("docs/deployment", "Reports and files.")

flags.register_validator(
    "model_sets",
    lambda v: set(v) <= set(MODEL_SETS),
    f"--model_sets must be among {', '.join(MODEL_SETS)}",
)
flags.register_validator(
    "calibration_size", lambda v: v >= 1, "--calibration_size must be >= 1"
)

# Which files each engine times (it converts nothing: each runs its own format).
_ENGINE_FILES = {
    "tf": ["dense fp32", "compact fp32"],
    "onnxruntime": ["dense fp32", "compact fp32", "compact int8 (ONNX QDQ)"],
    "openvino": ["dense fp32", "compact fp32", "compact int8 (ONNX QDQ)"],
    "litert": ["dense fp32", "compact fp32", "compact int8 (LiteRT)"],
}
# The float files each engine reads: tf the .keras, the others their formats.
_ENGINE_FLOAT = {
    "tf": ("keras", "model.keras"),
    "onnxruntime": ("onnx", "model.onnx"),
    "openvino": ("onnx", "model.onnx"),
    "litert": ("tflite", "model.tflite"),
}


def _data(name):
    """(x_test, y_test, x_calibration, source text) of a model set."""
    if name == "lenet5":
        from keras_admm import datasets

        mnist = datasets.load_mnist(test_dir=os.path.join(_DATA_DIR.value, "mnist"))
        return mnist.x_test, mnist.y_test, mnist.x_train, mnist.source
    sys.path.insert(0, os.path.join(_REPO, "examples"))
    import cifar10_data

    cifar = cifar10_data.load_cifar10(os.path.join(_DATA_DIR.value, "cifar10"))
    return cifar.x_test, cifar.y_test, cifar.x_train, cifar.source


def _accuracy(logits, labels):
    import numpy as np

    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels).ravel()))


def _predict(path, x, batch=500):
    """Logits of one file (.keras, int8 .tflite or .onnx) on the test images."""
    import keras
    import numpy as np

    from keras_admm import exporting

    if path.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False)

        def run(b):
            return keras.ops.convert_to_numpy(model(b))
    elif path.endswith(".tflite"):

        def run(b):
            return exporting.predict_tflite_int8(path, b)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(b):
            return session.run(None, {name: b})[0]

    return np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])


def _export_and_score(name, dense_path, compact_path, work):
    import keras
    import numpy as np

    import keras_admm

    x, y, x_train, source = _data(name)
    x = np.asarray(x, "float32")
    calibration = np.asarray(x_train[: _CALIBRATION.value], "float32")
    files = {}
    for kind, path, formats in (
        ("dense", dense_path, ["keras", "onnx", "tflite"]),
        (
            "compact",
            compact_path,
            ["keras", "onnx", "tflite", "tflite_int8", "onnx_int8"],
        ),
    ):
        model = keras.saving.load_model(path, compile=False)
        result = keras_admm.export(
            model, os.path.join(work, kind), formats=formats, sample=calibration
        )
        print(result)
        files[kind] = {r.format: r.path for r in result}
    rows = []
    for label, (kind, fmt, _) in FORMATS.items():
        path = files[kind][fmt]
        rows.append(
            {
                "model": label,
                "file": os.path.relpath(path, _REPO),
                "bytes": os.path.getsize(path),
                "test_accuracy": _accuracy(_predict(path, x), y),
            }
        )
        print(f"{name} {label}: {rows[-1]['test_accuracy']:.4f}, {rows[-1]['bytes']} B")
    return {"data": source, "test_images": int(len(x)), "rows": rows, "files": files}


def _time(name, files, work):
    """One profile_models.py process per engine; returns its result rows."""
    rows = []
    for engine in _ENGINES.value:
        fmt, _ = _ENGINE_FLOAT[engine]
        paths, labels = [], []
        for label in _ENGINE_FILES[engine]:
            kind, label_fmt, _ = FORMATS[label]
            paths.append(files[kind][fmt if "fp32" in label else label_fmt])
            labels.append(label.replace(" ", "_").replace("(", "").replace(")", ""))
        report = profile_in_process(
            paths[0],
            paths[1:],
            labels,
            engine,
            _BATCH_SIZES.value,
            os.path.join(work, f"profile_{engine}"),
            extra_flags=["--device=cpu"],
        )
        for r in report["results"]:
            rows.append({"engine": engine, **r})
    return rows


def _markdown(report):
    lines = []
    for name, entry in report["model_sets"].items():
        lines += [
            f"## {name} ({entry['data']}, {entry['test_images']} test images)",
            "",
            "| model | file | size (KiB) | test accuracy |",
            "|---|---|---|---|",
        ]
        for r in entry["rows"]:
            lines.append(
                f"| {r['model']} | {r['file']} | {r['bytes'] / 1024:.0f} | "
                f"{100 * r['test_accuracy']:.2f}% |"
            )
        if entry.get("timing"):
            lines += [
                "",
                "| engine | batch | model | median ms | speedup vs dense |",
                "|---|---|---|---|---|",
            ]
            for r in entry["timing"]:
                lines.append(
                    f"| {r['engine']} | {r['batch_size']} | {r['model']} | "
                    f"{r['median_ms']:.3f} | {r.get('speedup', 1.0):.2f}x |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    paths = {
        "lenet5": (_LENET5_DENSE.value, _LENET5_COMPACT.value),
        "resnet20": (_RESNET20_DENSE.value, _RESNET20_COMPACT.value),
    }
    for name in _SETS.value:
        for path in paths[name]:
            if not os.path.exists(path):
                raise app.UsageError(
                    f"{name}: '{path}' does not exist. Make it first (LeNet-5: "
                    "python examples/lenet5_mnist.py --output_dir runs/lenet5) or "
                    f"pass --{name}_dense / --{name}_compact."
                )
    import keras_admm  # noqa: F401  (registers the wrappers a .keras file names)

    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    report = {"command": " ".join(sys.argv), "model_sets": {}}
    for name in _SETS.value:
        work = os.path.join(_OUTPUT_DIR.value, name)
        entry = _export_and_score(name, *paths[name], work)
        if _TIMING.value:
            entry["timing"] = _time(name, entry["files"], work)
        report["model_sets"][name] = entry
    with open(os.path.join(_OUTPUT_DIR.value, "deployment.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(_OUTPUT_DIR.value, "deployment.md"), "w") as f:
        f.write(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    app.run(main)
