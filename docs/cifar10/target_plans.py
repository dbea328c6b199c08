"""Plans for a speed target on CIFAR-10 models (issue 16), predictions checked.

Run it on an idle machine (it times models). For the trained ResNet-20:
  1. times the dense model beside the uniform gradual 2x and 3x compact models
     on the engine (their measured speedups);
  2. plans for the uniform 3x model's measured speedup (same latency, for the
     accuracy comparison) and for --speedup (default 1.5);
  3. compacts each plan and times it beside the dense model: predicted against
     measured latency.
For VGG-16 (untrained, shape level: weight-norm sensitivity) it plans for
--vgg_speedups on each of --vgg_engines and checks the predictions the same
way, beside the uniform filter plan of the same MAC cut (speedup / MAC cut:
the efficiency of docs/PERFORMANCE.md).

    .venv/bin/python docs/cifar10/target_plans.py --output_dir docs/cifar10/target

The ResNet-20 plans (TargetPlan JSON) then train with
    examples/cifar10.py --plan docs/cifar10/target/speed1.5x.json ...
"""

import json
import os
import sys
import tempfile

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "examples"))

_OUTPUT_DIR = flags.DEFINE_string("output_dir", os.path.join(HERE, "target"), "")
_ENGINE = flags.DEFINE_string("engine", "onnxruntime", "Engine of the targets.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of the targets.")
_SPEEDUP = flags.DEFINE_float("speedup", 1.5, "The second ResNet-20 target.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10"), ""
)
_PARTS = flags.DEFINE_list("parts", ["resnet20", "vgg16"], "resnet20, vgg16")
_VGG_ENGINES = flags.DEFINE_list("vgg_engines", ["onnxruntime", "tf"], "VGG engines.")
_VGG_SPEEDUPS = flags.DEFINE_list("vgg_speedups", ["4"], "VGG-16 speed targets.")


def _dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def resnet20(out):
    import keras
    from cifar10_data import load_cifar10

    import keras_admm
    from keras_admm.targeting import LatencyTable, check_prediction, plan_for_target

    models = os.path.join(HERE, "models")
    dense = keras.saving.load_model(os.path.join(models, "resnet20_dense.keras"))
    data = load_cifar10(_DATA_DIR.value)
    calibration = (data.x_val[:1024].astype("float32"), data.y_val[:1024])
    table = LatencyTable(_ENGINE.value, _BATCH_SIZE.value, cache_dir="")
    names = ["dense", "resnet20_gradual_2x", "resnet20_gradual_3x"]
    paths = [os.path.join(models, "resnet20_dense.keras")] + [
        os.path.join(models, f"{n}.keras") for n in names[1:]
    ]
    medians, samples = table.time_models(paths, names)
    uniform = {
        n: {
            "ms": medians[n],
            "speedup": keras_admm.profiling.paired_speedup(
                samples["dense"], samples[n]
            ),
        }
        for n in names
    }
    print("uniform plans:", json.dumps(uniform, indent=1), flush=True)
    result = {
        "uniform": uniform,
        "engine": _ENGINE.value,
        "batch_size": _BATCH_SIZE.value,
    }
    targets = {
        "speed_of_uniform3x": uniform["resnet20_gradual_3x"]["speedup"],
        f"speed{_SPEEDUP.value:g}x": _SPEEDUP.value,
    }
    for name, speedup in targets.items():
        plan = plan_for_target(
            dense,
            speedup=speedup,
            engine=_ENGINE.value,
            batch_size=_BATCH_SIZE.value,
            data=calibration,
        )
        plan.to_json(os.path.join(out, f"{name}.json"))
        print(plan.summary(), flush=True)
        check = check_prediction(dense, plan, workdir=tempfile.mkdtemp())
        print(name, json.dumps(check, indent=1), flush=True)
        result[name] = {"target_speedup": speedup, "check": check}
    _dump(result, os.path.join(out, "resnet20_predictions.json"))


def uniform_compact(dense, macs):
    """The compact model of one filter ratio on every conv but the last,
    the smallest ratio whose compact MACs are dense / `macs` or fewer."""
    import keras

    import keras_admm

    convs = [
        layer.name
        for layer in keras_admm.plan.prunable_layers(dense)
        if isinstance(layer, keras.layers.Conv2D)
    ]
    dense_macs = keras_admm.count_flops(dense)

    def compact_at(ratio):
        clone = keras.models.clone_model(dense)
        clone.set_weights(dense.get_weights())
        plan = keras_admm.PruningPlan({n: f"filter:{ratio!r}" for n in convs})
        keras_admm.hard_prune(clone, plan, graph=True)
        return keras_admm.compact(clone)

    low, high = 0.0, 0.95
    for _ in range(12):
        mid = (low + high) / 2
        if keras_admm.count_flops(compact_at(mid)) * macs <= dense_macs:
            high = mid
        else:
            low = mid
    return compact_at(high)


def vgg16(out):
    import keras

    import keras_admm
    from keras_admm import models
    from keras_admm.targeting import LatencyTable, check_prediction, plan_for_target

    keras.utils.set_random_seed(0)
    dense = models.vgg_cifar()
    result = {"batch_size": _BATCH_SIZE.value}
    work = tempfile.mkdtemp()
    os.makedirs(os.path.join(out, "vgg16"), exist_ok=True)
    for engine in _VGG_ENGINES.value:
        for speedup in map(float, _VGG_SPEEDUPS.value):
            name = f"vgg16_{engine}_speed{speedup:g}x"
            plan = plan_for_target(
                dense, speedup=speedup, engine=engine, batch_size=_BATCH_SIZE.value
            )
            plan.to_json(os.path.join(out, "vgg16", f"{engine}_speed{speedup:g}x.json"))
            print(plan.summary(), flush=True)
            folder = os.path.join(work, name)
            check = check_prediction(dense, plan, workdir=folder)
            small = keras.saving.load_model(os.path.join(folder, "compact.keras"))
            flop_cut = keras_admm.count_flops(dense) / keras_admm.count_flops(small)
            # The uniform filter plan of the same MAC cut, timed beside the dense one.
            uniform_path = os.path.join(folder, "uniform.keras")
            uniform = uniform_compact(dense, flop_cut)
            uniform.save(uniform_path)
            uniform_cut = keras_admm.count_flops(dense) / keras_admm.count_flops(
                uniform
            )
            table = LatencyTable(engine, _BATCH_SIZE.value, cache_dir="")
            medians, samples = table.time_models(
                [os.path.join(folder, "dense.keras"), uniform_path],
                ["dense", "uniform"],
            )
            uniform_speedup = keras_admm.profiling.paired_speedup(
                samples["dense"], samples["uniform"]
            )
            result[name] = {
                "engine": engine,
                "target_speedup": speedup,
                "check": check,
                "flop_cut": flop_cut,
                "efficiency": check["measured_speedup"] / flop_cut,
                "widths": {
                    layer.name: int(layer.filters)
                    for layer in small.layers
                    if hasattr(layer, "filters")
                },
                "uniform_same_macs": {
                    "ms": medians["uniform"],
                    "flop_cut": uniform_cut,
                    "speedup": uniform_speedup,
                    "efficiency": uniform_speedup / uniform_cut,
                },
            }
            print(name, json.dumps(result[name], indent=1), flush=True)
            engines = "_".join(_VGG_ENGINES.value)
            _dump(result, os.path.join(out, f"vgg16_{engines}_predictions.json"))


def main(argv):
    del argv
    import keras_admm  # noqa: F401  (registers the classes load_model needs)

    out = _OUTPUT_DIR.value
    os.makedirs(out, exist_ok=True)
    if "resnet20" in _PARTS.value:
        resnet20(out)
    if "vgg16" in _PARTS.value:
        vgg16(out)


if __name__ == "__main__":
    app.run(main)
