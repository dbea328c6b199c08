#!/usr/bin/env bash
# Folded side-by-side timing of dense, gradual 2x / 3x (channel pruning) and the
# depth-pruned 2x / 3x models, the 30-epoch depth 2x and depth + channels 3x
# models (docs/CIFAR10.md, "Depth pruning"). Run alone on
# an idle machine: timings under load are wrong.
set -euo pipefail
cd "$(dirname "$0")/../.."
F=${OUT:-runs/cifar10/depth_fold}
M=docs/cifar10/models
OUT=$F docs/cifar10/fold_time.sh dense:$M/resnet20_dense.keras \
    gradual_2x:$M/resnet20_gradual_2x.keras \
    depth_2x:$M/resnet20_gradual_2x_minus5blocks.keras \
    depth_2x_30ep:$M/resnet20_depth30_2x_minus5blocks.keras \
    gradual_3x:$M/resnet20_gradual_3x.keras \
    depth_3x:$M/resnet20_gradual_3x_minus6blocks.keras \
    mix_3x_30ep:$M/resnet20_mix30_3x_minus5blocks.keras
