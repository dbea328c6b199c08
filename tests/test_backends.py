"""The same pipeline gives the same numbers on every installed Keras backend.

tests/backend_probe.py runs projections, GroupProjection, ADMMWrapper (saved
and resumed mid-ADMM), the hard prune, MaskedWrapper, compact,
ADMMRegularizer, GradualPruning and progressive ADMM on one backend and saves
the results; here it runs once per backend, each in its own process, and the
results are compared with TensorFlow's. It runs in the tensorflow pass of
the suite and starts the other backends itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import backend_probe
import keras
import numpy as np
import pytest

import keras_admm  # noqa: F401  (registers the classes a .keras file names)

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend_probe.py")
# Float differences between backends' kernels (conv, matmul reductions) stay
# near float32 rounding after the probe's ~30 training steps: ~1e-7 measured.
RTOL = 1e-5


def _run_probe(backend, tmp_path):
    out = tmp_path / f"{backend}.npz"
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, PROBE, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{backend} probe failed:\n{result.stderr[-4000:]}"
    return dict(np.load(out))


pytestmark = pytest.mark.tensorflow_only


@pytest.fixture(scope="module")
def tensorflow_results(tmp_path_factory):
    return _run_probe("tensorflow", tmp_path_factory.mktemp("tensorflow"))


def test_probe_exercises_pruning(tensorflow_results):
    """The probe's numbers are worth comparing: masks cut, compact shrinks."""
    r = tensorflow_results
    assert str(r["backend"]) == "tensorflow"
    masks = [v for k, v in r.items() if k.startswith("mask/")]
    assert masks and all(0 < m.mean() < 1 for m in masks)
    assert r["compact/conv1"].shape[-1] < r["masked/conv1"].shape[-1]
    np.testing.assert_allclose(r["compact/outputs"], r["masked/outputs"], atol=1e-5)
    assert np.all(r["admm/conv1/rho"] > 0.05)  # rho grew at the Z/U updates
    assert np.count_nonzero(r["gradual/conv1"].reshape(-1, 8).any(0)) == 4


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_results_as_tensorflow(backend, tensorflow_results, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(
            f"{backend} is not installed (make venv installs jax; torch: "
            "make test-torch)"
        )
    other = _run_probe(backend, tmp_path)
    assert str(other["backend"]) == backend
    assert sorted(other) == sorted(tensorflow_results)
    for key, expected in tensorflow_results.items():
        if key == "backend":
            continue
        got = other[key]
        assert got.shape == expected.shape, key
        if key.startswith("mask/"):
            np.testing.assert_array_equal(got, expected, err_msg=key)
            continue
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        np.testing.assert_allclose(
            got, expected, rtol=0, atol=RTOL * max(scale, 1e-6), err_msg=key
        )
        # Zeros of structured sparsity are exact zeros on every backend.
        np.testing.assert_array_equal(got == 0, expected == 0, err_msg=key)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_pruned_on_another_backend_compacts_exports_and_loads_under_tensorflow(
    backend, tmp_path
):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    probe = os.path.join(os.path.dirname(PROBE), "export_probe.py")
    result = subprocess.run(
        [sys.executable, probe, str(tmp_path)],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with open(tmp_path / "result.json") as f:
        formats = json.load(f)
    assert formats.pop("backend") == backend
    assert formats["keras"] == "verified"
    native = {
        # Keras' jax path: jax2tf for SavedModel and LiteRT, jax2onnx for ONNX.
        "jax": {"saved_model", "tflite"}
        | ({"onnx"} if importlib.util.find_spec("jax2onnx") else set()),
        "torch": {"onnx"},  # torch.export; no SavedModel / LiteRT path
    }[backend]
    for name, outcome in formats.items():
        if name in native:
            assert outcome == "verified", (name, outcome)
        elif name != "keras":  # no path: the error says what to do
            assert outcome.startswith("ExportError"), (name, outcome)
            assert "KERAS_BACKEND=tensorflow" in outcome, outcome
    # The .keras file is backend-independent: TF loads it, same outputs.
    reloaded = keras.saving.load_model(tmp_path / "keras" / "model.keras")
    expected = np.load(tmp_path / "outputs.npy")
    got = keras.ops.convert_to_numpy(reloaded(backend_probe.data()[0]))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
