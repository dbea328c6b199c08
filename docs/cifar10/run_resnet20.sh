#!/usr/bin/env bash
# The CIFAR-10 ResNet-20 rows of docs/CIFAR10.md, one after another (2 CPU cores:
# never two trainings at once). Every stage checkpoints each epoch; RESUME=1
# continues an interrupted run. The timings (profile stage) run after all the
# training, when nothing else uses the machine.
#   RUNS=runs/cifar10 METHODS="admm one_shot_l1 gradual" LEVELS="2 3" docs/cifar10/run_resnet20.sh
#   SEED=1 METHODS="admm gradual" LEVELS=3 docs/cifar10/run_resnet20.sh   # the seed-1 rows
# ALIGN8=1 also compacts each admm run with --align 8 (the _align8 rows). The
# other rows (longer budgets, probes, dense60) have their commands in docs/CIFAR10.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
RUNS=${RUNS:-runs/cifar10}
DENSE=$RUNS/resnet20_dense/resnet20_dense.keras
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || echo --noresume)
METHODS=${METHODS:-"admm one_shot_l1 gradual"}
LEVELS=${LEVELS:-"2 3"}
PRUNE_EPOCHS=${PRUNE_EPOCHS:-6}
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-6}
SEED=${SEED:-0}
SUFFIX=$([ "$SEED" = 0 ] && echo "" || echo "_seed$SEED")

if [ ! -f "$DENSE" ]; then
  $PY examples/cifar10.py --stages pretrain --pretrain_epochs 30 --seed 0 \
      --output_dir $RUNS/resnet20_dense $RESUME_FLAG
fi
for level in $LEVELS; do
  for method in $METHODS; do
    $PY examples/cifar10.py --stages prune,retrain,compact,export \
        --dense_model "$DENSE" --method "$method" --sparsity filter \
        --flops_reduction "$level" --prune_epochs "$PRUNE_EPOCHS" \
        --admm_stages 3 --retrain_epochs "$RETRAIN_EPOCHS" --seed "$SEED" \
        --output_dir "$RUNS/resnet20_${method}_${level}x$SUFFIX" $RESUME_FLAG
  done
done
for level in $LEVELS; do
  for method in $METHODS; do
    $PY examples/cifar10.py --stages profile --dense_model "$DENSE" \
        --method "$method" --flops_reduction "$level" \
        --output_dir "$RUNS/resnet20_${method}_${level}x$SUFFIX"
  done
done
if [ "${ALIGN8:-0}" = 1 ]; then  # the same trained weights, widths rounded up to 8
  for level in $LEVELS; do
    run=$RUNS/resnet20_admm_${level}x$SUFFIX
    [ -f "$run/retrained.keras" ] || continue
    mkdir -p "${run}_align8"
    cp "$run/retrained.keras" "${run}_align8/"
    $PY examples/cifar10.py --stages compact,profile --align 8 --dense_model "$DENSE" \
        --method admm --flops_reduction "$level" --output_dir "${run}_align8"
  done
fi
