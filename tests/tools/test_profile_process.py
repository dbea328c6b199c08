"""tools/profile_process.py: profile_models.py in a child process, its report back."""

import keras
import pytest
from profile_process import profile_in_process


@pytest.mark.tensorflow_only
def test_profile_in_process_returns_the_child_report(tmp_path):
    paths = []
    for name, width in (("wide", 16), ("narrow", 4)):
        layers = [keras.layers.Conv2D(width, 3), keras.layers.Flatten()]
        model = keras.Sequential([keras.Input((8, 8, 3)), *layers])
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
    report = profile_in_process(
        paths[0],
        paths[1:],
        ["wide", "narrow"],
        "onnxruntime",
        [1, 2],
        str(tmp_path / "out"),
        extra_flags=["--min_time_s=0", "--min_repeats=2", "--warmup=1"],
    )
    rows = {(r["model"], r["batch_size"]) for r in report["results"]}
    assert rows == {("wide", 1), ("wide", 2), ("narrow", 1), ("narrow", 2)}
    assert {r["engine"] for r in report["results"]} == {"onnxruntime"}
    assert (tmp_path / "out" / "profile.json").exists()
