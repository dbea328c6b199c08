"""write_checkpoint / read_checkpoint_state: whole files or the previous ones."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_admm.training.checkpoint import read_checkpoint_state, write_checkpoint


def _model(value):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.set_weights([np.full((3, 2), value, "float32"), np.zeros(2, "float32")])
    return model


def test_round_trip(tmp_path):
    path = tmp_path / "ckpt.keras"
    assert read_checkpoint_state(path) is None
    write_checkpoint(_model(1.0), path, {"epochs_done": 1, "history": [0.5]})
    assert read_checkpoint_state(path) == {"epochs_done": 1, "history": [0.5]}
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_weights()[0], np.full((3, 2), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt.keras",
        "ckpt.keras.json",
    ]


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.keras"
    write_checkpoint(_model(1.0), path, {"epochs_done": 1})

    class Broken:
        def save(self, target):
            with open(target, "w") as f:
                f.write("half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(Broken(), path, {"epochs_done": 2})
    assert read_checkpoint_state(path) == {"epochs_done": 1}
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_weights()[0], np.full((3, 2), 1.0))


def test_one_file_missing_reads_as_no_checkpoint(tmp_path):
    path = tmp_path / "ckpt.keras"
    write_checkpoint(_model(1.0), path, {"epochs_done": 1})
    (tmp_path / "ckpt.keras.json").unlink()
    assert read_checkpoint_state(path) is None


def test_rejects_a_path_that_is_not_keras(tmp_path):
    with pytest.raises(ValueError, match="must be a .keras path"):
        write_checkpoint(_model(1.0), tmp_path / "ckpt.h5", {})
