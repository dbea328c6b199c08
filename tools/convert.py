"""Turns a pruned .keras model into a smaller dense one and exports it, verified.

    python tools/convert.py --model pruned.keras --output_dir exports/small \
        --align 8 --formats keras,saved_model,onnx

    # For TensorFlow serving: BatchNorms folded into the convs before export
    python tools/convert.py --model pruned.keras --output_dir exports/tf \
        --formats saved_model --fold_batchnorm

    # int8 files (LiteRT and ONNX Runtime), calibrated on a batch of real inputs:
    python tools/convert.py --model pruned.keras --output_dir exports/int8 \
        --formats onnx,onnx_int8,tflite_int8 --calibration_data images.npy

Loads the model, removes its pruned channels and filters with
`keras_admm.compaction.compact` (and with --fold_batchnorm merges its inference
BatchNorms into the convs before them, `keras_admm.fold_batchnorm`), writes the
formats with `keras_admm.export` (each file reloaded and checked against the
model given), prints the compaction summary and the export table, and writes
summary.json and summary.md next to the model files. The logic lives in the
library; this script only wires flags to it.
"""

import importlib
import json
import logging
import os
import sys

import numpy as np

# TensorFlow's C++ INFO lines drown the tables; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common_flags  # noqa: E402
import keras  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_admm import exporting  # noqa: E402
from keras_admm.profiling import open_source  # noqa: E402

_MODEL = flags.DEFINE_string(
    "model", None, "The pruned model to convert: a .keras file.", required=True
)
_OUTPUT_DIR = common_flags.output_dir(
    None, "Directory for the model files and summaries.", required=True
)
_ALIGN = common_flags.align()
_FORMATS = flags.DEFINE_list(
    "formats",
    list(exporting.FORMATS),
    "Formats: keras, saved_model, onnx (the default); on request tflite, and the "
    "int8 formats tflite_int8 and onnx_int8 (they need --calibration_data).",
)
_CALIBRATION_DATA = flags.DEFINE_string(
    "calibration_data",
    None,
    "A .npy file holding a batch of real inputs (e.g. 200 training images, shaped "
    "like the model input with the batch axis first). It calibrates the int8 "
    "formats and is the batch every file is verified on.",
)
_MIN_AGREEMENT = flags.DEFINE_float(
    "min_agreement",
    0.9,
    "int8 formats: the least share of --calibration_data rows whose top-1 class "
    "must match the float model's.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_FOLD_BATCHNORM = flags.DEFINE_bool(
    "fold_batchnorm",
    False,
    "Fold each BatchNormalization into the conv / Dense layer before it (exact in "
    "inference; TensorFlow runs the result faster, ONNX Runtime and LiteRT fold "
    "it themselves). The exported model can no longer train its BatchNorms.",
)
_VERIFY = flags.DEFINE_bool(
    "verify", True, "Reload every file and check its outputs (--noverify skips)."
)
_RTOL = flags.DEFINE_float(
    "rtol", 1e-4, "Allowed difference relative to an output's largest magnitude."
)
_ATOL = flags.DEFINE_float("atol", 1e-5, "Allowed absolute difference on top.")


@flags.validator("formats")
def _check_formats(values):
    known = exporting.FORMATS + exporting.EXTRA_FORMATS
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise flags.ValidationError(
            f"--formats has unknown or no formats {unknown or values}; choose from "
            f"{','.join(known)}, e.g. --formats keras,onnx."
        )
    return True


@flags.multi_flags_validator(["formats", "calibration_data"])
def _check_calibration(values):
    quantized = [f for f in values["formats"] if f in exporting.QUANTIZED_FORMATS]
    if quantized and not values["calibration_data"]:
        raise flags.ValidationError(
            f"--formats {','.join(quantized)} needs --calibration_data, a .npy file "
            "with a batch of real model inputs (e.g. 200 training images) to "
            "calibrate the int8 ranges on; e.g. --calibration_data images.npy."
        )
    return True


@flags.multi_flags_validator(["rtol", "atol"])
def _check_tolerances(values):
    if values["rtol"] < 0 or values["atol"] < 0:
        raise flags.ValidationError(
            f"--rtol and --atol must be >= 0, got {values['rtol']} and "
            f"{values['atol']}."
        )
    return True


def _compaction():
    """The compaction module, imported when needed (it may not be installed yet)."""
    try:
        return importlib.import_module("keras_admm.compaction")
    except ImportError as error:
        raise ImportError(
            f"keras_admm.compaction is not available ({error}); install a "
            "keras-admm version that provides compact()."
        ) from error


def _check_model_file(path):
    """Cheap checks first: the file exists and is a .keras archive."""
    source = open_source(path)  # missing file, not a zip, unknown format.
    if source.kind != "keras":
        raise ValueError(
            f"'{path}' is a {source.kind} model; convert.py needs the .keras file "
            "(the layer graph is what compaction rewrites)."
        )


def _load_model(path):
    """Loads a .keras file, with errors that say what is wrong with it."""
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for bad archives.
        raise ValueError(
            f"could not load '{path}' as a Keras model ({type(error).__name__}: "
            f"{error}); save it again with model.save(), and import the modules "
            "that register its custom layers."
        ) from error


def _load_calibration_data(path):
    """The --calibration_data batch, or None when the flag is unset."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--calibration_data '{path}' does not exist; save a batch of real "
            "inputs with numpy.save('images.npy', batch)."
        )
    try:
        batch = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises ValueError / OSError / others.
        raise ValueError(
            f"could not read --calibration_data '{path}' as a .npy array "
            f"({type(error).__name__}: {error}); save the batch with "
            "numpy.save('images.npy', batch)."
        ) from error
    if not isinstance(batch, np.ndarray):  # an .npz archive
        raise ValueError(
            f"--calibration_data '{path}' holds several arrays; pass a .npy file "
            "with one batch, e.g. numpy.save('images.npy', batch)."
        )
    # The models take float32; a float64 batch would not feed ONNX Runtime.
    if batch.dtype.kind == "f" and batch.dtype != np.float32:
        batch = batch.astype(np.float32)
    return batch


def _json_default(value):
    """numpy scalars and arrays in compaction summaries become plain numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _write_text(path, text):
    """Writes through a temporary name, so a crash never leaves half a file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _write_summaries(output_dir, summary, result, folds=None):
    """summary.json and summary.md: compaction per layer, then the export table.

    `folds`: {"folded": [(bn, layer)], "skipped": [(bn, reason)]} with
    --fold_batchnorm, else None.
    """
    data = {
        "model": _MODEL.value,
        "align": _ALIGN.value,
        "calibration_data": _CALIBRATION_DATA.value,
        "compaction": summary.to_dict(),
        "batchnorm_folding": folds,
        "export": result.to_dict(),
    }
    json_path = os.path.join(output_dir, "summary.json")
    _write_text(json_path, json.dumps(data, indent=2, default=_json_default) + "\n")
    markdown = (
        f"# Conversion of `{_MODEL.value}` (align {_ALIGN.value})\n\n"
        f"## Compaction\n\n{summary.to_markdown().rstrip()}\n\n"
    )
    if folds is not None:
        rows = [f"| {bn} | into {layer} |" for bn, layer in folds["folded"]]
        rows += [f"| {bn} | left: {why} |" for bn, why in folds["skipped"]]
        markdown += (
            "## BatchNorm folding\n\n| BatchNormalization | folded |\n|---|---|\n"
            + "\n".join(rows)
            + "\n\n"
        )
    markdown += f"## Export\n\n{result.to_markdown()}"
    md_path = os.path.join(output_dir, "summary.md")
    _write_text(md_path, markdown)
    return json_path, md_path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; pass flags only.")
    # absl turns on INFO logging; TensorFlow's and tf2onnx's is noise here.
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        _check_model_file(_MODEL.value)
        sample = _load_calibration_data(_CALIBRATION_DATA.value)
        compaction = _compaction()  # registers compaction's layers before loading.
        model = _load_model(_MODEL.value)
        small, summary = compaction.compact(
            model, align=_ALIGN.value, return_summary=True
        )
        folds = None
        if _FOLD_BATCHNORM.value:
            small, done, skipped = compaction.fold_batchnorm(small, return_folds=True)
            folds = {"folded": done, "skipped": skipped}
        result = exporting.export(
            small,
            _OUTPUT_DIR.value,
            formats=_FORMATS.value,
            verify=_VERIFY.value,
            rtol=_RTOL.value,
            atol=_ATOL.value,
            sample=sample,
            min_agreement=_MIN_AGREEMENT.value,
            reference=model,  # the files must match the model the user gave
        )
    except (
        FileNotFoundError,
        ValueError,
        TypeError,
        ImportError,
        exporting.ExportError,
    ) as error:
        sys.exit(f"error: {error}")
    print(summary)
    if folds is not None:
        print(
            f"\nBatchNorms folded: {len(folds['folded'])}; left as they are: "
            + (", ".join(f"{bn} ({why})" for bn, why in folds["skipped"]) or "none")
        )
    print()
    print(result)
    for path in _write_summaries(_OUTPUT_DIR.value, summary, result, folds):
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
