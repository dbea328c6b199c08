#!/usr/bin/env bash
# The CIFAR-10 ResNet-20 runs of docs/CIFAR10.md, one after another (2 CPU cores:
# never two at once). Each stage checkpoints every epoch; rerun with RESUME=1 to
# continue an interrupted run. Timing (the profile stage) runs only between
# trainings, when nothing else uses the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
RUNS=runs/cifar10
DENSE=$RUNS/resnet20_dense/resnet20_dense.keras
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || echo --noresume)
METHODS=${METHODS:-"admm one_shot_l1 gradual"}
LEVELS=${LEVELS:-"2 3"}

if [ ! -f "$DENSE" ]; then
  $PY examples/cifar10.py --stages pretrain --pretrain_epochs 30 --seed 0 \
      --output_dir $RUNS/resnet20_dense $RESUME_FLAG
fi
for method in $METHODS; do
  for level in $LEVELS; do
    out=$RUNS/resnet20_${method}_${level}x
    $PY examples/cifar10.py --stages prune,retrain,compact,export \
        --dense_model "$DENSE" --method "$method" --sparsity filter \
        --flops_reduction "$level" --prune_epochs 9 --retrain_epochs 6 --seed 0 \
        --output_dir "$out" $RESUME_FLAG
    $PY examples/cifar10.py --stages profile --dense_model "$DENSE" \
        --method "$method" --flops_reduction "$level" --output_dir "$out"
  done
done
