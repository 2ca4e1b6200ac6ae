#!/usr/bin/env bash
# Test-time scaling of a trained model on the test split (docs/test_time_scaling.md): exact
# accuracy over a grid of supervision steps x (trajectories, noise), one process per setting
# through experiments.evaluate (nothing is written into the run's workdir). Usage:
#   scripts/test_time_scaling.sh CONFIG CHECKPOINT [extra --config.KEY=VALUE flags...]
#   STEPS="16 32 64 128" SETTINGS="1:0 4:0.1 8:0.1 8:0.3" BATCH=768 MAX_EXAMPLES=0 \
#     scripts/test_time_scaling.sh sudoku_extreme_mlp /path/to/workdir
# SETTINGS lists TRAJECTORIES:NOISE pairs. The eval batch of a setting with K trajectories is
# BATCH / K puzzles (K x that many rows run at once), so memory stays that of BATCH rows.
# MAX_EXAMPLES > 0 evaluates a prefix of the test split. Results: $OUT/test_time_scaling.jsonl
# (appended; one line per setting), the log $OUT/test_time_scaling.log, a table on stdout and
# the plot $OUT/test_time_scaling.png.
set -uo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG CHECKPOINT [extra flags...]" >&2
  exit 2
fi
config="$1"
checkpoint="$2"
extra=("${@:3}")
dir="${OUT:-/tmp}"
mkdir -p "$dir"
results="$dir/test_time_scaling.jsonl"
log="$dir/test_time_scaling.log"
read -r -a steps_list <<< "${STEPS:-16 32 64 128}"
read -r -a settings_list <<< "${SETTINGS:-1:0 4:0.1 8:0.1 8:0.3}"
batch="${BATCH:-768}"
failed=0
for setting in "${settings_list[@]}"; do
  trajectories="${setting%%:*}"
  noise="${setting#*:}"
  setting_batch=$(( batch / trajectories ))
  if (( setting_batch < 1 )); then
    setting_batch=1
  fi
  for steps in "${steps_list[@]}"; do
    echo "=== steps $steps, trajectories $trajectories, noise $noise, batch $setting_batch" \
      | tee -a "$log" >&2
    if ! python3 -m experiments.evaluate --config="$config" --checkpoint="$checkpoint" \
        --output="$results" --config.eval.num_steps="$steps" \
        --config.eval.num_trajectories="$trajectories" \
        --config.eval.trajectory_noise="$noise" \
        --config.eval.global_batch_size="$setting_batch" \
        --config.eval.max_examples="${MAX_EXAMPLES:-0}" "${extra[@]}" >>"$log" 2>&1; then
      echo "FAILED: see $log" >&2
      failed=1
    fi
  done
done
python3 -m experiments.plot_test_time_scaling --results="$results" \
  --output="$dir/test_time_scaling.png" --title="$config: test-time scaling"
exit "$failed"
