#!/usr/bin/env bash
# Runs experiments.benchmark for several (config, flags) variants, one process each, and
# prints their JSON lines as a table. Usage:
#   scripts/benchmark_sweep.sh "sudoku_extreme_mlp" "arc_agi1 --batch=192 --config.model.attention_impl=cudnn" ...
# Each argument is one variant: a config name followed by extra flags.
set -uo pipefail
out="${OUT:-/tmp}/benchmark_sweep.jsonl"
: > "$out"
for variant in "$@"; do
  read -r -a words <<< "$variant"
  config="${words[0]}"
  extra=("${words[@]:1}")
  echo "=== $variant" >&2
  if line=$(python3 -m experiments.benchmark --config="$config" "${extra[@]}" 2>"${out%.jsonl}.$$.err" | tail -n 1); then
    printf '%s\t%s\n' "$variant" "$line" | tee -a "$out"
  else
    printf '%s\tFAILED: %s\n' "$variant" "$(grep -E 'Error|error' "${out%.jsonl}.$$.err" | tail -n 2 | tr '\n' ' ')" | tee -a "$out"
  fi
done
echo
echo "variant | step ms | ex/s | TFLOP/s | eval puz/s | peak GB"
python3 - "$out" <<'PY'
import json, sys
for row in open(sys.argv[1]):
  variant, _, payload = row.rstrip('\n').partition('\t')
  try:
    r = json.loads(payload)
    print(f"{variant} | {r['train_step_ms']} | {r['train_examples_per_s']} | {r['train_tflops']} | "
          f"{r.get('eval_puzzles_per_s')} | {r['peak_mem_gb']}")
  except json.JSONDecodeError:
    print(f'{variant} | {payload[:150]}')
PY
