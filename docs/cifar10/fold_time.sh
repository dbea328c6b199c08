#!/usr/bin/env bash
# Folded side-by-side timing of ResNet-20 models: each NAME:MODEL.keras is
# converted with BatchNorm folded into the convolutions, then all are timed
# against the first (the baseline, usually the dense model) on TF and ONNX
# Runtime, batch 1 and 32. Run alone on an idle machine: timings under load are
# wrong. OUT sets the output folder (default runs/cifar10/fold). Paths, OUT's
# too, are relative to the repository root. THREADS=N times every engine on N
# threads (default: all usable cores; TF gets N intra- and N inter-op threads).
# ORDER=blocks times one model at a time instead of round-robin (tools/
# profile_models.py --order blocks): at least 8 blocks, a multiple of the
# number of models (each goes first equally often), a fresh session per model
# and block, 20 untimed + 50 timed calls each, ONNX Runtime's spinning threads on.
#   OUT=/tmp/t docs/cifar10/fold_time.sh dense:docs/cifar10/models/resnet20_dense.keras \
#       depth_2x:docs/cifar10/models/resnet20_depth60_2x_minus5blocks.keras
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
  echo "usage: fold_time.sh BASELINE_NAME:MODEL NAME:MODEL [NAME:MODEL ...]" >&2; exit 2
fi
PY=.venv/bin/python
F=${OUT:-runs/cifar10/fold}
THREAD_FLAG=()
if [ -n "${THREADS:-}" ]; then
  if ! [[ $THREADS =~ ^[1-9][0-9]*$ ]]; then
    echo "fold_time.sh: THREADS='$THREADS' is not a positive whole number; unset it for all cores" >&2; exit 2
  fi
  THREAD_FLAG=(--threads "$THREADS")
fi
TIMING=(--min_repeats 30 --min_time_s 3)
case ${ORDER:-interleaved} in
  interleaved) ;;
  blocks) n=$#; blocks=$(( (8 + n - 1) / n * n ))
          TIMING=(--order blocks --blocks "$blocks" --warmup 20 --min_repeats 50 --min_time_s 0) ;;
  *) echo "fold_time.sh: ORDER='$ORDER' is not interleaved or blocks" >&2; exit 2 ;;
esac
mkdir -p "$F/convert"
seen=,
for pair in "$@"; do   # check every pair before converting any
  name=${pair%%:*}; model=${pair#*:}
  if [ -z "$name" ] || [ "$name" = "$pair" ] || [[ $name == *,* ]] || [ ! -f "$model" ]; then
    echo "fold_time.sh: '$pair' is not NAME:MODEL (a name without commas, then an existing model file)" >&2; exit 2
  fi
  if [[ $seen == *",$name,"* ]]; then
    echo "fold_time.sh: the name '$name' is given twice" >&2; exit 2
  fi
  seen="$seen$name,"
done
names=
models=
for pair in "$@"; do
  name=${pair%%:*}; model=${pair#*:}
  $PY tools/convert.py --model "$model" --output_dir "$F/convert/$name" \
      --formats keras --fold_batchnorm
  if [ -z "$names" ]; then
    baseline=$F/convert/$name/model.keras
  else
    models="${models:+$models,}$F/convert/$name/model.keras"
  fi
  names="${names:+$names,}$name"
done
$PY tools/profile_models.py --baseline "$baseline" --models "$models" --names "$names" \
  --engines tf,onnxruntime --batch_sizes 1,32 "${TIMING[@]}" \
  "${THREAD_FLAG[@]}" --output_dir "$F"
