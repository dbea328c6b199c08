"""ADMM under data parallelism: JAX DataParallel on one and two processes, TF
MultiWorkerMirroredStrategy with two workers.

Each case runs a probe script in fresh processes (the backend, the device
count and TF_CONFIG are fixed at import) and checks its results here.
MirroredStrategy on one process is tested in test_wrappers.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

# The probes pick their own backends: run them once, in the tensorflow pass.
pytestmark = pytest.mark.tensorflow_only

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(script, *args, env=None):
    return subprocess.Popen(
        [sys.executable, os.path.join(TESTS, script), *map(str, args)],
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, name, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"


def _assert_close(got, expected, key):
    """Equal to float32 rounding: within 1e-5 of the expected array's scale."""
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale, err_msg=key)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_jax_data_parallel_on_two_devices_matches_one_device(tmp_path):
    out = tmp_path / "dp.npz"
    _finish(_python("data_parallel_probe.py", out), "data_parallel_probe")
    r = dict(np.load(out))
    assert list(r["devices"]) == [1, 2]  # one device, then both
    assert list(r["batch_axes"])[0] == "batch"  # the batch is split across them
    assert bool(r["replicas_agree"])  # Z, U, rho identical on every device
    singles = [k for k in r if k.startswith("single/")]
    assert any("/z" in k for k in singles) and any("masked/" in k for k in singles)
    for key in singles:
        _assert_close(r[key.replace("single/", "parallel/", 1)], r[key], key)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_jax_two_processes_match_one_process(tmp_path):
    (port,) = _free_ports(1)
    processes = [
        _python("jax_multiprocess_probe.py", tmp_path, port, i) for i in range(2)
    ]
    for i, process in enumerate(processes):
        _finish(process, f"jax process {i}")
    _finish(_python("jax_multiprocess_probe.py", tmp_path), "one-process reference")
    first, second, single = (
        dict(np.load(tmp_path / f"{name}.npz"))
        for name in ("process_0", "process_1", "single")
    )
    assert int(first["devices"]) == 2 and int(single["devices"]) == 1
    keys = [k for k in single if k.startswith("admm/")]
    assert any(k.endswith("/z") for k in keys)
    for key in keys:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        _assert_close(first[key], single[key], key)


def test_multi_worker_mirrored_two_processes_and_resume_from_the_chief(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        _python(
            "multiworker_probe.py",
            tmp_path,
            env={
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                )
            },
        )
        for i in range(2)
    ]
    for i, worker in enumerate(workers):
        _finish(worker, f"worker {i}")
    _finish(_python("multiworker_probe.py", tmp_path), "one-process reference")
    _finish(_python("multiworker_probe.py", tmp_path, "resume"), "resume")

    chief, other, single, resumed = (
        dict(np.load(tmp_path / f"{name}.npz"))
        for name in ("worker_0", "worker_1", "single", "resumed")
    )
    assert int(chief["replicas"]) == 2 and int(single["replicas"]) == 1
    assert list(chief["local_batches"]) == [4] and list(single["local_batches"]) == [8]
    admm_keys = [k for k in single if k.startswith("admm/")]
    assert any(k.endswith("/z") for k in admm_keys)
    for key in admm_keys:
        np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
        _assert_close(chief[key], single[key], key)
        # The chief's file holds its ADMM state exactly ...
        loaded = key.replace("admm/", "loaded/", 1)
        np.testing.assert_array_equal(resumed[loaded], chief[key], err_msg=loaded)
    # ... and training resumes from it: one more epoch lands where the
    # uninterrupted run does (no restart of Z from Proj(W)).
    after = [k for k in single if k.startswith("after/")]
    assert after, sorted(single)  # the probe wrote the resumed epoch's weights
    for key in after:
        _assert_close(resumed[key], single[key], key)
