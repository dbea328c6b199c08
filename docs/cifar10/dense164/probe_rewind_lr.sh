#!/usr/bin/env bash
# Validation probe of the rewinding learning rate for the depth 2x recipe
# (5 of 9 residual branches out, 30 masked epochs of cosine from LR) started
# from the 164-epoch dense model. 0.05 is the recipe's rate (run by
# docs/cifar10/depth_recipes.sh); this runs the others. About 27 min each on 2
# idle cores. LRS picks the rates, DENSE the dense model.
#   docs/cifar10/dense164/probe_rewind_lr.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
DENSE=${DENSE:-docs/cifar10/models/resnet20_dense164.keras}
for lr in ${LRS:-0.02 0.1}; do
  .venv/bin/python examples/cifar10.py --stages prune,retrain,compact \
      --dense_model "$DENSE" --method gradual \
      --sparsity filter --flops_reduction 2 --remove_blocks 5 --prune_epochs 0 \
      --retrain_epochs 30 --retrain_learning_rate "$lr" --seed 0 \
      --output_dir "runs/cifar10_probes/dense164_depth2x_lr$lr" --resume
done
