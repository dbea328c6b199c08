#!/usr/bin/env bash
cd /work/main
for y in y1 y3 y4; do
  .venv/bin/python docs/cifar10/plan_shapes.py /tmp/shapes2/$y /tmp/shapes2/$y.json \
    /tmp/shapes2/blocks_s1all_s2b1.json inner48_seed0:resnet20_depth60_2x_inner48 > /tmp/shapes2/$y.log 2>&1
  echo "$y built rc=$?"
done
for n in 1 2; do
  .venv/bin/python tools/profile_models.py --baseline /tmp/shapes2/y1/dense.keras \
    --models /tmp/shapes2/y1/inner48_seed0.keras,/tmp/shapes2/y1/branches_only.keras,/tmp/shapes2/y1/plan.keras,/tmp/shapes2/y3/plan.keras,/tmp/shapes2/y4/plan.keras \
    --names dense,inner48_seed0_trained,s1out4_only,y1_s3b02in48,y3_s3b12in48,y4_s3b0in32 \
    --engines tf,onnxruntime --batch_sizes 32 --min_repeats 30 --min_time_s 3 \
    --output_dir /tmp/shapes2/run$n > /tmp/shapes2/run$n.log 2>&1
  echo "run$n rc=$?"
done
