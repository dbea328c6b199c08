#!/usr/bin/env bash
# Folded side-by-side timing of dense, gradual 2x / 3x (channel pruning) and the
# depth-pruned 2x / 3x models, the 30-epoch depth 2x and depth + channels 3x
# models (docs/CIFAR10.md, "Depth pruning"). Run alone on
# an idle machine: timings under load are wrong.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
F=${OUT:-runs/cifar10/depth_fold}
M=docs/cifar10/models
mkdir -p "$F/convert"
for pair in dense:$M/resnet20_dense.keras gradual_2x:$M/resnet20_gradual_2x.keras \
            gradual_3x:$M/resnet20_gradual_3x.keras \
            depth_2x:$M/resnet20_gradual_2x_minus5blocks.keras \
            depth_3x:$M/resnet20_gradual_3x_minus6blocks.keras \
            depth_2x_30ep:$M/resnet20_depth30_2x_minus5blocks.keras \
            mix_3x_30ep:$M/resnet20_mix30_3x_minus5blocks.keras; do
  name=${pair%%:*}; model=${pair#*:}
  $PY tools/convert.py --model "$model" --output_dir "$F/convert/$name" \
      --formats keras --fold_batchnorm
done
$PY tools/profile_models.py --baseline "$F/convert/dense/model.keras" \
  --models "$F/convert/gradual_2x/model.keras,$F/convert/depth_2x/model.keras,$F/convert/depth_2x_30ep/model.keras,$F/convert/gradual_3x/model.keras,$F/convert/depth_3x/model.keras,$F/convert/mix_3x_30ep/model.keras" \
  --names dense,gradual_2x,depth_2x,depth_2x_30ep,gradual_3x,depth_3x,mix_3x_30ep \
  --engines tf,onnxruntime --batch_sizes 1,32 --min_repeats 30 --min_time_s 3 \
  --output_dir "$F"
