"""Shape-level timing of depth: ResNet-20, -14 and -8 (9, 6 and 3 residual blocks).

Random weights (no accuracy claimed), BatchNorm folded, written to /tmp/depth;
then timed side by side on an idle machine:

    .venv/bin/python docs/cifar10/depth_shapes.py
    .venv/bin/python tools/profile_models.py \
        --baseline /tmp/depth/resnet20_folded.keras \
        --models /tmp/depth/resnet14_folded.keras,/tmp/depth/resnet8_folded.keras \
        --engines tf,onnxruntime --batch_sizes 1,32 --min_repeats 30 \
        --min_time_s 2 --output_dir docs/cifar10/depth_shapes
"""

import os

import keras_admm
from keras_admm import models
from keras_admm.profiling.flops import count_flops

os.makedirs("/tmp/depth", exist_ok=True)
for depth in (20, 14, 8):
    model = models.resnet_cifar(depth, name=f"resnet{depth}")
    keras_admm.fold_batchnorm(model).save(f"/tmp/depth/resnet{depth}_folded.keras")
    print(depth, "MACs", count_flops(model) // 2, "params", model.count_params())
