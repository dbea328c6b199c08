r"""CIFAR-10 end to end: dense pretraining, pruning, masked retraining, compaction,
export and timing of ResNet-20/32/56 or VGG-16 (BatchNorm).

Stages (--stages, any subset, in this order; each can run alone on the files an
earlier invocation left in --output_dir):

  pretrain  SGD + Nesterov, warm-up + cosine learning rate, decoupled weight
            decay on kernels, pad-4 crops + flips -> <model>_dense.keras
  prune     --method gradual (magnitude pruning on the polynomial schedule;
            the default: the best of the three on ResNet-20 in 12 epochs,
            docs/CIFAR10.md), admm (progressive ADMM), one_shot_l1 /
            one_shot_l2 (prune at once, masked training), for --prune_epochs,
            towards a plan that cuts the multiply-accumulates (MACs) by
            --flops_reduction (with --remove_blocks K, the K cheapest residual
            branches are taken out of the model first, and counted; with
            --remove_branches, the named ones); then the hard prune
            -> pruned.keras
  retrain   --retrain_epochs of masked training, cosine learning rate
            -> retrained.keras
  compact   keras_admm.compact: the smaller dense model, checked against the
            pruned one -> <model>_<method>_<N>x.keras
  export    .keras, SavedModel and ONNX, each reloaded and verified
  profile   TF and ONNX Runtime latency of dense vs compact, batch 1 and 32
            (run it alone on an idle machine: timings under load are wrong)

Every model takes raw 0-255 RGB images (normalisation is inside). The last
--validation_size training images are held out (never trained on) and reported
every epoch; test accuracy is measured on the 10,000 test images and on the
1,000 with lossless pixels. Each epoch of every stage is checkpointed (model and
optimizer state, ADMM Z/U/rho included); --resume continues after the last
finished epoch. report.json / report.md gather what every stage measured.

    python examples/cifar10.py --stages pretrain \
        --output_dir runs/cifar10/resnet20_dense
    python examples/cifar10.py --stages prune,retrain,compact,export \
        --dense_model runs/cifar10/resnet20_dense/resnet20_dense.keras \
        --method gradual --sparsity filter --flops_reduction 2 \
        --output_dir runs/cifar10/resnet20_gradual_2x
    python examples/cifar10.py --smoke --output_dir /tmp/cifar_smoke   # < 2 min
"""

import json
import os
import sys
import time

from absl import app, flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
sys.path.insert(0, _HERE)
sys.path.append(os.path.join(_REPO, "tools"))  # appended: see common_flags

import common_flags  # noqa: E402

STAGES = ("pretrain", "prune", "retrain", "compact", "export", "profile")
METHODS = ("admm", "gradual", "one_shot_l1", "one_shot_l2")
MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16")

_STAGES = flags.DEFINE_list("stages", list(STAGES), f"Stages to run: {STAGES}.")
_SHARED_CIFAR10 = os.path.join(os.path.dirname(_REPO), "shared", "data", "cifar10")
_DATA_DIR = common_flags.data_dir(
    _SHARED_CIFAR10,
    "CIFAR-10 folder: npz shards or cifar-10-batches-py; '' downloads with keras "
    "(so does the default when ../shared/data/cifar10 is missing).",
)
_OUTPUT_DIR = common_flags.output_dir(
    os.path.join(_REPO, "runs", "cifar10"), "This run's folder."
)
_MODEL = flags.DEFINE_enum("model", "resnet20", MODELS, "Architecture.")
_DENSE_MODEL = flags.DEFINE_string(
    "dense_model",
    None,
    "Trained dense .keras model to prune (default: <output_dir>/<model>_dense.keras).",
)
_SEED = common_flags.seed()
_BATCH_SIZE = common_flags.batch_size(128, "Training batch size.")
_VALIDATION_SIZE = flags.DEFINE_integer(
    "validation_size", 5000, "Last training images held out for validation."
)
_RESUME = flags.DEFINE_bool("resume", False, "Continue after the last saved epoch.")
_SMOKE = flags.DEFINE_bool(
    "smoke",
    False,
    "512 training and 256 test images, 1 epoch a stage, a short timing: a check "
    "that every stage runs (the accuracy means nothing).",
)
# pretrain
_PRETRAIN_EPOCHS = flags.DEFINE_integer("pretrain_epochs", 30, "Dense epochs.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.1, "Peak dense learning rate.")
_WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up epochs.")
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay",
    5e-3,
    "Decoupled weight decay of kernels per unit learning rate (5e-3 with "
    "momentum 0.9 matches a coupled L2 of 5e-4).",
)
# prune / retrain
_METHOD = flags.DEFINE_enum(
    "method",
    "gradual",
    METHODS,
    "Pruning method (gradual: the recommended one at this scale, docs/CIFAR10.md).",
)
SPARSITY_TYPES = ("filter", "channel", "shape", "filter_shape")
_SPARSITY = common_flags.sparsity(
    "filter",
    f"Sparsity type ({', '.join(SPARSITY_TYPES)}); the ratios come from "
    "--flops_reduction.",
)
_FLOPS_REDUCTION = flags.DEFINE_float(
    "flops_reduction", 2.0, "Target: dense MACs / pruned MACs (e.g. 2 or 3)."
)
_PLAN = flags.DEFINE_string(
    "plan",
    None,
    "A plan JSON file (PruningPlan.to_json, e.g. a TargetPlan) to prune to, "
    "instead of one made from --flops_reduction or a speed target.",
)
_TARGET_SPEEDUP = flags.DEFINE_float(
    "target_speedup",
    None,
    "Instead of --flops_reduction: a measured speedup to reach on --target_engine "
    "at --target_batch_size (e.g. 1.5); per-group filter counts are chosen from "
    "latency tables and validation-loss sensitivity (PruningPlan.for_target).",
)
_TARGET_LATENCY_MS = flags.DEFINE_float(
    "target_latency_ms", None, "Instead of --flops_reduction: a latency target (ms)."
)
_TARGET_ENGINE = flags.DEFINE_string(
    "target_engine", "onnxruntime", "Engine of the speed target."
)
_TARGET_BATCH_SIZE = flags.DEFINE_integer(
    "target_batch_size", 32, "Batch size of the speed target."
)
_TARGET_GRANULARITY = flags.DEFINE_integer(
    "target_granularity",
    8,
    "Kept counts of a group of C channels are multiples of C // granularity.",
)
_PRUNE_EPOCHS = flags.DEFINE_integer("prune_epochs", 6, "Epochs of the prune stage.")
_RETRAIN_EPOCHS = flags.DEFINE_integer("retrain_epochs", 6, "Masked epochs after.")
_PRUNE_LEARNING_RATE = flags.DEFINE_float(
    "prune_learning_rate", 0.01, "SGD learning rate of the prune stage (constant)."
)
_RETRAIN_LEARNING_RATE = flags.DEFINE_float(
    "retrain_learning_rate", 0.01, "Initial learning rate of retraining (cosine)."
)
_ADMM_STAGES = flags.DEFINE_integer(
    "admm_stages", 3, "Progressive ADMM stages (prune_epochs are split among them)."
)
_RHO = flags.DEFINE_float("rho", 0.3, "ADMM penalty rho at the start of each stage.")
_RHO_MULTIPLIER = flags.DEFINE_float("rho_multiplier", 1.3, "rho growth per update.")
_RHO_MAX = flags.DEFINE_float(
    "rho_max", None, "Upper bound of rho's growth (default: the larger of 1 and --rho)."
)
_ADMM_UPDATES = flags.DEFINE_integer(
    "admm_updates", 4, "Z/U updates per progressive ADMM stage."
)
_REMOVE_BLOCKS = flags.DEFINE_integer(
    "remove_blocks",
    0,
    "Depth pruning first: take this many residual branches out of the model, "
    "those whose removal raises the validation loss least "
    "(keras_admm.branch_sensitivity); every --method then prunes and trains the "
    "smaller model. --flops_reduction counts them and filter pruning makes up "
    "the rest (none when they reach it); a --plan is resolved against the "
    "smaller model instead (it must not name the layers taken out). To choose "
    "the branches yourself: --remove_branches.",
)
_REMOVE_BRANCHES = flags.DEFINE_list(
    "remove_branches",
    [],
    "Depth pruning by name, in place of --remove_blocks: take out the residual "
    "branches feeding these Adds (e.g. s1b0_add,s1b1_add,s1b2_add: all of stage "
    "1), whatever their validation cost; everything else as --remove_blocks "
    "(the report still ranks every branch on the validation split, when there "
    "is one). Run names list them sorted (_minus_s1b0-s1b1-s1b2).",
)
_RECALIBRATE_BN = flags.DEFINE_bool(
    "recalibrate_bn",
    False,
    "After the hard prune, recompute every BatchNorm's moving statistics from "
    "--recalibration_images training images before masked retraining (the "
    "report always gives the validation accuracy with them recomputed).",
)
_RECALIBRATION_IMAGES = flags.DEFINE_integer(
    "recalibration_images", 2000, "Training images for the BatchNorm recalibration."
)
_RETRAIN_FROM_SCRATCH = flags.DEFINE_bool(
    "retrain_from_scratch",
    False,
    "Control run: before masked retraining, give the pruned model fresh random "
    "weights (its pruned weights stay zero; examples/from_scratch.py), so the "
    "result shows what the dense weights are worth (Liu et al. 2019).",
)
_DISTILL = flags.DEFINE_bool(
    "distill",
    False,
    "Masked retraining learns from the dense model's outputs too (knowledge "
    "distillation, examples/distillation.py); each step also runs the dense model.",
)
_DISTILL_TEMPERATURE = flags.DEFINE_float(
    "distill_temperature", 4.0, "Softmax temperature of the distillation."
)
_DISTILL_ALPHA = flags.DEFINE_float(
    "distill_alpha", 0.9, "Weight of the distillation term (1 - it: the labels)."
)
# compact / profile
_ALIGN = common_flags.align(1)
_ENGINES = common_flags.engines(["tf", "onnxruntime"])
_BATCH_SIZES = common_flags.batch_sizes([1, 32], "Profiled batch sizes.")

for _flag in ("pretrain_epochs", "admm_stages", "admm_updates", "recalibration_images"):
    flags.register_validator(_flag, lambda v: v >= 1, f"--{_flag} must be >= 1")
for _flag in ("prune_epochs", "retrain_epochs", "validation_size", "remove_blocks"):
    flags.register_validator(_flag, lambda v: v >= 0, f"--{_flag} must be >= 0")
for _flag in (
    "learning_rate",
    "prune_learning_rate",
    "retrain_learning_rate",
    "rho",
    "distill_temperature",
):
    flags.register_validator(_flag, lambda v: v > 0, f"--{_flag} must be > 0")
flags.register_validator(
    "sparsity",
    lambda v: v in SPARSITY_TYPES,
    f"--sparsity must be one of {', '.join(SPARSITY_TYPES)}",
)
flags.register_validator("weight_decay", lambda v: v >= 0, "--weight_decay >= 0")
flags.register_validator(
    "distill_alpha", lambda v: 0 <= v <= 1, "--distill_alpha must be in [0, 1]"
)
flags.register_validator("warmup_epochs", lambda v: v >= 0, "--warmup_epochs >= 0")
flags.register_validator("rho_multiplier", lambda v: v >= 1, "--rho_multiplier >= 1")
flags.register_multi_flags_validator(
    ["rho", "rho_max"],
    lambda v: v["rho_max"] is None or v["rho_max"] >= v["rho"],
    "--rho_max must be >= --rho (leave it unset for the larger of 1 and --rho)",
)
flags.register_multi_flags_validator(
    ["remove_blocks", "remove_branches"],
    lambda v: not (v["remove_blocks"] and v["remove_branches"]),
    "Give --remove_blocks (how many, the cheapest on the validation split) or "
    "--remove_branches (which, by name), not both.",
)
flags.register_validator(
    "remove_branches",
    lambda v: len(set(v)) == len(v),
    "--remove_branches names a branch twice; give each Add once.",
)
flags.register_validator(
    "flops_reduction", lambda v: v > 1, "--flops_reduction must be > 1 (e.g. 2)"
)
flags.register_validator(
    "target_speedup",
    lambda v: v is None or v > 1,
    "--target_speedup must be > 1 (e.g. 1.5)",
)
flags.register_validator(
    "target_latency_ms",
    lambda v: v is None or v > 0,
    "--target_latency_ms must be > 0",
)
flags.register_validator(
    "target_granularity", lambda v: v >= 1, "--target_granularity must be >= 1"
)


def _one_target(values):
    return values["target_speedup"] is None or values["target_latency_ms"] is None


flags.register_multi_flags_validator(
    ["target_speedup", "target_latency_ms"],
    _one_target,
    "Give --target_speedup or --target_latency_ms, not both.",
)
flags.register_validator(
    "stages",
    lambda v: bool(v) and all(s in STAGES for s in v),
    f"--stages must be a comma list of {', '.join(STAGES)}",
)
flags.register_multi_flags_validator(
    ["retrain_from_scratch", "stages", "retrain_epochs"],
    lambda v: (
        not v["retrain_from_scratch"]
        or ("retrain" in v["stages"] and v["retrain_epochs"] >= 1)
    ),
    "--retrain_from_scratch trains the pruned model from fresh random weights: "
    "it needs the retrain stage in --stages and --retrain_epochs >= 1.",
)


# ---------------------------------------------------------------- helpers
class Run:
    """The run's folder, data, report and the per-epoch checkpoints."""

    def __init__(self, data, output_dir, smoke):
        self.data = data
        self.dir = output_dir
        self.smoke = smoke
        self.report_path = os.path.join(output_dir, "report.json")
        self.report = {}
        if os.path.exists(self.report_path):
            with open(self.report_path) as f:
                self.report = json.load(f)
        self.report.setdefault("data", data.source)
        self.report.setdefault("commands", []).append(" ".join(["python"] + sys.argv))

    def path(self, name):
        return os.path.join(self.dir, name)

    def epochs(self, value):
        return min(value, 1) if self.smoke else value

    def save_report(self):
        tmp = self.report_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.report, f, indent=1)
        os.replace(tmp, self.report_path)
        with open(self.path("report.md"), "w") as f:
            f.write(markdown(self.report))

    def accuracy(self, model):
        """Validation, test and lossless-test accuracy of `model`."""
        d = self.data
        if not getattr(model, "compiled", False):
            compile_model(model, "sgd")  # evaluate() needs the loss and metric
        result = {}
        for name, x, y in (
            ("validation", d.x_val, d.y_val),
            ("test", d.x_test, d.y_test),
            ("test_lossless_1000", d.x_lossless_test, d.y_lossless_test),
        ):
            if x is not None and len(x):
                scores = model.evaluate(
                    x.astype("float32"), y, batch_size=500, verbose=0, return_dict=True
                )
                result[name] = float(scores["accuracy"])
        return result

    def fit(
        self,
        model,
        tag,
        epochs,
        compile_fn,
        callbacks=(),
        on_resume=None,
        settings=None,
    ):
        """model.fit for `epochs`, checkpointed every epoch under `tag`.

        compile_fn() compiles the model (after resumed weights are in place,
        so masks can be read from them); with --resume the optimizer state is
        loaded too. on_resume(done) runs before training resumes. `settings`
        ({name: value}, JSON) are kept in the checkpoint: a checkpoint written
        with other settings is refused on resume.
        """
        import keras
        from cifar10_data import augmented_dataset

        from keras_admm.training.checkpoint import (
            read_checkpoint_state,
            write_checkpoint,
        )

        d = self.data
        checkpoint = self.path(f"{tag}_checkpoint.keras")
        done, history = 0, []
        state = read_checkpoint_state(checkpoint) if _RESUME.value else None
        if state is not None:
            if state["epochs"] != epochs:
                raise ValueError(
                    f"{checkpoint} is of a {state['epochs']}-epoch {tag} stage; "
                    f"resume it with the same flags (got {epochs} epochs)."
                )
            if state.get("settings", {}) != (settings or {}):
                raise ValueError(
                    f"{checkpoint} was written with settings "
                    f"{state.get('settings', {})}, this run has {settings or {}}: "
                    "resume it with the same flags, or use another --output_dir."
                )
            done, history = state["epochs_done"], state["history"]
            saved = keras.saving.load_model(checkpoint, compile=False)
            model.set_weights(saved.get_weights())
            print(f"{tag}: resuming after epoch {done} of {epochs}", flush=True)
        compile_fn()
        if done:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(checkpoint)
            if on_resume is not None:
                on_resume(done)

        class Save(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                history.append({"epoch": epoch + 1, **_floats(logs)})
                state = {"epochs": epochs, "epochs_done": epoch + 1, "history": history}
                if settings:
                    state["settings"] = settings
                write_checkpoint(self.model, checkpoint, state)

        if done < epochs:
            model.fit(
                self.train_dataset(augmented_dataset),
                epochs=epochs,
                initial_epoch=done,
                validation_data=(d.x_val.astype("float32"), d.y_val),
                validation_batch_size=500,
                callbacks=[*callbacks, Save()],
                verbose=2,
            )
        return history

    def train_dataset(self, augmented_dataset):
        d = self.data
        return augmented_dataset(d.x_train, d.y_train, self.batch_size, _SEED.value)

    @property
    def batch_size(self):
        return min(_BATCH_SIZE.value, len(self.data.x_train))

    @property
    def steps_per_epoch(self):
        return len(self.data.x_train) // self.batch_size


def _rho_max():
    """--rho_max, or the larger of 1 (the library's default) and --rho."""
    return _RHO_MAX.value if _RHO_MAX.value is not None else max(1.0, _RHO.value)


def _floats(logs):
    return {k: float(v) for k, v in (logs or {}).items()}


def sgd(learning_rate, weight_decay):
    import keras

    optimizer = keras.optimizers.SGD(
        learning_rate, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    # Decay kernels only: BatchNorm scales/offsets and biases are left alone.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def compile_model(model, optimizer):
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def build_model(name):
    from cifar10_data import MEAN, STD

    from keras_admm import models

    if name == "vgg16":
        return models.vgg_cifar(mean=MEAN, std=STD)
    return models.resnet_cifar(int(name[len("resnet") :]), mean=MEAN, std=STD)


# ---------------------------------------------------------------- pretrain
def stage_pretrain(run):
    import keras

    epochs = run.epochs(_PRETRAIN_EPOCHS.value)
    model = build_model(_MODEL.value)
    steps = run.steps_per_epoch
    warmup = int(round(_WARMUP_EPOCHS.value * steps))
    peak = _LEARNING_RATE.value
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10 if warmup else peak,
        decay_steps=max(1, steps * epochs - warmup),
        alpha=0.0,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )
    keras.utils.set_random_seed(_SEED.value)
    history = run.fit(
        model,
        "pretrain",
        epochs,
        lambda: compile_model(model, sgd(schedule, _WEIGHT_DECAY.value)),
    )
    path = run.path(f"{_MODEL.value}_dense.keras")
    model.save(path)
    run.report["dense"] = {
        "model": path,
        "params": int(model.count_params()),
        "flops": _flops(model),
        "accuracy": run.accuracy(model),
        "epochs": epochs,
        "seed": _SEED.value,
        "history": history,
    }
    run.save_report()
    return model


def load_dense(path):
    """The dense model at `path`, its input normalisation as a Rescaling layer.

    Models saved before models.py switched to Rescaling hold a Normalization
    layer, whose constants tf2onnx turns into extra inputs; the same weights
    go into a freshly built model of the same architecture.
    """
    import keras

    model = keras.saving.load_model(path)
    normalize = next((x for x in model.layers if x.name == "normalize"), None)
    if not isinstance(normalize, keras.layers.Normalization):
        return model
    fresh = build_model(_MODEL.value)
    for layer in model.layers:
        if layer.weights and layer.name != "normalize":
            fresh.get_layer(layer.name).set_weights(layer.get_weights())
    return fresh


def _flops(model):
    import keras_admm

    return int(keras_admm.count_flops(model))


# ------------------------------------------------------------------- plans
def plan_for_macs(model, kind, level, dense_flops=None):
    """A plan whose compact model has `dense_flops` / `level` MACs or fewer.

    `dense_flops` defaults to the MACs of `model` (it is the unpruned model's
    when --remove_blocks / --remove_branches has already taken branches out).

    Filter / channel: one ratio for every conv layer, cut group-aware (a
    residual stream loses the same channels in every block), the smallest
    ratio whose compact model meets the target, found by bisection on real
    compactions. Shape types: `plan_for_flops_reduction` (non-zero weights).
    """
    import keras

    import keras_admm
    from keras_admm import registry

    if kind in ("shape", "filter_shape"):
        # what is left to cut in `model`, which may have lost branches already
        level_here = level * _flops(model) / dense_flops if dense_flops else level
        if level_here <= 1:
            raise ValueError(
                f"--flops_reduction {level}: the removed residual branches cut "
                f"the MACs by {level / level_here:.2f}x already, leaving nothing "
                f"for a {kind} plan. Take fewer out ({depth_flag()}) or raise the "
                "target."
            )
        return keras_admm.plan_for_flops_reduction(model, kind, level_here).plan
    convs = [
        layer.name
        for layer in keras_admm.plan.prunable_layers(model)
        if registry.kernel_spec(layer).op == "conv"
    ]
    dense_flops = dense_flops or _flops(model)

    def plan_at(ratio):
        return keras_admm.PruningPlan({n: f"{kind}:{ratio!r}" for n in convs})

    def compact_flops(ratio):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        keras_admm.hard_prune(clone, plan_at(ratio), graph=True)
        return _flops(keras_admm.compact(clone))

    low, high = 0.0, 0.95
    if compact_flops(high) * level > dense_flops:
        raise ValueError(
            f"A uniform {kind} plan cannot cut the MACs of {model.name} by {level}x."
        )
    for _ in range(12):
        mid = (low + high) / 2
        low, high = (
            (low, mid) if compact_flops(mid) * level <= dense_flops else (mid, high)
        )
    return plan_at(high).resolve(model)  # the ratio checked (rounding may cut less)


def targeted():
    return _TARGET_SPEEDUP.value is not None or _TARGET_LATENCY_MS.value is not None


def plan_for_speed(run, model):
    """The plan of --target_speedup / --target_latency_ms (filter groups).

    Sensitivity is measured on 1,024 validation images (never the test set);
    the latency tables are cached in ~/.cache/keras_admm/latency.
    """
    import keras_admm

    if _SPARSITY.value != "filter":
        raise ValueError(
            f"--target_speedup / --target_latency_ms plan filter groups; got "
            f"--sparsity={_SPARSITY.value}. Use --sparsity=filter."
        )
    d = run.data
    start = time.time()
    plan = keras_admm.PruningPlan.for_target(
        model,
        speedup=_TARGET_SPEEDUP.value,
        latency_ms=_TARGET_LATENCY_MS.value,
        engine=_TARGET_ENGINE.value,
        batch_size=_TARGET_BATCH_SIZE.value,
        data=(d.x_val[:1024].astype("float32"), d.y_val[:1024]),
        granularity=2 if run.smoke else _TARGET_GRANULARITY.value,
    )
    print(plan.summary(), flush=True)
    run.report["target"] = {**plan.prediction, "seconds": round(time.time() - start, 1)}
    run.save_report()
    return plan


def depth_flag():
    """The depth-pruning flag as given ('--remove_blocks 4',
    '--remove_branches s1b0_add,s1b1_add'), or '' without one."""
    if _REMOVE_BRANCHES.value:
        return "--remove_branches " + ",".join(_REMOVE_BRANCHES.value)
    return f"--remove_blocks {_REMOVE_BLOCKS.value}" if _REMOVE_BLOCKS.value else ""


def read_plan(path):
    """The unresolved plan of --plan: a PruningPlan, or a TargetPlan (which has
    a speed prediction). Read before any work, so a bad file fails first."""
    import keras_admm

    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "prediction" not in data:
        return keras_admm.PruningPlan.from_dict(data)  # explains a bad file
    if depth_flag():
        flag = depth_flag().split()[0]
        raise ValueError(
            f"--plan {path} is a speed-target plan, predicted for the model with "
            f"all its residual branches; {flag} would prune a different "
            f"model. Drop {flag}, or give a plan without a prediction."
        )
    return keras_admm.TargetPlan.from_dict(data)


def resolve_plan(run, model, plan):
    """`plan` resolved against `model`; a TargetPlan's prediction goes into the
    report (the profile stage measures it)."""
    import keras_admm

    if depth_flag():
        try:
            return plan.resolve(model)
        except ValueError as error:
            raise ValueError(
                f"--plan {_PLAN.value}: {error} It is resolved against the model "
                f"after {depth_flag()} took out the "
                f"branches of {run.report['blocks']['removed']}; name only layers "
                "that are left."
            ) from error
    if isinstance(plan, keras_admm.TargetPlan):
        run.report["target"] = dict(plan.prediction)
    return plan.resolve(model)


# ------------------------------------------------------------------- prune
def remove_blocks(run, model, dense_flops):
    """The model without the residual branches of --remove_blocks (the
    cheapest) or --remove_branches (named).

    Ranked by the validation loss with each branch alone zeroed (1,024
    validation images; the test images are never used). The chosen branches
    are zeroed and then rebuilt away (`remove_zero_branches`, exact), so every
    method prunes and trains the smaller model and nothing has to hold them at
    zero. Writes blocks.json.
    """
    import keras_admm
    from keras_admm.compaction.zero_branches import remove_zero_branches

    flag = depth_flag().split()[0]
    if targeted():
        raise ValueError(
            f"{flag} works with --flops_reduction (which counts the "
            "branches' MACs) or --plan (resolved against the smaller model); "
            "drop --target_speedup / --target_latency_ms, or the flag."
        )
    branches = {b.add: b for b in keras_admm.residual_branches(model)}
    named = _REMOVE_BRANCHES.value
    unknown = [name for name in named if name not in branches]
    if unknown:  # before the ranking: a typo fails at once
        raise ValueError(
            f"--remove_branches: {unknown} are not Adds with a removable residual "
            f"branch in {model.name}. Removable: "
            f"{', '.join(sorted(branches)) or 'none'}."
        )
    count = _REMOVE_BLOCKS.value
    if count > len(branches):
        raise ValueError(
            f"--remove_blocks {count}: {model.name} has {len(branches)} removable "
            "residual branches."
        )
    d = run.data
    has_validation = d.x_val is not None and len(d.x_val) > 0
    if not named and not has_validation:
        raise ValueError(
            "--remove_blocks ranks the branches on the validation split, and "
            "--validation_size is 0: give it some images (the default is 5000), "
            "or name the branches with --remove_branches."
        )
    ranked = (  # by name: the ranking is only reported
        keras_admm.branch_sensitivity(
            model, (d.x_val.astype("float32"), d.y_val), max_samples=1024
        )
        if has_validation
        else []
    )
    chosen = list(named) if named else [branch.add for branch, _ in ranked[:count]]
    path = run.path("blocks.json")
    if _RESUME.value and os.path.exists(path):
        with open(path) as f:
            earlier = json.load(f)["removed"]
        if sorted(earlier) != sorted(chosen):
            raise ValueError(
                f"--resume: {path} took out the branches of {earlier}, this run "
                f"takes out {chosen}; resume with the same {flag}, or use another "
                "--output_dir."
            )
    keras_admm.zero_branches(model, chosen)
    smaller, removed_layers = remove_zero_branches(model)
    for add in chosen:
        left = sorted(set(branches[add].layers) - set(removed_layers))
        if left:
            fix = (
                f"Leave {add} out of --remove_branches."
                if named
                else "Lower --remove_blocks, or name the branches with "
                f"--remove_branches, without {add}."
            )
            raise ValueError(
                f"{flag}: the branch of {add} was zeroed but "
                f"remove_zero_branches kept its layers {left}, so training would "
                f"bring it back. {fix}"
            )
    blocks = {
        "removed": chosen,
        "chosen_by": "name (--remove_branches)" if named else "validation loss",
        "removed_layers": removed_layers,
        "sensitivity": [
            {"add": b.add, "macs": b.macs, "validation_loss_increase": float(c)}
            for b, c in ranked
        ],
    }
    with open(path, "w") as f:
        json.dump(blocks, f, indent=1)
    run.report["blocks"] = blocks
    print(
        f"Depth pruning: removed the residual branches of {chosen} "
        f"({dense_flops / _flops(smaller):.2f}x fewer MACs)",
        flush=True,
    )
    return smaller


def removed_block_masks(run, model):
    """Masks for the branches in blocks.json that are still in `model` ({}).

    Runs since session 25 take them out of the model, so there are none; a
    pruned.keras of an older run still holds them, zeroed, and they must stay
    zero when it is retrained.
    """
    import keras_admm

    path = run.path("blocks.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        removed = json.load(f)["removed"]
    names = {layer.name for layer in model.layers}
    still_there = [add for add in removed if add in names]
    return keras_admm.zero_branches(model, still_there) if still_there else {}


def stage_prune(run, model):
    import keras

    import keras_admm
    from keras_admm.pruning import gradual, one_shot

    level = _FLOPS_REDUCTION.value
    dense_flops = _flops(model)
    unresolved = read_plan(_PLAN.value) if _PLAN.value else None
    if depth_flag():
        model = remove_blocks(run, model, dense_flops)
    if unresolved is not None:
        plan = resolve_plan(run, model, unresolved)
        level = None
    elif targeted():
        plan = plan_for_speed(run, model)
        level = None
    else:
        plan = plan_for_macs(model, _SPARSITY.value, level, dense_flops)
    plan.to_json(run.path("plan.json"))
    epochs = run.epochs(_PRUNE_EPOCHS.value)
    lr = _PRUNE_LEARNING_RATE.value
    wd = _WEIGHT_DECAY.value
    graph = keras_admm.DependencyGraph.from_model(model)
    method = _METHOD.value
    keras.utils.set_random_seed(_SEED.value)
    start = time.time()
    history = []
    if method == "admm":
        from cifar10_data import augmented_dataset

        checkpoint = run.path("prune_checkpoint.keras")
        if not _RESUME.value:  # start afresh: progressive_admm resumes any it finds
            for stale in (checkpoint, checkpoint + ".json"):
                if os.path.exists(stale):
                    os.remove(stale)
        stages = max(1, min(_ADMM_STAGES.value, epochs))
        stage_epochs = [epochs // stages + (i < epochs % stages) for i in range(stages)]
        d = run.data
        result = keras_admm.progressive_admm(
            model,
            plan,
            run.train_dataset(augmented_dataset),
            optimizer=lambda: sgd(lr, wd),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            stage_epochs=stage_epochs,
            masked_epochs=0,
            rho=_RHO.value,
            rho_multiplier=_RHO_MULTIPLIER.value,
            rho_max=_rho_max(),
            updates_per_stage=_ADMM_UPDATES.value,
            graph=graph,
            checkpoint=checkpoint,
            validation_data=(d.x_val.astype("float32"), d.y_val),
            callbacks=[keras_admm.ADMMLogger(per_layer=False, update_freq="epoch")],
            verbose=2,
        )
        history = [_floats_lists(h) for h in result.histories]
        details = {
            "stage_epochs": stage_epochs,
            "admm_steps": result.admm_steps,
            "residuals_at_stage_end": result.residuals,
            "rho": _RHO.value,
            "rho_multiplier": _RHO_MULTIPLIER.value,
            "rho_max": _rho_max(),
        }
    elif method == "gradual":
        callback = gradual.GradualPruning(
            plan,
            end_step=max(1, epochs * run.steps_per_epoch),
            frequency=max(1, run.steps_per_epoch // 4),
            graph=graph,
        )

        def resume_gradual(done):
            callback.step = done * run.steps_per_epoch

        def compile_gradual():
            compile_model(model, sgd(lr, wd))

        history = run.fit(
            model,
            "prune",
            epochs,
            compile_gradual,
            callbacks=[callback],
            on_resume=resume_gradual,
        )
        details = {"mask_updates": len(callback.history)}
        keras_admm.hard_prune(model, plan, graph=graph)
    else:
        norm = method[-2:]

        def compile_one_shot():
            masks = one_shot.one_shot_prune(model, plan, norm=norm, graph=graph)
            compile_model(model, keras_admm.MaskedWrapper(sgd(lr, wd), masks))

        history = run.fit(model, "prune", epochs, compile_one_shot)
        details = {"norm": norm}
    # Every method ends exactly on the plan's kept groups.
    keras_admm.hard_prune(model, plan, graph=graph)
    after_hard_prune = run.accuracy(model)
    recalibrated = recalibrated_accuracy(run, model, keep=_RECALIBRATE_BN.value)
    # With --recalibrate_bn the saved model holds the recomputed statistics, so a
    # later --stages retrain (or --resume) starts from them too.
    model.save(run.path("pruned.keras"))
    run.report["prune"] = {
        "method": method,
        "sparsity": _SPARSITY.value,
        "flops_reduction_target": level,
        "plan": {t.layer_name: str(t.sparsity) for t in plan.targets},
        "epochs": epochs,
        "learning_rate": lr,
        "accuracy_after_hard_prune": after_hard_prune,
        # Stale BatchNorm statistics are most of the drop at the hard prune:
        # the same model with them recomputed (kept only with --recalibrate_bn).
        "validation_after_hard_prune_recalibrated": recalibrated,
        "recalibrate_bn": _RECALIBRATE_BN.value,
        "seconds": round(time.time() - start, 1),
        "history": history,
        **details,
    }
    run.save_report()
    return model, plan


def recalibrated_accuracy(run, model, keep):
    """Validation accuracy (None without a validation split) with every
    BatchNorm's statistics recomputed from a fixed random subset of the training
    images; keep=False puts the old statistics back afterwards."""
    import keras
    import numpy as np

    import keras_admm

    d = run.data
    variables = model.non_trainable_variables  # the moving statistics among them
    saved = [keras.ops.convert_to_numpy(v) for v in variables]
    try:
        rng = np.random.default_rng(_SEED.value)
        count = min(_RECALIBRATION_IMAGES.value, len(d.x_train))
        rows = np.sort(rng.choice(len(d.x_train), count, replace=False))
        keras_admm.recalibrate_batchnorm(model, d.x_train[rows].astype("float32"))
        if d.x_val is None or not len(d.x_val):
            return None
        scores = model.evaluate(
            d.x_val.astype("float32"),
            d.y_val,
            batch_size=500,
            verbose=0,
            return_dict=True,
        )
        return float(scores["accuracy"])
    finally:
        if not keep:
            for variable, value in zip(variables, saved):
                variable.assign(value)


def _floats_lists(history):
    return {k: [float(v) for v in vs] for k, vs in history.items()}


# ----------------------------------------------------------------- retrain
def stage_retrain(run, model, plan, dense_path):
    import keras

    import keras_admm

    epochs = run.epochs(_RETRAIN_EPOCHS.value)
    schedule = keras.optimizers.schedules.CosineDecay(
        _RETRAIN_LEARNING_RATE.value, max(1, epochs * run.steps_per_epoch)
    )
    graph = keras_admm.DependencyGraph.from_model(model)

    trained = model  # what model.fit trains: the model, or it beside its teacher
    if _DISTILL.value:
        from distillation import DistillationLoss, student_accuracy, with_teacher

        if not os.path.exists(dense_path):
            raise FileNotFoundError(
                f"--distill learns from the dense model, and {dense_path} does not "
                "exist: pass --dense_model, or run the pretrain stage in --output_dir."
            )
        trained = with_teacher(model, load_dense(dense_path))
        classes = model.output_shape[-1]
        loss = DistillationLoss(
            classes, _DISTILL_TEMPERATURE.value, _DISTILL_ALPHA.value
        )

    def current_masks():
        # The pruned weights are exact zeros: their masks are the plan's.
        masks = keras_admm.pruning.projection_masks(model, plan, graph=graph)
        masks.update(removed_block_masks(run, model))
        return masks

    def compile_masked():
        masks = current_masks()
        optimizer = keras_admm.MaskedWrapper(sgd(schedule, _WEIGHT_DECAY.value), masks)
        if trained is model:
            compile_model(model, optimizer)
        else:
            trained.compile(optimizer, loss=loss, metrics=[student_accuracy(classes)])

    if _RETRAIN_FROM_SCRATCH.value:  # a resumed run's checkpoint replaces them
        from from_scratch import reinitialize

        reinitialize(model, current_masks(), seed=_SEED.value + 2)
    keras.utils.set_random_seed(_SEED.value + 1)
    start = time.time()
    settings = {"from_scratch": True} if _RETRAIN_FROM_SCRATCH.value else None
    history = (
        run.fit(trained, "retrain", epochs, compile_masked, settings=settings)
        if epochs
        else []
    )
    if not epochs:
        compile_masked()
    if trained is not model:
        compile_model(model, "sgd")  # the student alone, for evaluation
    model.save(run.path("retrained.keras"))
    run.report["retrain"] = {
        "epochs": epochs,
        "learning_rate": _RETRAIN_LEARNING_RATE.value,
        "from_scratch": _RETRAIN_FROM_SCRATCH.value,
        "distillation": (
            {
                "teacher": dense_path,
                "temperature": _DISTILL_TEMPERATURE.value,
                "alpha": _DISTILL_ALPHA.value,
            }
            if _DISTILL.value
            else None
        ),
        "accuracy": run.accuracy(model),
        "seconds": round(time.time() - start, 1),
        "history": history,
    }
    run.save_report()
    return model


# ---------------------------------------------------------- compact, export
def run_name():
    if _PLAN.value:
        level = os.path.splitext(os.path.basename(_PLAN.value))[0]  # speed1.5x
    elif _TARGET_SPEEDUP.value is not None:
        level = f"speed{_TARGET_SPEEDUP.value:g}x"
    elif _TARGET_LATENCY_MS.value is not None:
        level = f"{_TARGET_LATENCY_MS.value:g}ms"
    else:
        level = f"{_FLOPS_REDUCTION.value:g}x"
    if _REMOVE_BRANCHES.value:  # _minus_s1b0-s1b1
        names = sorted(name.removesuffix("_add") for name in _REMOVE_BRANCHES.value)
        blocks = "_minus_" + "-".join(names)
    else:
        blocks = f"_minus{_REMOVE_BLOCKS.value}blocks" if _REMOVE_BLOCKS.value else ""
    return f"{_MODEL.value}_{_METHOD.value}_{level}{blocks}"


def stage_compact(run, model):
    import numpy as np

    import keras_admm

    small, summary = keras_admm.compact(model, align=_ALIGN.value, return_summary=True)
    compile_model(small, "sgd")  # for evaluate(); the saved model is compiled too
    x = run.data.x_test[:200].astype("float32")
    diff = float(np.max(np.abs(np.asarray(small(x)) - np.asarray(model(x)))))
    path = run.path(f"{run_name()}.keras")
    small.save(path)
    summary.to_json(run.path("compaction.json"))
    dense_flops = run.report.get("dense", {}).get("flops") or _flops(model)
    run.report["compact"] = {
        "model": path,
        "align": _ALIGN.value,
        "params": int(small.count_params()),
        "flops": _flops(small),
        "mac_reduction": dense_flops / _flops(small),
        "max_abs_output_diff_vs_pruned": diff,
        "accuracy": run.accuracy(small),
        "file_bytes": os.path.getsize(path),
        "widths": {
            layer.name: int(layer.filters)
            for layer in small.layers
            if hasattr(layer, "filters")
        },
    }
    run.save_report()
    return small


def stage_export(run, small):
    """.keras, SavedModel, ONNX, LiteRT float32 and full-int8, each verified.

    The int8 file is calibrated on 300 training images and checked by top-1
    agreement on them; its accuracy on the test images is measured here too.
    """
    import keras_admm

    calibration = run.data.x_train[:300].astype("float32")
    result = keras_admm.export(
        small,
        run.path("export"),
        formats=("keras", "saved_model", "onnx", "tflite", "tflite_int8"),
        sample=calibration,
        min_agreement=0.8,
    )
    run.report["export"] = result.to_dict()
    run.report["export"]["int8_accuracy"] = _tflite_int8_accuracy(
        result["tflite_int8"].path, run
    )
    print(result, flush=True)
    run.save_report()


def _tflite_int8_accuracy(path, run):
    """Test accuracy of the full-integer LiteRT file."""
    import numpy as np

    from keras_admm.exporting import predict_tflite_int8

    result = {}
    d = run.data
    for split, x, y in (
        ("test", d.x_test, d.y_test),
        ("test_lossless_1000", d.x_lossless_test, d.y_lossless_test),
    ):
        if x is None:
            continue
        out = predict_tflite_int8(path, x.astype("float32"))  # one interpreter
        result[split] = float(np.mean(np.argmax(out, -1) == y))
    return result


def stage_profile(run, dense_path, small_path):
    from keras_admm import profiling

    protocol = None
    if run.smoke:
        protocol = profiling.TimingProtocol(warmup=1, min_repeats=3, min_time_s=0.05)
    report = profiling.profile_models(
        dense_path,
        [small_path],
        engines=_ENGINES.value,
        batch_sizes=list(_BATCH_SIZES.value),
        names=["dense", run_name()],
        protocol=protocol,
        workdir=run.path("profile_onnx"),
    )
    profiling.write_reports(report, run.dir, stem="profile")
    run.report["profile"] = [
        {
            "engine": r["engine"],
            "batch_size": r["batch_size"],
            "median_ms": r["median_ms"],
            "speedup": r.get("speedup"),
        }
        for r in report["results"]
        if r["model"] == run_name()
    ]
    target = run.report.get("target")
    if target:  # the plan's prediction against this measurement
        for r in run.report["profile"]:
            if (r["engine"], r["batch_size"]) == (
                target["engine"],
                target["batch_size"],
            ):
                target["measured_ms"] = r["median_ms"]
                target["measured_speedup"] = r["speedup"]
                target["relative_error"] = (
                    target["predicted_ms"] - r["median_ms"]
                ) / r["median_ms"]
    run.save_report()


def markdown(report):
    lines = [
        f"# CIFAR-10 run: {report.get('name', '')}",
        "",
        f"Data: {report['data']}",
        "",
    ]
    rows = []
    if "dense" in report:
        rows.append(("dense", report["dense"]["accuracy"], report["dense"]["flops"]))
    if "prune" in report:
        rows.append(
            ("after hard prune", report["prune"]["accuracy_after_hard_prune"], None)
        )
        recalibrated = report["prune"].get("validation_after_hard_prune_recalibrated")
        if recalibrated is not None:
            rows.append(
                ("same, BatchNorm recalibrated", {"validation": recalibrated}, None)
            )
    if "retrain" in report:
        retrain = report["retrain"]
        name = "after masked retraining"
        if retrain.get("from_scratch"):
            name += " from fresh random weights (control)"
        rows.append((name, retrain["accuracy"], None))
    if "compact" in report:
        rows.append(
            ("compact", report["compact"]["accuracy"], report["compact"]["flops"])
        )
    lines += [
        "| model | validation | test | test (lossless 1,000) | FLOPs |",
        "|---|---|---|---|---|",
    ]
    for name, acc, flops in rows:
        cells = [
            f"{100 * acc[k]:.2f}%" if k in acc else "-"
            for k in ("validation", "test", "test_lossless_1000")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {flops or '-'} |")
    if report.get("blocks"):
        removed = ", ".join(report["blocks"]["removed"])
        chosen_by = report["blocks"].get("chosen_by", "validation loss")
        lines += ["", f"Residual branches removed: {removed} (chosen by {chosen_by})"]
    if "compact" in report:
        lines += ["", f"MAC reduction: {report['compact']['mac_reduction']:.2f}x"]
    target = report.get("target")
    if target:
        lines += [
            "",
            f"Speed target: {target['target_ms']:.3f} ms on {target['engine']} at "
            f"batch {target['batch_size']}; predicted {target['predicted_ms']:.3f} "
            f"ms ({target['predicted_speedup']:.2f}x)"
            + (
                f"; measured {target['measured_ms']:.3f} ms (error "
                f"{100 * target['relative_error']:+.1f}%)"
                if "measured_ms" in target
                else ""
            ),
        ]
    if "profile" in report:
        lines += ["", "| engine | batch | compact ms | speedup |", "|---|---|---|---|"]
        for r in report["profile"]:
            lines.append(
                f"| {r['engine']} | {r['batch_size']} | {r['median_ms']:.3f} | "
                f"{r['speedup']:.2f}x |"
            )
    lines += ["", "Commands:", ""] + [f"    {c}" for c in report["commands"]] + [""]
    return "\n".join(lines)


# -------------------------------------------------------------------- main
def main(argv):
    del argv
    import keras
    from cifar10_data import load_cifar10

    import keras_admm  # noqa: F401  (registers its classes before any load_model)

    stages = [s for s in STAGES if s in _STAGES.value]
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    smoke = _SMOKE.value
    data_dir = _DATA_DIR.value
    if data_dir == _SHARED_CIFAR10 and not os.path.isdir(data_dir):
        print(
            f"{data_dir} is missing: downloading with keras.datasets.cifar10 "
            "(pass --data_dir to use a local copy)",
            flush=True,
        )
        data_dir = ""
    data = load_cifar10(
        data_dir,
        validation_size=_VALIDATION_SIZE.value,
        train_size=512 if smoke else 0,
        test_size=256 if smoke else 0,
    )
    print(
        f"Data: {data.source}; train {len(data.x_train)}, validation "
        f"{len(data.x_val)}, test {len(data.x_test)}",
        flush=True,
    )
    run = Run(data, _OUTPUT_DIR.value, smoke)
    # a pretrain-only run makes the dense model, not a pruned one
    pruning = bool(set(stages) - {"pretrain"})
    run.report["name"] = run_name() if pruning else f"{_MODEL.value}_dense"
    dense_path = _DENSE_MODEL.value or run.path(f"{_MODEL.value}_dense.keras")
    model = plan = small = None
    if "pretrain" in stages:
        model = stage_pretrain(run)
    if "prune" in stages:
        if model is None:
            model = load_dense(dense_path)
            run.report["dense"] = {
                "model": dense_path,
                "params": int(model.count_params()),
                "flops": _flops(model),
                "accuracy": run.accuracy(model),
            }
        model, plan = stage_prune(run, model)
    if "retrain" in stages:
        import keras_admm

        if model is None:
            model = keras.saving.load_model(run.path("pruned.keras"))
        if plan is None:
            plan = keras_admm.PruningPlan.from_json(run.path("plan.json"))
        model = stage_retrain(run, model, plan, dense_path)
    if "compact" in stages:
        if model is None:
            model = keras.saving.load_model(run.path("retrained.keras"))
        small = stage_compact(run, model)
    small_path = run.path(f"{run_name()}.keras")
    if "export" in stages:
        stage_export(run, small or keras.saving.load_model(small_path))
    if "profile" in stages:
        # The baseline as the pipeline used it (Rescaling input, see load_dense).
        baseline = run.path("dense.keras")
        if not os.path.exists(baseline):
            load_dense(dense_path).save(baseline)
        stage_profile(run, baseline, small_path)
    print(markdown(run.report), flush=True)


if __name__ == "__main__":
    app.run(main)
