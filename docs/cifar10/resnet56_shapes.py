"""Shape-level timing of depth pruning on ResNet-56: which branches to take out.

Random weights (no accuracy claimed): dense ResNet-56 and forms of it with whole
residual branches taken out (`keras_admm.zero_branches`, then
`remove_zero_branches`, exact), BatchNorm folded, written to OUT (default
/tmp/resnet56_shapes) with their MAC cuts; then timed side by side on an idle
machine with docs/cifar10/fold_time.sh-like settings:

    .venv/bin/python docs/cifar10/resnet56_shapes.py /tmp/resnet56_shapes
    M=/tmp/resnet56_shapes; .venv/bin/python tools/profile_models.py \\
        --baseline $M/dense.keras \\
        --models $M/2x_s1out.keras,$M/2x_alternate.keras,$M/3x_s1out.keras,\\
$M/3x_alternate.keras --names dense,2x_s1out,2x_alternate,3x_s1out,3x_alternate \\
        --engines tf,onnxruntime --batch_sizes 1,32 --min_repeats 30 --min_time_s 3 \\
        --output_dir docs/cifar10/resnet56_shapes/run1

Forms (s<stage>b<block>_add names the Add a branch feeds; ResNet-56 has nine
blocks a stage, b0 of stages 2 and 3 keeps its strided 1x1 projection):
  2x_s1out      all of stage 1 and s2b4-s2b8 out (14 of 27 branches)
  2x_alternate  b1, b3, b5, b7 of every stage and s1b8, s2b8 out (14)
  3x_s1out      all of stage 1, s2b1-s2b8 and s3b8 out (18)
  3x_alternate  b1, b2, b4, b5, b7, b8 of every stage out (18): 3 blocks a stage
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import keras_admm  # noqa: E402
from keras_admm import models  # noqa: E402
from keras_admm.compaction.zero_branches import remove_zero_branches  # noqa: E402
from keras_admm.profiling.flops import count_flops  # noqa: E402


def adds(stage, blocks):
    return [f"s{stage}b{b}_add" for b in blocks]


FORMS = {
    "2x_s1out": adds(1, range(9)) + adds(2, range(4, 9)),
    "2x_alternate": [a for s in (1, 2, 3) for a in adds(s, (1, 3, 5, 7))]
    + ["s1b8_add", "s2b8_add"],
    "3x_s1out": adds(1, range(9)) + adds(2, range(1, 9)) + ["s3b8_add"],
    "3x_alternate": [a for s in (1, 2, 3) for a in adds(s, (1, 2, 4, 5, 7, 8))],
}


def build(removed):
    model = models.resnet_cifar(56, name="resnet56")
    if removed:
        keras_admm.zero_branches(model, removed)
        model, _ = remove_zero_branches(model)
    return keras_admm.fold_batchnorm(model)


def main(out):
    os.makedirs(out, exist_ok=True)
    dense = build([])
    dense_macs = count_flops(dense) // 2
    dense.save(os.path.join(out, "dense.keras"))
    summary = {"dense": {"macs": dense_macs, "removed": []}}
    for name, removed in FORMS.items():
        model = build(removed)
        macs = count_flops(model) // 2
        model.save(os.path.join(out, f"{name}.keras"))
        summary[name] = {
            "macs": macs,
            "mac_cut": dense_macs / macs,
            "removed": removed,
        }
        print(
            f"{name}: {len(removed)} branches out, {dense_macs / macs:.2f}x fewer MACs"
        )
    with open(os.path.join(out, "forms.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/resnet56_shapes")
