r"""CIFAR-10 ResNets: dense pretraining (resumable), the first stage of the pipeline.

Trains ResNet-20 (or 32/56) on CIFAR-10 with SGD + Nesterov momentum, a
linear warm-up and cosine decay of the learning rate, decoupled weight decay
on kernels, and pad-4 random crops + horizontal flips. The model normalises
inside, so the saved model takes raw 0-255 RGB images. The last 5,000
training images are held out as a validation split (reported every epoch);
the test set is evaluated once, at the end.

Each epoch writes `checkpoint.keras` (model + optimizer state, so the
learning-rate schedule continues) and `state.json`; `--resume` continues from
them. At the end: `<model>_dense.keras`, `report.json`, `report.md`.

    python examples/cifar10.py --data_dir ../shared/data/cifar10 \
        --output_dir runs/cifar10/resnet20_dense --epochs 30 --seed 0
    python examples/cifar10.py ... --resume          # after an interruption
    python examples/cifar10.py ... --smoke           # 512 images, 1 epoch
"""

import json
import os
import sys
import time

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    os.path.join(os.path.dirname(_REPO), "shared", "data", "cifar10"),
    "CIFAR-10 folder: npz shards or cifar-10-batches-py; '' downloads with keras.",
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", os.path.join(_REPO, "runs", "cifar10"), "Where to write."
)
_DEPTH = flags.DEFINE_integer("depth", 20, "ResNet depth, 6n + 2 (20, 32, 56).")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Dense training epochs.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.1, "Peak SGD learning rate.")
_WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up epochs.")
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay",
    5e-3,
    "Decoupled weight decay of kernels per unit learning rate (5e-3 with "
    "momentum 0.9 matches a coupled L2 of 5e-4).",
)
_VALIDATION_SIZE = flags.DEFINE_integer(
    "validation_size", 5000, "Last training images held out for validation."
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from output_dir's checkpoint.")
_SMOKE = flags.DEFINE_bool(
    "smoke",
    False,
    "512 training images, 256 test images, at most 2 epochs: a quick check.",
)

for _flag in ("epochs", "batch_size"):
    flags.register_validator(_flag, lambda v: v > 0, f"--{_flag} must be > 0")
flags.register_validator(
    "learning_rate", lambda v: v > 0, "--learning_rate must be > 0"
)
flags.register_validator(
    "weight_decay", lambda v: v >= 0, "--weight_decay must be >= 0"
)
flags.register_validator(
    "warmup_epochs", lambda v: v >= 0, "--warmup_epochs must be >= 0"
)
flags.register_validator(
    "depth",
    lambda v: v >= 8 and (v - 2) % 6 == 0,
    "--depth must be 6n + 2 (20, 32, 44, 56)",
)


def build_optimizer(steps_per_epoch, epochs):
    import keras

    total = steps_per_epoch * epochs
    warmup = int(round(_WARMUP_EPOCHS.value * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=_LEARNING_RATE.value / 10
        if warmup
        else _LEARNING_RATE.value,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=_LEARNING_RATE.value if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.SGD(
        schedule, momentum=0.9, nesterov=True, weight_decay=_WEIGHT_DECAY.value
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


class EpochCheckpoint:
    """Keras callback factory: save model + optimizer + state.json each epoch."""

    @staticmethod
    def make(output_dir, history, epochs):
        import keras

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                history.append(
                    {
                        "epoch": epoch + 1,
                        **{k: float(v) for k, v in (logs or {}).items()},
                    }
                )
                # Write to temporary names, then rename: an interrupted save
                # never leaves a half-written checkpoint behind.
                tmp_model = os.path.join(output_dir, "checkpoint.tmp.keras")
                self.model.save(tmp_model)
                os.replace(tmp_model, os.path.join(output_dir, "checkpoint.keras"))
                tmp_state = os.path.join(output_dir, "state.tmp.json")
                with open(tmp_state, "w") as f:
                    json.dump(
                        {
                            "epochs_done": epoch + 1,
                            "epochs": epochs,
                            "history": history,
                        },
                        f,
                        indent=1,
                    )
                os.replace(tmp_state, os.path.join(output_dir, "state.json"))

        return _Callback()


def main(argv):
    del argv
    import keras
    import numpy as np
    from cifar10_data import MEAN, STD, augmented_dataset, load_cifar10

    from keras_admm import models

    start = time.time()
    output_dir = _OUTPUT_DIR.value
    os.makedirs(output_dir, exist_ok=True)
    smoke = _SMOKE.value
    data = load_cifar10(
        _DATA_DIR.value,
        validation_size=_VALIDATION_SIZE.value,
        train_size=512 if smoke else 0,
        test_size=256 if smoke else 0,
    )
    print(
        f"Data: {data.source}; train {len(data.x_train)}, validation "
        f"{len(data.x_val)}, test {len(data.x_test)}",
        flush=True,
    )
    epochs = min(_EPOCHS.value, 2) if smoke else _EPOCHS.value
    batch_size = min(_BATCH_SIZE.value, len(data.x_train))
    steps_per_epoch = len(data.x_train) // batch_size
    keras.utils.set_random_seed(_SEED.value)

    state_path = os.path.join(output_dir, "state.json")
    checkpoint_path = os.path.join(output_dir, "checkpoint.keras")
    history, initial_epoch = [], 0
    if _RESUME.value and os.path.exists(checkpoint_path):
        with open(state_path) as f:
            state = json.load(f)
        history, initial_epoch = state["history"], state["epochs_done"]
        if state.get("epochs", epochs) != epochs:
            raise ValueError(
                f"{checkpoint_path} belongs to a {state['epochs']}-epoch run (its "
                f"learning-rate schedule); resume it with --epochs {state['epochs']}."
            )
    elif _RESUME.value:
        print(f"--resume: no checkpoint in {output_dir}; starting fresh", flush=True)
    model = models.resnet_cifar(_DEPTH.value, mean=MEAN, std=STD)
    compile_model(model, build_optimizer(steps_per_epoch, epochs))
    if initial_epoch:
        # Same model and optimizer as the first run (the weight-decay exclusions
        # are not part of a saved config), then its weights and optimizer state.
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint_path)
        done = int(model.optimizer.iterations.numpy())
        if done != initial_epoch * steps_per_epoch:
            raise ValueError(
                f"{checkpoint_path} holds {done} optimizer steps, expected "
                f"{initial_epoch * steps_per_epoch} ({initial_epoch} epochs); was it "
                "written with other --batch_size/--validation_size flags?"
            )
        print(f"Resumed from {checkpoint_path} after epoch {initial_epoch}", flush=True)

    train = augmented_dataset(data.x_train, data.y_train, batch_size, _SEED.value)
    validation = (data.x_val.astype("float32"), data.y_val)
    if initial_epoch < epochs:
        model.fit(
            train,
            epochs=epochs,
            initial_epoch=initial_epoch,
            validation_data=validation,
            validation_batch_size=500,
            callbacks=[EpochCheckpoint.make(output_dir, history, epochs)],
            verbose=2,
        )

    def accuracy(x, y):
        return float(
            model.evaluate(x.astype("float32"), y, batch_size=500, verbose=0)[1]
        )

    name = f"resnet{_DEPTH.value}"
    model_path = os.path.join(output_dir, f"{name}_dense.keras")
    model.save(model_path)
    report = {
        "model": name,
        "data": data.source,
        "seed": _SEED.value,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": _LEARNING_RATE.value,
        "weight_decay": _WEIGHT_DECAY.value,
        "train_images": len(data.x_train),
        "accuracy": {
            "validation": accuracy(data.x_val, data.y_val),
            "test": accuracy(data.x_test, data.y_test),
        },
        "params": int(model.count_params()),
        "history": history,
        "command": " ".join(["python"] + sys.argv),
        "wall_seconds_this_invocation": round(time.time() - start, 1),
    }
    if data.x_lossless_test is not None:
        report["accuracy"]["test_lossless_1000"] = accuracy(
            data.x_lossless_test, data.y_lossless_test
        )
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = [
        f"# CIFAR-10 {name}, dense",
        "",
        f"Data: {data.source}",
        "",
        "| split | accuracy |",
        "|---|---|",
    ]
    lines += [f"| {k} | {100 * v:.2f}% |" for k, v in report["accuracy"].items()]
    lines += ["", f"Command: `{report['command']}`", ""]
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines), flush=True)
    del np


if __name__ == "__main__":
    app.run(main)
