#!/usr/bin/env bash
# Folded side-by-side timing of the 2x ResNet-20 models that come closest to the
# accuracy goal (docs/CIFAR10.md, "Four branches out and a little width at 2x"):
# dense, gradual channels 2x, five branches out (30 and 60 epochs), four
# branches out + filters 1/16 (30 and 60 epochs) and four branches out + the
# plan plans/2x_inner48.json (60 epochs; added after run1 and run2 of
# docs/cifar10/fold_2x/, which time the others). BatchNorm is folded into the
# convolutions first, as in depth_fold.sh. Run alone on an idle machine: timings
# under load are wrong. OUT sets the output folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
F=${OUT:-runs/cifar10/fold_2x}
M=docs/cifar10/models
OUT=$F docs/cifar10/fold_time.sh dense:$M/resnet20_dense.keras \
    gradual_2x:$M/resnet20_gradual_2x.keras \
    out5_30ep:$M/resnet20_depth30_2x_minus5blocks.keras \
    out5_60ep:$M/resnet20_depth60_2x_minus5blocks.keras \
    out4_filters_30ep:$M/resnet20_depth30_2x_minus4blocks.keras \
    out4_filters_60ep:$M/resnet20_depth60_2x_minus4blocks.keras \
    out4_inner48_60ep:$M/resnet20_depth60_2x_inner48.keras
