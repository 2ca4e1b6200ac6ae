#!/usr/bin/env bash
# Runs experiments.benchmark for several (config, flags) variants, one process each, and
# prints their JSON lines as a table. Usage:
#   scripts/benchmark_sweep.sh "sudoku_extreme_mlp" \
#       "arc_agi1 --batch=192 --config.model.attention_impl=cudnn" \
#       "XLA_FLAGS=--xla_gpu_enable_triton_gemm=false sudoku_extreme_att" ...
# Each argument is one variant: optional NAME=VALUE environment settings, a config name,
# then extra flags. Every run's full output (kernel tables of --profile_dir included) is
# appended to $OUT/benchmark_sweep.log; the JSON lines go to $OUT/benchmark_sweep.jsonl.
set -uo pipefail
dir="${OUT:-/tmp}"
out="$dir/benchmark_sweep.jsonl"
log="$dir/benchmark_sweep.log"
mkdir -p "$dir"
: > "$out"
for variant in "$@"; do
  read -r -a words <<< "$variant"
  env_settings=()
  while [[ ${#words[@]} -gt 0 && "${words[0]}" =~ ^[A-Z_][A-Z0-9_]*= ]]; do
    env_settings+=("${words[0]}")
    words=("${words[@]:1}")
  done
  config="${words[0]}"
  extra=("${words[@]:1}")
  echo "=== $variant" | tee -a "$log" >&2
  # Both the stderr redirection and tee only append to the log (SC2094 is about truncation).
  # shellcheck disable=SC2094
  if line=$(env "${env_settings[@]}" python3 -m experiments.benchmark --config="$config" \
              "${extra[@]}" 2>>"$log" | tee -a "$log" | tail -n 1) && [[ "$line" == "{"* ]]; then
    printf '%s\t%s\n' "$variant" "$line" | tee -a "$out"
  else
    printf '%s\tFAILED: %s\n' "$variant" \
      "$(grep -E 'Error|error' "$log" | tail -n 2 | tr '\n' ' ' | cut -c1-300)" | tee -a "$out"
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
