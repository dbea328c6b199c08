"""Packaging for keras-admm: structured ADMM pruning for Keras 3."""

import os

from setuptools import find_packages, setup

_HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    scope = {}
    with open(os.path.join(_HERE, "keras_admm", "version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


def _readme():
    with open(os.path.join(_HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


setup(
    name="keras-admm",
    version=_version(),
    description="Structured weight pruning with ADMM (StructADMM) for Keras 3",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["keras_admm", "keras_admm.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "numpy>=1.26",
        "absl-py>=1.0",
        "tf2onnx>=1.16",
        "onnx>=1.15",
        "onnxruntime>=1.17",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80", "ruff>=0.4", "matplotlib>=3.7"],
        "examples": ["mlxtend>=0.23", "matplotlib>=3.7"],
        "tfmot": ["tensorflow-model-optimization>=0.8", "tf-keras>=2.16"],
        # Other Keras backends. ONNX export from JAX goes through jax2onnx.
        "jax": ["jax>=0.4.30", "jax2onnx>=0.17"],
        "torch": ["torch>=2.2"],
        # Profiler engines "litert" (else tf.lite.Interpreter) and "openvino".
        "litert": ["ai-edge-litert>=2.0"],
        "openvino": ["openvino>=2024.0"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
