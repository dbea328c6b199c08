"""The built wheel works on its own: installed in a fresh venv, outside the checkout.

The wheel is built from this checkout, installed without dependencies into a new
venv that borrows only the third-party packages of the running environment (a
.pth line; the checkout's editable install is not seen there), and the README's
ten-line example runs from an empty folder. The harness (tools/) is not in it,
and `import keras_admm` imports no harness module.
"""

import glob
import os
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

README_EXAMPLE = textwrap.dedent(
    """
    import sys

    import keras
    import numpy as np

    import keras_admm
    from keras_admm import models

    assert "site-packages" in keras_admm.__file__, keras_admm.__file__
    assert not any(m.startswith(("harness", "tools")) for m in sys.modules)

    model = models.lenet5()
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype="float32")
    y = np.arange(64) % 10
    plan = keras_admm.PruningPlan.uniform(model, "filter_shape:0.5:0.5")
    model.compile(optimizer=keras_admm.ADMMWrapper(keras.optimizers.Adam(1e-3), plan),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0,
              callbacks=[keras_admm.ADMMLogger()])
    masks = keras_admm.hard_prune(model, plan, graph=True)
    masked = keras_admm.MaskedWrapper(keras.optimizers.Adam(1e-4), masks)
    model.compile(optimizer=masked,
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    print(keras_admm.sparsity_report(model, plan))
    small = keras_admm.compact(model)
    np.testing.assert_allclose(small(x), model(x), rtol=1e-4, atol=1e-4)
    print("WHEEL_OK", small.count_params(), model.count_params())
    """
)


def test_wheel_installs_and_runs_the_readme_example(tmp_path):
    dist = tmp_path / "dist"
    had_build = os.path.exists(os.path.join(ROOT, "build"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps",
         "--no-build-isolation", "-q", "-w", str(dist)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    if not had_build:  # setuptools builds in place: leave no build/ behind
        shutil.rmtree(os.path.join(ROOT, "build"), ignore_errors=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = glob.glob(str(dist / "keras_admm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "keras_admm/registry.py" in names
    assert "keras_admm/training/admm.py" in names
    assert not any(n.startswith(("tools/", "tests/", "examples/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
        check=True, timeout=300,
    )  # fmt: skip
    # The third-party packages of this environment, not its editable keras_admm.
    fresh_site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with open(os.path.join(fresh_site, "borrowed.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "example.py").write_text(README_EXAMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    run = subprocess.run(
        [python, "example.py"], capture_output=True, text=True, timeout=600,
        cwd=work, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "WHEEL_OK" in run.stdout


@pytest.mark.parametrize("module", ["keras_admm"])
def test_import_keras_admm_loads_no_harness_module(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('harness', 'tools') or 'comparison' in m or 'baselines' in m]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
