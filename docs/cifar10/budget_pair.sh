#!/usr/bin/env bash
# ADMM and gradual pruning at one level and one epoch budget, from the same dense
# weights and seed, one after the other (issue 13: does ADMM overtake with budget?).
# Half the epochs prune (ADMM: 3 progressive stages), half retrain masked.
# About 90 s an epoch on 2 idle cores. RESUME=1 continues cut-off runs.
# EXTRA adds flags to every run and TAG to their folder names, e.g.
#   EPOCHS=30 LEVEL=3 docs/cifar10/budget_pair.sh
#   EPOCHS=12 LEVEL=2 METHODS=gradual EXTRA=--distill TAG=_distill docs/cifar10/budget_pair.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
DENSE=${DENSE:-runs/cifar10/resnet20_dense/resnet20_dense.keras}
EPOCHS=${EPOCHS:-30}
LEVEL=${LEVEL:-3}
SEED=${SEED:-0}
METHODS=${METHODS:-"admm gradual"}
EXTRA=${EXTRA:-}
TAG=${TAG:-}
OUT=${OUT:-runs/cifar10_budget${EPOCHS}}
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || echo --noresume)
HALF=$((EPOCHS / 2))
for method in $METHODS; do
  $PY examples/cifar10.py --stages prune,retrain,compact --dense_model "$DENSE" \
      --method "$method" --sparsity filter --flops_reduction "$LEVEL" \
      --prune_epochs "$HALF" --admm_stages 3 --retrain_epochs "$((EPOCHS - HALF))" \
      --seed "$SEED" --output_dir "$OUT/resnet20_${method}_${LEVEL}x_seed$SEED$TAG" \
      $RESUME_FLAG $EXTRA
done
echo EXIT
