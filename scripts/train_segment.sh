#!/usr/bin/env bash
# One time-boxed segment of a long training run: runs experiments.main for at most SECONDS,
# then sends SIGTERM, on which the trainer saves a checkpoint and exits 0, so rerunning the
# same command continues the run. Prints the rows logged in this segment and copies
# metrics.jsonl to $OUT (if set).
#   scripts/train_segment.sh SECONDS WORKDIR [experiments.main flags...]
set -euo pipefail
if (( $# < 2 )); then
  echo "usage: $0 SECONDS WORKDIR [experiments.main flags...]" >&2
  exit 2
fi
seconds=$1
workdir=$2
shift 2
# Steps with a committed checkpoint, ascending (Orbax renames a step directory to its bare
# number last); nothing for a new run.
committed_steps() {
  find "$workdir/checkpoints" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' \
    -printf '%f\n' 2>/dev/null | sort -n || true
}
# The step this segment resumes from.
first_step=$(committed_steps | tail -n 1)
first_step=${first_step:-0}
start=$(date +%s)
status=0
timeout --preserve-status --signal=TERM --kill-after=120 "$seconds" \
  python3 -m experiments.main --workdir="$workdir" "$@" || status=$?
echo "segment: exit $status, $(( $(date +%s) - start )) s wall, from step $first_step;" \
  "checkpoints: $(committed_steps | tr '\n' ' ')"
python3 -m experiments.summarize_run --workdir="$workdir" --since_step="$first_step"
if [[ -n "${OUT:-}" ]]; then
  cp "$workdir/metrics.jsonl" "$OUT/metrics.jsonl"
fi
exit "$status"
