#!/usr/bin/env bash
# A short sudoku_extreme_mlp run on a GPU with the reference hyperparameters, interrupted and
# resumed: segment 1 trains to step $1, segment 2 reruns the same command with a later
# max_steps and must resume from the checkpoint. Expects the data built in .data/tfds
# (python -m datasets.build sudoku_extreme/1k --manual_dir=... --data_dir=.data/tfds).
set -euo pipefail
first=${1:-400}
second=${2:-800}
workdir=${WORKDIR:-/tmp/trm_gpu_check}
out=${OUT:-/tmp}
common=(--config=sudoku_extreme_mlp --workdir="$workdir" --config.data.data_dir=.data/tfds
        --config.train.log_every_steps=50 --config.train.checkpoint_every_steps=200
        --config.eval.max_examples=4096)
rm -rf "$workdir"
start=$(date +%s)
python3 -m experiments.main "${common[@]}" --config.train.max_steps="$first" 2>&1 | tail -n 3
echo "segment 1: $(( $(date +%s) - start )) s; checkpoints: $(ls "$workdir/checkpoints")"
start=$(date +%s)
python3 -m experiments.main "${common[@]}" --config.train.max_steps="$second" 2>&1 | tail -n 3
echo "segment 2: $(( $(date +%s) - start )) s; checkpoints: $(ls "$workdir/checkpoints")"
cp "$workdir/metrics.jsonl" "$out/metrics.jsonl"
python3 -m experiments.summarize_run --workdir="$workdir"
