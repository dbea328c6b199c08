"""The CIFAR-10 example runs every stage end to end in its smoke mode."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10")
needs_cifar10 = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA, "test.npz")),
    reason="CIFAR-10 npz shards not found next to the repository (../shared/data)",
)


def smoke_command(output_dir, *flags):
    """examples/cifar10.py --smoke on the shared shards, writing to output_dir."""
    return [
        sys.executable,
        os.path.join(ROOT, "examples", "cifar10.py"),
        "--smoke",
        f"--data_dir={DATA}",
        f"--output_dir={output_dir}",
        *flags,
    ]


def run_smoke(output_dir, *flags, timeout=900, env=None):
    """smoke_command run to its end (env: None, this process's environment);
    the finished process, its output captured."""
    return subprocess.run(
        smoke_command(output_dir, *flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run of every stage (distilled retraining); its folder."""
    output_dir = tmp_path_factory.mktemp("cifar10_smoke")
    result = run_smoke(
        output_dir,
        "--method=admm",
        "--flops_reduction=2",
        "--recalibrate_bn",
        "--distill",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Data: npz shards" in result.stdout
    return output_dir


@needs_cifar10
def test_cifar10_smoke_runs_every_stage(smoke_run):
    with open(smoke_run / "report.json") as f:
        report = json.load(f)
    assert report["prune"]["recalibrate_bn"] is True
    assert 0.0 <= report["prune"]["validation_after_hard_prune_recalibrated"] <= 1.0
    for stage in ("dense", "prune", "retrain", "compact", "export", "profile"):
        assert stage in report, stage
    # Masked retraining was distilled from the dense model of the run.
    retrain = report["retrain"]
    assert retrain["distillation"]["teacher"].endswith("resnet20_dense.keras")
    assert retrain["distillation"]["alpha"] == 0.9
    assert 0.0 <= retrain["accuracy"]["test"] <= 1.0
    compact = report["compact"]
    assert compact["mac_reduction"] >= 2.0
    assert compact["max_abs_output_diff_vs_pruned"] < 1e-3
    assert compact["accuracy"]["test"] == pytest.approx(
        retrain["accuracy"]["test"], abs=1e-6
    )
    assert all(f["verified"] for f in report["export"]["formats"])
    assert {(r["engine"], r["batch_size"]) for r in report["profile"]} == {
        ("tf", 1),
        ("tf", 32),
        ("onnxruntime", 1),
        ("onnxruntime", 32),
    }
    # The compact model takes raw 0-255 pixels and is smaller.
    small = keras.saving.load_model(smoke_run / "resnet20_admm_2x.keras")
    dense = keras.saving.load_model(smoke_run / "resnet20_dense.keras")
    assert small.count_params() < dense.count_params()
    x = np.full((1, 32, 32, 3), 255.0, "float32")
    assert np.isfinite(np.asarray(small(x))).all()
    assert (smoke_run / "report.md").read_text().startswith("# CIFAR-10 run")


@needs_cifar10
def test_cifar10_smoke_plans_for_a_speed_target(smoke_run, tmp_path):
    """From the smoke run's dense model: plan, plain masked retraining, profile."""
    cache = tmp_path / "cache"
    result = run_smoke(
        tmp_path,
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune,retrain,compact,profile",
        "--method=one_shot_l1",
        "--prune_epochs=0",
        "--target_speedup=1.2",
        "--engines=onnxruntime",
        "--batch_sizes=32",
        env={**os.environ, "KERAS_ADMM_CACHE": str(cache)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "report.json") as f:
        report = json.load(f)
    assert report["retrain"]["distillation"] is None
    assert 0.0 <= report["retrain"]["accuracy"]["test"] <= 1.0
    target = report["target"]
    assert (target["engine"], target["batch_size"]) == ("onnxruntime", 32)
    assert target["predicted_ms"] <= target["target_ms"] + 1e-9
    assert target["sensitivity"]["measure"] == "loss"
    # The profile stage measured the compact model against the prediction.
    assert target["measured_ms"] > 0 and "relative_error" in target
    widths = report["compact"]["widths"]
    for group in target["groups"]:
        for name in group["producers"]:
            assert widths[name] == group["kept"], name
    assert len(os.listdir(cache / "latency")) == 1  # the table was cached
    assert "Speed target" in (tmp_path / "report.md").read_text()


@needs_cifar10
def test_cifar10_smoke_depth_pruning_removes_the_branches(smoke_run, tmp_path):
    """--remove_blocks: the cheapest branches leave the model before ADMM prunes it;
    --retrain_from_scratch then retrains that model from fresh random weights."""
    result = run_smoke(
        tmp_path,
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune,retrain,compact",
        "--retrain_from_scratch",
        "--method=admm",
        "--admm_stages=1",
        "--remove_blocks=2",
        "--flops_reduction=1.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "report.json") as f:
        report = json.load(f)
    removed = report["blocks"]["removed"]
    assert len(removed) == 2 and len(report["blocks"]["sensitivity"]) == 9
    costs = [b["validation_loss_increase"] for b in report["blocks"]["sensitivity"]]
    assert costs == sorted(costs)
    compact = report["compact"]
    assert compact["mac_reduction"] >= 1.5
    assert compact["max_abs_output_diff_vs_pruned"] < 1e-3
    pruned = keras.saving.load_model(tmp_path / "pruned.keras")
    small = keras.saving.load_model(tmp_path / "resnet20_admm_1.5x_minus2blocks.keras")
    for model in (pruned, small):  # trained without them, not just with zeros
        names = {layer.name for layer in model.layers}
        for add in removed:
            prefix = add[: -len("_add")]
            assert f"{prefix}_conv1" not in names and f"{prefix}_bn2" not in names
            assert add not in names
    removed_layers = set(report["blocks"]["removed_layers"])
    assert {f"{add[: -len('_add')]}_conv1" for add in removed} <= removed_layers
    markdown = (tmp_path / "report.md").read_text()
    assert "Residual branches removed" in markdown
    assert report["retrain"]["from_scratch"] is True
    assert "from fresh random weights (control)" in markdown
    # One smoke epoch at LR 0.01 would leave the inherited kernel nearly as it
    # was (correlation near 1); fresh weights are unrelated to it.
    retrained = keras.saving.load_model(tmp_path / "retrained.keras")
    inherited, fresh = (
        keras.ops.convert_to_numpy(m.get_layer("conv1").kernel).ravel()
        for m in (pruned, retrained)
    )
    assert abs(np.corrcoef(inherited, fresh)[0, 1]) < 0.5
    # ... and the weights the prune cut stay zero in it.
    cut = 0
    for layer in pruned.layers:
        if hasattr(layer, "kernel"):
            was = keras.ops.convert_to_numpy(layer.kernel)
            now = keras.ops.convert_to_numpy(retrained.get_layer(layer.name).kernel)
            assert np.all(now[was == 0] == 0), layer.name
            cut += int((was == 0).sum())
    assert cut > 0
    # Resuming its retrain checkpoint without the flag would mix two runs: refused.
    resumed = run_smoke(
        tmp_path,
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=retrain",
        "--resume",
    )
    assert resumed.returncode != 0
    assert "written with settings {'from_scratch': True}" in resumed.stderr


@needs_cifar10
def test_cifar10_smoke_plan_after_depth_pruning(smoke_run, tmp_path):
    """--plan with --remove_blocks: the plan is resolved against the model the
    branches left (here it cuts the stage-1 stream, 16 -> 12 channels); a plan
    naming a layer of a removed branch is refused, naming it, before training."""
    plan = tmp_path / "stem.json"
    plan.write_text(
        json.dumps({"rules": [{"name": "conv1", "sparsity": "filter:0.25"}]})
    )
    result = run_smoke(
        tmp_path / "ok",
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune,retrain,compact",
        "--method=one_shot_l1",
        "--prune_epochs=0",
        "--remove_blocks=2",
        f"--plan={plan}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "ok" / "report.json") as f:
        report = json.load(f)
    assert len(report["blocks"]["removed"]) == 2
    widths = report["compact"]["widths"]
    assert widths["conv1"] == 12 and widths["s2b0_proj"] == 32  # never removed
    assert (tmp_path / "ok" / "resnet20_one_shot_l1_stem_minus2blocks.keras").exists()

    every_branch = tmp_path / "every_branch.json"
    rules = [
        {"name": f"s{stage}b{block}_conv1", "sparsity": "filter:0.25"}
        for stage in (1, 2, 3)
        for block in (0, 1, 2)
    ]
    every_branch.write_text(json.dumps({"rules": rules}))
    refused = run_smoke(
        tmp_path / "refused",
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune",
        "--method=one_shot_l1",
        "--remove_blocks=2",
        f"--plan={every_branch}",
    )
    assert refused.returncode != 0
    assert "after --remove_blocks 2 took out the branches of" in refused.stderr
    assert "which is not in model" in refused.stderr
    assert not (tmp_path / "refused" / "pruned.keras").exists()


@needs_cifar10
def test_cifar10_smoke_remove_branches_by_name(smoke_run, tmp_path):
    """--remove_branches takes out the named branches, whatever their validation
    cost, before the prune (the run's name lists them sorted); a name that is
    no removable branch is refused, listing those there are, and so is resuming
    the run with other branches."""
    result = run_smoke(
        tmp_path / "ok",
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune,retrain,compact",
        "--method=one_shot_l1",
        "--prune_epochs=0",
        "--remove_branches=s3b2_add,s1b0_add",
        "--flops_reduction=1.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "ok" / "report.json") as f:
        report = json.load(f)
    blocks = report["blocks"]
    assert blocks["removed"] == ["s3b2_add", "s1b0_add"]
    assert blocks["chosen_by"] == "name (--remove_branches)"
    assert len(blocks["sensitivity"]) == 9  # still ranked, for the report
    assert report["compact"]["mac_reduction"] >= 1.5
    pruned = keras.saving.load_model(tmp_path / "ok" / "pruned.keras")
    small = keras.saving.load_model(
        tmp_path / "ok" / "resnet20_one_shot_l1_1.5x_minus_s1b0-s3b2.keras"
    )
    for model in (pruned, small):  # trained without them, not just with zeros
        names = {layer.name for layer in model.layers}
        for prefix in ("s1b0", "s3b2"):
            assert f"{prefix}_conv1" not in names and f"{prefix}_add" not in names
        assert "s1b1_conv1" in names and "s3b1_conv1" in names
    markdown = (tmp_path / "ok" / "report.md").read_text()
    assert "s3b2_add, s1b0_add (chosen by name (--remove_branches))" in markdown

    other = run_smoke(
        tmp_path / "ok",
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune",
        "--method=one_shot_l1",
        "--prune_epochs=0",
        "--remove_branches=s1b1_add,s3b2_add",
        "--resume",
    )
    assert other.returncode != 0
    assert "took out the branches of ['s3b2_add', 's1b0_add']" in other.stderr
    with open(tmp_path / "ok" / "blocks.json") as f:  # left as it was
        assert json.load(f)["removed"] == ["s3b2_add", "s1b0_add"]

    refused = run_smoke(
        tmp_path / "refused",
        f"--dense_model={smoke_run / 'resnet20_dense.keras'}",
        "--stages=prune",
        "--method=one_shot_l1",
        "--remove_branches=s1b0_add,s4b0_add",
    )
    assert refused.returncode != 0
    assert "--remove_branches: ['s4b0_add'] are not Adds" in refused.stderr
    assert "s1b0_add, s1b1_add" in refused.stderr  # the removable ones, listed
    assert not (tmp_path / "refused" / "pruned.keras").exists()


def test_cifar10_remove_blocks_and_branches_are_exclusive(tmp_path):
    """Both depth-pruning flags at once are refused before any work, as is a
    branch named twice."""
    for flags_given, message in (
        (["--remove_blocks=2", "--remove_branches=s1b0_add"], "not both"),
        (["--remove_branches=s1b0_add,s1b0_add"], "names a branch twice"),
    ):
        result = run_smoke(tmp_path, "--stages=prune", *flags_given, timeout=300)
        assert result.returncode != 0
        assert message in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "report.json").exists()


def test_cifar10_retrain_from_scratch_needs_the_retrain_stage(tmp_path):
    """The control flag without a retrain stage is refused before any work."""
    result = run_smoke(
        tmp_path, "--stages=prune", "--retrain_from_scratch", timeout=300
    )
    assert result.returncode != 0
    assert "--retrain_from_scratch trains the pruned model" in result.stderr
    assert not (tmp_path / "report.json").exists()
