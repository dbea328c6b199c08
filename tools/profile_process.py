"""Runs tools/profile_models.py in its own process and returns its JSON report.

One process per engine: TensorFlow's threads can only be set before it starts,
and engines loaded side by side in one process would share (and fight over)
the cores. The benchmark scripts call this instead of building the command
themselves.

    report = profile_in_process("dense.keras", ["small.keras"], ["dense", "small"],
                                "onnxruntime", [1, 32], "runs/profile_ort")
"""

import json
import os
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def profile_in_process(
    baseline, models, names, engine, batch_sizes, output_dir, extra_flags=(), echo=""
):
    """Times `baseline` and `models` on one engine in a child process.

    Args:
        baseline / models: model files (the baseline first in the report).
        names: report labels, baseline first.
        engine: one profiler engine name.
        batch_sizes: ints.
        output_dir: where profile_models.py writes its reports.
        extra_flags: more flags for profile_models.py (e.g. "--min_time_s=3").
        echo: a prefix for printing the command before it runs.

    Returns:
        The report dict of output_dir/profile.json.

    Raises:
        subprocess.CalledProcessError: the child failed.
    """
    command = [
        sys.executable,
        os.path.join(_REPO, "tools", "profile_models.py"),
        f"--baseline={baseline}",
        f"--models={','.join(models)}",
        f"--names={','.join(names)}",
        f"--engines={engine}",
        f"--batch_sizes={','.join(map(str, batch_sizes))}",
        f"--output_dir={output_dir}",
        *extra_flags,
    ]
    print(echo, " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    with open(os.path.join(output_dir, "profile.json")) as f:
        return json.load(f)
