#!/usr/bin/env bash
# The two 30-epoch depth-pruning recipes of docs/CIFAR10.md, from one dense model:
#   2x: 5 of 9 residual branches out, 30 masked epochs, cosine from 0.05;
#   3x: the same branches out + filter pruning to 3x, 10 gradual epochs at 0.05,
#       then 20 masked epochs, cosine from 0.05.
# BLOCKS sets how many branches go (default 5). With fewer than 5, the branches
# alone fall short of 2x and 2x gets the 3x schedule: filter pruning makes up
# the rest (BLOCKS=4: 1.86x from the branches, 2.11x with the smallest filter
# cut, 1 in 16).
# About 50 s an epoch each on 2 idle cores (the model without its 5 branches).
# DENSE picks the dense model, SEED the data order, OUT the folder, LEVELS the runs,
# EPOCHS the budget (default 30: 2x retrains EPOCHS, 3x prunes 10 and retrains
# EPOCHS-10; a budget other than 30 adds _epN to the folder name);
# PLAN a plan JSON to prune the smaller model to instead of a MAC level (one run,
# the 3x schedule; LEVELS is then ignored and the folder is named after the file);
# BRANCHES names the branches to take out instead (Adds, comma-separated, e.g.
# s1b0_add,s1b1_add,s1b2_add; --remove_branches): BLOCKS is then their count;
# RESUME=1 continues cut-off runs. Examples:
#   docs/cifar10/depth_recipes.sh                       # from the 30-epoch dense model
#   SEED=1 docs/cifar10/depth_recipes.sh                # second seed
#   EPOCHS=60 LEVELS=2 docs/cifar10/depth_recipes.sh    # 2x with 60 masked epochs
#   BLOCKS=4 LEVELS=2 docs/cifar10/depth_recipes.sh     # 2x: 4 branches out + filters
#   BLOCKS=4 EPOCHS=60 LEVELS=2 docs/cifar10/depth_recipes.sh   # the same, 10 + 50 epochs
#   BLOCKS=4 EPOCHS=60 PLAN=docs/cifar10/plans/2x_inner48.json \
#       docs/cifar10/depth_recipes.sh                   # 4 out + s3 inner convs 48
#   BRANCHES=s1b0_add,s1b1_add,s1b2_add,s2b1_add,s2b2_add EPOCHS=60 \
#       PLAN=docs/cifar10/plans/3x_s1out_s3in32.json docs/cifar10/depth_recipes.sh
#   DENSE=docs/cifar10/models/resnet20_dense164.keras TAG=_dense164 \
#       docs/cifar10/depth_recipes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
DENSE=${DENSE:-docs/cifar10/models/resnet20_dense.keras}
SEED=${SEED:-0}
LEVELS=${LEVELS:-"2 3"}
TAG=${TAG:-}
OUT=${OUT:-runs/cifar10_depth30}
EPOCHS=${EPOCHS:-30}
if ! [[ $EPOCHS =~ ^[0-9]+$ ]] || [ "$EPOCHS" -lt 11 ]; then
  echo "EPOCHS: a whole number of at least 11, not '$EPOCHS'" >&2; exit 2
fi
EPOCHS=$((10#$EPOCHS))   # 030 is 30, not octal
[ "$EPOCHS" = 30 ] || TAG="_ep$EPOCHS$TAG"
BRANCHES=${BRANCHES:-}
if [ -n "$BRANCHES" ]; then
  if ! [[ $BRANCHES =~ ^[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*$ ]]; then
    echo "BRANCHES: Add names separated by commas, not '$BRANCHES'" >&2; exit 2
  fi
  if [ -n "${BLOCKS:-}" ]; then
    echo "Give BLOCKS (how many) or BRANCHES (which), not both" >&2; exit 2
  fi
  IFS=, read -ra names <<< "$BRANCHES"
  BLOCKS=${#names[@]}
  depth=(--remove_branches "$BRANCHES")
  short=$(printf '%s\n' "${names[@]%_add}" | LC_ALL=C sort | paste -sd-)   # as the run's name
  depth_name=minus_$short
else
  BLOCKS=${BLOCKS:-5}
  depth=(--remove_blocks "$BLOCKS")
  depth_name=minus${BLOCKS}blocks
fi
if ! [[ $BLOCKS =~ ^[1-8]$ ]]; then
  echo "BLOCKS (or the names in BRANCHES): 1 to 8 residual branches, not '$BLOCKS'" >&2; exit 2
fi
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || echo --noresume)
PLAN=${PLAN:-}
if [ -n "$PLAN" ]; then
  [ -f "$PLAN" ] || { echo "PLAN: no such file '$PLAN'" >&2; exit 2; }
  LEVELS=plan
fi
for level in $LEVELS; do
  case $level in
    2|3) target=(--sparsity filter --flops_reduction "$level"); name=${level}x ;;
    plan) target=(--plan "$PLAN"); name=$(basename "$PLAN" .json) ;;
    *) echo "LEVELS: 2 or 3, not '$level'" >&2; exit 2 ;;
  esac
  if [ "$level" = 2 ] && [ "$BLOCKS" -ge 5 ]; then   # the branches alone reach 2x
    schedule=(--prune_epochs 0 --retrain_epochs "$EPOCHS")
  else                                              # filters make up the rest
    schedule=(--prune_epochs 10 --prune_learning_rate 0.05 --retrain_epochs $((EPOCHS - 10)))
  fi
  $PY examples/cifar10.py --stages prune,retrain,compact --dense_model "$DENSE" \
      --method gradual "${target[@]}" "${depth[@]}" \
      "${schedule[@]}" --retrain_learning_rate 0.05 --seed "$SEED" \
      --output_dir "$OUT/resnet20_depth_${name}_${depth_name}_seed$SEED$TAG" $RESUME_FLAG
done
echo EXIT
