"""Reference architectures used by the examples, benchmarks and tests.

Small, standard models with stable layer names, so pruning plans written for
them (e.g. "conv2=filter_shape:0.5:0.8") stay valid.

Example:

>>> from keras_admm import models
>>> models.lenet5().count_params()
431080
>>> models.resnet_cifar(20).count_params() > 250_000
True
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["alexnet", "lenet5", "resnet_cifar", "vgg_cifar"]


def lenet5(input_shape=(28, 28, 1), num_classes=10, name="lenet5"):
    """LeNet-5, Caffe variant: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10.

    Layer names: conv1, pool1, conv2, pool2, flatten, fc1, fc2. Outputs logits.
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="fc2"),
        ],
        name=name,
    )


def _inputs_normalized(input_shape, mean, std):
    """Input layer, then a fixed per-channel normalisation when mean/std are given.

    With them, the model takes raw pixels (e.g. 0-255 RGB) and computes
    (x - mean) / std inside, so saved and exported models need no preprocessing.
    """
    inputs = keras.Input(input_shape)
    if mean is None and std is None:
        return inputs, inputs
    if mean is None or std is None:
        raise ValueError("Pass both mean and std (per channel) or neither.")
    if len(mean) != input_shape[-1] or len(std) != input_shape[-1]:
        raise ValueError(
            f"mean and std need one value per input channel ({input_shape[-1]}), "
            f"got {len(mean)} and {len(std)}."
        )
    if min(std) <= 0:
        raise ValueError(f"std must be > 0 per channel, got {tuple(std)}.")
    # A Rescaling with per-channel scale and offset: exports to ONNX as plain
    # constants (a Normalization layer's mean/variance become extra graph inputs).
    x = layers.Rescaling(
        scale=[1.0 / float(s) for s in std],
        offset=[-float(m) / float(s) for m, s in zip(mean, std)],
        name="normalize",
    )(inputs)
    return inputs, x


def resnet_cifar(
    depth=20, input_shape=(32, 32, 3), num_classes=10, name=None, mean=None, std=None
):
    """ResNet for CIFAR (He et al. 2016): depth = 6n + 2, widths 16/32/64.

    Basic blocks with BatchNorm; the shortcut is the identity, or a strided 1x1
    conv + BN where the shape changes. Outputs logits. With per-channel `mean`
    and `std` a Rescaling layer ("normalize") comes first, so the model
    takes raw pixels.

    Raises:
        ValueError: depth is not 6n + 2, or mean/std malformed.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"ResNet-CIFAR depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}."
        )
    blocks = (depth - 2) // 6
    inputs, x = _inputs_normalized(input_shape, mean, std)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in range(blocks):
            prefix = f"s{stage}b{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(
                width, 3, stride, padding="same", use_bias=False, name=f"{prefix}_conv1"
            )(x)
            y = layers.BatchNormalization(name=f"{prefix}_bn1")(y)
            y = layers.ReLU(name=f"{prefix}_relu1")(y)
            y = layers.Conv2D(
                width, 3, padding="same", use_bias=False, name=f"{prefix}_conv2"
            )(y)
            y = layers.BatchNormalization(name=f"{prefix}_bn2")(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(
                    width, 1, stride, use_bias=False, name=f"{prefix}_proj"
                )(shortcut)
                shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn")(shortcut)
            x = layers.Add(name=f"{prefix}_add")([y, shortcut])
            x = layers.ReLU(name=f"{prefix}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M")
_VGG16 += (512, 512, 512, "M")


def vgg_cifar(
    input_shape=(32, 32, 3), num_classes=10, name="vgg16", mean=None, std=None
):
    """VGG-16 with BatchNorm for CIFAR: 13 conv 3x3 + BN + ReLU, 5 max-pools, fc.

    Layer names: conv1..conv13 (bn1.., relu1..), pool1..pool5, flatten, fc.
    With per-channel `mean` and `std` the model normalises raw pixels first.
    Outputs logits.
    """
    inputs, x = _inputs_normalized(input_shape, mean, std)
    conv, pool = 0, 0
    for width in _VGG16:
        if width == "M":
            pool += 1
            x = layers.MaxPooling2D(2, name=f"pool{pool}")(x)
            continue
        conv += 1
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{conv}")(
            x
        )
        x = layers.BatchNormalization(name=f"bn{conv}")(x)
        x = layers.ReLU(name=f"relu{conv}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def alexnet(input_shape=(224, 224, 3), num_classes=1000, name="alexnet"):
    """AlexNet for ImageNet in the torchvision layout (single tower, no LRN).

    Convs 64 (11x11 / 4) - 192 (5x5) - 384 - 256 - 256 (3x3), ReLU, three 3x3 / 2
    max-pools, two 4096-unit Dense layers, logits. Layer names: conv1..conv5,
    pool1..pool3, flatten, fc1, fc2, fc3; `pool3`'s output ends the conv trunk.

    >>> alexnet().count_params()
    61100840
    """
    inputs = keras.Input(input_shape)
    x = layers.ZeroPadding2D(2, name="pad1")(inputs)
    x = layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    for i, channels in zip((3, 4, 5), (384, 256, 256)):
        x = layers.Conv2D(
            channels, 3, padding="same", activation="relu", name=f"conv{i}"
        )(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc1")(x)
    x = layers.Dense(4096, activation="relu", name="fc2")(x)
    outputs = layers.Dense(num_classes, name="fc3")(x)
    return keras.Model(inputs, outputs, name=name)
