"""CIFAR-10 for the examples: where it comes from, a validation split, augmentation.

`load_cifar10()` reads, in order of what is given or found:
  * a folder of npz shards (train_0.npz .. train_4.npz, test.npz, optionally
    lossless_subset.npz), as in ../shared/data/cifar10 next to this repository;
  * the standard `cifar-10-batches-py` pickle folder (data_batch_1..5,
    test_batch);
  * `keras.datasets.cifar10` when a download works.
Images stay raw uint8 RGB (N, 32, 32, 3): the models normalise inside, so every
saved model takes 0-255 pixels. The result says which source it used.

Example:

>>> data = load_cifar10("../shared/data/cifar10")  # doctest: +SKIP
>>> data.x_train.shape, data.x_val.shape  # doctest: +SKIP
((45000, 32, 32, 3), (5000, 32, 32, 3))
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np

__all__ = ["Cifar10Data", "load_cifar10", "augmented_dataset", "CLASS_NAMES"]

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Per-channel statistics of the CIFAR-10 training images (0-255 scale), used by
# the normalisation layer inside the models.
MEAN = (125.307, 122.950, 113.865)
STD = (62.993, 62.089, 66.705)
_NPZ_TRAIN = tuple(f"train_{k}.npz" for k in range(5))
_PICKLE_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))


@dataclasses.dataclass
class Cifar10Data:
    """uint8 images (N, 32, 32, 3) and int64 labels; validation split carved
    from the training images (the last `validation_size` of them).

    `x_lossless_test` / `test_lossless_index`: the test images with bit-exact
    pixels and their rows in x_test (npz source only; None otherwise).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    x_lossless_test: np.ndarray | None = None
    y_lossless_test: np.ndarray | None = None


def _check(x, y, what, expected=None):
    """Raise a clear error unless x is uint8 (N, 32, 32, 3) and y holds 0..9."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"CIFAR-10 {what}: images must be (N, 32, 32, 3) HWC, got {x.shape}."
        )
    if x.dtype != np.uint8:
        raise ValueError(f"CIFAR-10 {what}: images must be uint8, got {x.dtype}.")
    if len(x) != len(y):
        raise ValueError(
            f"CIFAR-10 {what}: {len(x)} images but {len(y)} labels; the files "
            "are truncated or mismatched."
        )
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(
            f"CIFAR-10 {what}: labels must be 0..9, found {y.min()}..{y.max()}."
        )
    if expected is not None and len(x) != expected:
        raise ValueError(
            f"CIFAR-10 {what}: expected {expected} images, found {len(x)}. "
            "Re-copy the data folder."
        )
    return x, y.astype("int64")


def _load_npz(folder):
    def read(name):
        with np.load(os.path.join(folder, name)) as f:
            return f["x"], f["y"]

    parts = [_check(*read(n), n, 10000) for n in _NPZ_TRAIN]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _check(*read("test.npz"), "test.npz", 10000)
    lossless_x = lossless_y = None
    lossless = os.path.join(folder, "lossless_subset.npz")
    if os.path.exists(lossless):
        with np.load(lossless) as f:
            lossless_x, lossless_y = _check(
                f["x_test"], f["y_test"], "lossless_subset x_test"
            )
    source = (
        f"npz shards in {folder} (pixels decoded from quality-75 JPEG copies; "
        "not bit-exact)"
    )
    return x_train, y_train, x_test, y_test, source, lossless_x, lossless_y


def _load_pickle(folder):
    def read(name):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        try:
            data, labels = batch[b"data"], batch[b"labels"]
        except (KeyError, TypeError):
            raise ValueError(
                f"'{path}' is not a CIFAR-10 python batch (no b'data'/b'labels')."
            ) from None
        data = np.asarray(data, np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"'{path}': data must be (N, 3072), got {data.shape}.")
        x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return _check(x, labels, name, 10000)

    parts = [read(n) for n in _PICKLE_TRAIN]
    x_test, y_test = read("test_batch")
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return (
        x_train,
        y_train,
        x_test,
        y_test,
        f"cifar-10-batches-py in {folder}",
        None,
        None,
    )


def _load_keras():
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    x_train, y_train = _check(x_train, y_train, "keras train", 50000)
    x_test, y_test = _check(x_test, y_test, "keras test", 10000)
    return x_train, y_train, x_test, y_test, "keras.datasets.cifar10", None, None


def _find_format(folder):
    if all(os.path.exists(os.path.join(folder, n)) for n in _NPZ_TRAIN + ("test.npz",)):
        return _load_npz
    for candidate in (folder, os.path.join(folder, "cifar-10-batches-py")):
        names = _PICKLE_TRAIN + ("test_batch",)
        if all(os.path.exists(os.path.join(candidate, n)) for n in names):
            return lambda _: _load_pickle(candidate)
    return None


def load_cifar10(data_dir=None, validation_size=5000, train_size=0, test_size=0):
    """Load CIFAR-10 with a validation split carved from the training images.

    Args:
        data_dir: a folder of npz shards or the `cifar-10-batches-py` folder
            (or its parent). None or "": keras.datasets.cifar10 (downloads).
        validation_size: the last this many training images become x_val
            (never trained on); 0 for none.
        train_size, test_size: keep only the first this many training /
            test images (0: all); for smoke runs. Test images are taken
            strided so every class stays present.

    Returns:
        Cifar10Data; `.source` says which data was used.

    Raises:
        FileNotFoundError: data_dir holds neither format.
        ValueError: malformed files or sizes out of range.
        RuntimeError: no data_dir and the download failed.
    """
    if data_dir:
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(
                f"CIFAR-10 --data_dir '{data_dir}' is not a folder. Pass the folder "
                "with train_0..4.npz + test.npz or the cifar-10-batches-py folder."
            )
        loader = _find_format(data_dir)
        if loader is None:
            raise FileNotFoundError(
                f"'{data_dir}' holds neither CIFAR-10 npz shards (train_0..4.npz, "
                "test.npz) nor the python batches (data_batch_1..5, test_batch)."
            )
        loaded = loader(data_dir)
    else:
        try:
            loaded = _load_keras()
        except Exception as error:  # no network, proxy, corrupt cache ...
            raise RuntimeError(
                f"keras.datasets.cifar10 could not be downloaded ({error}). Pass "
                "--data_dir with the npz shards (../shared/data/cifar10) or the "
                "cifar-10-batches-py folder."
            ) from error
    x_train, y_train, x_test, y_test, source, lossless_x, lossless_y = loaded
    if not 0 <= validation_size < len(x_train):
        raise ValueError(
            f"validation_size must be in [0, {len(x_train)}), got {validation_size}."
        )
    split = len(x_train) - validation_size
    x_val, y_val = x_train[split:], y_train[split:]
    x_train, y_train = x_train[:split], y_train[:split]
    if train_size < 0 or test_size < 0:
        raise ValueError("train_size and test_size must be >= 0 (0: all).")
    if train_size:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
        x_val, y_val = (
            x_val[: max(1, train_size // 10)],
            y_val[: max(1, train_size // 10)],
        )
    if test_size:
        stride = max(1, len(x_test) // test_size)
        x_test, y_test = x_test[::stride][:test_size], y_test[::stride][:test_size]
        if lossless_x is not None:
            lossless_x, lossless_y = lossless_x[:test_size], lossless_y[:test_size]
    return Cifar10Data(
        x_train, y_train, x_val, y_val, x_test, y_test, source, lossless_x, lossless_y
    )


def augmented_dataset(x, y, batch_size, seed, augment=True):
    """A tf.data pipeline: shuffled each epoch, pad-4 random crop + flip.

    Images stay uint8 -> float32 0-255 (the model normalises).
    """
    import tensorflow as tf

    def crop_and_flip(image, label):
        image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
        image = tf.image.random_crop(image, (32, 32, 3))
        image = tf.image.random_flip_left_right(image)
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment:
        dataset = dataset.map(crop_and_flip, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda i, lab: (tf.cast(i, "float32"), lab))
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
