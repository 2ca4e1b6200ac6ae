#!/usr/bin/env bash
# Trains STEPS steps from one seed on one GPU and on all visible GPUs and prints both runs'
# train metrics side by side (docs/multi_device.md). With the default
# train.data_parallel=shard_map the two agree to float32 rounding at first and stay within
# the seed-to-seed spread after; pass --config.train.data_parallel=auto to see XLA's own
# partitioning instead.
#   scripts/check_multi_device.sh STEPS WORKROOT [experiments.main flags...]
# e.g. scripts/check_multi_device.sh 1000 /tmp/check --config=sudoku_extreme_mlp \
#        --config.data.data_dir=.data/tfds --config.eval.max_examples=2048
set -euo pipefail
if (( $# < 3 )); then
  echo "usage: $0 STEPS WORKROOT [experiments.main flags...]" >&2
  exit 2
fi
steps=$1
root=$2
shift 2
num_gpus=$(python3 -c 'import jax; print(jax.device_count())')
if (( num_gpus < 2 )); then
  echo "$0: needs at least 2 devices, found $num_gpus" >&2
  exit 2
fi
for run in one all; do
  if [[ -e "$root/$run" ]]; then
    echo "$0: $root/$run exists; remove it or choose another WORKROOT" >&2
    exit 2
  fi
done
common=(--config.train.max_steps="$steps" "$@")
start=$(date +%s)
CUDA_VISIBLE_DEVICES=0 python3 -m experiments.main --workdir="$root/one" "${common[@]}" >/dev/null
middle=$(date +%s)
python3 -m experiments.main --workdir="$root/all" "${common[@]}" >/dev/null
echo "1 GPU: $(( middle - start )) s; $num_gpus GPUs: $(( $(date +%s) - middle )) s (wall, with start-up)"
python3 -m experiments.compare_runs --workdirs="$root/one,$root/all"
