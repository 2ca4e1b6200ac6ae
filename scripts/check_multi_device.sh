#!/usr/bin/env bash
# Trains STEPS steps from one seed on one GPU and on all visible GPUs and prints both runs'
# train metrics side by side (docs/multi_device.md). With the default
# train.data_parallel=shard_map the two agree to float32 rounding at first and stay within
# the seed-to-seed spread after; pass --config.train.data_parallel=auto to see XLA's own
# partitioning instead. The one-device run sees GPU 0 only (CUDA_VISIBLE_DEVICES=0), or on a
# CPU with fake devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) one device.
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
num_devices=$(python3 -c 'import jax; print(jax.device_count())')
if (( num_devices < 2 )); then
  echo "$0: needs at least 2 devices, found $num_devices" >&2
  exit 2
fi
for run in one all; do
  if [[ -e "$root/$run" ]]; then
    echo "$0: $root/$run exists; remove it or choose another WORKROOT" >&2
    exit 2
  fi
done
common=("$@" --config.train.max_steps="$steps")
start=$(date +%s)
one_device_flags="$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//' <<<"${XLA_FLAGS:-}")"
if [[ "${XLA_FLAGS:-}" == *xla_force_host_platform_device_count* ]]; then
  one_device_flags+=" --xla_force_host_platform_device_count=1"
fi
CUDA_VISIBLE_DEVICES=0 XLA_FLAGS="$one_device_flags" \
  python3 -m experiments.main --workdir="$root/one" "${common[@]}" >/dev/null
middle=$(date +%s)
python3 -m experiments.main --workdir="$root/all" "${common[@]}" >/dev/null
echo "1 device: $(( middle - start )) s; $num_devices devices: $(( $(date +%s) - middle )) s" \
  "(wall, with start-up)"
python3 -m experiments.compare_runs --workdirs="$root/one,$root/all"
