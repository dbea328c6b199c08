#!/usr/bin/env bash
# The from-scratch control of the depth 2x recipe (docs/cifar10/depth_recipes.sh):
# the same five residual branches out, the same 30 epochs of cosine from 0.05,
# but from fresh random weights instead of the dense model's
# (--retrain_from_scratch; Liu et al. 2019). The dense model only picks the
# branches. About 27 min on 2 idle cores. DENSE, SEED, OUT, TAG and EPOCHS
# (masked epochs, default 30) as in depth_recipes.sh: give another DENSE its own
# TAG, or its run shares (and --resume continues) the default model's folder.
#   docs/cifar10/scratch_control.sh
#   EPOCHS=60 docs/cifar10/scratch_control.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DENSE=${DENSE:-docs/cifar10/models/resnet20_dense.keras}
SEED=${SEED:-0}
OUT=${OUT:-runs/cifar10_depth30}
EPOCHS=${EPOCHS:-30}
if ! [[ $EPOCHS =~ ^[0-9]+$ ]] || [ "$EPOCHS" -lt 1 ]; then
  echo "EPOCHS: a whole number of at least 1, not '$EPOCHS'" >&2; exit 2
fi
EPOCHS=$((10#$EPOCHS))   # 030 is 30, not octal
TAG=$([ "$EPOCHS" = 30 ] || echo "_ep$EPOCHS")${TAG:-}
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || echo --noresume)
.venv/bin/python examples/cifar10.py --stages prune,retrain,compact --dense_model "$DENSE" \
    --method gradual --sparsity filter --flops_reduction 2 --remove_blocks 5 \
    --prune_epochs 0 --retrain_epochs "$EPOCHS" --retrain_learning_rate 0.05 \
    --retrain_from_scratch --seed "$SEED" \
    --output_dir "$OUT/resnet20_depth_2x_minus5blocks_seed${SEED}_scratch$TAG" $RESUME_FLAG
echo EXIT
