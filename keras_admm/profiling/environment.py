"""The machine and library versions a profile ran on, read without importing them.

Library versions come from package metadata, so recording them never imports
TensorFlow or a backend; the GPU name comes from `nvidia-smi` when it is present.
"""

import importlib.metadata
import os
import platform
import shutil
import subprocess

_LIBRARIES = (
    "keras",
    "tensorflow",
    "tensorflow-cpu",
    "jax",
    "jaxlib",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tf2onnx",
    "ai-edge-litert",
    "openvino",
    "numpy",
)


def cpu_model():
    """The CPU model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_names():
    """Names of the NVIDIA GPUs `nvidia-smi` reports; empty without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def library_versions():
    """Installed versions of the libraries that matter for timing, by name."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment_info():
    """A JSON-ready description of the machine and software of this run.

    Returns:
        A dict with "cpu", "logical_cpus", "usable_cores", "gpus", "platform",
        "python", "keras_backend", "libraries" and "load_average" (1, 5, 15 min,
        where the OS reports it: a busy shared machine shows here).

    Example:
        >>> environment_info()["usable_cores"]
        2
    """
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow (default)"),
        "libraries": library_versions(),
        "load_average": load,
    }
